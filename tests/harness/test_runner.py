"""Runner mechanics on the pico model: shared nodes run once, re-runs do nothing, failures stay
isolated, an interrupted (SIGKILLed) run resumes with every metric exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from run_helpers import rows, run

GRID = """
name: grid3x3
base: tiny-llama
hardware: cpu-1t
suites:
  test_nll: {profile: quick}
grid:
  prune: [none, {tune.test_noise: {scale: 0.01}}, {tune.test_noise: {scale: 0.02}}]
  quantize: [none, {tune.test_noise: {scale: 0.03}}, {tune.test_noise: {scale: 0.04}}]
"""


def test_grid_runs_unique_nodes_once_and_rerun_does_nothing(test_components, tmp_path):
    first = run(GRID, tmp_path)
    # 2 first-stage nodes + 3 parents x 2 second-stage choices = 8 unique technique nodes; 9 paths
    assert (first.steps_executed, first.steps_failed, first.suite_runs_executed) == (8, 0, 9)
    second = run(GRID, tmp_path)
    assert (second.steps_executed, second.suite_runs_executed, second.steps_cached) == (0, 0, 8)
    assert second.suite_runs_skipped == 9
    (n,) = rows(tmp_path, "SELECT count(*) FROM metrics_long WHERE suite = 'test_nll'")[0]
    assert n == 9  # one row per (path, suite, task, metric), no duplicates after the re-run
    values = rows(tmp_path, "SELECT path_name, value FROM metrics_long ORDER BY value")
    assert values[0][0] == "baseline" or values[0][1] > 0  # noise changes the model: not all equal
    assert len({v for _, v in values}) > 1


def test_artifact_size_on_disk_is_recorded(test_components, tmp_path):
    run(GRID, tmp_path)
    recorded = dict(rows(tmp_path, "SELECT node_hash, artifact_bytes FROM node_costs"))
    assert len(recorded) == 8
    for node_hash, size in recorded.items():
        folder = tmp_path / "artifacts" / node_hash
        on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != "node.json")
        assert size == on_disk > 10_000, node_hash  # the saved weights of the pico model


def test_failure_is_isolated_and_recorded(test_components, tmp_path):
    spec = """
    name: failing
    base: tiny-llama
    suites: {test_nll: {}}
    paths:
      - [{prune.test_fail: {message: deliberate failure}}, tune.test_noise]
      - [tune.test_noise]
    """
    summary = run(spec, tmp_path)
    assert summary.steps_failed == 2 and summary.steps_executed == 1 and summary.suite_runs_executed == 1
    errs = rows(tmp_path, "SELECT technique, status, error, traceback FROM nodes WHERE status NOT IN ('ok', 'cached')")
    by_status = {r[1]: r for r in errs}
    assert "deliberate failure" in by_status["failed"][2] and "RuntimeError" in by_status["failed"][3]
    assert "failed" in by_status["skipped"][2]
    costs = dict((r[0], r[1:]) for r in rows(tmp_path, "SELECT status, wall_time_s, peak_rss_bytes, energy_j FROM nodes "
                                                       "WHERE status NOT IN ('ok', 'cached')"))
    assert costs["skipped"] == (None, None, None)  # never ran: nothing measured, no 0 that reads like a measurement
    assert costs["failed"][1:] == (None, None) and (costs["failed"][0] is None or costs["failed"][0] > 0)
    names = [r[0] for r in rows(tmp_path, "SELECT path_name FROM metrics_long")]
    assert names == ["tune.test_noise"]


def test_a_partial_run_exits_1_unless_allowed(test_components, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(textwrap.dedent("""
    name: failing
    base: tiny-llama
    suites: {test_nll: {}}
    paths:
      - [{prune.test_fail: {message: deliberate failure}}]
      - [tune.test_noise]
    """))
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec_file), "-w", str(tmp_path / "ws"), "--no-leaderboard",
           "--no-progress"]
    partial = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    assert partial.returncode == 1, partial.stderr[-2000:]
    assert "failed: " in partial.stdout and "exit 1: 1 technique steps and 0 suite runs failed" in partial.stderr
    assert rows(tmp_path / "ws", "SELECT count(*) FROM metrics_long")[0] == (1,)  # the other path is stored
    allowed = subprocess.run([*cmd, "--allow-partial"], capture_output=True, text=True, env=os.environ.copy())
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_evaluate_all_measures_intermediate_nodes(test_components, tmp_path):
    spec = "name: all\nbase: tiny-llama\nevaluate: all\nsuites: {test_nll: {}}\npaths: [[tune.test_noise, tune.test_noise]]\n"
    summary = run(spec, tmp_path)
    assert summary.suite_runs_executed == 3  # source, first step, second step


def test_subprocess_executor_with_jobs_matches_inprocess(test_components, tmp_path):
    spec = "name: sp\nbase: tiny-llama\nsuites: {test_nll: {}}\npaths: [[tune.test_noise], [prune.test_fail]]\n"
    a = run(spec, tmp_path / "a")
    b = run(spec, tmp_path / "b", executor="subprocess", jobs=2)  # two child processes at once
    assert (b.steps_executed, b.steps_failed) == (a.steps_executed, a.steps_failed) == (1, 1)
    va = rows(tmp_path / "a", "SELECT path_name, value FROM metrics_long ORDER BY path_name")
    vb = rows(tmp_path / "b", "SELECT path_name, value FROM metrics_long ORDER BY path_name")
    assert va == vb
    where = rows(tmp_path / "b", "SELECT json_extract_string(machine, '$.executor'), json_extract(machine, '$.pid') "
                                 "FROM nodes WHERE technique IS NOT NULL UNION ALL SELECT json_extract_string(machine, "
                                 "'$.executor'), json_extract(machine, '$.pid') FROM suite_runs")
    assert {w[0] for w in where} == {"subprocess"} and str(os.getpid()) not in {str(w[1]) for w in where}


def test_sigkill_midway_then_resume(test_components, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(textwrap.dedent(GRID))
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec_file), "-w", str(ws), "--no-leaderboard", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 240
    artifacts = ws / "artifacts"
    while time.time() < deadline and proc.poll() is None:
        done = [d for d in artifacts.glob("*") if (d / "node.json").exists()] if artifacts.exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "technique steps executed" in resumed.stdout
    counts = rows(ws, "SELECT path_name, count(*) FROM metrics_long GROUP BY path_name")
    assert len(counts) == 9 and all(c == 1 for _, c in counts)
    (dups,) = rows(ws, "SELECT count(*) - count(DISTINCT run_key) FROM suite_runs WHERE status = 'ok'")[0]
    assert dups == 0
    # the killed run is finished as interrupted by the resume (its process is gone), not left `running`
    assert sorted(rows(ws, "SELECT status FROM runs")) == [("interrupted",), ("ok",)]
