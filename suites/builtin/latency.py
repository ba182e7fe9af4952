"""The ``latency`` suite: time to first token, inter-token latency, prefill and decode throughput and
end-to-end time over a grid of prompt lengths x batch sizes, with the roofline bound of decoding.

Each configuration is warmed up, then repeated until both a minimum count and a minimum duration are
reached. Every generated token is timestamped inside the generation loop (a streamer), so the
consumer never slows the model down. Greedy decoding produces exactly ``new_tokens`` tokens (EOS is
ignored) so token counts are exact. Every metric reports n, mean, stdev, CV and p50/p90/p95/p99 and
keeps its raw observations.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from adapters.errors import UsageError
from suites._measure import describe, repeat_until
from suites.base import Metric, RawSample, Suite, SuiteContext, SuiteResult, suite
from suites.ceilings import ceilings

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"prompt_lengths": [32, 128], "batch_sizes": [1], "new_tokens": 16, "min_repeats": 3,
              "min_duration_s": 2.0, "warmup": 1},
    "standard": {"prompt_lengths": [32, 128, 512], "batch_sizes": [1, 4], "new_tokens": 32, "min_repeats": 5,
                 "min_duration_s": 5.0, "warmup": 2},
    "full": {"prompt_lengths": [32, 128, 512, 1024], "batch_sizes": [1, 4, 8], "new_tokens": 64, "min_repeats": 10,
             "min_duration_s": 10.0, "warmup": 2},
}
METHOD = "measured:perf_counter"


def settings_for(ctx: SuiteContext) -> dict[str, Any]:
    """The profile's settings overridden by the spec's options, validated."""
    conf = {**PROFILES[ctx.profile], **{k: v for k, v in ctx.options.items() if k in PROFILES["quick"]}}
    for key in ("prompt_lengths", "batch_sizes"):
        vals = conf[key]
        if not isinstance(vals, list) or not vals or not all(isinstance(v, int) and v >= 1 for v in vals):
            raise UsageError(f"latency.{key}: {vals!r} is not allowed (a non-empty list of integers >= 1)")
    for key in ("new_tokens", "min_repeats"):
        if not isinstance(conf[key], int) or conf[key] < 2:
            raise UsageError(f"latency.{key}: {conf[key]!r} is not allowed (an integer >= 2)")
    return conf


def prompt_ids(handle: ModelHandle, length: int, batch: int, seed: int) -> list[list[int]]:
    """``batch`` prompts of exactly ``length`` tokens, seeded, drawn from ordinary text tokens."""
    from adapters.corpus import synthetic_corpus

    ids = handle.tokenizer(" ".join(synthetic_corpus(max(4, length // 8), seed=seed)), add_special_tokens=False).input_ids
    while len(ids) < length + batch:
        ids = ids + ids
    return [ids[b: b + length] for b in range(batch)]


def timed_generate(handle: ModelHandle, prompts: list[list[int]], new_tokens: int) -> list[float]:
    """Seconds from the call to each decoding step's output (one timestamp per step, all rows at once)."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    stamps: list[float] = []

    class Stamp(BaseStreamer):
        seen_prompt = False

        def put(self, value: Any) -> None:
            if not self.seen_prompt:
                self.seen_prompt = True
                return
            stamps.append(time.perf_counter() - start)

        def end(self) -> None:
            pass

    gen = {k: v for k, v in handle.generation_kwargs.items() if k not in ("seed", "do_sample", "num_beams")}
    ids = torch.tensor(prompts)
    tok = handle.tokenizer
    start = time.perf_counter()
    with torch.inference_mode():
        handle.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, num_beams=1, streamer=Stamp(),
                              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id, **gen)
    return stamps


def kv_bytes_per_token(config: Any, bytes_per_value: int = 4) -> int:
    """Bytes of K and V cache per token per sequence: 2 x layers x kv heads x head dim x dtype bytes."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv * head_dim * bytes_per_value


@suite("latency")
class LatencySuite(Suite):
    """Latency: TTFT, inter-token latency, prefill/decode tokens/s, end-to-end, roofline fraction."""

    options = ("prompt_lengths", "batch_sizes", "new_tokens", "min_repeats", "min_duration_s", "warmup")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        conf = settings_for(ctx)
        handle.activate()
        ceil = ceilings(handle.threads)
        result = SuiteResult(settings={"latency": conf, "threads": handle.threads,
                                       "ceilings_key": ceil["key"]})
        self._ceiling_metrics(result, ceil)
        weight_bytes = sum(handle.weight_footprint().values())
        for plen in conf["prompt_lengths"]:
            for batch in conf["batch_sizes"]:
                self._one(handle, ctx, conf, plen, batch, result, ceil, weight_bytes)
        return result

    def _one(self, handle: ModelHandle, ctx: SuiteContext, conf: dict[str, Any], plen: int, batch: int,
             result: SuiteResult, ceil: dict[str, Any], weight_bytes: int) -> None:
        prompts = prompt_ids(handle, plen, batch, ctx.seed)
        runs = repeat_until(lambda: timed_generate(handle, prompts, conf["new_tokens"]), conf["min_repeats"],
                            conf["min_duration_s"], conf["warmup"])
        task = f"p{plen}b{batch}"
        ttft = [r[0] for r in runs]
        series = {
            "ttft_s": (ttft, "s", False),
            "itl_s": ([b - a for r in runs for a, b in zip(r, r[1:], strict=False)], "s", False),
            "e2e_s": ([r[-1] for r in runs], "s", False),
            "prefill_tokens_per_s": ([plen * batch / t for t in ttft], "tokens/s", True),
            "decode_tokens_per_s": ([(len(r) - 1) * batch / (r[-1] - r[0]) for r in runs], "tokens/s", True),
        }
        for name, (values, unit, hib) in series.items():
            stats = describe(values)
            result.metrics.append(Metric("latency", task, name, stats["mean"], _nan_none(stats["stderr"]),
                                         len(values), unit, hib, METHOD, {**stats, "prompt_tokens": plen,
                                                                          "batch_size": batch}))
            result.raw.extend(RawSample("latency", task, name, i, v, unit) for i, v in enumerate(values))
        # Roofline: every decode step reads all weights once plus the KV cache of each sequence.
        ctx_tokens = plen + conf["new_tokens"] / 2
        step_bytes = weight_bytes + batch * ctx_tokens * kv_bytes_per_token(handle.model.config)
        bound = batch * ceil["bandwidth"]["bytes_per_s"] / step_bytes
        achieved = describe(series["decode_tokens_per_s"][0])["mean"]
        details = {"bytes_per_step": step_bytes, "bandwidth_bytes_per_s": ceil["bandwidth"]["bytes_per_s"],
                   "weight_bytes": weight_bytes}
        result.metrics.append(Metric("latency", task, "roofline_tokens_per_s", bound, None, 1, "tokens/s", True,
                                     "derived:bytes-per-step/measured-bandwidth", details))
        result.metrics.append(Metric("latency", task, "roofline_fraction", achieved / bound, None, len(runs),
                                     "fraction", True, "derived:decode-tokens-per-s/roofline", details))

    @staticmethod
    def _ceiling_metrics(result: SuiteResult, ceil: dict[str, Any]) -> None:
        bw, mm = ceil["bandwidth"], ceil["matmul"]
        result.metrics.append(Metric("latency", "ceiling", "memory_bandwidth", bw["bytes_per_s"],
                                     bw["bytes_per_s"] * bw["stdev_rel"] / bw["n"] ** 0.5, bw["n"], "bytes/s", True,
                                     bw["method"], {"cached": ceil["cached"]}))
        result.metrics.append(Metric("latency", "ceiling", "matmul_flops", mm["flops"],
                                     mm["flops"] * mm["stdev_rel"] / mm["n"] ** 0.5, mm["n"], "FLOP/s", True,
                                     mm["method"], {"cached": ceil["cached"]}))


def _nan_none(x: float) -> float | None:
    return None if x != x else x
