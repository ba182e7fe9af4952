"""Comparisons (tests with known answers) and the CI gate (exit codes, JUnit, Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from results_builders import latencies, outcomes, slm, write_run

from results import stats
from results.compare import compare


def test_mcnemar_exact_known_values():
    a = [True] * 100
    b = [True] * 90 + [False] * 10
    res = stats.mcnemar_exact(a, b)
    assert res.p_value == pytest.approx(2 * 0.5**10)
    assert res.diff == pytest.approx(-0.1)
    assert stats.mcnemar_exact(a, a).p_value == 1.0
    # 5 discordant each way: no evidence of a difference
    c = [True] * 5 + [False] * 5 + [True] * 90
    d = [False] * 5 + [True] * 5 + [True] * 90
    assert stats.mcnemar_exact(c, d).p_value == 1.0


def test_bootstrap_median_interval_covers_shift_and_paired_bootstrap_detects_it():
    a = latencies(200, 0.050, 3)
    b = [x + 0.010 for x in a]  # the same observations, shifted: the true median difference is 0.010
    res = stats.bootstrap_median_diff(a, b)
    assert res.ci_low < 0.010 < res.ci_high and res.ci_low > 0
    same = stats.paired_bootstrap([1.0, 2.0, 3.0] * 20, [1.0, 2.0, 3.0] * 20)
    assert same.diff == 0 and same.p_value == 1.0
    up = stats.paired_bootstrap([0.0] * 50, [1.0] * 50)
    assert up.ci_low == up.ci_high == 1.0 and up.p_value == 0.0


def test_z_test_known_value():
    res = stats.z_test(0.5, 0.01, 0.5196, 0.01)  # z = 0.0196 / (0.01 * sqrt 2) = 1.386
    assert res.p_value == pytest.approx(0.1657, abs=1e-3)


def test_compare_two_paths(two_path_db: Path):
    rows = {(r["suite"], r["metric"]): r for r in compare(two_path_db, "base", "pruned")}
    q = rows[("quality", "acc")]
    assert q["test"] == "mcnemar-exact" and q["p_value"] < 1e-6 and q["better"] == "A"
    lat = rows[("latency", "itl_s")]
    assert lat["test"] == "bootstrap-median" and lat["ci_high"] < 0 and lat["better"] == "B"
    assert rows[("energy", "decode_j_per_token")]["test"] == "z-test"
    assert rows[("energy", "decode_j_per_token")]["estimate"] is True
    out = slm("compare", "base", "pruned", "--db", str(two_path_db))
    assert out.returncode == 0, out.stderr
    assert "mcnemar-exact" in out.stdout and "bootstrap-median" in out.stdout
    missing = slm("compare", "base", "nope", "--db", str(two_path_db))
    assert missing.returncode == 2 and "no path matches 'nope'" in missing.stderr


def _second_run(db: Path, acc_drop_every: int | None, latency_center: float) -> None:
    base = outcomes(300, 0.7, 1)
    acc = base if acc_drop_every is None else [c and i % acc_drop_every != 0 for i, c in enumerate(base)]
    write_run(db, "run2", {
        "base": {"acc_correct": acc, "latency": latencies(50, latency_center, 5), "energy": 0.5, "sparsity": 0.0},
        "pruned": {"acc_correct": [c and i % 4 != 0 for i, c in enumerate(base)], "latency": latencies(50, 0.04, 6),
                   "energy": 0.4},
    })


def test_check_passes_against_itself_and_writes_reports(two_path_db: Path, tmp_path: Path):
    baseline = tmp_path / "baseline.json"
    exp = slm("baseline", "export", "--db", str(two_path_db), "--out", str(baseline))
    assert exp.returncode == 0, exp.stderr and "2 paths, 6 metrics" in exp.stdout
    doc = json.loads(baseline.read_text())
    assert len(doc["paths"][0]["correct"]["quality/probe"]) == 300
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    ok = slm("check", "--baseline", str(baseline), "--db", str(two_path_db), "--junit", str(junit),
             "--markdown", str(md))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "6 checks: 6 hold" in ok.stdout
    root = ET.parse(junit).getroot()
    assert sum(int(s.get("tests")) for s in root) == 6 and all(s.get("failures") == "0" for s in root)
    assert "no regression" in md.read_text()


def test_check_fails_on_significant_quality_drop_and_latency(two_path_db: Path, tmp_path: Path):
    baseline = tmp_path / "base.duckdb"
    baseline.write_bytes(two_path_db.read_bytes())
    _second_run(two_path_db, acc_drop_every=3, latency_center=0.08)
    junit = tmp_path / "junit.xml"
    res = slm("check", "--baseline", str(baseline), "--db", str(two_path_db), "--junit", str(junit))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "REGRESSION" in res.stdout and "quality/probe/acc" in res.stdout and "latency/decode@p16b1/itl_s" in res.stdout
    failures = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert {c.get("name") for c in failures} == {"probe/acc", "decode@p16b1/itl_s"}


def test_small_insignificant_drop_holds_under_alpha(two_path_db: Path, tmp_path: Path):
    baseline = tmp_path / "base.duckdb"
    baseline.write_bytes(two_path_db.read_bytes())
    _second_run(two_path_db, acc_drop_every=40, latency_center=0.05)  # loses ~5 of 210 correct answers
    tol = tmp_path / "tol.yaml"
    tol.write_text("defaults:\n  quality: {min_ratio: 0.99, alpha: 0.05}\n")
    assert slm("check", "--baseline", str(baseline), "--db", str(two_path_db), "--tolerances", str(tol)).returncode == 0
    tol.write_text("defaults:\n  quality: {min_ratio: 0.99, alpha: null}\n")
    res = slm("check", "--baseline", str(baseline), "--db", str(two_path_db), "--tolerances", str(tol))
    assert res.returncode == 1 and "keeps" in res.stdout


def test_check_usage_errors_exit_2(two_path_db: Path, tmp_path: Path):
    res = slm("check", "--baseline", str(tmp_path / "absent.json"), "--db", str(two_path_db))
    assert res.returncode == 2 and "does not exist" in res.stderr
    tol = tmp_path / "tol.yaml"
    tol.write_text("defaults:\n  latency: {rel_tol: fast}\n")
    base = tmp_path / "b.json"
    slm("baseline", "export", "--db", str(two_path_db), "--out", str(base))
    res = slm("check", "--baseline", str(base), "--db", str(two_path_db), "--tolerances", str(tol))
    assert res.returncode == 2
    assert str(tol) in res.stderr and "defaults.latency.rel_tol" in res.stderr and "'fast'" in res.stderr


def test_each_filter_and_metric_is_paired_on_its_own_items():
    """GSM8K logs each document once per filter, SQuAD logs F1 next to exact match: the suite records each metric's
    own per-item values, and compare pairs exactly those (McNemar for 0/1 outcomes, paired bootstrap for scores)."""
    from results.compare import PathData, compare_metric
    from suites.builtin.quality import _samples

    def logged(strict: list[int], flexible: list[int], f1: list[float]) -> list[dict]:
        out = []
        for filt, values in (("strict-match", strict), ("flexible-extract", flexible)):
            out += [{"doc_id": i, "filter": filt, "metrics": ["exact_match"], "exact_match": v,
                     "filtered_resps": ["7"], "target": "7"} for i, v in enumerate(values)]
        out += [{"doc_id": i, "filter": "none", "metrics": ["exact_match", "f1"], "exact_match": 0, "f1": v,
                 "filtered_resps": ["x"], "target": "y"} for i, v in enumerate(f1)]
        return out

    def path(name: str, records: list) -> PathData:
        data = PathData(name, name, "cpu-1t")
        for r in records:
            if r.correct is not None:
                data.correct.setdefault(("quality", r.task), {})[r.sample_id] = r.correct
            if r.score is not None:
                data.scores.setdefault(("quality", r.task), {})[r.sample_id] = r.score
        for metric in ("exact_match_strict-match", "exact_match_flexible-extract", "f1"):
            data.metrics[("quality", "t", metric)] = {"value": 0.5, "stderr": 0.1, "unit": "fraction",
                                                     "higher_is_better": True}
        return data

    n = 30
    a = _samples("t", logged([0] * n, [0] * n, [0.1] * n))
    b = _samples("t", logged([0] * n, [1] * 12 + [0] * 18, [0.6] * n))
    assert len([r for r in a if r.task == "t"]) == n  # one task-level record per document
    assert {r.task for r in a} == {"t", "t#exact_match_strict-match", "t#exact_match_flexible-extract", "t#f1"}
    assert all(r.correct is None for r in a if r.task == "t#f1")
    pa, pb = path("a", a), path("b", b)
    strict = compare_metric(("quality", "t", "exact_match_strict-match"), pa, pb)
    flexible = compare_metric(("quality", "t", "exact_match_flexible-extract"), pa, pb)
    f1 = compare_metric(("quality", "t", "f1"), pa, pb)
    assert strict["test"] == "mcnemar-exact" and strict["p_value"] == 1.0  # the same outcomes on every item
    assert flexible["test"] == "mcnemar-exact" and flexible["p_value"] < 0.001  # 12 discordant items, one way
    assert f1["test"] == "paired-bootstrap" and f1["test_diff"] == pytest.approx(0.5)
