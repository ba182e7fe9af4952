"""Benchmark: the latency suite's decode tokens/s on a llama.cpp handle against llama-cpp-python's own timing of the
same GGUF on the same prompt, interleaved in one process (issue 19 acceptance: within 10%).

Each round runs the latency suite itself on the ``deploy.llamacpp`` handle (one grid point: batch 1, its own repeats;
decode tokens/s from the per-token timestamps of :meth:`LlamaCppHandle.stream`) and then llama-cpp-python alone: a
second ``llama_cpp.Llama`` on the same file (same threads, context and F16 KV cache), greedy ``Llama.generate`` over
the same prompt tokens for exactly N tokens, timed two ways: llama.cpp's own decode counters
(``llama_perf_context``: ``n_eval`` single-token decodes over ``t_eval_ms``, sampling excluded) and the wall clock
of the ``generate`` loop from its first to its last token ((N - 1) / seconds, as the suite counts). The order
alternates between rounds so that a drift in machine load cancels; medians over rounds and their ratios are printed.

With ``--against-torch`` each round also runs the latency suite on the fp32 PyTorch model the GGUF was converted from
(eager, the same threads, prompt and token count), in alternating order: the speed-up of the llama.cpp path over
eager PyTorch, interleaved in one process (issue 19's bar: >= 3x), as the ratio of medians with a 95% bootstrap
interval over the rounds' paired ratios.

    python benchmarks/llamacpp_timing.py [--quant Q4_K_M] [--gguf FILE] [--rounds 7] [--new-tokens 32] [--against-torch]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from adapters.runtime import prepare_process

prepare_process()

from adapters.sources import load_source  # noqa: E402
from adapters.technique import TECHNIQUES, TechniqueContext, build_params  # noqa: E402
from suites.base import SUITES, SuiteContext  # noqa: E402
from suites.builtin.latency import prompt_ids  # noqa: E402


def suite_decode(handle, args, workdir: Path) -> float:
    """The latency suite's decode tokens/s (mean of its repeats) at one grid point."""
    opts = {"prompt_lengths": [args.prompt_tokens], "batch_sizes": [1], "new_tokens": args.new_tokens,
            "min_repeats": args.repeats, "min_duration_s": 0.0, "warmup": 0}
    res = SUITES.get("latency")().run(handle, SuiteContext(profile="quick", options=opts, workdir=workdir))
    return next(m.value for m in res.metrics if m.name == "decode_tokens_per_s")


def own_decode(llm, ids: list[int], n: int) -> tuple[float, float]:
    """llama-cpp-python alone, greedy, exactly ``n`` tokens: (tokens/s by llama.cpp's decode counters, tokens/s by
    the wall clock between the first and the last token of ``Llama.generate``)."""
    import llama_cpp

    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    stamps = []
    for i, _token in enumerate(llm.generate(ids, temp=0.0, reset=True)):  # EOS is not special to Llama.generate
        stamps.append(time.perf_counter())
        if i + 1 == n:
            break
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return perf.n_eval / (perf.t_eval_ms / 1000), (n - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="Q4_K_M", help="deploy.llamacpp's quant (ignored with --gguf)")
    ap.add_argument("--gguf", help="time this GGUF file instead (e.g. the embedded Q4_1), with the SmolLM2 tokenizer")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=2, help="suite repeats per round")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--against-torch", action="store_true", help="also time the fp32 torch model, interleaved")
    args = ap.parse_args()
    import llama_cpp

    from adapters.techniques.llamacpp import load_gguf_file

    with tempfile.TemporaryDirectory() as tmp:
        base = load_source("smollm2-135m-instruct", threads=args.threads)
        if args.gguf:
            handle = load_gguf_file(args.gguf, base.tokenizer, threads=args.threads)
            what = args.gguf
        else:
            cls = TECHNIQUES.get("deploy.llamacpp")
            started = time.perf_counter()
            handle, report = cls(build_params(cls, {"quant": args.quant})).run(
                base, TechniqueContext(workdir=Path(tmp) / "gguf", hardware={"threads": args.threads}))
            what = f"SmolLM2-135M-Instruct {args.quant} ({time.perf_counter() - started:.0f} s to convert: {report})"
        if not args.against_torch:
            del base
        gguf_file = handle.gguf_file
        llm = llama_cpp.Llama(str(gguf_file), n_ctx=handle.model.n_ctx, n_batch=512, n_ubatch=512,
                              n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
        ids = prompt_ids(handle, args.prompt_tokens, 1, 0)[0]  # the suite's own prompt (seed 0)
        suite_tps, perf_tps, wall_tps, torch_tps = [], [], [], []
        suite_decode(handle, args, Path(tmp))  # warm-up both
        own_decode(llm, ids, 4)
        if args.against_torch:
            suite_decode(base, args, Path(tmp))
        for i in range(args.rounds):
            if i % 2:
                suite_tps.append(suite_decode(handle, args, Path(tmp)))
            if args.against_torch and i % 2:
                torch_tps.append(suite_decode(base, args, Path(tmp)))
            perf, wall = own_decode(llm, ids, args.new_tokens)
            perf_tps.append(perf)
            wall_tps.append(wall)
            if args.against_torch and not i % 2:
                torch_tps.append(suite_decode(base, args, Path(tmp)))
            if not i % 2:
                suite_tps.append(suite_decode(handle, args, Path(tmp)))
        size_mb = gguf_file.stat().st_size / 1e6
    s, p, w = statistics.median(suite_tps), statistics.median(perf_tps), statistics.median(wall_tps)
    print(f"{what}\nfile {gguf_file.name}: {size_mb:.1f} MB; threads={args.threads} "
          f"prompt={args.prompt_tokens} new={args.new_tokens} rounds={args.rounds} suite repeats/round={args.repeats}")
    for name, values in (("latency suite (stream timestamps)", suite_tps),
                         ("llama.cpp decode counters (llama_perf_context)", perf_tps),
                         ("llama-cpp-python Llama.generate wall clock", wall_tps)):
        print(f"{name}: median {statistics.median(values):.2f} tokens/s (rounds: "
              f"{', '.join(f'{x:.1f}' for x in values)})")
    for name, ref in (("llama.cpp counters", p), ("Llama.generate wall clock", w)):
        ratio = s / ref
        paired = statistics.median(a / b for a, b in zip(suite_tps, perf_tps if ref is p else wall_tps, strict=True))
        print(f"suite / {name}: ratio of medians {ratio:.3f} -> {'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} "
              f"10%; median of per-round ratios {paired:.3f}")
    if torch_tps:
        per_round = [a / b for a, b in zip(suite_tps, torch_tps, strict=True)]
        rng = random.Random(0)
        boots = sorted(statistics.median(rng.choices(per_round, k=len(per_round))) for _ in range(2000))
        print(f"eager PyTorch fp32 (latency suite): median {statistics.median(torch_tps):.2f} tokens/s (rounds: "
              f"{', '.join(f'{x:.1f}' for x in torch_tps)})")
        print(f"llama.cpp {args.quant} / PyTorch fp32 decode: ratio of medians {s / statistics.median(torch_tps):.2f}; "
              f"median of per-round ratios {statistics.median(per_round):.2f} [95% bootstrap {boots[50]:.2f}, "
              f"{boots[1949]:.2f}] over {len(per_round)} rounds")


if __name__ == "__main__":
    main()
