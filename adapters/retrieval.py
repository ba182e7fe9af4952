"""Passage retrieval for retrieval-augmented generation: a BM25 index over a corpus of passages (bm25s), saved to
and loaded from a directory, and the local corpora it can be built over.

* :class:`BM25Index`: bm25s's sparse BM25 index (Robertson & Zaragoza, 2009; Lucene's variant by default) over
  passages tokenized by bm25s (lower-cased word tokens, English stopwords removed). :meth:`BM25Index.search` ranks by
  score with ties broken by corpus order, so a ranking is reproducible, and leaves out passages that share no term
  with the query (score 0).
* :func:`read_squad`: the official SQuAD v1.1 JSON: its paragraphs (the corpus of the open-book task) and its
  questions, each with the index of its gold paragraph and its gold answers.
* :func:`recall_at_k`: the share of queries whose gold passage is among the top ``k`` retrieved.

Nothing here downloads anything; the index is built from text the caller hands over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from adapters.errors import MissingDependencyError, ModelLoadError, UsageError

#: the manifest of a saved index (written last: its presence marks a complete index)
INDEX_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25s"
#: the SQuAD v1.1 dev file under a benchmark data directory (the layout of ../shared/benchmarks)
SQUAD_FILE = "squad/dev-v1.1.json"
#: corpora read from local benchmark files, by name -> file under the data directory
LOCAL_CORPORA = {"squad": SQUAD_FILE}


@dataclass(frozen=True)
class BM25Settings:
    """How a BM25 index scores (bm25s's parameters) and tokenizes.

    Attributes:
        k1: term-frequency saturation.
        b: document-length normalization (0: none, 1: full).
        method: bm25s's scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stopwords: ``en`` removes bm25s's English stopwords; ``none`` keeps every token.
    """

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise MissingDependencyError("bm25s", "infer.rag's BM25 retriever", "pip install 'bm25s==0.3.16'") from exc
    return bm25s


def passages_digest(passages: Sequence[str]) -> str:
    """sha256 of the passages in order (first 16 hex digits): the corpus part of an index's cache key."""
    h = hashlib.sha256()
    for p in passages:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def index_key(passages: Sequence[str], settings: BM25Settings) -> str:
    """The cache key of a BM25 index: the corpus content, the settings and the bm25s version."""
    from importlib import metadata

    blob = json.dumps({"passages": passages_digest(passages), "retriever": "bm25", "settings": asdict(settings),
                       "bm25s": metadata.version("bm25s")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class BM25Index:
    """A bm25s BM25 index over ``passages`` (build it with :meth:`build`, or :meth:`load` a saved one).

    Attributes:
        passages: the corpus, in order (a passage's id is its position).
        settings: the scoring and tokenizing settings.
        key: the cache key (:func:`index_key`).
    """

    def __init__(self, passages: list[str], settings: BM25Settings, retriever: Any, key: str):
        self.passages, self.settings, self.retriever, self.key = passages, settings, retriever, key

    @classmethod
    def build(cls, passages: Sequence[str], settings: BM25Settings) -> BM25Index:
        """Tokenize and index ``passages``.

        Raises:
            UsageError: the corpus is empty.
        """
        if not passages:
            raise UsageError("a retrieval corpus needs at least one passage, got none")
        bm25s = _bm25s()
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(_tokens(list(passages), settings), show_progress=False)
        return cls(list(passages), settings, retriever, index_key(passages, settings))

    def save(self, directory: str | Path) -> Path:
        """Write the index (bm25s's own files), the passages and the manifest into ``directory``, atomically: a
        complete index appears at once or not at all."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            self.retriever.save(str(tmp / BM25_DIR), show_progress=False)
            with (tmp / PASSAGES_FILE).open("w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(p) + "\n" for p in self.passages)
            manifest = {"key": self.key, "retriever": "bm25", "settings": asdict(self.settings),
                        "passages": len(self.passages), "passages_sha256": passages_digest(self.passages)}
            (tmp / INDEX_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """An index written by :meth:`save`.

        Raises:
            ModelLoadError: ``directory`` holds no complete index.
        """
        directory = Path(directory)
        if not (directory / INDEX_FILE).is_file():
            raise ModelLoadError(f"no retrieval index in {directory} (its {INDEX_FILE} is missing): rebuild it by "
                                 f"applying infer.rag again")
        manifest = json.loads((directory / INDEX_FILE).read_text())
        passages = [json.loads(line) for line in (directory / PASSAGES_FILE).read_text(encoding="utf-8").splitlines()]
        retriever = _bm25s().BM25.load(str(directory / BM25_DIR), show_progress=False)
        return cls(passages, BM25Settings(**manifest["settings"]), retriever, str(manifest["key"]))

    @classmethod
    def is_saved(cls, directory: str | Path) -> bool:
        return (Path(directory) / INDEX_FILE).is_file()

    def search(self, query: str, k: int) -> list[int]:
        """Ids of the (at most) ``k`` best passages for ``query``, best first; ties keep corpus order, and passages
        with score 0 (no query term in common) are left out."""
        import numpy as np

        tokens = _tokens([query], self.settings)[0]
        if not tokens:
            return []
        scores = np.asarray(self.retriever.get_scores(tokens))
        order = np.argsort(-scores, kind="stable")[:k]
        return [int(i) for i in order if scores[i] > 0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """:meth:`search` for each query."""
        return [self.search(q, k) for q in queries]


def _tokens(texts: list[str], settings: BM25Settings) -> list[list[str]]:
    stopwords = None if settings.stopwords == "none" else settings.stopwords
    out = _bm25s().tokenize(texts, lower=True, stopwords=stopwords, return_ids=False, show_progress=False)
    return [list(t) for t in out]


def recall_at_k(ranked: Sequence[Sequence[int]], gold: Sequence[int], k: int) -> float:
    """The share of queries whose gold passage id is among the first ``k`` of their ranking.

    Raises:
        ValueError: ``ranked`` and ``gold`` differ in length, or there are no queries.
    """
    if len(ranked) != len(gold) or not gold:
        raise ValueError(f"recall@k needs one ranking per gold id (got {len(ranked)} and {len(gold)})")
    return sum(g in list(r)[:k] for r, g in zip(ranked, gold, strict=True)) / len(gold)


# -- SQuAD --------------------------------------------------------------------------------------------------------
class SquadQuestion(NamedTuple):
    """One SQuAD question.

    Attributes:
        id: the official question id.
        question: the question text.
        answers: the gold answer texts (1-6, duplicates kept as in the file).
        paragraph: the position of its gold paragraph in :attr:`Squad.paragraphs`.
        title: the Wikipedia article the paragraph is from.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    paragraph: int
    title: str


class Squad(NamedTuple):
    """A SQuAD v1.1 file: its paragraphs in file order and its questions in file order."""

    paragraphs: list[str]
    questions: list[SquadQuestion]


def read_squad(path: str | Path) -> Squad:
    """The paragraphs and questions of an official SQuAD v1.1 JSON file (``data[].paragraphs[].qas[]``).

    Raises:
        UsageError: the file is missing or not in the SQuAD layout.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"SQuAD file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        paragraphs: list[str] = []
        questions: list[SquadQuestion] = []
        for article in raw["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    questions.append(SquadQuestion(qa["id"], qa["question"], tuple(a["text"] for a in qa["answers"]),
                                                   len(paragraphs), article["title"]))
                paragraphs.append(para["context"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a SQuAD v1.1 file (data[].paragraphs[].context/qas[]): {exc!r}") from None
    return Squad(paragraphs, questions)


def local_corpus_file(name: str, data_dir: str | Path | None = None) -> Path:
    """The file of local corpus ``name`` (:data:`LOCAL_CORPORA`) under ``data_dir``, else ``$SLM_DATA_DIR``.

    Raises:
        UsageError: no data directory is named, or the file is not there.
    """
    relative = LOCAL_CORPORA[name]
    root = data_dir or os.environ.get("SLM_DATA_DIR")
    if not root:
        raise UsageError(f"corpus {name!r} reads {relative} from the local benchmark data: set the step's data_dir "
                         f"or SLM_DATA_DIR to that directory (the layout of ../shared/benchmarks)")
    path = Path(str(root)).expanduser() / relative
    if not path.is_file():
        raise UsageError(f"corpus {name!r}: {path} not found (the data directory {str(root)!r} must hold {relative})")
    return path
