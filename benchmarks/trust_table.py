"""The trust table: the ``trust`` suite on a base model and a 50%-magnitude-pruned copy, side by side.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/trust_table.py [--model smollm2-135m-instruct] [--profile quick]
        [--data-dir ../shared/benchmarks] [--sparsity 0.5] [--json out.json]

Runs the suite on the base (its own base: retention 1) and then on the pruned copy with the base as
``ctx.base`` (the base's results come from the suite's process cache, not a second scoring), and prints
every metric with its stderr and n plus the pruned path's retention ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--profile", default="quick", choices=("quick", "standard", "full"))
    p.add_argument("--data-dir", default=os.environ.get("SLM_DATA_DIR", str(ROOT.parent / "shared" / "benchmarks")))
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write every metric as JSON here")
    return p.parse_args(argv)


def _fmt(value: float, stderr: float | None) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.3f} ± {stderr:.3f}" if stderr is not None else f"{value:.3f}"


def table(base: list, pruned: list, label: str) -> str:
    """A Markdown table: one row per metric, base and pruned values, and the pruned path's retention."""
    keyed = {(m.task, m.name): m for m in pruned}
    rows = ["| task | metric | dir | n | base | " + label + " | retention |", "|---|---|---|---|---|---|---|"]
    for b in base:
        if b.name.startswith("retention_"):
            continue
        p = keyed.get((b.task, b.name))
        r = keyed.get((b.task, f"retention_{b.name}"))
        rows.append(f"| {b.task} | {b.name} | {'↑' if b.higher_is_better else '↓'} | {b.n} | {_fmt(b.value, b.stderr)} "
                    f"| {_fmt(p.value, p.stderr) if p else '-'} | {_fmt(r.value, r.stderr) if r else '-'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the suite on both models and print the table."""
    args = _args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SLM_MODEL_CACHE", str(ROOT / ".slm" / "models"))
    from adapters.sources import load_source
    from adapters.technique import TECHNIQUES, TechniqueContext, build_params
    from suites.base import SUITES, SuiteContext

    base = load_source(args.model, threads=1)
    cls = TECHNIQUES.get("prune.magnitude")
    workdir = ROOT / ".slm" / "work" / "trust_table"
    pruned = cls(build_params(cls, {"sparsity": args.sparsity})).run(base, TechniqueContext(workdir=workdir)).handle
    data_dir = Path(args.data_dir) if Path(args.data_dir).is_dir() else None
    suite = SUITES.get("trust")()
    results, times = {}, {}
    for name, handle, ctx_base in (("base", base, None), ("pruned", pruned, base)):
        ctx = SuiteContext(profile=args.profile, seed=args.seed, workdir=workdir, data_dir=data_dir, base=ctx_base)
        start = time.perf_counter()
        results[name] = suite.run(handle, ctx)
        times[name] = time.perf_counter() - start
        errors = results[name].settings.get("errors")
        if errors:
            print(f"{name}: dimensions failed: {json.dumps(errors, indent=1)}", file=sys.stderr)
    label = f"magnitude {args.sparsity:.0%}"
    print(f"model {args.model}, profile {args.profile}, seed {args.seed}, data {data_dir}, threads 1")
    print(f"suite time: base {times['base']:.0f} s, pruned {times['pruned']:.0f} s (base not rescored)")
    for name, res in results.items():
        print(f"seconds per dimension ({name}): {res.settings.get('dimension_seconds')}")
    print()
    print(table(results["base"].metrics, results["pruned"].metrics, label))
    if args.json:
        args.json.write_text(json.dumps({k: [dataclasses.asdict(m) for m in r.metrics] for k, r in results.items()},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
