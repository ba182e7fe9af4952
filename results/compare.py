"""Comparing two paths (or two runs): per metric the difference and a significance test.

Quality and trust accuracies use the exact McNemar test on per-sample outcomes paired by sample id (each filter's
and metric's own outcomes where the suite recorded them); other per-sample scores (TruthfulQA MC2's probability,
SQuAD's F1) use a paired bootstrap; latency, memory and energy use a bootstrap interval of
the difference of medians over the raw observations; where nothing per-sample was kept, a z-test
from the two standard errors. Every row names the test it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from adapters.errors import UsageError
from results import stats
from results.queries import resolve_path, rows
from results.store import connect
from results.trajectories import Trajectory, trajectories

PAIRED_SUITES = ("quality", "trust")
Key = tuple[str, str, str]


@dataclass
class PathData:
    """A path's measurements, from a database or an exported baseline."""

    path_id: str
    name: str
    hardware_profile: str
    metrics: dict[Key, dict[str, Any]] = field(default_factory=dict)
    correct: dict[tuple[str, str], dict[str, bool]] = field(default_factory=dict)
    scores: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    raw: dict[Key, list[float]] = field(default_factory=dict)

    def metrics_for_task(self, suite: str, task: str) -> list[Key]:
        return [k for k in self.metrics if k[0] == suite and k[1] == task]


def load_path_data(con: duckdb.DuckDBPyConnection, path_id: str, with_raw: bool = True) -> PathData:
    """Metrics, paired per-sample outcomes and raw observations of one path."""
    head = rows(con, "SELECT path_id, name, hardware_profile FROM paths WHERE path_id = ?", [path_id])
    if not head:
        raise UsageError(f"no path with id {path_id!r}")
    data = PathData(path_id, head[0]["name"], head[0]["hardware_profile"])
    for m in rows(con, "SELECT * FROM metrics_long WHERE path_id = ?", [path_id]):
        data.metrics[(m["suite"], m["task"], m["metric"])] = m
    keys = sorted({m["run_key"] for m in data.metrics.values()})
    if not keys:
        return data
    for suite, task, sid, correct, score in con.execute(
            "SELECT suite, task, sample_id, correct, score FROM samples WHERE list_contains(?, run_key)",
            [keys]).fetchall():
        if correct is not None:
            data.correct.setdefault((suite, task), {})[sid] = bool(correct)
        if score is not None:
            data.scores.setdefault((suite, task), {})[sid] = float(score)
    if with_raw:
        for suite, task, name, value in con.execute(
                "SELECT suite, task, name, value FROM raw_samples WHERE list_contains(?, run_key) ORDER BY idx",
                [keys]).fetchall():
            data.raw.setdefault((suite, task, name), []).append(float(value))
    return data


def _is_accuracy(metric: str) -> bool:
    """Metrics whose per-item outcome is the task's ``correct`` flag (other metrics record their own)."""
    return metric == "acc" or metric.startswith("exact_match") or metric in ("mc1", "correct")


def compare_metric(key: Key, a: PathData, b: PathData, seed: int = 0) -> dict[str, Any]:
    """One metric of A against B: values, difference, ratio and the test."""
    suite, task, metric = key
    ma, mb = a.metrics[key], b.metrics[key]
    va, vb = ma["value"], mb["value"]
    result = _test(key, a, b, seed)
    better = None
    if result.p_value is not None and result.p_value < 0.05 and result.diff != 0:
        better = "B" if (result.diff > 0) == bool(ma["higher_is_better"]) else "A"
    return {
        "suite": suite, "task": task, "metric": metric, "unit": ma["unit"],
        "higher_is_better": ma["higher_is_better"], "a": va, "a_stderr": ma["stderr"], "b": vb,
        "b_stderr": mb["stderr"], "diff": None if va is None or vb is None else vb - va,
        "ratio": (vb / va) if va not in (None, 0) and vb is not None else None,
        "test": result.method, "test_diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "p_value": result.p_value, "n": result.n, "better": better,
        "estimate": bool(ma.get("is_estimate") or mb.get("is_estimate")),
    }


def _test(key: Key, a: PathData, b: PathData, seed: int) -> stats.TestResult:
    suite, task, metric = key
    if suite in PAIRED_SUITES:
        own = (suite, f"{task}#{metric}")  # per-item outcomes recorded for this very metric (filter)
        task_key = (suite, task)
        if own in a.correct and own in b.correct:
            ca, cb = a.correct[own], b.correct[own]
        elif _is_accuracy(metric) and own not in a.scores and own not in b.scores:
            ca, cb = a.correct.get(task_key, {}), b.correct.get(task_key, {})
        else:
            ca, cb = {}, {}
        common = sorted(ca.keys() & cb.keys())
        if common:
            return stats.mcnemar_exact([ca[i] for i in common], [cb[i] for i in common])
        if own in a.scores and own in b.scores:  # this metric's own per-item scores (SQuAD's F1)
            sa, sb = a.scores[own], b.scores[own]
        elif len(a.metrics_for_task(suite, task)) == 1:  # the task's one metric (TruthfulQA MC2's probability)
            sa, sb = a.scores.get(task_key, {}), b.scores.get(task_key, {})
        else:
            sa, sb = {}, {}
        common = sorted(sa.keys() & sb.keys())
        if common:
            return stats.paired_bootstrap([sa[i] for i in common], [sb[i] for i in common], seed=seed)
    ra, rb = a.raw.get(key), b.raw.get(key)
    if ra and rb:
        return stats.bootstrap_median_diff(ra, rb, seed=seed)
    ma, mb = a.metrics[key], b.metrics[key]
    if ma["value"] is None or mb["value"] is None:
        return stats.TestResult(float("nan"), None, None, None, 0, "missing value")
    return stats.z_test(ma["value"], ma["stderr"], mb["value"], mb["stderr"])


def compare_data(a: PathData, b: PathData, seed: int = 0) -> list[dict[str, Any]]:
    """Every metric both paths have, compared."""
    return [compare_metric(k, a, b, seed) for k in sorted(a.metrics.keys() & b.metrics.keys())]


def compare(db: str | Path, ref_a: str, ref_b: str, db_b: str | Path | None = None,
            seed: int = 0) -> list[dict[str, Any]]:
    """Compare two paths, or two runs (then every path both runs measured), by id, prefix or name."""
    db_b = db_b or db
    run_a, run_b = _as_run(db, ref_a), _as_run(db_b, ref_b)
    if run_a and run_b:
        return _compare_runs(db, run_a, db_b, run_b, seed)
    pa, pb = resolve_path(db, ref_a), resolve_path(db_b, ref_b)
    with connect(db, read_only=True) as con:
        a = load_path_data(con, pa["path_id"])
    with connect(db_b, read_only=True) as con:
        b = load_path_data(con, pb["path_id"])
    out = compare_data(a, b, seed)
    for row in out:
        row.update(path_a=a.name, path_b=b.name)
    return out


def _as_run(db: str | Path, ref: str) -> str | None:
    with connect(db, read_only=True) as con:
        found = con.execute("SELECT run_id FROM runs WHERE run_id = ? OR starts_with(run_id, ?)",
                            [ref, ref]).fetchall()
    return found[0][0] if len(found) == 1 else None


def _compare_runs(db: str | Path, run_a: str, db_b: str | Path, run_b: str, seed: int) -> list[dict[str, Any]]:
    def path_ids(path: str | Path, run: str) -> set[str]:
        with connect(path, read_only=True) as con:
            return {r[0] for r in con.execute("SELECT path_id FROM run_paths WHERE run_id = ?", [run]).fetchall()}

    common = sorted(path_ids(db, run_a) & path_ids(db_b, run_b))
    if not common:
        raise UsageError(f"runs {run_a} and {run_b} measured no path in common")
    out = []
    for pid in common:
        with connect(db, read_only=True) as con:
            a = load_path_data(con, pid)
        with connect(db_b, read_only=True) as con:
            b = load_path_data(con, pid)
        for row in compare_data(a, b, seed):
            row.update(path_a=a.name, path_b=b.name)
            out.append(row)
    return out


def compared_trajectories(db: str | Path, ref_a: str, ref_b: str, db_b: str | Path | None = None) -> list[Trajectory]:
    """The trajectories (:mod:`results.trajectories`) of the two compared paths that have intermediate measurements
    (``evaluate: all``); none when two runs are compared."""
    db_b = db_b or db
    if _as_run(db, ref_a) and _as_run(db_b, ref_b):
        return []
    found = trajectories(db, [resolve_path(db, ref_a)["path_id"]]) + \
        trajectories(db_b, [resolve_path(db_b, ref_b)["path_id"]])
    return [t for t in found if t.has_intermediate]
