"""Break-even (cost of a path's steps / per-token saving vs its base) and trajectories (every metric at every node of
a path's chain), on synthetic databases with known numbers; the `slm analyze breakeven` and `slm compare` output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from results_builders import metric, slm

from results.breakeven import Z95, breakeven, tokens_interval, tokens_to_break_even
from results.compare import compared_trajectories
from results.store import ResultStore, connect
from results.trajectories import trajectories

EST = "estimated:codecarbon-cpu_load"


def _suite_runs(store: ResultStore, node: str, tps: float, tps_se: float, j: float | None, j_se: float = 0.001,
                resolved: bool = True, acc: float | None = None) -> None:
    """Latency (decode tokens/s at p32b1 and p128b1, the same figure), energy and quality runs on ``node``."""
    lat = [metric("latency", t, "decode_tokens_per_s", tps, tps_se, 10, "tokens/s", True, "measured:perf_counter")
           for t in ("p32b1", "p128b1")]
    lat.append(metric("latency", "p32b4", "decode_tokens_per_s", 10 * tps, 0.0, 10, "tokens/s", True,
                      "measured:perf_counter"))  # batch 4: never used
    store.record_suite_run("r1", dict(run_key=f"lat-{node}", node_hash=node, suite="latency", profile="quick",
                                      hardware_profile="cpu-1t", settings={}, status="ok", metrics=lat))
    if j is not None:
        store.record_suite_run("r1", dict(
            run_key=f"en-{node}", node_hash=node, suite="energy", profile="quick", hardware_profile="cpu-1t",
            settings={}, status="ok", metrics=[metric("energy", "decode", "decode_j_per_token", j, j_se, 3, "J/token",
                                                      False, EST, {"resolved": resolved})]))
    if acc is not None:
        store.record_suite_run("r1", dict(
            run_key=f"q-{node}", node_hash=node, suite="quality", profile="quick", hardware_profile="cpu-1t",
            settings={}, status="ok", metrics=[metric("quality", "probe", "acc", acc, 0.02, 100, "fraction", True,
                                                      "lm-eval")]))


def _path(store: ResultStore, name: str, chain: list[str], techniques: list[str]) -> None:
    store.record_path("r1", dict(path_id=f"p-{name}", name=name, base="builtin:tiny-llama", hardware_profile="cpu-1t",
                                 leaf_hash=chain[-1], chain=chain,
                                 steps=[{"technique": t, "params": {}} for t in techniques], spec_snippet="x"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """base (20 tok/s, 0.5 J/token); fast: prune (100 s, 200 J) + quant (20 s, 40 J) -> 25 tok/s, 0.4 J/token;
    slow: one step (10 s) -> 16 tok/s; noisy: one step -> 20.2 tok/s with a large stderr; energy of `fast` and
    `slow` measured, `noisy`'s energy an upper bound."""
    path = tmp_path / "results.duckdb"
    store = ResultStore(path)
    store.start_run(run_id="r1", spec_name="t", spec={}, spec_text="", environment={}, hardware={}, git_commit=None)
    store.record_node("r1", dict(node_hash="src", kind="source", technique=None, status="ok"))
    for h, tech, wall, joules in (("pr", "prune.wanda", 100.0, 200.0), ("q", "quant.int8", 20.0, 40.0),
                                  ("slow", "tune.sft", 10.0, 30.0), ("noisy", "quant.rtn", 5.0, 12.0)):
        store.record_node("r1", dict(node_hash=h, kind="model", technique=tech, status="ok", wall_time_s=wall,
                                     energy_j=joules, energy_method=EST, inputs={"model": "src"}))
    _suite_runs(store, "src", 20.0, 0.2, 0.5, acc=0.6)
    _suite_runs(store, "pr", 22.0, 0.2, None, acc=0.5)  # intermediate node (evaluate: all)
    _suite_runs(store, "q", 25.0, 0.25, 0.4, acc=0.55)
    _suite_runs(store, "slow", 16.0, 0.2, 0.6)
    _suite_runs(store, "noisy", 20.2, 2.0, 0.45, resolved=False)
    _path(store, "base", ["src"], [])
    _path(store, "fast", ["src", "pr", "q"], ["prune.wanda", "quant.int8"])
    _path(store, "slow", ["src", "slow"], ["tune.sft"])
    _path(store, "noisy", ["src", "noisy"], ["quant.rtn"])
    store.finish_run("r1", "ok")
    store.close()
    return path


def test_breakeven_numbers_and_uncertainty(db):
    found = {r["path_name"]: r for r in breakeven(db)}
    assert set(found) == {"fast", "slow", "noisy"}  # the base path has no steps to pay back
    fast = found["fast"]
    assert fast["cost"]["wall_time_s"] == 120.0 and fast["cost"]["energy_j"] == 240.0
    assert fast["cost"]["energy_is_estimate"] and fast["cost"]["energy_method"] == [EST]
    t = fast["time"]
    saving = 1 / 20 - 1 / 25
    assert t["saving_per_token"] == pytest.approx(saving) and t["tasks"] == ["p128b1", "p32b1"]
    se_b, se_p = 0.2 / 20**2 * math.sqrt(2) / 2, 0.25 / 25**2 * math.sqrt(2) / 2  # two tasks averaged
    se = math.hypot(se_b, se_p)
    assert t["saving_stderr"] == pytest.approx(se)
    assert t["tokens"] == pytest.approx(120 / saving) and t["tokens_stderr"] == pytest.approx(120 * se / saving**2)
    assert t["tokens_ci_low"] == pytest.approx(120 / (saving + Z95 * se))
    assert t["tokens_ci_high"] == pytest.approx(120 / (saving - Z95 * se))
    assert t["status"] == "resolved" and not t["estimate"] and t["n_base"] == 20
    e = fast["energy"]
    assert e["tokens"] == pytest.approx(240 / 0.1) and e["status"] == "resolved" and e["estimate"]
    assert e["tokens_stderr"] == pytest.approx(240 * math.hypot(0.001, 0.001) / 0.1**2)


def test_never_not_resolved_and_unknown(db):
    found = {r["path_name"]: r for r in breakeven(db)}
    assert found["slow"]["time"]["status"] == "never" and found["slow"]["time"]["tokens"] is None
    assert found["slow"]["energy"]["status"] == "never"
    noisy = found["noisy"]
    assert noisy["time"]["saving_per_token"] > 0 and noisy["time"]["status"] == "not resolved"
    assert noisy["time"]["tokens_ci_high"] is None  # the interval reaches "never"
    assert noisy["energy"]["status"] == "not resolved" and "upper bound" in noisy["energy"]["reason"]


def test_missing_cost_or_measurement_is_unknown(db):
    with connect(db) as con:
        con.execute("UPDATE nodes SET status = 'failed', wall_time_s = NULL WHERE node_hash = 'q'")
        con.execute("DELETE FROM metrics WHERE run_key = 'en-slow'")
    found = {r["path_name"]: r for r in breakeven(db)}
    assert found["fast"]["time"]["status"] == "unknown" and "q" in found["fast"]["time"]["reason"]
    assert found["slow"]["energy"]["status"] == "unknown" and "not measured on the path" in \
        found["slow"]["energy"]["reason"]


def test_tokens_to_break_even_edges():
    assert tokens_to_break_even(10.0, -0.1, 0.01)["status"] == "never"
    assert tokens_to_break_even(10.0, 0.0, None)["status"] == "never"
    point = tokens_to_break_even(10.0, 0.5, None)
    assert point["tokens"] == 20.0 and point["tokens_stderr"] is None and "point estimate" in point["reason"]


def test_breakeven_table_reads_in_display_units():
    from results.breakeven_commands import breakeven_table

    def res(cost: float, saving: float, se: float, estimate: bool, unit: str) -> dict:
        return {"cost": cost, "cost_unit": unit, "per_token_unit": f"{unit}/token", "saving_per_token": saving,
                "saving_stderr": se, "estimate": estimate, **tokens_to_break_even(cost, saving, se)}

    row = {"path_name": "q8", "hardware_profile": "cpu-1t", "steps": ["deploy.llamacpp"],
           "time": res(3.219, 0.0521, 0.0017, False, "s"), "energy": res(42.87, 0.172, 0.1, True, "J")}
    text = breakeven_table([row])
    assert "52.1 ± 1.7 ms/token" in text and "61.8 ± 2.0 [58.1, 66.0]" in text  # interval at the stderr's place
    assert "~170 ± 100 mJ/token" in text  # the energy saving per token in mJ, marked as an estimate
    assert "not resolved: ~250 ± 140 [120, ∞]" in text  # its interval reaches 0: no upper bound


def test_tokens_interval_is_open_above_where_the_saving_may_be_zero():
    """The site's page and `slm analyze breakeven` print the interval through this one function."""
    closed = tokens_to_break_even(3.219, 0.0521, 0.0017)
    assert tokens_interval(closed, "tokens") == "[58.1, 66.0] tokens"
    open_above = tokens_to_break_even(42.87, 0.172, 0.1)
    assert open_above["tokens_ci_high"] is None and tokens_interval(open_above) == "[120, ∞]"
    assert tokens_interval(tokens_to_break_even(10.0, -1.0, 0.1)) == "—"  # never: no tokens, no interval


def test_analyze_breakeven_cli(db):
    out = slm("analyze", "breakeven", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["path_name"]: r["time"]["status"] for r in rows} == {"fast": "resolved", "noisy": "not resolved",
                                                                  "slow": "never"}
    text = slm("analyze", "breakeven", "--db", str(db), "--run", "r1")
    assert text.returncode == 0 and "never" in text.stdout and "not resolved" in text.stdout
    assert "delta method" in text.stdout and "~" in text.stdout
    assert "no path with steps" in slm("analyze", "breakeven", "--db", str(db), "--run", "other").stdout


def test_trajectory_of_a_path_with_intermediate_measurements(db):
    fast, slow = trajectories(db, ["p-fast", "p-slow"])
    assert [n.label for n in fast.nodes] == ["base", "prune.wanda", "quant.int8"] and fast.has_intermediate
    acc = [n.metrics[("quality", "probe", "acc")]["value"] for n in fast.nodes]
    assert acc == [0.6, 0.5, 0.55]
    assert ("energy", "decode", "decode_j_per_token") not in fast.nodes[1].metrics
    assert fast.nodes[2].metrics[("latency", "p32b1", "decode_tokens_per_s")]["stderr"] == 0.25
    assert not slow.has_intermediate and [bool(n.metrics) for n in slow.nodes] == [True, True]
    with connect(db, read_only=True) as con:  # the view holds the same rows
        view = con.execute("SELECT position, value FROM trajectories WHERE path_id = 'p-fast' AND metric = 'acc' "
                           "ORDER BY position").fetchall()
    assert view == [(0, 0.6), (1, 0.5), (2, 0.55)]
    assert [t.path_name for t in compared_trajectories(db, "fast", "slow")] == ["fast"]


def test_compare_prints_the_trajectory(db):
    out = slm("compare", "slow", "fast", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert "trajectory of fast" in out.stdout and "trajectory of slow" not in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("quality/probe/acc")]
    assert lines and "50.0 ± 2.0 % (n=100)" in lines[-1] and "1:prune.wanda" in out.stdout
    assert "~400.0 ± 1.0 mJ/token" in out.stdout  # the energy estimate (0.4 J/token) is marked
    plain = slm("compare", "slow", "fast", "--db", str(db), "--no-trajectory")
    assert plain.returncode == 0 and "trajectory of" not in plain.stdout
