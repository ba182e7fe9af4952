"""Records and the suite interface. This module imports no torch.

A suite measures one :class:`~adapters.handle.ModelHandle` and returns a :class:`SuiteResult`:
metrics (each with n, uncertainty, unit, direction and method), per-sample records for paired
comparisons, and raw measurement samples (e.g. every latency observation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from adapters.registry import Registry

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES = ("quick", "standard", "full")


@dataclass(frozen=True)
class Metric:
    """One number with everything needed to trust it.

    Attributes:
        suite: the suite that produced it (``quality``, ``latency`` ...).
        task: what was measured (a task name, ``decode@p128b1``, ``load`` ...).
        name: the metric (``acc``, ``acc_norm``, ``tokens_per_s``, ``peak_rss`` ...).
        value: the point estimate.
        stderr: its standard error (None only where no uncertainty can be computed, e.g. n=1).
        n: number of samples or observations behind it.
        unit: ``fraction``, ``s``, ``tokens/s``, ``bytes``, ``J``, ``nats`` ...
        higher_is_better: the direction.
        method: how it was obtained, e.g. ``lm-eval``, ``measured:perf_counter``,
            ``measured:rapl``, ``estimated:codecarbon-cpu_load``. Estimates start with ``estimated``.
        details: extra JSON-able facts (percentiles, CI bounds, subsample seed ...).
    """

    suite: str
    task: str
    name: str
    value: float
    stderr: float | None
    n: int
    unit: str
    higher_is_better: bool
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"Metric {self.suite}/{self.task}/{self.name}: n must be a non-negative int, got {self.n!r}")
        if not self.method:
            raise ValueError(f"Metric {self.suite}/{self.task}/{self.name}: method is required")

    @property
    def is_estimate(self) -> bool:
        return self.method.startswith("estimated")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.task, self.name)


@dataclass(frozen=True)
class SampleRecord:
    """The outcome of one evaluated item, kept for paired comparisons between paths.

    Attributes:
        suite, task: as in :class:`Metric`.
        sample_id: stable id of the item within the task (same across paths).
        correct: whether the model got it right (None where that does not apply).
        score: the per-item metric value (e.g. accuracy 0/1, a log-likelihood, a toxicity).
        loglikelihoods: per-choice log-likelihoods for multiple-choice items.
        prediction: the model's answer or generation (truncated by the writer if long).
        target: the reference answer.
    """

    suite: str
    task: str
    sample_id: str
    correct: bool | None = None
    score: float | None = None
    loglikelihoods: tuple[float, ...] = ()
    prediction: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class RawSample:
    """One raw observation behind a metric (e.g. one decode-step latency), for re-analysis."""

    suite: str
    task: str
    name: str
    index: int
    value: float
    unit: str


@dataclass
class SuiteResult:
    """What a suite returns: metrics, per-sample records, raw samples and the settings used."""

    metrics: list[Metric] = field(default_factory=list)
    samples: list[SampleRecord] = field(default_factory=list)
    raw: list[RawSample] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteContext:
    """What a suite may use besides the model.

    Attributes:
        profile: ``quick``, ``standard`` or ``full``.
        options: the suite's options from the spec (tasks, data_dir, ...).
        seed: the spec's seed (subsampling, perturbations).
        workdir: scratch directory for this suite run.
        hardware: the declared hardware profile as a mapping.
        data_dir: where local benchmark files live (None: built-in data only).
        base: the path's base model handle, for suites that report retention (may be None).
        reference: for a suite with ``needs_reference`` (``parity``), the nearest model of the node's lineage that
            runs on torch, when the node itself runs on another backend (None otherwise).
    """

    profile: str = "quick"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path(".slm/work"))
    hardware: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    base: ModelHandle | None = None
    reference: ModelHandle | None = None


class Suite:
    """Base class of suites. Subclasses set ``name`` via :func:`suite` and implement :meth:`run`.

    ``options`` lists the option names the suite accepts in a spec (validated at load time). ``exclusive``
    marks a timing-sensitive suite (wall time, energy, memory peaks): the scheduler never runs it while other
    work shares its machine (:mod:`harness.scheduler`).
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    exclusive: ClassVar[bool] = False

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> tuple[str, str] | None:
        """What is wrong with these spec options, as ``(option, message)``, or None; the planner calls it, so a
        value that would fail the run fails the plan. The default checks the value kinds the builtin suites share
        (:data:`OPTION_KINDS`); a suite with options of its own extends it."""
        for name, value in options.items():
            kind = OPTION_KINDS.get(name)
            problem = kind(value) if kind else None
            if problem:
                return name, f"{value!r} is not allowed: {problem}"
        return None

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        return None if ok else f"expected an integer >= {low}"
    return check


def _positive_number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return None if ok else "expected a number > 0"


def _int_list(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    ok = bool(items) and all(_int_at_least(1)(v) is None for v in items)
    return None if ok else "expected an integer >= 1 or a non-empty list of them"


def _limit(value: Any) -> str | None:
    if isinstance(value, dict):
        bad = [k for k, v in value.items() if not isinstance(k, str) or _int_at_least(1)(v) is not None]
        return None if value and not bad else "expected {task: integer >= 1, ...}"
    return _int_at_least(1)(value)


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _names(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    ok = bool(items) and all(isinstance(v, str) and v.strip() for v in items)
    return None if ok else "expected a name or a non-empty list of names"


#: the kind of every option name the builtin suites share: a check returning what is wrong, or None
OPTION_KINDS: dict[str, Callable[[Any], str | None]] = {
    "batch_size": _int_at_least(1), "n": _int_at_least(1), "repeats": _int_at_least(1),
    "new_tokens": _int_at_least(1), "prompt_tokens": _int_at_least(1), "windows": _int_at_least(1),
    "min_repeats": _int_at_least(1), "warmup": _int_at_least(0), "num_fewshot": _int_at_least(0),
    "max_length": _int_at_least(2), "limit": _limit, "window_s": _positive_number, "min_duration_s": _positive_number,
    "prompt_lengths": _int_list, "batch_sizes": _int_list, "tasks": _names, "dimensions": _names,
    "apply_chat_template": _bool, "prefix_cache": _bool, "remeasure_under_load": _bool,
}


SUITES: Registry[type[Suite]] = Registry("suite", discover=("suites.builtin",))


def suite(name: str) -> Callable[[type[Suite]], type[Suite]]:
    """Class decorator registering a suite."""

    def wrap(cls: type[Suite]) -> type[Suite]:
        cls.name = name
        return SUITES.register(name, cls)

    return wrap


def mean_stderr(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample stdev / sqrt(n)); stderr None when n < 2."""
    n = len(values)
    if n == 0:
        return math.nan, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
