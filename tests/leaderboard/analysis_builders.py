"""A results database with everything the analysis pages show: a 2x2x2 grid run with per-item outcomes and an order
pair (effects), and a run with a base path, a shared prefix, intermediate measurements, parity and step costs
(break-even, trajectories, change vs base, the DAG); a hostile name in every text field of one path."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "results"))
from results_builders import latencies, metric  # noqa: E402
from test_breakeven_trajectories import EST, _path, _suite_runs  # noqa: E402
from test_effects import INT8, PRUNE, Run, write_grid  # noqa: E402

from results.store import ResultStore  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
# parity of the `fast` path's leaf: torch vs onnxruntime
PARITY = [("ll", "max_abs_delta_ll", 0.0123, None, 40, "nats", False),
          ("ll", "mean_abs_delta_ll", 0.0031, 0.0004, 40, "nats", False),
          ("choices", "choice_agreement", 0.975, 0.0247, 40, "fraction", True),
          ("greedy", "identical_tokens", 0.9, 0.0949, 10, "fraction", True)]


def write_lifecycle(db: Path) -> None:
    """Run r1: base (src: 20 tok/s, 0.5 J/token, acc 0.6); fast = src > pr (prune.wanda, 100 s, 200 J; measured
    with evaluate: all, acc 0.5) > q (quant.int8, 20 s, 40 J; 25 tok/s, 0.4 J/token, acc 0.55); pr-sft = src > pr >
    sft (shares the node pr with fast); slow = src > slow (16 tok/s: never breaks even); and a hostile path."""
    store = ResultStore(db)
    store.start_run(run_id="r1", spec_name="t", spec={}, spec_text="", environment={}, hardware={}, git_commit=None)
    store.record_node("r1", dict(node_hash="src", kind="source", technique=None, source="builtin:tiny-llama",
                                 status="ok"))
    for h, tech, wall, joules, parent in (("pr", "prune.wanda", 100.0, 200.0, "src"), ("q", "quant.int8", 20.0, 40.0, "pr"),
                                          ("sft", "tune.sft", 30.0, 60.0, "pr"), ("slow", "tune.sft", 10.0, 30.0, "src"),
                                          ("hx", HOSTILE, 1.0, 1.0, "src")):
        store.record_node("r1", dict(node_hash=h, kind="model", technique=tech, status="ok", wall_time_s=wall,
                                     energy_j=joules, energy_method=EST, inputs={"model": parent}))
    _suite_runs(store, "src", 20.0, 0.2, 0.5, acc=0.6)
    _suite_runs(store, "pr", 22.0, 0.2, None, acc=0.5)
    _suite_runs(store, "q", 25.0, 0.25, 0.4, acc=0.55)
    _suite_runs(store, "sft", 21.0, 0.2, 0.5, acc=0.58)
    _suite_runs(store, "slow", 16.0, 0.2, 0.6)
    _suite_runs(store, "hx", 20.0, 0.2, 0.5, acc=0.4)
    store.record_suite_run("r1", dict(
        run_key="par-q", node_hash="q", suite="parity", profile="quick", hardware_profile="cpu-1t", settings={},
        status="ok", metrics=[metric("parity", t, m, v, se, n, u, hib, "torch vs onnxruntime")
                              for t, m, v, se, n, u, hib in PARITY]))
    _path(store, "base", ["src"], [])
    _path(store, "fast", ["src", "pr", "q"], ["prune.wanda", "quant.int8"])
    _path(store, "pr-sft", ["src", "pr", "sft"], ["prune.wanda", "tune.sft"])
    _path(store, "slow", ["src", "slow"], ["tune.sft"])
    store.record_path("r1", dict(path_id="p-hostile", name=HOSTILE, base=HOSTILE, hardware_profile="cpu-1t",
                                 leaf_hash="hx", chain=["src", "hx"], steps=[{"technique": HOSTILE, "params": {}}],
                                 spec_snippet="x"))
    store.finish_run("r1", "ok")
    store.close()


def write_order_pair(db: Path) -> None:
    """Run `o`: prune > int8 and int8 > prune, the second losing a third of the first's correct items."""
    run = Run(db, "o", {"paths": [["prune.magnitude", "quant.int8"], ["quant.int8", "prune.magnitude"]]})
    rng = random.Random(3)
    good = [rng.random() < 0.8 for _ in range(300)]
    run.path([PRUNE, INT8], {"probe": good}, (20.0, 0.1), latencies(60, 0.05, 1))
    run.path([INT8, PRUNE], {"probe": [c and i % 3 != 0 for i, c in enumerate(good)]}, (20.0, 0.1),
             latencies(60, 0.05, 2))
    run.finish()


def write_all(db: Path) -> None:
    """The lifecycle run, then the grid run (the latest), then nothing else: the grid is the newest run."""
    write_lifecycle(db)
    write_grid(db, n_items=300)
