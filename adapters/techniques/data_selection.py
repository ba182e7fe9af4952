"""Data selection beyond perplexity: deduplication, importance resampling toward a target, diversity.

* ``data.dedup``: exact duplicates (hash of the normalized text) and near-duplicates (MinHash LSH, datasketch).
* ``data.dsir``: importance resampling toward a target dataset with hashed n-gram features (DSIR, data-selection).
* ``data.diversity``: greedy k-center selection on the reference model's mean-pooled hidden states.

Every technique returns the kept records in their original order with a frozen report of what it measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adapters import formats as F
from adapters.corpus import BUILTIN_DATASETS, builtin_records, record_text
from adapters.errors import MissingDependencyError, UsageError
from adapters.handle import ModelHandle
from adapters.technique import DataTechnique, Selected, TechniqueContext, technique

INSTALL = "pip install -e '.[data]'"


def _non_empty(texts: Sequence[Any], name: str) -> list[Any]:
    """The records whose text is not blank (in order); a UsageError when none is left."""
    out = [t for t in texts if record_text(t).strip()]
    if not out:
        raise UsageError(f"{name} got no non-empty texts to select from")
    return out


def n_to_keep(n: int, keep: float, k: int | None) -> int:
    """How many of ``n`` texts a selection keeps: ``k`` (at most ``n``) when given, else the ``keep`` fraction
    (at least one)."""
    if k is not None:
        return min(k, n)
    return min(n, max(1, int(round(n * keep))))


def _check_size(keep: float, k: int | None) -> None:
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 (or unset to use keep), got {k}")


def _clip(text: str, chars: int = 160) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."


# -- data.dedup -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DedupParams:
    """Params of ``data.dedup``.

    Attributes:
        threshold: estimated Jaccard similarity of two texts' shingle sets at or above which the later text is a
            near-duplicate of the earlier one (MinHash LSH's threshold too), in (0, 1].
        num_perm: MinHash permutations (more: a finer Jaccard estimate, more time), at least 16.
        ngram: shingle length, in words (``shingle: word``) or characters (``shingle: char``).
        shingle: shingles of words (of the text lower-cased, punctuation removed) or of characters (of the
            normalized text).
        examples: how many example (dropped, kept) pairs the report shows.
    """

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 3
    shingle: Literal["word", "char"] = "word"
    examples: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be >= 16, got {self.num_perm}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {self.ngram}")
        if self.examples < 0:
            raise ValueError(f"examples must be >= 0, got {self.examples}")


@dataclass(frozen=True)
class DedupExample:
    """One dropped text and the kept one it duplicates (both clipped to 160 characters).

    Attributes:
        kind: ``exact`` or ``near``.
        dropped: the text dropped.
        kept: the earlier text it duplicates, which was kept.
        similarity: MinHash's estimate of their shingles' Jaccard similarity (1.0 for exact duplicates).
    """

    kind: str
    dropped: str
    kept: str
    similarity: float


@dataclass(frozen=True)
class DedupReport:
    """What deduplication removed.

    Attributes:
        n_in: records given.
        empty: records with blank text, dropped.
        exact_duplicates: records dropped because their normalized text equals a kept one's.
        near_duplicates: records dropped because their estimated Jaccard similarity to a kept one is >= threshold.
        n_kept: records kept.
        threshold: the similarity threshold.
        method: the shingles compared (e.g. ``word 3-grams``), MinHash's permutations and the LSH's bands.
        examples: a few dropped texts with the kept one each duplicates.
    """

    n_in: int
    empty: int
    exact_duplicates: int
    near_duplicates: int
    n_kept: int
    threshold: float
    method: str
    examples: tuple[DedupExample, ...]


def normalize(text: str) -> str:
    """The text compared for exact duplicates: NFKC, lower-cased, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


_WORD = re.compile(r"\w+")


def shingles(normalized: str, ngram: int, kind: str) -> set[str]:
    """The shingle set of a normalized text: word ``ngram``-grams (punctuation dropped) or character ``ngram``-grams;
    a text shorter than one shingle is one shingle of itself."""
    units: Sequence[str] = _WORD.findall(normalized) if kind == "word" else normalized
    if not units:
        return {normalized}
    sep = " " if kind == "word" else ""
    if len(units) <= ngram:
        return {sep.join(units)}
    return {sep.join(units[i:i + ngram]) for i in range(len(units) - ngram + 1)}


def _lsh(ds: Any, threshold: float, num_perm: int) -> tuple[Any, float]:
    """datasketch's ``MinHashLSH`` for ``threshold``; where that many permutations make fewer than two bands at so high
    a threshold (datasketch refuses it), the LSH is built for a lower one (in steps of 0.05): it then proposes more
    candidates, and every candidate is still checked against ``threshold``. Returns the LSH and its threshold."""
    t = threshold
    while True:
        try:
            return ds.MinHashLSH(threshold=t, num_perm=num_perm), t
        except ValueError:
            if t <= 0.5:
                raise
            t = round(max(0.5, t - 0.05), 2)


def _datasketch() -> Any:
    try:
        import datasketch
    except ImportError as exc:
        raise MissingDependencyError("datasketch", "data.dedup", INSTALL) from exc
    return datasketch


@technique("data.dedup")
class Dedup(DataTechnique):
    """Exact and near-duplicate removal: normalized-text hashes, then MinHash LSH (datasketch) on word or
    character n-gram shingles (Broder, 1997; as in Lee et al., 2022, "Deduplicating Training Data Makes Language
    Models Better").

    Records are read in order; each is dropped when its normalized text (:func:`normalize`) hashes like a kept one's
    (an exact duplicate) or when MinHash LSH finds a kept record whose estimated Jaccard similarity is at least
    ``threshold`` (a near-duplicate; LSH candidates are checked against the estimate, so LSH's false positives are
    not dropped). The first record of each cluster is kept. MinHash uses datasketch's fixed seed: the result does not
    depend on the spec's seed. No model is used.
    """

    Params = DedupParams
    uses_reference = False
    requires = ("datasketch",)

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        ds = _datasketch()
        p = self.params
        if not texts:
            raise UsageError("data.dedup got no texts to deduplicate")
        lsh, lsh_threshold = _lsh(ds, p.threshold, p.num_perm)
        seen: dict[str, int] = {}  # normalized-text digest -> index of the kept record
        sketches: dict[int, Any] = {}
        kept: list[int] = []
        empty = exact = near = 0
        examples: list[DedupExample] = []
        for i, record in enumerate(texts):
            norm = normalize(record_text(record))
            if not norm:
                empty += 1
                continue
            digest = hashlib.sha1(norm.encode("utf-8")).hexdigest()
            if digest in seen:
                exact += 1
                if len(examples) < p.examples:
                    examples.append(DedupExample("exact", _clip(record_text(record)),
                                                 _clip(record_text(texts[seen[digest]])), 1.0))
                continue
            sketch = ds.MinHash(num_perm=p.num_perm, seed=1)
            sketch.update_batch([s.encode("utf-8") for s in sorted(shingles(norm, p.ngram, p.shingle))])
            best, best_j = None, 0.0
            for j in sorted(lsh.query(sketch)):
                sim = float(sketches[j].jaccard(sketch))
                if sim > best_j:
                    best, best_j = j, sim
            if best is not None and best_j >= p.threshold:
                near += 1
                if len(examples) < p.examples:
                    examples.append(DedupExample("near", _clip(record_text(record)), _clip(record_text(texts[best])),
                                                 round(best_j, 4)))
                continue
            seen[digest] = i
            sketches[i] = sketch
            lsh.insert(i, sketch)
            kept.append(i)
        if not kept:
            raise UsageError("data.dedup got no non-empty texts to deduplicate")
        method = (f"MinHash of {p.shingle} {p.ngram}-grams ({p.num_perm} permutations), LSH with {lsh.b} bands of "
                  f"{lsh.r} rows (candidates from Jaccard {lsh_threshold}), checked against the threshold")
        report = DedupReport(len(texts), empty, exact, near, len(kept), p.threshold, method, tuple(examples))
        return Selected([texts[i] for i in kept], report)


# -- data.dsir --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DsirParams:
    """Params of ``data.dsir``.

    Attributes:
        target: the dataset whose distribution the selection moves toward: a dataset of the spec, or a builtin one
            (default ``synthetic``, the builtin corpus; name your own).
        keep: fraction of the texts kept (when ``k`` is unset; at least one text).
        k: number of texts kept (overrides ``keep``; all of them when the pool is smaller).
        num_buckets: hash buckets of the n-gram features.
        ngrams: the longest n-gram hashed (2: unigrams and bigrams, as in the paper).
    """

    target: str = "synthetic"
    keep: float = 0.5
    k: int | None = None
    num_buckets: int = 10000
    ngrams: int = 2

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("target must name the dataset to select toward (a dataset of the spec or a builtin one)")
        _check_size(self.keep, self.k)
        if self.num_buckets < 2:
            raise ValueError(f"num_buckets must be >= 2, got {self.num_buckets}")
        if not 1 <= self.ngrams <= 3:
            raise ValueError(f"ngrams must be 1, 2 or 3, got {self.ngrams}")


@dataclass(frozen=True)
class DsirReport:
    """What importance resampling kept.

    Attributes:
        n_in: non-empty texts in the pool.
        n_target: non-empty texts of the target.
        n_kept: texts kept.
        mean_log_weight_kept: mean log importance weight (log p_target(x) - log p_raw(x)) of the kept texts.
        mean_log_weight_dropped: the same for the dropped ones (None when nothing was dropped).
        kl_pool: KL(target || pool) of the hashed n-gram distributions, before selection.
        kl_kept: KL(target || kept set), after selection.
        kl_random: KL(target || a random subset of the same size), the chance baseline (seeded). Compare ``kl_kept``
            with it: a set much smaller than the pool covers fewer n-grams, so ``kl_kept`` can exceed ``kl_pool``
            while the selection still beats chance.
        cosine_pool: cosine similarity of the target's and the pool's hashed n-gram count vectors.
        cosine_kept: the same for the kept set.
        features: the features (e.g. ``hashed 1-2-grams, 10000 buckets``) and the library that made them.
    """

    n_in: int
    n_target: int
    n_kept: int
    mean_log_weight_kept: float
    mean_log_weight_dropped: float | None
    kl_pool: float
    kl_kept: float
    kl_random: float
    cosine_pool: float
    cosine_kept: float
    features: str


#: weight of the uniform distribution mixed into both sides of a KL (keeps it finite where a bucket is empty)
KL_SMOOTHING = 1e-3


def kl_divergence(p: np.ndarray, q: np.ndarray, smoothing: float = KL_SMOOTHING) -> float:
    """KL(p || q) in nats of two count (or probability) vectors, each normalized and mixed with the uniform
    distribution at weight ``smoothing``."""
    def dist(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return (1 - smoothing) * v / v.sum() + smoothing / len(v)

    a, b = dist(p), dist(q)
    return float(np.sum(a * (np.log(a) - np.log(b))))


def cosine(p: np.ndarray, q: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is zero)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom else 0.0


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` indices sampled without replacement with probability proportional to ``exp(log_weights)`` (the Gumbel
    top-k trick: the ``k`` largest ``log_weight + Gumbel noise``), in ascending order."""
    keys = np.asarray(log_weights, dtype=np.float64) + rng.gumbel(size=len(log_weights))
    order = np.argsort(-keys, kind="stable")
    return sorted(int(i) for i in order[:k])


def _data_selection() -> Any:
    try:
        import data_selection
    except ImportError as exc:
        raise MissingDependencyError("data-selection", "data.dsir", INSTALL) from exc
    return data_selection


def target_records(name: str, ctx: TechniqueContext) -> list[Any]:
    """The target dataset: the step's ``target`` input (the planner's dataset node), else ``ctx.datasets[name]``, else
    a builtin dataset (1000 records, the spec's seed).

    Raises:
        UsageError: the name is none of these.
    """
    if "target" in ctx.inputs:
        return list(ctx.inputs["target"])
    if name in ctx.datasets:
        return list(ctx.datasets[name])
    if name in BUILTIN_DATASETS:
        return builtin_records(name, 1000, ctx.seed)
    known = list(dict.fromkeys([*ctx.datasets, *BUILTIN_DATASETS]))
    raise UsageError(f"data.dsir.target: {name!r} names no dataset (datasets: {', '.join(known)})")


@technique("data.dsir")
class Dsir(DataTechnique):
    """Importance resampling toward a target dataset with hashed n-gram features (DSIR: Xie et al., 2023, "Data
    Selection for Language Models via Importance Resampling"), through princeton-nlp's ``data-selection`` package.

    Every text's unigrams and bigrams (lower-cased, nltk's WordPunct tokens) are hashed into ``num_buckets`` buckets;
    a bag-of-n-grams model is fitted on the target dataset (``target``) and one on the pool (the records selected
    from), and each text gets the log importance weight log p_target(x) - log p_raw(x). ``k`` texts (or the ``keep``
    fraction) are then drawn without replacement with probability proportional to the weights, by the Gumbel top-k
    trick, seeded with the spec's seed.

    The package's ``HashedNgramDSIR`` does the featurizing, the fitting of both models and the importance weights
    (on the in-memory texts: its loaders are handed the lists, one process, no length filter). Its own ``resample``
    is not used: it draws the Gumbel noise from numpy's global, unseeded generator and writes and moves JSONL shards;
    the Gumbel top-k draw here is the same computation with a seeded generator, in memory. No model is used.
    """

    Params = DsirParams
    uses_reference = False
    requires = ("data-selection", "nltk")
    dataset_params: ClassVar[tuple[str, ...]] = ("target",)

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return True

    @classmethod
    def local_data(cls, params: Any, datasets: Sequence[str]) -> tuple[Path, ...]:
        """None: the target is a dataset input. A ``target`` that names no dataset is refused here (at plan time)."""
        if params.target not in datasets:
            known = list(dict.fromkeys([*datasets, *BUILTIN_DATASETS]))
            raise UsageError(f"data.dsir.target: {params.target!r} names no dataset (datasets: {', '.join(known)})")
        return ()

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        lib = _data_selection()
        p = self.params
        pool = _non_empty(texts, "data.dsir")
        target = [t for t in (record_text(r) for r in target_records(p.target, ctx)) if t.strip()]
        if not target:
            raise UsageError(f"data.dsir.target: the dataset {p.target!r} has no non-empty texts")
        pool_texts = [record_text(r) for r in pool]
        with tempfile.TemporaryDirectory(dir=_scratch(ctx)) as cache, contextlib.redirect_stderr(io.StringIO()):
            dsir = lib.HashedNgramDSIR(
                ["pool"], ["target"], cache,
                raw_load_dataset_fn=lambda _path: iter(pool_texts), raw_parse_example_fn=None,
                target_load_dataset_fn=lambda _path: iter(target), target_parse_example_fn=None,
                num_proc=1, ngrams=p.ngrams, num_buckets=p.num_buckets, min_example_length=0)
            dsir.fit_importance_estimator(num_tokens_to_fit="all")
            log_w = np.empty(len(pool_texts))
            feats: list[tuple[np.ndarray, np.ndarray]] = []  # sparse hashed n-gram counts of each text
            for i, text in enumerate(pool_texts):
                dense = dsir.featurizer(text)
                log_w[i] = float(dsir.importance_estimator(dense))
                idx = np.flatnonzero(dense)
                feats.append((idx, dense[idx]))
            target_probs, raw_probs = np.asarray(dsir.target_probs), np.asarray(dsir.raw_probs)
        n_keep = n_to_keep(len(pool), p.keep, p.k)
        rng = np.random.default_rng(ctx.seed)
        kept = gumbel_top_k(log_w, n_keep, rng)
        chosen = set(kept)
        dropped = [i for i in range(len(pool)) if i not in chosen]
        random_subset = sorted(int(i) for i in rng.permutation(len(pool))[:n_keep])

        def counts(indices: Sequence[int]) -> np.ndarray:
            total = np.zeros(p.num_buckets)
            for i in indices:
                np.add.at(total, feats[i][0], feats[i][1])
            return total

        kept_counts = counts(kept)
        report = DsirReport(
            len(pool), len(target), len(kept), float(log_w[kept].mean()),
            float(log_w[dropped].mean()) if dropped else None,
            kl_divergence(target_probs, raw_probs), kl_divergence(target_probs, kept_counts),
            kl_divergence(target_probs, counts(random_subset)), cosine(target_probs, raw_probs),
            cosine(target_probs, kept_counts),
            f"hashed 1-{p.ngrams}-grams, {p.num_buckets} buckets (data-selection {lib.__version__})")
        return Selected([pool[i] for i in kept], report)


def _scratch(ctx: TechniqueContext) -> str | None:
    """The step's work directory (made if absent), where the package writes its cache; None: the system's temp."""
    try:
        Path(ctx.workdir).mkdir(parents=True, exist_ok=True)
        return str(ctx.workdir)
    except OSError:
        return None


# -- data.diversity ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiversityParams:
    """Params of ``data.diversity``.

    Attributes:
        keep: fraction of the texts kept (when ``k`` is unset; at least one text).
        k: number of texts kept (overrides ``keep``; all of them when there are fewer).
        max_length: tokens of each text embedded (longer texts are truncated).
        batch_size: texts per forward pass.
    """

    keep: float = 0.5
    k: int | None = None
    max_length: int = 256
    batch_size: int = 8

    def __post_init__(self) -> None:
        _check_size(self.keep, self.k)
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DiversityReport:
    """What diversity selection kept.

    Attributes:
        n_in: non-empty texts embedded.
        n_kept: texts kept.
        covering_radius: the largest distance of any text to its nearest kept text (unit-normalized, centred
            embeddings; 0 when every text is kept, at most 2).
        random_covering_radius: the mean covering radius of 5 random subsets of the same size (fixed seed), the
            chance baseline.
        embedding_model: the model that embedded the texts (its source and lineage) and how.
    """

    n_in: int
    n_kept: int
    covering_radius: float
    random_covering_radius: float
    embedding_model: str


def embed(reference: ModelHandle, texts: Sequence[str], max_length: int = 256, batch_size: int = 8) -> np.ndarray:
    """Mean-pooled last hidden states of ``reference``'s torch model, one row per text (float64), in order.

    Texts are batched by length (right-padded, the padding masked out of the attention and of the mean), which
    does not change a text's embedding beyond float rounding.
    """
    import torch

    tok = reference.tokenizer
    ids = [tok(t, add_special_tokens=False, truncation=True, max_length=max_length).input_ids or
           [tok.eos_token_id if tok.eos_token_id is not None else 0] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    out: list[np.ndarray | None] = [None] * len(ids)
    device = reference.device
    reference.activate()
    model = reference.model
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in batch], device=device)
                mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch], device=device)
                hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1)
                for row, i in enumerate(batch):
                    out[i] = pooled[row].float().cpu().numpy().astype(np.float64)
    finally:
        model.train(was_training)
    return np.stack([v for v in out if v is not None])


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred on their mean and scaled to unit length (mean-pooled hidden states share a large common
    direction, which would otherwise dominate every distance); a zero row stays zero."""
    x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def k_center(x: np.ndarray, k: int) -> list[int]:
    """Greedy k-center (farthest-point) selection (Gonzalez, 1985): start at the row nearest the mean, then add the
    row farthest from every row chosen so far, ``k`` rows in all; ties go to the lowest index. Returns the chosen
    indices in ascending order. Its covering radius is at most twice the best possible for ``k`` centres."""
    first = int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    chosen = [first]
    nearest = np.linalg.norm(x - x[first], axis=1)
    while len(chosen) < min(k, len(x)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[nxt], axis=1))
    return sorted(chosen)


def covering_radius(x: np.ndarray, chosen: Sequence[int]) -> float:
    """The largest distance of any row of ``x`` to its nearest row among ``chosen``."""
    nearest = np.full(len(x), np.inf)
    for c in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(x - x[c], axis=1))
    return float(nearest.max())


@technique("data.diversity")
class Diversity(DataTechnique):
    """Diversity selection: greedy k-center (farthest-point) selection on the reference model's mean-pooled last
    hidden states (the core-set selection of Sener & Savarese, 2018), keeping ``k`` texts or a ``keep`` fraction.

    k-center rather than facility location: it minimizes exactly what the report measures, the covering radius (the
    greedy choice is within a factor 2 of the optimum), in O(n k) distance computations and O(n) memory, while
    facility location's greedy needs the n x n similarity matrix. Its known bias: the farthest points come first, so
    outliers are kept (pair it with ``data.dedup`` or ``data.perplexity_filter`` before it where that matters).

    The reference model is ``ctx.inputs["reference"]`` (the path's base model by default) and must be a torch model
    (its hidden states are read): another backend is refused. Embeddings are centred and unit-normalized; the start
    is the text nearest the mean and ties go to the earliest text, so the selection is deterministic and does not
    depend on the seed.
    """

    Params = DiversityParams
    requires = ("torch", "transformers")
    role_formats: ClassVar[dict[str, tuple[str, ...]]] = {"reference": F.TORCH_BACKEND}

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        reference = ctx.inputs.get("reference")
        if not isinstance(reference, ModelHandle):
            raise UsageError("data.diversity needs a reference model as input `reference:` (it embeds the texts)")
        if reference.backend != "torch":
            raise UsageError(f"data.diversity embeds with a torch model's hidden states, and its `reference:` is a "
                             f"{reference.format} model on {reference.backend}: name a torch model as `reference:`")
        p = self.params
        pool = _non_empty(texts, "data.diversity")
        x = unit_rows(embed(reference, [record_text(r) for r in pool], p.max_length, p.batch_size))
        n_keep = n_to_keep(len(pool), p.keep, p.k)
        kept = k_center(x, n_keep)
        rng = np.random.default_rng(0)
        random_radius = float(np.mean([covering_radius(x, rng.permutation(len(pool))[:n_keep].tolist()) for _ in range(5)]))
        steps = " -> ".join(s.technique for s in reference.lineage) or "base"
        report = DiversityReport(len(pool), len(kept), covering_radius(x, kept), random_radius,
                                 f"{reference.source} ({steps}, {reference.format}): mean-pooled last hidden states")
        return Selected([pool[i] for i in kept], report)


# -- data.random --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomParams:
    """Params of ``data.random``.

    Attributes:
        keep: fraction of the texts kept (when ``k`` is unset; at least one text).
        k: number of texts kept (overrides ``keep``; all of them when there are fewer).
    """

    keep: float = 0.5
    k: int | None = None

    def __post_init__(self) -> None:
        _check_size(self.keep, self.k)


@dataclass(frozen=True)
class RandomReport:
    """What the random selection kept.

    Attributes:
        n_in: non-empty texts.
        n_kept: texts kept.
        method: how they were drawn.
    """

    n_in: int
    n_kept: int
    method: str


@technique("data.random")
class RandomSelection(DataTechnique):
    """A uniform random subset of the texts, seeded by the spec: the control every other selection is compared to
    (the same size, the same downstream step)."""

    Params = RandomParams
    uses_reference = False
    requires = ("numpy",)

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return True

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        texts = _non_empty(texts, self.name)
        n = n_to_keep(len(texts), self.params.keep, self.params.k)
        kept = sorted(np.random.default_rng(ctx.seed).choice(len(texts), size=n, replace=False).tolist())
        return Selected([texts[i] for i in kept], RandomReport(len(texts), n, f"numpy default_rng({ctx.seed}).choice "
                                                                              "without replacement"))
