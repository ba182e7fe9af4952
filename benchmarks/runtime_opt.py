"""Benchmark (issue 19): runtime optimizations on SmolLM2-135M at one thread, each against the plain model in the same
process, interleaved round by round so both see the same machine load.

- ``compile``: decode tokens/s of the latency suite's own timing (``timed_generate``: 128-token prompt, 64 new
  tokens) for eager (dynamic cache) vs ``deploy.compile`` (inductor, static cache); the one-time compile cost is the
  step's report.
- ``speculative``: greedy decoding with a draft (SmolLM2 with 20 of its 30 blocks dropped by ``prune.layers``, or
  its quanto int8 copy by ``quant.rtn``) and with prompt lookup, against plain greedy: equal outputs, acceptance rate per generation (counted at transformers'
  candidate generator), decode tokens/s through the latency suite's streaming path, on WikiText-2 prompts.
- ``kv``: KV bytes per token held after a 1024-token prefill, and perplexity of WikiText-2 test segments fed
  through each cache 32 tokens at a time (:func:`adapters.techniques.kv.cached_perplexity`): fp32 (default cache),
  int8, int4, int2, sinks + window, window without sinks.

    SLM_DATA_DIR=../shared/benchmarks python benchmarks/runtime_opt.py [--only compile,speculative,kv] [--rounds 5]

Prints one JSON object per measurement and a summary; takes ~15-25 min on the 2-vCPU machines (inductor's first
compile is minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from adapters.runtime import prepare_process

prepare_process()

from adapters.sources import load_source  # noqa: E402
from adapters.technique import TechniqueContext, build_params, get_technique  # noqa: E402
from adapters.techniques.kv import cached_perplexity  # noqa: E402
from adapters.techniques.runtime_opt import counting_drafts  # noqa: E402
from suites.builtin.latency import prompt_ids, step_series, timed_generate  # noqa: E402


def emit(kind: str, **data: Any) -> None:
    print(json.dumps({"kind": kind, **data}, default=str), flush=True)


def apply(name: str, params: dict[str, Any], handle: Any, workdir: Path, **inputs: Any) -> Any:
    cls = get_technique(name)
    ctx = TechniqueContext(seed=0, workdir=workdir / name, inputs=inputs)
    t0 = time.perf_counter()
    applied = cls(build_params(cls, params)).run(handle, ctx)
    emit("applied", technique=name, params=params, seconds=round(time.perf_counter() - t0, 2),
         report=applied.report)
    return applied.handle


def decode_tps(handle: Any, prompt: list[int], new_tokens: int) -> float:
    stamps = timed_generate(handle, [prompt], new_tokens)
    return statistics.mean(step_series([stamps], len(prompt), 1)["decode_tokens_per_s"][0])


def interleaved(variants: dict[str, Any], prompt: list[int], new_tokens: int, rounds: int) -> dict[str, list[float]]:
    for h in variants.values():  # warm-up (and compile) outside the timed rounds
        decode_tps(h, prompt, new_tokens)
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, h in variants.items():
            out[name].append(decode_tps(h, prompt, new_tokens))
    return out


def wiki_ids(tokenizer: Any, n: int, length: int) -> list[list[int]]:
    """``n`` consecutive ``length``-token segments of WikiText-2's test set."""
    root = Path(os.environ.get("SLM_DATA_DIR", "../shared/benchmarks"))
    ids = tokenizer((root / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")[:400_000],
                    add_special_tokens=False).input_ids
    return [ids[i * length: (i + 1) * length] for i in range(n)]


def bench_compile(base: Any, work: Path, rounds: int) -> None:
    compiled = apply("deploy.compile", {"backend": "inductor", "max_cache_len": 256}, base, work)
    prompt = prompt_ids(base, 128, 1, 0)[0]
    tps = interleaved({"eager": base, "compiled": compiled}, prompt, 64, rounds)
    med = {k: statistics.median(v) for k, v in tps.items()}
    emit("compile", decode_tokens_per_s=tps, median=med, ratio=med["compiled"] / med["eager"])


def bench_speculative(base: Any, work: Path, rounds: int) -> None:
    layers = apply("prune.layers", {"n_layers": 20}, base, work)
    rtn8 = apply("quant.rtn", {"bits": 8}, base, work)
    variants = {"greedy": base,
                "draft-10-layers": apply("deploy.speculative", {"probe_prompts": 0}, base, work, draft=layers),
                "draft-rtn8": apply("deploy.speculative", {"probe_prompts": 0}, base, work, draft=rtn8),
                "prompt-lookup": apply("deploy.speculative", {"probe_prompts": 0}, base, work)}
    prompts = wiki_ids(base.tokenizer, 6, 128)
    for name in ("draft-10-layers", "draft-rtn8", "prompt-lookup"):
        h = variants[name]
        equal, rates, counts = 0, [], []
        for p in prompts:
            plain = base.generate_ids([p], 64).tolist()
            with counting_drafts(h.model) as c:
                spec = h.generate_ids([p], 64).tolist()
            equal += plain == spec
            rates.append(c.acceptance_rate)
            counts.append((c.rounds, c.proposed, c.accepted))
        accepted = sum(c[2] for c in counts) / max(sum(c[1] for c in counts), 1)
        emit("speculative-acceptance", variant=name, greedy_equal=f"{equal}/{len(prompts)}", per_generation=rates,
             rounds_proposed_accepted=counts, acceptance_rate=accepted)
    tps = interleaved(variants, prompts[0], 64, rounds)
    med = {k: statistics.median(v) for k, v in tps.items()}
    emit("speculative-speed", decode_tokens_per_s=tps, median=med,
         ratio={k: v / med["greedy"] for k, v in med.items()})


def bench_kv(base: Any, work: Path) -> None:
    segments = wiki_ids(base.tokenizer, 4, 1024)
    variants = {"fp32": base,
                "int8": apply("kv.quantized", {"nbits": 8}, base, work),
                "int4": apply("kv.quantized", {"nbits": 4}, base, work),
                "int2": apply("kv.quantized", {"nbits": 2}, base, work),
                "sink4+window256": apply("kv.window", {"window": 256, "sink_tokens": 4}, base, work),
                "window260-no-sink": apply("kv.window", {"window": 260, "sink_tokens": 0}, base, work)}
    for name, h in variants.items():
        t0 = time.perf_counter()
        ppl = cached_perplexity(h, segments, chunk=32)
        emit("kv", variant=name, kv_bytes_per_token_at_1024=h.measured_kv_bytes([segments[0]]),
             perplexity=ppl.perplexity, tokens=ppl.tokens, seconds=round(time.perf_counter() - t0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="compile,speculative,kv")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=".slm/work/runtime_opt")
    args = ap.parse_args()
    base = load_source("smollm2-135m-instruct", threads=1)
    work = Path(args.workdir)
    only = set(args.only.split(","))
    if "kv" in only:
        bench_kv(base, work)
    if "speculative" in only:
        bench_speculative(base, work, args.rounds)
    if "compile" in only:
        bench_compile(base, work, args.rounds)


if __name__ == "__main__":
    main()
