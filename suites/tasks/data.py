"""Local standard-benchmark files, converted to the schema of the Hugging Face dataset lm-eval's task uses.

Each converter reads one layout found in ``../shared/benchmarks`` (see its README) and returns the documents
lm-eval's own task definition expects, so the prompts, choices and metrics of ``suites/tasks/*.yaml`` (copied
from lm-eval's YAMLs) apply unchanged. Missing files raise a :class:`UsageError` naming what is expected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from adapters.errors import UsageError

Doc = dict[str, Any]


class Benchmark(NamedTuple):
    """A local benchmark: the files it reads (relative to the data dir) and its converter."""

    files: tuple[str, ...]
    convert: Callable[[Path], list[Doc]]


def _jsonl(path: Path) -> Iterator[Doc]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _arc(file: str) -> Callable[[Path], list[Doc]]:
    def convert(root: Path) -> list[Doc]:
        return [{"id": d["id"], "question": d["question"]["stem"], "answerKey": d["answerKey"],
                 "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                             "label": [c["label"] for c in d["question"]["choices"]]}}
                for d in _jsonl(root / file)]
    return convert


def piqa(root: Path) -> list[Doc]:
    """PIQA validation: the jsonl plus the aligned labels file."""
    labels = (root / "piqa" / "valid-labels.lst").read_text().split()
    docs = list(_jsonl(root / "piqa" / "valid.jsonl"))
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(lab)}
            for d, lab in zip(docs, labels, strict=True)]


def hellaswag(root: Path) -> list[Doc]:
    """llama.cpp's text layout, 6 lines per item: ``activity_label: ctx`` / label / four endings."""
    lines = (root / "hellaswag" / "hellaswag_val_full.first2000.txt").read_text(encoding="utf-8").split("\n")
    docs = []
    for i in range(0, len(lines) - 5, 6):
        label, _, ctx = lines[i].partition(": ")
        docs.append({"ind": i // 6, "activity_label": label, "ctx_a": ctx, "ctx_b": "", "ctx": ctx,
                     "endings": lines[i + 2: i + 6], "label": str(int(lines[i + 1]))})
    return docs


def lambada(root: Path) -> list[Doc]:
    """llm-foundry's layout (context, continuation) joined back into the OpenAI variant's ``text``."""
    return [{"text": d["context"] + " " + d["continuation"]}
            for d in _jsonl(root / "lambada_openai" / "lambada_openai.jsonl")]


def wikitext(root: Path) -> list[Doc]:
    """Documents of the raw test split (as ``EleutherAI/wikitext_document_level``): a page per `` = Title = ``."""
    text = (root / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8").replace("\r\n", "\n")
    pages: list[list[str]] = []
    for line in text.split("\n"):
        if re.match(r"^ = [^=].* = $", line) or not pages:
            pages.append([])
        pages[-1].append(line)
    return [{"page": "\n".join(p).strip("\n") + "\n"} for p in pages if "".join(p).strip()]


def truthfulqa(root: Path) -> list[Doc]:
    """``mc_task.json`` (answer -> 0/1 maps) as the hub's ``multiple_choice`` config (choices, labels)."""
    raw = json.loads((root / "truthfulqa" / "mc_task.json").read_text(encoding="utf-8"))
    return [{"question": d["question"],
             "mc1_targets": {"choices": list(d["mc1_targets"]), "labels": list(d["mc1_targets"].values())},
             "mc2_targets": {"choices": list(d["mc2_targets"]), "labels": list(d["mc2_targets"].values())}}
            for d in raw]


def gsm8k(root: Path) -> list[Doc]:
    """GSM8K test: question and worked answer ending in ``#### <number>``."""
    return [{"question": d["question"], "answer": d["answer"]} for d in _jsonl(root / "gsm8k" / "test.jsonl")]


def squad_openbook(root: Path) -> list[Doc]:
    """SQuAD v1.1 dev, one document per question: its id, article title, gold paragraph (``context``, also its
    position ``paragraph`` among the 2,067), question and gold answer texts."""
    from adapters.retrieval import SQUAD_FILE, read_squad

    squad = read_squad(root / SQUAD_FILE)
    return [{"id": q.id, "title": q.title, "context": squad.paragraphs[q.paragraph], "paragraph": q.paragraph,
             "question": q.question, "answers": list(q.answers)} for q in squad.questions]


def truthfulqa_heldout(root: Path) -> list[Doc]:
    """The TruthfulQA questions held out from the ``truthfulqa_pairs`` preference data (the split of
    :func:`adapters.truthfulqa.truthfulqa_split`), in ``mc_task.json`` order: a model aligned on those pairs is scored
    on questions it never trained on."""
    from adapters.truthfulqa import truthfulqa_split

    docs = truthfulqa(root)
    held = truthfulqa_split(len(docs)).heldout
    return [d for i, d in enumerate(docs) if i in held]


_TQA = Benchmark(("truthfulqa/mc_task.json",), truthfulqa)
_TQA_HELDOUT = Benchmark(("truthfulqa/mc_task.json",), truthfulqa_heldout)
BENCHMARKS: dict[str, Benchmark] = {
    "arc_easy": Benchmark(("arc_easy/ARC-Easy-Dev.jsonl",), _arc("arc_easy/ARC-Easy-Dev.jsonl")),
    "arc_challenge": Benchmark(("arc_challenge/ARC-Challenge-Dev.jsonl",),
                               _arc("arc_challenge/ARC-Challenge-Dev.jsonl")),
    "piqa": Benchmark(("piqa/valid.jsonl", "piqa/valid-labels.lst"), piqa),
    "hellaswag": Benchmark(("hellaswag/hellaswag_val_full.first2000.txt",), hellaswag),
    "lambada_openai": Benchmark(("lambada_openai/lambada_openai.jsonl",), lambada),
    "wikitext": Benchmark(("wikitext2/wiki.test.raw",), wikitext),
    "gsm8k": Benchmark(("gsm8k/test.jsonl",), gsm8k),
    "squad_openbook": Benchmark(("squad/dev-v1.1.json",), squad_openbook),
    "truthfulqa_mc1": _TQA,
    "truthfulqa_mc2": _TQA,
    "truthfulqa_mc1_heldout": _TQA_HELDOUT,
    "truthfulqa_mc2_heldout": _TQA_HELDOUT,
}


def resolve_data_dir(*candidates: Any) -> Path | None:
    """The first given directory among ``candidates``, then ``$SLM_DATA_DIR``; None if none is set."""
    value = next((c for c in candidates if c), None) or os.environ.get("SLM_DATA_DIR")
    return Path(str(value)).expanduser() if value else None


def load_docs(task: str, data_dir: Any = None) -> list[Doc]:
    """The documents of local benchmark ``task`` read from ``data_dir`` (or ``$SLM_DATA_DIR``).

    Raises:
        UsageError: no data dir is named, or a file the task reads is missing.
    """
    bench = BENCHMARKS[task]
    root = resolve_data_dir(data_dir)
    if root is None:
        raise UsageError(f"quality task {task!r} reads local files: set quality.data_dir, --data-dir or "
                         f"SLM_DATA_DIR to a directory holding {', '.join(bench.files)}")
    missing = [str(root / f) for f in bench.files if not (root / f).is_file()]
    if missing:
        raise UsageError(f"quality task {task!r}: {', '.join(missing)} not found (data_dir={str(root)!r} must "
                         f"hold {', '.join(bench.files)}, the layout of ../shared/benchmarks)")
    return bench.convert(root)
