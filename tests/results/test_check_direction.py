"""`slm check` orients min_ratio and rel_tol by each metric's direction, for every sign, and handles a 0 baseline."""

from __future__ import annotations

import math
from typing import Any

import pytest

from results import check
from results.check import load_tolerances, run_check
from results.compare import PathData

KEY = {"trust": ("trust", "probe", "loglik"), "latency": ("latency", "decode@p16b1", "itl_s")}


def _path(value: float, key: tuple[str, str, str], hib: bool) -> PathData:
    """One path with one metric and no per-sample data, the way an exported JSON baseline is loaded."""
    data = PathData("p-x", "x", "cpu-1t")
    data.metrics[key] = {"key": "/".join(key), "value": value, "stderr": 0.01, "n": 100, "unit": "x",
                         "higher_is_better": hib, "method": "m", "is_estimate": False}
    return data


def _check(b: float, c: float, hib: bool, suite: str) -> dict[str, Any]:
    """The verdict of a single metric going from ``b`` to ``c`` under the default rules of ``suite``."""
    key = KEY[suite]
    verdicts = run_check({"p-x": _path(b, key, hib)}, {"p-x": _path(c, key, hib)}, load_tolerances(None))
    assert len(verdicts) == 1
    return verdicts[0]


@pytest.mark.parametrize(("b", "c", "hib", "kept"), [
    (0.8, 0.7, True, 0.875), (2.0, 2.5, False, 0.8), (0.5, 0.5, True, 1.0),    # positive: c/b or b/c as before
    (-2.0, -3.0, True, 0.5), (-2.0, -1.5, True, 1.25), (-2.0, -3.0, False, 1.5),  # negative: 1 - worse/|b|
    (0.0, 0.0, True, 1.0), (0.0, 0.3, True, math.inf), (0.0, -0.3, True, 0.0),    # zero baseline
    (0.0, 0.3, False, 0.0), (0.0, -0.3, False, math.inf),
    (0.5, 0.0, False, 2.0), (0.5, 0.0, True, 0.0), (-1.0, 1.0, True, 3.0),        # a side at 0 / signs differ
])
def test_kept_fraction_is_oriented_for_every_sign(b: float, c: float, hib: bool, kept: float):
    assert check.kept_fraction(b, c, hib) == pytest.approx(kept)


def test_min_ratio_on_negative_values_follows_direction():
    # a higher-is-better mean log-likelihood falling from -2.0 to -3.0 is worse: not "keeps 150%"
    worse = _check(-2.0, -3.0, True, "trust")
    assert worse["status"] == "regression", worse["why"]
    assert "keeps 50.0% of baseline" in worse["why"]
    assert _check(-2.0, -1.5, True, "trust")["status"] == "ok"
    assert _check(-2.0, -2.05, True, "trust")["status"] == "ok"        # loses 2.5% of |baseline| < 5%
    assert _check(-2.0, -3.0, False, "trust")["status"] == "ok"        # lower is better: -3 is an improvement
    assert _check(-2.0, -1.0, False, "trust")["status"] == "regression"


def test_min_ratio_with_zero_baseline():
    better = _check(0.0, 0.3, True, "trust")
    assert better["status"] == "ok", better["why"]
    assert better["why"] == "baseline 0; now 0.3 (better)"
    assert "inf" not in better["why"]
    worse = _check(0.0, -0.3, True, "trust")
    assert worse["status"] == "regression" and worse["why"].startswith("baseline 0; now -0.3 (worse")
    assert _check(0.0, 0.3, False, "trust")["status"] == "regression"  # lower is better: 0 -> 0.3 is worse
    assert _check(0.0, -0.3, False, "trust")["status"] == "ok"
    assert _check(0.0, 0.0, True, "trust")["status"] == "ok"
    assert _check(0.5, 0.0, False, "trust")["status"] == "ok"          # lower is better and it went to 0


def test_rel_tol_with_zero_baseline():
    # a lower-is-better latency (or energy, toxicity) going 0 -> 5 is an infinite relative worsening
    worse = _check(0.0, 5.0, False, "latency")
    assert worse["status"] == "regression", worse["why"]
    assert worse["why"].startswith("baseline 0; now 5 (worse") and "tolerance 25.0%" in worse["why"]
    better = _check(0.0, 5.0, True, "latency")
    assert better["status"] == "ok" and better["why"] == "baseline 0; now 5 (better)"
    assert _check(0.0, -1.0, True, "latency")["status"] == "regression"
    assert _check(0.0, -1.0, False, "latency")["status"] == "ok"
    same = _check(0.0, 0.0, False, "latency")
    assert same["status"] == "ok" and "unchanged" in same["why"]


def test_rel_tol_on_negative_values_follows_direction():
    assert _check(-2.0, -3.0, True, "latency")["status"] == "regression"   # worse by 50% of |baseline|
    assert _check(-2.0, -3.0, False, "latency")["status"] == "ok"
    assert _check(-2.0, -2.4, True, "latency")["status"] == "ok"           # worse by 20% < 25%


def test_positive_values_unchanged():
    drop = _check(0.8, 0.7, True, "trust")
    assert drop["status"] == "regression" and drop["why"] == "keeps 87.5% of baseline (min 95%)"
    assert _check(0.8, 0.78, True, "trust")["why"] == "keeps 97.5% of baseline (min 95%)"
    lib = _check(2.0, 2.1, False, "trust")
    assert lib["status"] == "ok" and lib["why"] == "keeps 95.2% of baseline (min 95%)"
    slow = _check(0.05, 0.07, False, "latency")
    assert slow["status"] == "regression" and slow["why"] == "worse by 40.0% (tolerance 25.0%)"
    fast = _check(0.05, 0.04, False, "latency")
    assert fast["status"] == "ok" and fast["why"] == "better by 20.0% (tolerance 25.0%)"
    assert set(drop) == {"path", "hardware_profile", "suite", "task", "metric", "status", "baseline", "current",
                         "unit", "test", "p_value", "rule", "why"}
