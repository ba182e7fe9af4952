"""Benchmark: the latency suite's decode tokens/s against a bare ``model.generate`` loop, interleaved in one
process on SmolLM2-135M (issue 6 acceptance: within 10%).

Bare loop: decode tokens/s = (N - 1) / (t(generate N tokens) - t(generate 1 token)), i.e. the prefill and
first token removed by difference. Suite: ``timed_generate`` timestamps each token inside the loop.
Reports medians over interleaved rounds and their ratio.

    python benchmarks/decode_vs_generate.py [--rounds 7] [--new-tokens 32] [--prompt-tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

from adapters.runtime import prepare_process

prepare_process()

import torch  # noqa: E402

from adapters.sources import load_source  # noqa: E402
from suites.builtin.latency import prompt_ids, timed_generate  # noqa: E402


def bare(model, ids, n: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=2)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    args = ap.parse_args()
    handle = load_source("smollm2-135m-instruct", threads=1)
    handle.activate()
    prompts = prompt_ids(handle, args.prompt_tokens, 1, 0)
    ids = torch.tensor(prompts)
    bare(handle.model, ids, 4)
    timed_generate(handle, prompts, 4)  # warm-up both
    suite_tps, bare_tps = [], []
    for _ in range(args.rounds):
        stamps = timed_generate(handle, prompts, args.new_tokens)
        suite_tps.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        t_n, t_1 = bare(handle.model, ids, args.new_tokens), bare(handle.model, ids, 1)
        bare_tps.append((args.new_tokens - 1) / (t_n - t_1))
    s, b = statistics.median(suite_tps), statistics.median(bare_tps)
    print(f"threads=1 prompt={args.prompt_tokens} new={args.new_tokens} rounds={args.rounds}")
    print(f"suite decode tokens/s median {s:.2f} (all: {', '.join(f'{x:.1f}' for x in suite_tps)})")
    print(f"bare generate decode tokens/s median {b:.2f} (all: {', '.join(f'{x:.1f}' for x in bare_tps)})")
    print(f"ratio suite/bare {s / b:.3f} -> {'within' if abs(s / b - 1) <= 0.10 else 'OUTSIDE'} 10%")


if __name__ == "__main__":
    main()
