"""Significance tests for comparing two measurements (numpy only, seeded, so reports are reproducible)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


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
    """Exact McNemar test on paired right/wrong outcomes (binomial test on the discordant pairs)."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("mcnemar_exact needs two non-empty outcome lists of equal length")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    k = min(only_a, only_b)
    p = 1.0 if discordant == 0 else min(1.0, 2 * sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant)
    diff = float(b.mean() - a.mean())
    # Interval of the paired difference of proportions (Wald on the discordant pairs).
    n = a.size
    se = math.sqrt(max(discordant / n - diff**2, 0.0) / n)
    return TestResult(diff, diff - 1.96 * se, diff + 1.96 * se, p, n, "mcnemar-exact")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> TestResult:
    """Paired bootstrap of the mean difference of per-item scores; p from the interval's sign test."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired_bootstrap needs two non-empty score lists of equal length")
    d = y - x
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return TestResult(float(d.mean()), float(lo), float(hi), p, int(d.size), "paired-bootstrap")


def bootstrap_median_diff(a: Sequence[float], b: Sequence[float], seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> TestResult:
    """Independent bootstrap of median(B) - median(A), e.g. for two sets of latency observations."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("bootstrap_median_diff needs observations on both sides")
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, size=(resamples, y.size))], axis=1)
    diffs = my - mx
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return TestResult(float(np.median(y) - np.median(x)), float(lo), float(hi), p, int(min(x.size, y.size)),
                      "bootstrap-median")


def z_test(a: float, se_a: float | None, b: float, se_b: float | None) -> TestResult:
    """Unpaired normal test from two estimates and their standard errors (when no samples were kept)."""
    diff = b - a
    if se_a is None or se_b is None:
        return TestResult(diff, None, None, None, 0, "difference-only (no stderr)")
    se = math.sqrt(se_a**2 + se_b**2)
    if se == 0:
        return TestResult(diff, diff, diff, 1.0 if diff == 0 else 0.0, 0, "z-test")
    z = abs(diff) / se
    p = math.erfc(z / math.sqrt(2))
    return TestResult(diff, diff - 1.96 * se, diff + 1.96 * se, p, 0, "z-test")
