"""Benchmark: the memory suite's peak RSS against ``/usr/bin/time -v``'s maximum resident set size for the
same work in a fresh process (issue 6 acceptance: within 10%), on SmolLM2-135M.

Two comparisons, interleaved: (1) load only (imports + model load): the suite child's sampled load peak
vs ``time -v`` of a load-only process; (2) load + one generated token: the suite child's whole-process peak
(sampled load and generate peaks, and the kernel's VmHWM) vs ``time -v`` of a load+generate process. The
second is larger because safetensors weights are memory-mapped and only become resident at the first
forward pass.

    python benchmarks/rss_vs_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

LOAD = ("from adapters.runtime import prepare_process; prepare_process(); import torch; "
        "from transformers import AutoModelForCausalLM, AutoTokenizer; "
        "from adapters.sources import load_source; h = load_source('smollm2-135m-instruct', threads=1)")
GENERATE = LOAD + ("; ids = torch.tensor([[1, 2, 3, 4]]); "
                   "h.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, "
                   "min_new_tokens=1, do_sample=False, pad_token_id=h.tokenizer.eos_token_id)")


def time_v(code: str) -> int:
    """``/usr/bin/time -v``'s maximum resident set size of ``python -c code``, in bytes."""
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ)
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if not kb:
        raise RuntimeError(out.stderr[-500:])
    return int(kb.group(1)) * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists("/usr/bin/time"):
        sys.exit("/usr/bin/time is missing (Debian/Ubuntu: apt-get install -y time)")
    from suites.builtin.memory import child_run

    suite_args = {"artifact": None, "source": "smollm2-135m-instruct", "threads": 1, "device": "cpu",
                  "new_tokens": 1, "prompt": [[1, 2, 3, 4]]}
    rows: dict[str, list[float]] = {k: [] for k in ("load", "time_load", "whole", "hwm", "time_whole")}
    for _ in range(args.repeats):  # interleaved
        r = child_run(suite_args)
        rows["load"].append(r["load_peak"])
        rows["whole"].append(max(r["load_peak"], r["generate_peak"]))
        rows["hwm"].append(r["vm_hwm"])
        rows["time_load"].append(time_v(LOAD))
        rows["time_whole"].append(time_v(GENERATE))
    med = {k: statistics.median(v) / 2**20 for k, v in rows.items()}
    print(f"repeats={args.repeats} (medians, MiB)")
    print(f"load only:       suite sampled peak {med['load']:.1f}  /usr/bin/time -v {med['time_load']:.1f}  "
          f"ratio {med['load'] / med['time_load']:.3f} -> "
          f"{'within' if abs(med['load'] / med['time_load'] - 1) <= 0.10 else 'OUTSIDE'} 10%")
    print(f"load + generate: suite sampled peak {med['whole']:.1f} (VmHWM {med['hwm']:.1f})  "
          f"/usr/bin/time -v {med['time_whole']:.1f}  ratio {med['whole'] / med['time_whole']:.3f} -> "
          f"{'within' if abs(med['whole'] / med['time_whole'] - 1) <= 0.10 else 'OUTSIDE'} 10%")


if __name__ == "__main__":
    main()
