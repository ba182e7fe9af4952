"""Benchmark: the memory suite's peak RSS of a model load against ``/usr/bin/time -v``'s maximum resident set
size for the same load (issue 6 acceptance: within 10%).

Runs the load (imports + SmolLM2-135M load) under ``/usr/bin/time -v`` in a fresh process, then the memory
suite's own child (which loads the same model in a fresh process), and compares the two peaks.

    python benchmarks/rss_vs_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

LOAD = ("from adapters.runtime import prepare_process; prepare_process(); import torch; "
        "from transformers import AutoModelForCausalLM, AutoTokenizer; "
        "from adapters.sources import load_source; load_source('smollm2-135m-instruct', threads=1)")


def time_v() -> int:
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", LOAD], capture_output=True, text=True,
                         check=True, env=os.environ)
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    assert kb, out.stderr[-500:]
    return int(kb.group(1)) * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("time") and not os.path.exists("/usr/bin/time"):
        sys.exit("/usr/bin/time is missing (Debian: apt-get install time)")
    from suites.builtin.memory import child_run

    suite_args = {"artifact": None, "source": "smollm2-135m-instruct", "threads": 1, "new_tokens": 1,
                  "prompt": [[1, 2, 3, 4]]}
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved
        r = child_run(suite_args)
        ours.append(r["load_peak"])
        theirs.append(time_v())
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"memory suite peak RSS during load (median of {args.repeats}): {o / 2**20:.1f} MiB "
          f"(VmHWM of the same child {r['vm_hwm'] / 2**20:.1f} MiB)")
    print(f"/usr/bin/time -v maximum resident set size (median): {t / 2**20:.1f} MiB")
    print(f"ratio suite/time {o / t:.3f} -> {'within' if abs(o / t - 1) <= 0.10 else 'OUTSIDE'} 10%")


if __name__ == "__main__":
    main()
