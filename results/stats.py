"""Significance tests for comparing two measurements, on scipy.stats (seeded, so reports are reproducible).

McNemar's exact test is scipy's binomial test on the discordant pairs; the bootstraps are
:func:`scipy.stats.bootstrap` (percentile intervals, a seeded generator); normal tails come from
:data:`scipy.stats.norm`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

BOOTSTRAP_RESAMPLES = 2000
#: two-sided 95% normal quantile (1.95996...)
Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class TestResult:
    """Outcome of a two-sample comparison.

    Attributes:
        diff: B - A (in the metric's unit).
        ci_low, ci_high: 95% confidence interval of the difference (None where the test gives none).
        p_value: two-sided p-value (None where only an interval is computed).
        n: paired items or observations behind the test.
        method: the test, e.g. ``mcnemar-exact``, ``paired-bootstrap``, ``bootstrap-median``, ``z-test``.
    """

    diff: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    method: str


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> TestResult:
    """Exact McNemar test on paired right/wrong outcomes: a two-sided binomial test (p = 1/2) on the discordant
    pairs (:func:`scipy.stats.binomtest`). The interval is Wald's for a paired difference of proportions."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("mcnemar_exact needs two non-empty outcome lists of equal length")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(sps.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    diff = float(b.mean() - a.mean())
    n = a.size
    se = math.sqrt(max(discordant / n - diff**2, 0.0) / n)
    return TestResult(diff, diff - Z95 * se, diff + Z95 * se, min(1.0, p), n, "mcnemar-exact")


def _bootstrap(data: tuple[np.ndarray, np.ndarray], statistic: Callable[..., np.ndarray], paired: bool, seed: int,
               resamples: int) -> tuple[float, float, float]:
    """Percentile 95% interval and a two-sided p (the share of the bootstrap distribution on the other side of
    zero, doubled) of ``statistic(a, b)``."""
    with warnings.catch_warnings():  # a constant difference is a degenerate (but valid) distribution
        warnings.simplefilter("ignore")
        res = sps.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=resamples,
                            method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    p = min(1.0, 2 * min(float(np.mean(dist <= 0)), float(np.mean(dist >= 0))))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), p


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y - x, axis=axis)


def _median_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(y, axis=axis) - np.median(x, axis=axis)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> TestResult:
    """Paired bootstrap (items resampled together) of the mean difference of per-item scores; p from the
    bootstrap distribution's sign. One item gives the difference without an interval."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired_bootstrap needs two non-empty score lists of equal length")
    diff = float(np.mean(y - x))
    if x.size < 2:
        return TestResult(diff, None, None, None, 1, "paired-bootstrap (1 item: no interval)")
    lo, hi, p = _bootstrap((x, y), _mean_diff, True, seed, resamples)
    return TestResult(diff, lo, hi, p, int(x.size), "paired-bootstrap")


def bootstrap_median_diff(a: Sequence[float], b: Sequence[float], seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> TestResult:
    """Independent bootstrap of median(B) - median(A), e.g. for two sets of latency observations."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("bootstrap_median_diff needs observations on both sides")
    diff = float(np.median(y) - np.median(x))
    n = int(min(x.size, y.size))
    if n < 2:
        return TestResult(diff, None, None, None, n, "bootstrap-median (1 observation: no interval)")
    lo, hi, p = _bootstrap((x, y), _median_diff, False, seed, resamples)
    return TestResult(diff, lo, hi, p, n, "bootstrap-median")


def z_test(a: float, se_a: float | None, b: float, se_b: float | None) -> TestResult:
    """Unpaired normal test from two estimates and their standard errors (when no samples were kept)."""
    diff = b - a
    if se_a is None or se_b is None:
        return TestResult(diff, None, None, None, 0, "difference-only (no stderr)")
    se = math.sqrt(se_a**2 + se_b**2)
    if se == 0:
        return TestResult(diff, diff, diff, 1.0 if diff == 0 else 0.0, 0, "z-test")
    p = float(2 * sps.norm.sf(abs(diff) / se))
    return TestResult(diff, diff - Z95 * se, diff + Z95 * se, p, 0, "z-test")
