"""Benchmark: the quality suite against lm-eval's own command line on the same checkpoint, task YAML, data,
batch size and thread count (issue 5 acceptance): scores must be equal to the last digit; wall times side by
side in one sitting, the two commands alternating so both see the same machine load.

Both sides run as fresh processes and are timed by this script from start to exit (imports, model load, task
loading, scoring): ``python benchmarks/quality_vs_lmeval.py --worker`` loads ``smollm2-135m-instruct`` and
runs the suite; ``python -m lm_eval --model hf --model_args pretrained=<converted dir>,dtype=float32 --tasks ...
--include_path suites/tasks`` runs lm-eval (data dir through ``SLM_DATA_DIR``). The suite's in-process time
with the model already loaded (how the harness runs it) is reported too.

The suite runs twice per round: with its default ``prefix_cache`` (choices sharing a context score the context
once) and with ``prefix_cache: false`` (lm-eval's own one-pass-per-choice path, bit-identical to the CLI).

    python benchmarks/quality_vs_lmeval.py [--tasks arc_easy] [--batch-size 1] [--suite-batch-size N]
                                           [--rounds 1] [--data-dir DIR] [--no-exact]
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
from collections.abc import Callable
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
                       options={"tasks": args.tasks, "batch_size": args.batch_size,
                                "prefix_cache": not args.exact})
    start = time.perf_counter()
    res = SUITES.get("quality")().run(handle, ctx)
    scores = {f"{m.task}/{m.name}": [m.value, m.stderr, m.n] for m in res.metrics}
    print("RESULT " + json.dumps({"scores": scores, "suite_s": time.perf_counter() - start,
                                  "prefix_cache": res.settings["prefix_cache"]}))


def run_suite(args: argparse.Namespace, exact: bool) -> tuple[float, dict]:
    cmd = [sys.executable, __file__, "--worker", "--tasks", *args.tasks, "--batch-size", str(args.suite_batch_size),
           "--data-dir", args.data_dir, *(["--exact"] if exact else [])]
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
    parser.add_argument("--no-exact", action="store_true", help="skip the suite's prefix_cache: false run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.suite_batch_size = args.suite_batch_size or args.batch_size
    from adapters.sources import smollm2_checkpoint_dir

    checkpoint = smollm2_checkpoint_dir()
    sides: dict[str, Callable[[], tuple[float, dict]]] = {"suite": lambda: run_suite(args, exact=False)}
    if not args.no_exact:
        sides["suite exact"] = lambda: run_suite(args, exact=True)
    sides["lm_eval CLI"] = lambda: run_cli(args, checkpoint)
    walls: dict[str, list[float]] = {k: [] for k in sides}
    in_process: dict[str, list[float]] = {k: [] for k in sides if k != "lm_eval CLI"}
    scores: dict[str, dict] = {}
    shared = None
    for r in range(args.rounds):  # alternate the order so every side sees the same machine load
        for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            wall, got = sides[side]()
            walls[side].append(wall)
            if side in in_process:
                in_process[side].append(got["suite_s"])
                scores[side] = got["scores"]
                if side == "suite":
                    shared = got["prefix_cache"]
            else:
                scores[side] = got
            print(f"round {r}: {side} {wall:.1f} s", flush=True)
    theirs = scores["lm_eval CLI"]
    mine = scores["suite"]
    print(f"{'metric':28}" + "".join(f"{k:>22}" for k in sides))
    for key in sorted(set().union(*map(set, scores.values()))):
        print(f"{key:28}" + "".join(f"{scores[k].get(key, [None])[0]!r:>22}" for k in sides))
    n = next(iter(mine.values()))[2] if mine else 0
    print(f"tasks={args.tasks} n={n} threads=1 rounds={args.rounds} batch_size: suite {args.suite_batch_size}, "
          f"lm_eval CLI {args.batch_size}; suite prefix_cache {shared}")
    cli = statistics.median(walls["lm_eval CLI"])
    for side in in_process:
        s, p = statistics.median(walls[side]), statistics.median(in_process[side])
        common = set(scores[side]) & set(theirs)
        same = [k for k in sorted(common) if scores[side][k][:2] == theirs[k][:2]]
        print(f"{side}: wall (median) {s:.1f} s vs lm_eval CLI {cli:.1f} s, ratio {s / cli:.3f}; in-process (model "
              f"loaded) {p:.1f} s, ratio {p / cli:.3f}; metrics identical to the CLI (value and stderr): "
              f"{len(same)}/{len(common)} {same}")


if __name__ == "__main__":
    main()
