"""Benchmark: the quality suite against lm-eval's own command line on the same checkpoint, task YAML, data,
batch size and thread count (issue 5 acceptance): scores must be equal to the last digit; wall times side by
side in one sitting, the two commands alternating so both see the same machine load.

Both sides run as fresh processes and are timed by this script from start to exit (imports, model load, task
loading, scoring): ``python benchmarks/quality_vs_lmeval.py --worker`` loads ``smollm2-135m-instruct`` and
runs the suite; ``python -m lm_eval --model hf --model_args pretrained=<converted dir>,dtype=float32 --tasks ...
--include_path suites/tasks`` runs lm-eval (data dir through ``SLM_DATA_DIR``). The suite's in-process time
with the model already loaded (how the harness runs it) is reported too.

    python benchmarks/quality_vs_lmeval.py [--tasks arc_easy] [--batch-size 1] [--suite-batch-size N]
                                           [--rounds 1] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def worker(args: argparse.Namespace) -> None:
    """Load SmolLM2 and run the quality suite (full profile, no subsample); print metrics and timings as JSON."""
    from adapters.runtime import prepare_process

    prepare_process()
    from adapters.sources import load_source
    from suites.base import SUITES, SuiteContext

    handle = load_source("smollm2-135m-instruct", threads=1)
    ctx = SuiteContext(profile="full", workdir=Path(tempfile.mkdtemp()), data_dir=Path(args.data_dir),
                       options={"tasks": args.tasks, "batch_size": args.batch_size})
    start = time.perf_counter()
    res = SUITES.get("quality")().run(handle, ctx)
    scores = {f"{m.task}/{m.name}": [m.value, m.stderr, m.n] for m in res.metrics}
    print("RESULT " + json.dumps({"scores": scores, "suite_s": time.perf_counter() - start}))


def run_suite(args: argparse.Namespace) -> tuple[float, dict]:
    cmd = [sys.executable, __file__, "--worker", "--tasks", *args.tasks, "--batch-size", str(args.suite_batch_size),
           "--data-dir", args.data_dir]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **ENV}).stdout
    wall = time.perf_counter() - start
    return wall, json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def run_cli(args: argparse.Namespace, checkpoint: Path) -> tuple[float, dict]:
    from suites.tasks import TASKS_DIR

    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={checkpoint},dtype=float32", "--tasks", ",".join(args.tasks), "--include_path",
               str(TASKS_DIR), "--batch_size", str(args.batch_size), "--device", "cpu", "--output_path", out_dir]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True,
                       env={**os.environ, **ENV, "SLM_DATA_DIR": args.data_dir})
        wall = time.perf_counter() - start
        (result_file,) = list(Path(out_dir).rglob("results_*.json"))
        results = json.loads(result_file.read_text())
    scores = {}
    for task, values in results["results"].items():
        n = results["n-samples"][task]["effective"]
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if filt and "_stderr" not in metric and isinstance(value, int | float):
                name = metric if filt == "none" else f"{metric}_{filt}"
                stderr = values.get(f"{metric}_stderr,{filt}")
                scores[f"{task}/{name}"] = [value, stderr if isinstance(stderr, int | float) else None, n]
    return wall, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["arc_easy"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--suite-batch-size", type=int, default=None,
                        help="the suite's batch size (default: --batch-size; scores are bit-identical only when equal)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("SLM_DATA_DIR", str(ROOT.parent / "shared" / "benchmarks")))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.suite_batch_size = args.suite_batch_size or args.batch_size
    from adapters.sources import smollm2_checkpoint_dir

    checkpoint = smollm2_checkpoint_dir()
    suite_walls, cli_walls, in_process = [], [], []
    for r in range(args.rounds):  # alternate which side goes first
        sides = [("suite", lambda: run_suite(args)), ("cli", lambda: run_cli(args, checkpoint))]
        for side, fn in sides if r % 2 == 0 else sides[::-1]:
            wall, got = fn()
            if side == "suite":
                suite_walls.append(wall)
                in_process.append(got["suite_s"])
                mine = got["scores"]
            else:
                cli_walls.append(wall)
                theirs = got
            print(f"round {r}: {side} {wall:.1f} s", flush=True)
    print(f"{'metric':32} {'quality suite':>22} {'lm_eval CLI':>22}  equal")
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, [None])[0], theirs.get(key, [None])[0]
        print(f"{key:32} {a!r:>22} {b!r:>22}  {a == b}")
    s, c, p = statistics.median(suite_walls), statistics.median(cli_walls), statistics.median(in_process)
    n = next(iter(mine.values()))[2] if mine else 0
    print(f"tasks={args.tasks} n={n} threads=1 rounds={args.rounds} batch_size: suite {args.suite_batch_size}, "
          f"lm_eval CLI {args.batch_size}")
    print(f"wall (median): suite process {s:.1f} s, lm_eval CLI {c:.1f} s, ratio {s / c:.3f}; "
          f"suite in-process (model loaded) {p:.1f} s, ratio {p / c:.3f}")
    common = set(mine) & set(theirs)
    print("scores identical:", bool(common) and all(mine[k][:2] == theirs[k][:2] for k in common))


if __name__ == "__main__":
    main()
