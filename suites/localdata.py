"""Standard benchmarks from local files, scored by lm-eval's *own* task definitions.

For each benchmark a converter reads the layout found in the data directory (see
``../shared/benchmarks/README.md``) and writes the Hugging Face schema lm-eval's task expects; a generated
YAML then ``include``s lm-eval's installed task file and only points its dataset at that JSONL. Prompts,
choices, targets, metrics and post-processing are therefore lm-eval's, byte for byte.
"""

from __future__ import annotations

import csv  # noqa: F401  (kept for layouts read with csv in later converters)
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapters.errors import UsageError

Doc = dict[str, Any]


def _jsonl(path: Path) -> Iterator[Doc]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def arc(file: str) -> Callable[[Path], list[Doc]]:
    def convert(root: Path) -> list[Doc]:
        return [{"id": d["id"], "question": d["question"]["stem"], "answerKey": d["answerKey"],
                 "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                             "label": [c["label"] for c in d["question"]["choices"]]}}
                for d in _jsonl(root / file)]
    return convert


def piqa(root: Path) -> list[Doc]:
    labels = (root / "piqa" / "valid-labels.lst").read_text().split()
    docs = list(_jsonl(root / "piqa" / "valid.jsonl"))
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(lab)}
            for d, lab in zip(docs, labels, strict=True)]


def hellaswag(root: Path) -> list[Doc]:
    lines = (root / "hellaswag" / "hellaswag_val_full.first2000.txt").read_text(encoding="utf-8").split("\n")
    docs = []
    for i in range(0, len(lines) - 5, 6):
        label, _, ctx = lines[i].partition(": ")
        docs.append({"ind": i // 6, "activity_label": label, "ctx_a": ctx, "ctx_b": "", "ctx": ctx,
                     "endings": lines[i + 2: i + 6], "label": str(int(lines[i + 1]))})
    return docs


def lambada(root: Path) -> list[Doc]:
    return [{"text": d["context"] + " " + d["continuation"]}
            for d in _jsonl(root / "lambada_openai" / "lambada_openai.jsonl")]


def wikitext(root: Path) -> list[Doc]:
    """Articles of the raw test split: a new page starts at each top-level heading `` = Title = ``."""
    text = (root / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8").replace("\r\n", "\n")
    pages: list[list[str]] = []
    for line in text.split("\n"):
        if re.match(r"^ = [^=].* = $", line) or not pages:
            pages.append([])
        pages[-1].append(line)
    return [{"page": "\n".join(p).strip("\n") + "\n"} for p in pages if "".join(p).strip()]


def truthfulqa(root: Path) -> list[Doc]:
    raw = json.loads((root / "truthfulqa" / "mc_task.json").read_text(encoding="utf-8"))
    return [{"question": d["question"],
             "mc1_targets": {"choices": list(d["mc1_targets"]), "labels": list(d["mc1_targets"].values())},
             "mc2_targets": {"choices": list(d["mc2_targets"]), "labels": list(d["mc2_targets"].values())}}
            for d in raw]


def gsm8k(root: Path) -> list[Doc]:
    return [{"question": d["question"], "answer": d["answer"]} for d in _jsonl(root / "gsm8k" / "test.jsonl")]


# task -> (lm-eval task file relative to lm_eval/tasks, converter, files expected, extra YAML overrides)
BENCHMARKS: dict[str, tuple[str, Callable[[Path], list[Doc]], tuple[str, ...], dict[str, Any]]] = {
    "arc_easy": ("arc/arc_easy.yaml", arc("arc_easy/ARC-Easy-Dev.jsonl"), ("arc_easy/ARC-Easy-Dev.jsonl",), {}),
    "arc_challenge": ("arc/arc_challenge.yaml", arc("arc_challenge/ARC-Challenge-Dev.jsonl"),
                      ("arc_challenge/ARC-Challenge-Dev.jsonl",), {}),
    "piqa": ("piqa/piqa.yaml", piqa, ("piqa/valid.jsonl", "piqa/valid-labels.lst"), {}),
    "hellaswag": ("hellaswag/hellaswag.yaml", hellaswag, ("hellaswag/hellaswag_val_full.first2000.txt",), {}),
    "lambada_openai": ("lambada/lambada_openai.yaml", lambada, ("lambada_openai/lambada_openai.jsonl",),
                       {"dataset_name": None}),
    "wikitext": ("wikitext/wikitext.yaml", wikitext, ("wikitext2/wiki.test.raw",), {"dataset_name": None}),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", truthfulqa, ("truthfulqa/mc_task.json",),
                       {"dataset_name": None}),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", truthfulqa, ("truthfulqa/mc_task.json",),
                       {"dataset_name": None}),
    # Only the test split is available offline, so the 5-shot default has no training examples to draw from.
    "gsm8k": ("gsm8k/gsm8k.yaml", gsm8k, ("gsm8k/test.jsonl",), {"dataset_name": None, "num_fewshot": 0,
                                                                "fewshot_split": None}),
}


def data_dir_for(option: Any, ctx_dir: Path | None) -> Path | None:
    import os

    value = option or ctx_dir or os.environ.get("SLM_DATA_DIR")
    return Path(str(value)).expanduser() if value else None


def write_task(task: str, data_dir: Path | None, out: Path) -> None:
    """Convert ``task``'s local data to JSONL under ``out`` and write a YAML including lm-eval's own."""
    import lm_eval.tasks

    lm_file, convert, files, extra = BENCHMARKS[task]
    if data_dir is None:
        raise UsageError(f"quality task {task!r} reads local files: set quality.data_dir, --data-dir or SLM_DATA_DIR "
                         f"to a directory holding {', '.join(files)}")
    missing = [f for f in files if not (data_dir / f).exists()]
    if missing:
        raise UsageError(f"quality task {task!r}: {', '.join(str(data_dir / f) for f in missing)} not found "
                         f"(expected the layout of ../shared/benchmarks: {', '.join(files)})")
    data = out / f"{task}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in convert(data_dir)), encoding="utf-8")
    include = Path(lm_eval.tasks.__file__).parent / lm_file
    lines = [f"include: {json.dumps(str(include))}", f"task: {task}", "dataset_path: json",
             "dataset_kwargs:", "  data_files:", f"    test: {json.dumps(str(data))}",
             "training_split: null", "validation_split: null", "test_split: test"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    (out / f"{task}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
