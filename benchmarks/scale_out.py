"""Scale-out on this machine (the acceptance of the executor issue), all in one sitting:

1. A 9-path grid (prune.magnitude x quant) on the pico model with quality suites, run sequentially
   (``inprocess``), with ``--jobs 2`` (subprocess) and with Ray (a local instance with 2 CPUs), each into a fresh
   workspace: wall times, their ratios to sequential, and whether every quality metric is identical.
2. Latency isolation: the latency suite on three paths measured (a) alone, (a') alone again (the run-to-run
   noise on this shared machine, which a run's own stderr does not see), (b) in a run where quality jobs of nine
   paths run next to it with ``--jobs 2`` (the scheduler's exclusive slot on), and (c) the same with the exclusive
   slot switched off in this process (latency shares the two cores with quality jobs). Decode and prefill
   tokens/s per path with their stderr and the foreign load measured during them, and the shift of (a'), (b) and
   (c) from (a) in units of the combined stderr. (b) must move no more than (a') does; (c) shows what the slot
   prevents.

    python benchmarks/scale_out.py [--out DIR] [--skip-ray]

About 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = """
name: scale
base: tiny-llama
hardware: cpu-1t
suites:
  quality: {profile: quick, limit: 60}
grid:
  prune: [none, {prune.magnitude: {sparsity: 0.3}}, {prune.magnitude: {sparsity: 0.5}}]
  quant: [none, quant.int8, {quant.rtn: {bits: 8}}]
"""
LATENCY = "latency: {profile: quick, prompt_lengths: [32], batch_sizes: [1], new_tokens: 16, min_repeats: 8, warmup: 2}"
LAT_PATHS = "paths: [[], [{prune.magnitude: {sparsity: 0.5}}], [quant.int8]]"


def run(text: str, ws: Path, **kw) -> tuple[float, object]:
    from harness.runner import Runner
    from harness.spec import parse_spec

    start = time.perf_counter()
    summary = Runner(parse_spec(textwrap.dedent(text), file="scale.yaml"), ws, progress=False, **kw).run()
    return time.perf_counter() - start, summary


def rows(ws: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def grid(out: Path, skip_ray: bool) -> dict[str, object]:
    sides = {"sequential (inprocess)": {}, "--jobs 2 (subprocess)": {"executor": "subprocess", "jobs": 2}}
    if not skip_ray:
        sides["ray (local, 2 CPUs)"] = {"executor": "ray", "jobs": 2}
    walls, metrics = {}, {}
    for name, kw in sides.items():
        ws = out / name.split()[0].strip("-")
        wall, summary = run(GRID, ws, **kw)
        assert summary.status == "ok", summary.failures
        walls[name] = wall
        metrics[name] = rows(ws, "SELECT path_name, task, metric, value, stderr, n FROM metrics_long ORDER BY ALL")
        print(f"  {name}: {wall:.1f} s, {summary.steps_executed} steps, {summary.suite_runs_executed} suite runs",
              flush=True)
    first = next(iter(walls))
    same = all(m == metrics[first] for m in metrics.values())
    print("grid (9 paths, quality quick limit 60, 2 cores): wall s and ratio to sequential")
    for name, wall in walls.items():
        print(f"  {name:<26} {wall:7.1f} s   ratio {wall / walls[first]:.2f}")
    print(f"  every quality metric identical across executors: {same} ({len(metrics[first])} rows)")
    return {"walls": walls, "identical": same, "rows": len(metrics[first])}


def latency(out: Path) -> dict[str, object]:
    from suites.base import SUITES

    alone = f"name: lat\nbase: tiny-llama\nhardware: cpu-1t\nsuites:\n  {LATENCY}\n{LAT_PATHS}\n"
    mixed = GRID.replace("suites:\n  quality: {profile: quick, limit: 60}",
                         f"suites:\n  quality: {{profile: quick, limit: 60}}\n  {LATENCY}")
    cls = SUITES.get("latency")
    results = {}
    sides = ("alone again", "next to quality, slot on", "next to quality, slot off")
    for name, text, exclusive in (("alone", alone, True), ("alone again", alone, True),
                                  ("next to quality, slot on", mixed, True), ("next to quality, slot off", mixed, False)):
        cls.exclusive = exclusive
        ws = out / f"lat-{len(results)}"
        wall, summary = run(text, ws, executor="subprocess", jobs=1 if name.startswith("alone") else 2)
        assert summary.status == "ok", summary.failures
        got = rows(ws, "SELECT path_name, metric, value, stderr, n, "
                       "json_extract(details, '$.foreign_load')::DOUBLE FROM metrics_long WHERE suite = 'latency' "
                       "AND metric IN ('decode_tokens_per_s', 'prefill_tokens_per_s') AND task = 'p32b1'")
        results[name] = {(p, m): (v, s, n, fl) for p, m, v, s, n, fl in got}
        print(f"  latency {name}: {wall:.1f} s", flush=True)
    cls.exclusive = True
    base = results["alone"]
    print("latency p32b1 (tokens/s, mean ± stderr; shift from 'alone' in combined stderrs; foreign load in cores)")
    table = []
    for key in sorted(base):
        line = f"  {key[0][:34]:<34} {key[1]:<21} alone {base[key][0]:8.1f} ± {base[key][1]:5.1f}"
        for name in sides:
            v, s, _, fl = results[name][key]
            z = (v - base[key][0]) / math.hypot(s, base[key][1])
            line += f" | {name.split(', ')[-1]} {v:7.1f} ± {s:5.1f} (z {z:+5.1f}, load {fl:.2f})"
            table.append({"path": key[0], "metric": key[1], "side": name, "value": v, "stderr": s, "z": z,
                          "foreign_load": fl, "alone": base[key][0], "alone_stderr": base[key][1]})
        print(line)
    return {"rows": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    from adapters.runtime import prepare_process

    prepare_process()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out or tempfile.mkdtemp(prefix="slm-scale-"))
    report = {"grid": grid(out, args.skip_ray), "latency": latency(out)}
    (out / "scale_out.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"report: {out / 'scale_out.json'}")


if __name__ == "__main__":
    main()
