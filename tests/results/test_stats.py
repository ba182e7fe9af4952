"""Known values of the scipy-based tests in results.stats (against closed forms and statsmodels)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from results import stats


def _pairs(only_a: int, only_b: int, both: int = 50) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both
    b = [False] * only_a + [True] * only_b + [True] * both
    return a, b


@pytest.mark.parametrize(("only_a", "only_b", "p"), [
    (1, 9, 0.021484375),  # 2 * (C(10,0) + C(10,1)) / 2^10
    (0, 10, 2 / 1024),
    (3, 3, 1.0),
    (2, 5, 0.453125),  # 2 * (1 + 7 + 21) / 128
])
def test_mcnemar_exact_known_p(only_a: int, only_b: int, p: float):
    a, b = _pairs(only_a, only_b)
    res = stats.mcnemar_exact(a, b)
    assert res.p_value == pytest.approx(p, rel=1e-12)
    table = [[50, only_a], [only_b, 0]]
    assert res.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert res.diff == pytest.approx((only_b - only_a) / len(a)) and res.n == len(a)


def test_mcnemar_interval_is_wald_on_discordant_pairs():
    a, b = _pairs(4, 16, both=80)  # n = 100, diff = 0.12
    res = stats.mcnemar_exact(a, b)
    se = math.sqrt((20 / 100 - 0.12**2) / 100)
    assert res.ci_low == pytest.approx(0.12 - 1.959964 * se, rel=1e-6)
    assert res.ci_high == pytest.approx(0.12 + 1.959964 * se, rel=1e-6)


def test_paired_bootstrap_is_paired():
    """Strongly correlated scores with a small shift: pairing makes it significant (an unpaired bootstrap of the
    two means would not, the spread between items being 100x the shift)."""
    rng = random.Random(0)
    a = [rng.gauss(0, 1) for _ in range(200)]
    b = [x + 0.05 + rng.gauss(0, 0.01) for x in a]
    res = stats.paired_bootstrap(a, b, seed=1)
    assert res.method == "paired-bootstrap" and res.n == 200
    assert 0.045 < res.ci_low < 0.05 < res.ci_high < 0.055 and res.p_value == 0.0


def test_paired_bootstrap_interval_matches_the_normal_one_and_is_seeded():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 400)
    b = a + rng.normal(0.1, 1, 400)
    res = stats.paired_bootstrap(a, b, seed=5)
    d = b - a
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert res.diff == pytest.approx(d.mean())
    assert res.ci_low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert res.ci_high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert stats.paired_bootstrap(a, b, seed=5) == res  # reproducible
    assert stats.paired_bootstrap(a, b, seed=6).ci_low != res.ci_low


def test_bootstrap_median_diff_resamples_each_side():
    rng = np.random.default_rng(0)
    x = rng.normal(0.050, 0.001, 100)
    y = rng.normal(0.052, 0.001, 80)
    res = stats.bootstrap_median_diff(x, y, seed=2)
    assert res.diff == pytest.approx(np.median(y) - np.median(x))
    assert 0 < res.ci_low < res.diff < res.ci_high and res.p_value == 0.0 and res.n == 80
    same = stats.bootstrap_median_diff(x, x, seed=2)
    assert same.ci_low < 0 < same.ci_high and same.p_value > 0.5


def test_one_item_or_observation_gives_no_interval():
    one = stats.paired_bootstrap([0.2], [0.7])
    assert one.diff == pytest.approx(0.5) and one.ci_low is None and one.p_value is None
    med = stats.bootstrap_median_diff([1.0], [2.0, 3.0])
    assert med.diff == pytest.approx(1.5) and med.ci_low is None


def test_z_test_known_values():
    res = stats.z_test(0.0, 1.0 / math.sqrt(2), 1.959964, 1.0 / math.sqrt(2))  # z = 1.959964
    assert res.p_value == pytest.approx(0.05, rel=1e-5)
    assert res.ci_low == pytest.approx(0.0, abs=1e-5) and res.ci_high == pytest.approx(3.919928, rel=1e-5)
    assert stats.z_test(1.0, 0.1, 1.3, 0.0).p_value == pytest.approx(2.7e-3, rel=0.01)  # z = 3
    assert stats.z_test(1.0, None, 2.0, 0.1).method == "difference-only (no stderr)"
