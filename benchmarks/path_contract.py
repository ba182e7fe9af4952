"""The path contract, end to end on the pico model (the acceptance of the path-contract issue).

1. Orders that lost or corrupted the model on save/reload before the contract (awq > prune, svd > int8,
   int8 > distill, svd > lora, rtn > lora) run with ``--executor inprocess`` and ``--executor subprocess``
   in two workspaces; every deterministic metric (quality, weight and KV bytes) must be identical, and the
   sparsity a reloaded ``awq > prune`` artifact has must equal the one its step reported.
2. Changing the seed, ``max_steps`` or a dataset file's contents re-plans exactly the nodes that depend on it.
3. Every path's reproduce snippet (from the results database) plans to the same leaf hash and path id.

    python benchmarks/path_contract.py [--out DIR]

About 6-10 minutes on 2 cores (the subprocess executor starts a Python process per node and suite run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb

TRAIN = "max_steps: 2, n_texts: 64, seq_len: 32, batch_size: 2"
SPEC = f"""
name: contract
base: tiny-llama
seed: {{seed}}
max_steps: {{max_steps}}
suites:
  quality: {{{{profile: quick, limit: 50}}}}
  memory: {{{{profile: quick}}}}
datasets:
  notes: {{{{path: {{notes}}}}}}
paths:
  - [{{{{quant.awq: {{{{group_size: 32, n_samples: 4, seq_len: 64}}}}}}}}, {{{{prune.magnitude: {{{{sparsity: 0.5}}}}}}}}]
  - [{{{{factorize.svd: {{{{rank: 16}}}}}}}}, quant.int8]
  - [quant.int8, {{{{distill.logit: {{{{teacher: base, {TRAIN}}}}}}}}}]
  - [{{{{factorize.svd: {{{{rank: 16}}}}}}}}, {{{{peft.lora: {{{{dataset: notes, {TRAIN}}}}}}}}}]
  - [{{{{quant.rtn: {{{{bits: 4, group_size: 32}}}}}}}}, {{{{peft.lora: {{{{n_texts: 64, seq_len: 32, batch_size: 2}}}}}}}}]
"""
DETERMINISTIC = "suite = 'quality' OR (suite = 'memory' AND task IN ('weights', 'kv_cache'))"


def write_spec(root: Path, seed: int = 0, max_steps: int = 2) -> Path:
    notes = root / "notes.txt"
    if not notes.exists():
        notes.write_text("".join(f"The mill on the river {i} grinds flour for the bakers of the town.\n"
                                 for i in range(80)))
    path = root / f"spec-s{seed}-m{max_steps}.yaml"
    path.write_text(textwrap.dedent(SPEC.format(seed=seed, max_steps=max_steps, notes=notes)))
    return path


def slm(*args: str) -> str:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"slm {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def metrics(ws: Path) -> dict[tuple[str, str, str, str], tuple[float, float | None, int]]:
    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        rows = con.execute(f"SELECT path_name, suite, task, metric, value, stderr, n FROM metrics_long "
                           f"WHERE {DETERMINISTIC}").fetchall()
    finally:
        con.close()
    return {tuple(r[:4]): (r[4], r[5], r[6]) for r in rows}


def compare_executors(root: Path) -> None:
    spec = write_spec(root)
    times = {}
    for executor in ("inprocess", "subprocess"):
        start = time.perf_counter()
        print(slm("run", str(spec), "-w", str(root / executor), "--executor", executor, "--no-leaderboard",
                  "--no-progress").strip().splitlines()[0])
        times[executor] = time.perf_counter() - start
    a, b = metrics(root / "inprocess"), metrics(root / "subprocess")
    print(f"\nwall time: inprocess {times['inprocess']:.0f} s, subprocess {times['subprocess']:.0f} s")
    print("\n| path | suite/task/metric | inprocess | subprocess | equal |\n|---|---|---|---|---|")
    same = 0
    for key in sorted(set(a) | set(b)):
        eq = a.get(key) == b.get(key)
        same += eq
        if key[1] == "memory" or key[3] in ("acc", "acc_norm") or not eq:
            va, vb = a.get(key, (None,))[0], b.get(key, (None,))[0]
            print(f"| {key[0]} | {'/'.join(key[1:])} | {va} | {vb} | {'yes' if eq else 'NO'} |")
    print(f"\ndeterministic metrics identical between the executors (value, stderr, n): {same}/{len(set(a) | set(b))}")
    reloaded_sparsity(root / "subprocess")


def reloaded_sparsity(ws: Path) -> None:
    """The awq > prune artifact, reloaded from the cache: its decoder sparsity against its step's report."""
    import torch

    from adapters.handle import ModelHandle
    from adapters.techniques._training import decoder_linears

    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        h, report = con.execute("SELECT n.node_hash, n.report FROM nodes n JOIN nodes p "
                                "ON json_extract_string(n.inputs, '$.model') = p.node_hash "
                                "WHERE n.technique = 'prune.magnitude' AND p.technique = 'quant.awq'").fetchone()
    finally:
        con.close()
    model = ModelHandle.load(ws / "artifacts" / h).model
    zeros = total = 0
    for lin in decoder_linears(model).values():
        zeros += int((lin.weight == 0).sum())
        total += lin.weight.numel()
    print(f"quant.awq > prune.magnitude(0.5): reported sparsity {json.loads(report)['sparsity']:.4f}, "
          f"reloaded artifact {zeros / total:.4f} (torch {torch.__version__})")


def replanned(root: Path) -> None:
    """Which nodes a changed spec would compute, against the inprocess workspace."""
    def todo(spec: Path) -> list[str]:
        lines = slm("plan", str(spec), "-w", str(root / "inprocess")).splitlines()
        return [ln.split("] ", 1)[1].split(" ", 1)[1].split("  <-")[0].strip() for ln in lines if "[todo  ]" in ln]

    print("\nre-planned after a change (nodes a run would compute; everything else is cached):")
    print(f"  nothing changed: {todo(write_spec(root))}")
    print(f"  seed 0 -> 1: {todo(write_spec(root, seed=1))}")
    print(f"  max_steps 2 -> 3: {todo(write_spec(root, max_steps=3))}")
    notes = root / "notes.txt"
    notes.write_text(notes.read_text() + "One more line about the river.\n")
    print(f"  notes.txt edited: {todo(write_spec(root))}")


def snippets(root: Path) -> None:
    from harness.plan import make_plan
    from harness.spec import parse_spec

    con = duckdb.connect(str(root / "inprocess" / "results.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT path_id, name, leaf_hash, spec_snippet FROM paths").fetchall()
    finally:
        con.close()
    same = 0
    for path_id, name, leaf, snippet in rows:
        plan = make_plan(parse_spec(snippet, file=f"snippet:{name}"))
        (p,) = [p for p in plan.paths if p.name == name]
        same += (p.leaf, p.path_id) == (leaf, path_id)
    print(f"\nreproduce snippets that plan to the same leaf hash and path id: {same}/{len(rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="working directory (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="slm-contract-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"workspaces under {root}")
    compare_executors(root)
    snippets(root)
    replanned(root)


if __name__ == "__main__":
    main()
