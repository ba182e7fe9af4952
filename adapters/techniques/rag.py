"""Retrieval-augmented generation (Lewis et al., 2020): every prompt gets the passages a retriever finds for it.

``infer.rag`` builds a BM25 index (bm25s, :mod:`adapters.retrieval`) over a named corpus and gives the handle a
prompt hook (:class:`~adapters.handle.PromptHook`): before each generation, the query is taken from the prompt (the
text after its last ``Question:``, by ``query_pattern``; the whole prompt when there is none), the top ``k``
passages are retrieved for it, and ``template`` with the passages is inserted where that question starts (so
few-shot examples and a chat template's turn markers stay in place). Log-likelihood scoring and token-id prompts
are not changed, and neither are the weights: the harness re-applies the step instead of storing a model.

The corpus is a dataset of the spec (``datasets: {docs: {path: FILE}}`` then ``corpus: docs``), a builtin one
(``synthetic``, ``instructions``), or a local benchmark corpus: ``squad``, the 2,067 paragraphs of SQuAD v1.1 dev
(``squad/dev-v1.1.json`` under ``data_dir`` or ``$SLM_DATA_DIR``). Any other name is refused at plan time.

The index is cached in the step's work directory under a key of the corpus content, the retriever settings and
the bm25s version: applying the step again (as the harness does each time it loads the node) loads it instead
of rebuilding it. When the corpus has questions with a gold passage (``squad``), the report gives the retriever's
recall@k over all of them; the quality suite reports recall@k on the very questions it evaluates
(:mod:`suites.retrieval`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from adapters import formats as F
from adapters.corpus import BUILTIN_DATASETS, builtin_records, record_text
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.retrieval import (
    LOCAL_CORPORA,
    BM25Index,
    BM25Settings,
    index_key,
    local_corpus_file,
    read_squad,
    recall_at_k,
)
from adapters.technique import Applied, Technique, TechniqueContext, technique

#: where the index is cached, under the step's work directory
INDEX_DIR = "rag-index"
#: the recall@k cut-offs the report gives besides the step's own ``k``
RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class RagParams:
    """Params of ``infer.rag``.

    Attributes:
        corpus: the passages to retrieve from: a dataset of the spec, a builtin dataset (``synthetic``,
            ``instructions``), or ``squad`` (the SQuAD v1.1 dev paragraphs from the local benchmark data).
        k: passages put into each prompt (the top ``k``; fewer when fewer share a term with the query).
        retriever: ``bm25`` (bm25s's sparse BM25).
        template: the text inserted before the question; ``{passages}`` becomes the passages, one per line.
        query_pattern: a regular expression with one group: its last match in the prompt gives the query (the
            group) and the place where the passages go (the match's start); without a match the whole prompt is
            the query and the passages go first.
        k1: BM25 term-frequency saturation (>= 0).
        b: BM25 length normalization, in [0, 1].
        method: bm25s's BM25 variant.
        stopwords: ``en`` drops English stopwords from passages and queries; ``none`` keeps them.
        data_dir: the local benchmark data directory for ``squad`` (None: ``$SLM_DATA_DIR``).
    """

    corpus: str = "synthetic"
    k: int = 3
    retriever: Literal["bm25"] = "bm25"
    template: str = "Context: {passages}\n\n"
    query_pattern: str = r"Question:\s*(.+)"
    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stopwords: Literal["en", "none"] = "en"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("corpus must name a dataset or a local corpus, got an empty name")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if "{passages}" not in self.template:
            raise ValueError(f"template must contain {{passages}}, got {self.template!r}")
        try:
            groups = re.compile(self.query_pattern).groups
        except re.error as exc:
            raise ValueError(f"query_pattern {self.query_pattern!r} is not a regular expression ({exc})") from None
        if groups < 1:
            raise ValueError(f"query_pattern must have one group (the query), got {self.query_pattern!r}")
        if self.k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must be in [0, 1], got {self.b}")

    @property
    def settings(self) -> BM25Settings:
        return BM25Settings(self.k1, self.b, self.method, self.stopwords)


@dataclass(frozen=True)
class RagReport:
    """What ``infer.rag`` built.

    Attributes:
        corpus: the corpus name.
        passages: passages indexed.
        retriever: the retriever (``bm25``) and its library version.
        k: passages per prompt.
        index_key: the index's cache key (corpus content, settings, bm25s version).
        index_built: True when the index was built now, False when it was loaded from the step's cache.
        index_s: seconds to build or load it.
        recall: recall@k of the retriever over the corpus's own questions (``squad``: every dev question, its gold
            paragraph among the top k), by cut-off (``recall_at_1``, ``recall_at_3``, ...); None for a corpus
            without questions.
        questions: questions behind ``recall``.
    """

    corpus: str
    passages: int
    retriever: str
    k: int
    index_key: str
    index_built: bool
    index_s: float
    recall: dict[str, float] | None
    questions: int


class Retrieval(NamedTuple):
    """What the hook retrieved for one prompt: the query, the passage ids (best first), their texts, and where in
    the prompt the passages go."""

    query: str
    ids: list[int]
    passages: list[str]
    at: int


class RetrievalHook:
    """The prompt hook ``infer.rag`` gives a handle: retrieve for the prompt's question, insert the passages."""

    technique = "infer.rag"

    def __init__(self, index: BM25Index, k: int, template: str, query_pattern: str, corpus: str):
        self.index, self.k, self.template, self.corpus = index, k, template, corpus
        self.query_pattern = query_pattern
        self._pattern = re.compile(query_pattern)

    def retrieve(self, prompt: str) -> Retrieval:
        """The query of ``prompt`` and the top-``k`` passages for it."""
        matches = list(self._pattern.finditer(prompt))
        query, at = (matches[-1].group(1), matches[-1].start()) if matches else (prompt, 0)
        ids = self.index.search(query, self.k)
        return Retrieval(query, ids, [self.index.passages[i] for i in ids], at)

    def __call__(self, prompt: str) -> str:
        found = self.retrieve(prompt)
        if not found.ids:
            return prompt
        block = self.template.replace("{passages}", "\n".join(found.passages))
        return prompt[: found.at] + block + prompt[found.at:]

    def describe(self) -> dict[str, Any]:
        return {"corpus": self.corpus, "k": self.k, "template": self.template, "query_pattern": self.query_pattern,
                "retriever": "bm25", "index": {"key": self.index.key, "passages": len(self.index.passages),
                                               "settings": asdict(self.index.settings)}}

    def save(self, directory: Path) -> None:
        self.index.save(directory)


class Corpus(NamedTuple):
    """Passages to index and, where the corpus has them, questions with the id of their gold passage."""

    passages: list[str]
    queries: list[str]
    gold: list[int]


def corpus_of(p: RagParams, ctx: TechniqueContext) -> Corpus:
    """The corpus a step retrieves from: its ``corpus`` input (the planner's dataset node), else ``ctx.datasets``,
    else a local corpus (``squad``) or a builtin dataset.

    Raises:
        UsageError: the name is none of these.
    """
    records: list[Any] | None = None
    if "corpus" in ctx.inputs:
        records = list(ctx.inputs["corpus"])
    elif p.corpus in ctx.datasets:
        records = list(ctx.datasets[p.corpus])
    elif p.corpus in LOCAL_CORPORA:
        squad = read_squad(local_corpus_file(p.corpus, p.data_dir))
        return Corpus(squad.paragraphs, [q.question for q in squad.questions], [q.paragraph for q in squad.questions])
    elif p.corpus in BUILTIN_DATASETS:
        records = builtin_records(p.corpus, 1000, ctx.seed)
    if records is None:
        raise UsageError(unknown_corpus(p.corpus, list(ctx.datasets)))
    passages = [t for t in (record_text(r).strip() for r in records) if t]
    return Corpus(passages, [], [])


def unknown_corpus(name: str, datasets: list[str]) -> str:
    known = list(dict.fromkeys([*datasets, *BUILTIN_DATASETS]))
    return (f"infer.rag.corpus: unknown corpus {name!r} (datasets: {', '.join(known)}; local benchmark corpora: "
            f"{', '.join(LOCAL_CORPORA)})")


def cached_index(passages: list[str], settings: BM25Settings, workdir: Path) -> tuple[BM25Index, bool]:
    """The index of ``passages`` from ``workdir``'s cache (keyed by content and settings), or built and cached;
    and whether it was built."""
    directory = workdir / INDEX_DIR / index_key(passages, settings)
    if BM25Index.is_saved(directory):
        return BM25Index.load(directory), False
    index = BM25Index.build(passages, settings)
    index.save(directory)
    return index, True


def corpus_recall(index: BM25Index, corpus: Corpus, k: int, workdir: Path) -> dict[str, float] | None:
    """recall@k over the corpus's questions at ``k`` and :data:`RECALL_KS` (cached next to the index)."""
    if not corpus.queries:
        return None
    ks = sorted({min(c, len(index.passages)) for c in (*RECALL_KS, k)})
    cache = workdir / INDEX_DIR / index.key / f"recall-{'-'.join(map(str, ks))}.json"
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    ranked = index.search_many(corpus.queries, max(ks))
    recall = {f"recall_at_{c}": recall_at_k(ranked, corpus.gold, c) for c in ks}
    cache.write_text(json.dumps(recall))
    return recall


@technique("infer.rag")
class Rag(Technique):
    """Retrieval-augmented generation: BM25 (bm25s) top-k passages from a named corpus put into every prompt."""

    Params = RagParams
    requires = ("bm25s",)
    inference_time = True
    uses_seed = False
    accepts = F.EVALUABLE
    dataset_params: ClassVar[tuple[str, ...]] = ("corpus",)

    @classmethod
    def local_data(cls, params: Any, datasets: Any) -> tuple[Path, ...]:
        if params.corpus in datasets:
            return ()
        if params.corpus in LOCAL_CORPORA:
            try:
                return (local_corpus_file(params.corpus, params.data_dir),)
            except UsageError as exc:
                raise UsageError(f"infer.rag.corpus: {exc}") from None
        raise UsageError(unknown_corpus(params.corpus, list(datasets)))

    @classmethod
    def load_prompt_hook(cls, directory: Path, described: dict[str, Any]) -> RetrievalHook:
        """The hook :meth:`RetrievalHook.save` wrote to ``directory``, with the settings ``described``."""
        return RetrievalHook(BM25Index.load(directory), int(described["k"]), str(described["template"]),
                             str(described["query_pattern"]), str(described["corpus"]))

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        corpus = corpus_of(p, ctx)
        started = time.perf_counter()
        index, built = cached_index(corpus.passages, p.settings, Path(ctx.workdir))
        index_s = time.perf_counter() - started
        recall = corpus_recall(index, corpus, p.k, Path(ctx.workdir))
        hook = RetrievalHook(index, p.k, p.template, p.query_pattern, p.corpus)
        version = self.library_versions().get("bm25s", "")
        report = RagReport(p.corpus, len(index.passages), f"bm25 (bm25s {version}, {p.method})", p.k, index.key,
                           built, round(index_s, 3), recall, len(corpus.queries))
        return Applied(handle.derive(prompt_hooks=(*handle.prompt_hooks, hook)), report)
