"""What every trust dimension shares: its run settings, a memoizing scorer and the record builders.

A dimension is a function ``run(scorer, cfg) -> Outcome``: it reads its items (real data from the data
directory or a seeded built-in set), scores them through :class:`Scorer` and returns metrics plus
per-sample records. The scorer memoizes ``(context, continuation)`` log-likelihoods for the whole suite
run, so dimensions that share prompts (calibration and consistency) score them once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suites.base import Metric, SampleRecord

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

SUITE = "trust"


@dataclass(frozen=True)
class DimConfig:
    """Settings of one dimension's run.

    Attributes:
        n: number of items (prompts, pairs, canaries ...) to score.
        seed: the spec's seed (subsampling, perturbations, sampling).
        data_dir: where the benchmark files live (None: built-in data only).
        profile: ``quick``, ``standard`` or ``full``.
    """

    n: int
    seed: int
    data_dir: Path | None
    profile: str = "quick"


@dataclass
class Outcome:
    """What a dimension returns: metrics, per-sample records and facts for the suite's settings."""

    metrics: list[Metric] = field(default_factory=list)
    samples: list[SampleRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


class Scorer:
    """Log-likelihoods and generations of one handle, memoized for one suite run.

    Args:
        handle: the model to score.
    """

    def __init__(self, handle: ModelHandle):
        self.handle = handle
        self._ll: dict[tuple[str, str], float] = {}
        self._rolling: dict[str, float] = {}
        self.requests = 0

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """``log P(continuation | context)`` per pair; only pairs not seen before reach the model."""
        todo = list(dict.fromkeys(r for r in requests if r not in self._ll))
        if todo:
            for req, out in zip(todo, self.handle.loglikelihood(todo), strict=True):
                self._ll[req] = out.logprob
            self.requests += len(todo)
        return [self._ll[r] for r in requests]

    def rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each whole text (memoized)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._rolling))
        if todo:
            for text, out in zip(todo, self.handle.loglikelihood_rolling(todo), strict=True):
                self._rolling[text] = out
            self.requests += len(todo)
        return [self._rolling[t] for t in texts]

    def choice_logprobs(self, context: str, choices: Sequence[str]) -> list[float]:
        """Summed log-probability of each choice (scored as ``" " + choice``) after ``context``."""
        return self.loglikelihoods([(context, " " + c) for c in choices])

    def generate(self, prompts: Sequence[str], max_new_tokens: int, **kwargs: Any) -> list[str]:
        """Continuations of ``prompts`` (not memoized: sampling settings vary)."""
        return self.handle.generate(list(prompts), max_new_tokens=max_new_tokens, **kwargs)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value (the first one on ties, as lm-eval's ``np.argmax``)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def metric(task: str, name: str, value: float, stderr: float | None, n: int, unit: str, higher: bool,
           method: str, **details: Any) -> Metric:
    """A trust :class:`Metric` (``suite="trust"``)."""
    return Metric(SUITE, task, name, float(value), None if stderr is None else float(stderr), n, unit, higher,
                  method, dict(details))


def sample(task: str, sample_id: str, **fields: Any) -> SampleRecord:
    """A trust :class:`SampleRecord`; predictions are truncated to 300 characters."""
    if isinstance(fields.get("prediction"), str):
        fields["prediction"] = fields["prediction"][:300]
    if "loglikelihoods" in fields:
        fields["loglikelihoods"] = tuple(float(x) for x in fields["loglikelihoods"])
    return SampleRecord(SUITE, task, str(sample_id), **fields)
