"""SQuAD v1.1's official scoring (``evaluate-v1.1.py``, Rajpurkar et al., 2016), for the ``squad_openbook`` task.

An answer and each gold answer are normalized (lower-cased; punctuation, the articles a/an/the and extra
whitespace removed); exact match is 1 when the normalized strings are equal, F1 is the harmonic mean of token
precision and recall over the normalized whitespace tokens; a question scores the best over its gold answers.
The official script reports 100 x the mean; here a question's score is a fraction (0-1) like every other quality
metric, and lm-eval averages them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official function)."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalized answers (0 when they share no token)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalized answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn: Callable[[str, str], float], prediction: str,
                                  ground_truths: Sequence[str]) -> float:
    """The best score of ``prediction`` against any gold answer."""
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """lm-eval's per-document scoring: exact match and F1 of the generation against the doc's ``answers``."""
    prediction = results[0]
    answers = list(doc["answers"])
    return {"exact_match": metric_max_over_ground_truths(exact_match_score, prediction, answers),
            "f1": metric_max_over_ground_truths(f1_score, prediction, answers)}
