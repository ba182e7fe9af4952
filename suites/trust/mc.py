"""Multiple-choice scoring the way lm-eval scores it, and the prompt formats the trust dimensions use.

``acc``: the choice with the largest summed log-likelihood (continuation ``" " + choice``) is the answer;
``acc_norm``: the same after dividing by the choice's length in bytes (lm-eval's ``acc_norm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from suites.trust.common import Scorer, argmax

# Paraphrases of the question prompt (the first is lm-eval's ARC format).
TEMPLATES = ("Question: {q}\nAnswer:", "Q: {q}\nA:", "{q}\nThe correct answer is:")


class MCResult(NamedTuple):
    """One scored multiple-choice item: per-choice log-likelihoods and the two answers they imply."""

    logprobs: list[float]
    pred: int
    pred_norm: int


def plain_prompt(question: str, template: int = 0) -> str:
    """The question in paraphrase ``template`` of :data:`TEMPLATES` (choices not listed)."""
    return TEMPLATES[template].format(q=question)


def listed_prompt(question: str, choices: Sequence[str]) -> str:
    """The question with its choices listed in the given order, so choice order can matter."""
    return f"Question: {question}\nChoices: {'; '.join(choices)}\nAnswer:"


def score(scorer: Scorer, context: str, choices: Sequence[str]) -> MCResult:
    """Score ``choices`` after ``context``; returns the log-likelihoods, ``acc`` and ``acc_norm`` answers."""
    lls = scorer.choice_logprobs(context, choices)
    norm = [ll / max(1, len((" " + c).encode("utf-8"))) for ll, c in zip(lls, choices, strict=True)]
    return MCResult(lls, argmax(lls), argmax(norm))


def score_many(scorer: Scorer, prompts: Sequence[tuple[str, Sequence[str]]]) -> list[MCResult]:
    """Score several ``(context, choices)`` items with one batched model call."""
    scorer.loglikelihoods([(ctx, " " + c) for ctx, choices in prompts for c in choices])
    return [score(scorer, ctx, choices) for ctx, choices in prompts]
