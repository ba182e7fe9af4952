"""TruthfulQA as offline preference data for alignment (``tune.dpo``, ``tune.kto``), with a held-out split.

:func:`truthfulqa_pairs` makes ``{"prompt", "chosen", "rejected"}`` pairs from TruthfulQA's true vs false reference
answers (``truthfulqa/mc_task.json`` of the local benchmark data, its ``mc2_targets``), one pair per false answer,
prompted as ``Q: <question>\\nA:`` like the lm-eval task. The questions are split once into a training and a
held-out part (:func:`truthfulqa_split`, fixed by :data:`SPLIT_SEED`, not by a run's seed), so the quality suite's
``truthfulqa_mc1_heldout`` / ``truthfulqa_mc2_heldout`` score a model tuned on the training pairs on questions it
never saw.

A question's id is its index in ``mc_task.json``.
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from adapters.errors import UsageError

#: the TruthfulQA file the pairs and the held-out quality tasks read, relative to the benchmark data directory
TRUTHFULQA_FILE = "truthfulqa/mc_task.json"
#: the share of TruthfulQA questions held out from the training pairs
HELDOUT_FRACTION = 0.2
#: the seed of the question split (fixed: every run, and the quality suite, see the same split)
SPLIT_SEED = 20240
#: the prompt of a TruthfulQA pair (the question part of lm-eval's ``truthfulqa_mc*`` prompt)
PROMPT = "Q: {question}\nA:"


class TruthfulQAQuestion(NamedTuple):
    """One TruthfulQA question: its id (index in ``mc_task.json``), text, true and false reference answers."""

    id: int
    question: str
    true: tuple[str, ...]
    false: tuple[str, ...]


def truthfulqa_path(data_dir: str | Path | None = None) -> Path:
    """``mc_task.json`` under ``data_dir`` (else ``$SLM_DATA_DIR``).

    Raises:
        UsageError: no data directory is named, or the file is not in it.
    """
    root = data_dir or os.environ.get("SLM_DATA_DIR")
    if not root:
        raise UsageError(f"the TruthfulQA preference pairs read {TRUTHFULQA_FILE} from the local benchmark data: set "
                         "SLM_DATA_DIR (or --data-dir) to the directory that holds it (the layout of ../shared/benchmarks)")
    path = Path(str(root)).expanduser() / TRUTHFULQA_FILE
    if not path.is_file():
        raise UsageError(f"the TruthfulQA preference pairs need {path} (data directory {str(root)!r} must hold "
                         f"{TRUTHFULQA_FILE}, the layout of ../shared/benchmarks)")
    return path


def truthfulqa_questions(data_dir: str | Path | None = None) -> list[TruthfulQAQuestion]:
    """Every question of ``mc_task.json`` with its ``mc2_targets`` answers split into true and false."""
    return list(_questions(truthfulqa_path(data_dir)))


@cache
def _questions(path: Path) -> tuple[TruthfulQAQuestion, ...]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return tuple(TruthfulQAQuestion(i, d["question"], tuple(a for a, ok in d["mc2_targets"].items() if ok),
                                    tuple(a for a, ok in d["mc2_targets"].items() if not ok))
                 for i, d in enumerate(raw))


class QuestionSplit(NamedTuple):
    """Question ids: those the training pairs come from, and those held out."""

    train: frozenset[int]
    heldout: frozenset[int]


def truthfulqa_split(n_questions: int, heldout_fraction: float = HELDOUT_FRACTION,
                     seed: int = SPLIT_SEED) -> QuestionSplit:
    """The ids ``0 .. n_questions - 1`` split by a seeded shuffle: the first ``round(heldout_fraction * n)`` held
    out."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ids = list(range(n_questions))
    random.Random(seed).shuffle(ids)
    k = max(1, round(heldout_fraction * n_questions))
    return QuestionSplit(frozenset(ids[k:]), frozenset(ids[:k]))


def heldout_question_ids(data_dir: str | Path | None = None) -> frozenset[int]:
    """The ids of the TruthfulQA questions no ``truthfulqa_pairs`` record comes from."""
    return truthfulqa_split(len(truthfulqa_questions(data_dir))).heldout


def truthfulqa_pairs(split: Literal["train", "heldout"] = "train", n: int | None = None, seed: int = 0,
                     data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Preference pairs from the questions of ``split``: for each false reference answer, ``chosen`` a true one
    (cycling through them, the best answer first), ``rejected`` the false one; each record carries its
    ``question_id``. The pairs are shuffled with ``seed`` (so the first ``n`` span many questions)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    questions = truthfulqa_questions(data_dir)
    split_ids = truthfulqa_split(len(questions))
    ids = split_ids.train if split == "train" else split_ids.heldout
    pairs = [{"prompt": PROMPT.format(question=q.question), "chosen": " " + q.true[j % len(q.true)],
              "rejected": " " + wrong, "question_id": q.id}
             for q in questions if q.id in ids and q.true for j, wrong in enumerate(q.false)]
    random.Random(seed).shuffle(pairs)
    return pairs if n is None else pairs[:n]
