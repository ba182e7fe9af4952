"""Benchmark: the latency suite's decode tokens/s against a bare ``model.generate`` loop, interleaved in one
process on SmolLM2-135M at 1 thread (issue 6 acceptance: within 10%).

Each round runs the latency suite itself (one grid point, its own repeats) and then the bare loop, so both
see the same machine load. Bare loop: decode tokens/s = (N - 1) / (t(generate N tokens) - t(generate 1
token)), i.e. the prefill and first token removed by difference, no streamer or logits processor. Reports
medians over rounds and their ratio.

    python benchmarks/decode_vs_generate.py [--rounds 7] [--new-tokens 32] [--prompt-tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from adapters.runtime import prepare_process

prepare_process()

import torch  # noqa: E402

from adapters.sources import load_source  # noqa: E402
from suites.base import SUITES, SuiteContext  # noqa: E402
from suites.builtin.latency import prompt_ids  # noqa: E402


def bare(model, ids, n: int, pad: int) -> float:
    """Seconds for one plain greedy ``generate`` of exactly ``n`` new tokens."""
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=pad)
    return time.perf_counter() - start


def suite_decode(handle, args, workdir: Path) -> tuple[float, int]:
    """The latency suite's decode tokens/s (mean) and its n at one grid point."""
    opts = {"prompt_lengths": [args.prompt_tokens], "batch_sizes": [1], "new_tokens": args.new_tokens,
            "min_repeats": args.repeats, "min_duration_s": 0.0, "warmup": 0}
    res = SUITES.get("latency")().run(handle, SuiteContext(profile="quick", options=opts, workdir=workdir))
    m = next(m for m in res.metrics if m.name == "decode_tokens_per_s")
    return m.value, m.n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=2, help="suite repeats per round")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    args = ap.parse_args()
    handle = load_source("smollm2-135m-instruct", threads=1)
    handle.activate()
    tok = handle.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor(prompt_ids(handle, args.prompt_tokens, 1, 0))
    suite_tps, bare_tps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        bare(handle.model, ids, 4, pad)  # warm-up (the suite warms itself up through its first round)
        suite_decode(handle, args, Path(tmp))
        for i in range(args.rounds):  # alternate which goes first, so a drift in machine load cancels
            if i % 2:
                suite_tps.append(suite_decode(handle, args, Path(tmp))[0])
            t_n, t_1 = bare(handle.model, ids, args.new_tokens, pad), bare(handle.model, ids, 1, pad)
            bare_tps.append((args.new_tokens - 1) / (t_n - t_1))
            if not i % 2:
                suite_tps.append(suite_decode(handle, args, Path(tmp))[0])
    s, b = statistics.median(suite_tps), statistics.median(bare_tps)
    print(f"threads=1 prompt={args.prompt_tokens} new={args.new_tokens} rounds={args.rounds} "
          f"suite repeats/round={args.repeats}")
    print(f"latency suite decode tokens/s median {s:.2f} (rounds: {', '.join(f'{x:.1f}' for x in suite_tps)})")
    print(f"bare generate decode tokens/s median {b:.2f} (rounds: {', '.join(f'{x:.1f}' for x in bare_tps)})")
    ratios = [x / y for x, y in zip(suite_tps, bare_tps, strict=True)]
    paired = statistics.median(ratios)
    print(f"ratio of medians suite/bare {s / b:.3f} -> {'within' if abs(s / b - 1) <= 0.10 else 'OUTSIDE'} 10%; "
          f"median of per-round (paired) ratios {paired:.3f} -> {'within' if abs(paired - 1) <= 0.10 else 'OUTSIDE'} 10%")


if __name__ == "__main__":
    main()
