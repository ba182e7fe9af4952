"""The ``latency`` suite: time to first token, inter-token latency, prefill and decode throughput and
end-to-end time over a grid of prompt lengths x batch sizes, with the roofline bound of each.

Each configuration is warmed up, then repeated until both a minimum count and a minimum duration are
reached. Every decoding step is timestamped inside the generation loop (a logits processor, called once
per step by every decoding strategy), so the consumer never slows the model down. Generation goes
through the handle's own model and ``generation_kwargs`` (an ONNX Runtime or a beam-search handle is
timed as it runs), with exactly ``new_tokens`` steps (EOS ignored) so token counts are exact. Every
metric reports n, mean, stdev, CV and p50/p90/p95/p99 and keeps its raw observations.

The timed repeats of each configuration run inside a :class:`suites._measure.LoadMeter`: every metric of the
configuration carries the machine's load from other processes during them (``foreign_load`` in cores,
``under_load`` above a quarter of a core). With the option ``remeasure_under_load: N`` a configuration timed
under foreign load is timed again, up to N more times after a pause, and the quietest attempt is kept
(``attempts`` and ``attempt_foreign_loads`` in its details). A roofline fraction above 1 beyond its uncertainty is flagged
``bound_valid: false``; the ceilings are then measured again once (a re-measurement only ever raises a
ceiling) and the bounds recomputed, ``ceiling_remeasured`` saying so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from suites._measure import LoadMeter, describe, none_if_nan, option, quietest, repeat_until
from suites.base import Metric, RawSample, Suite, SuiteContext, SuiteResult, suite
from suites.ceilings import RooflineInputs, ceilings, roofline_metrics

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
    """The profile's settings overridden by the spec's options, validated (UsageError on a bad value)."""
    d, o = PROFILES[ctx.profile], ctx.options
    return {
        "prompt_lengths": option("latency", o, d, "prompt_lengths", 1, is_list=True),
        "batch_sizes": option("latency", o, d, "batch_sizes", 1, is_list=True),
        "new_tokens": option("latency", o, d, "new_tokens", 2),
        "min_repeats": option("latency", o, d, "min_repeats", 2),
        "min_duration_s": option("latency", o, d, "min_duration_s", 0, kind=float),
        "warmup": option("latency", o, d, "warmup", 0),
        "remeasure_under_load": option("latency", o, {"remeasure_under_load": 0}, "remeasure_under_load", 0),
    }


def prompt_ids(handle: ModelHandle, length: int, batch: int, seed: int) -> list[list[int]]:
    """``batch`` distinct prompts of exactly ``length`` tokens, seeded, drawn from ordinary text tokens."""
    from adapters.corpus import synthetic_corpus

    ids = handle.tokenizer(" ".join(synthetic_corpus(max(4, length // 8), seed=seed)), add_special_tokens=False).input_ids
    while len(ids) < length + batch:
        ids = ids + ids
    return [ids[b: b + length] for b in range(batch)]


def decoding_kwargs(handle: ModelHandle) -> dict[str, Any]:
    """The handle's generation settings for ``generate`` (greedy unless the handle says otherwise):
    :meth:`ModelHandle.decoding_kwargs`."""
    return handle.decoding_kwargs()


def timed_generate(handle: ModelHandle, prompts: list[list[int]], new_tokens: int) -> list[float]:
    """Seconds from the call to each decoding step's logits (one timestamp per step, all rows at once).

    Runs the handle's :meth:`~ModelHandle.generate_ids` with the handle's decoding settings (seeded first by
    :meth:`~ModelHandle.seed_sampling`) and exactly ``new_tokens`` steps. A backend that cannot generate
    from ids (:meth:`~ModelHandle.can_generate`) is timed through :meth:`ModelHandle.stream` (batch 1 only), and so is
    speculative decoding (:func:`adapters.inference.drafts_tokens`), whose model steps emit several tokens and whose
    draft calls the logits processors too: there each token is stamped when its verification step emitted it.
    """
    from adapters.inference import drafts_tokens

    if not handle.can_generate() or drafts_tokens(handle):
        if len(prompts) != 1:
            raise ValueError(f"latency: backend {handle.backend} streams one prompt at a time, batch {len(prompts)}")
        return [e.time_s for e in handle.stream(prompts[0], max_new_tokens=new_tokens, min_new_tokens=new_tokens)]
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            stamps.append(time.perf_counter() - start)
            return scores

    handle.seed_sampling()  # seeded sampling: every repeat draws the same tokens
    ids = torch.tensor(prompts)
    start = time.perf_counter()
    handle.generate_ids(ids, new_tokens, min_new_tokens=new_tokens, logits_processor=LogitsProcessorList([Stamp()]))
    return stamps


def step_series(runs: list[list[float]], plen: int, batch: int) -> dict[str, tuple[list[float], str, bool]]:
    """Per-run observations from per-step timestamps: name -> (values, unit, higher_is_better)."""
    return {
        "ttft_s": ([r[0] for r in runs], "s", False),
        "itl_s": ([b - a for r in runs for a, b in zip(r, r[1:], strict=False)], "s", False),
        "e2e_s": ([r[-1] for r in runs], "s", False),
        "prefill_tokens_per_s": ([plen * batch / r[0] for r in runs], "tokens/s", True),
        "decode_tokens_per_s": ([(len(r) - 1) * batch / (r[-1] - r[0]) for r in runs], "tokens/s", True),
    }


def gemm_dtype(handle: Any) -> str:
    """The dtype the model's matmuls run in (its float weights' dtype; float32 for integer-weight models)."""
    dtype = str(handle.settings.get("dtype") or "")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


@suite("latency")
class LatencySuite(Suite):
    """Latency: TTFT, inter-token latency, prefill/decode tokens/s, end-to-end, roofline fraction."""

    options = ("prompt_lengths", "batch_sizes", "new_tokens", "min_repeats", "min_duration_s", "warmup",
               "remeasure_under_load")
    exclusive = True

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        from adapters.inference import drafts_tokens

        conf = settings_for(ctx)
        # speculative decoding verifies one sequence at a time; a backend without batched generation (llama.cpp)
        # streams one
        one_at_a_time = drafts_tokens(handle) or not handle.can_generate()
        batch_sizes = [b for b in conf["batch_sizes"] if b == 1 or not one_at_a_time]
        handle.activate()
        ceil = ceilings(handle.threads, dtype=gemm_dtype(handle))
        model = RooflineInputs.of(handle)
        timed: dict[str, list[Metric]] = {}
        raw: list[RawSample] = []
        configs: list[tuple[str, int, int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        for plen in conf["prompt_lengths"]:
            for batch in batch_sizes:
                task = f"p{plen}b{batch}"
                series, load = self._measure(handle, ctx, conf, plen, batch)
                timed[task] = []
                for name, (values, unit, hib) in series.items():
                    stats = describe(values)
                    timed[task].append(Metric("latency", task, name, stats["mean"], none_if_nan(stats["stderr"]),
                                              len(values), unit, hib, METHOD,
                                              {**stats, "prompt_tokens": plen, "batch_size": batch, **load}))
                    raw.extend(RawSample("latency", task, name, i, v, unit) for i, v in enumerate(values))
                configs.append((task, plen, batch, describe(series["prefill_tokens_per_s"][0]),
                                describe(series["decode_tokens_per_s"][0]), load))

        def bounds(ceil: dict[str, Any], extra: dict[str, Any]) -> dict[str, list[Metric]]:
            return {task: roofline_metrics(task, model, ceil, plen, batch, conf["new_tokens"], pre, dec,
                                           {**load, **extra}) for task, plen, batch, pre, dec, load in configs}

        roofline = bounds(ceil, {"ceiling_remeasured": False})
        if any(not m.details["bound_valid"] for ms in roofline.values() for m in ms):
            ceil = ceilings(handle.threads, refresh=True, dtype=gemm_dtype(handle))  # keeps the higher peaks: can only raise the bounds
            roofline = bounds(ceil, {"ceiling_remeasured": True})
        result = SuiteResult(settings={"latency": conf, "threads": handle.threads, "ceilings_key": ceil["key"],
                                       "decoding": decoding_kwargs(handle)}, raw=raw)
        if len(batch_sizes) < len(conf["batch_sizes"]):
            result.settings["batch_sizes_skipped"] = {
                "sizes": [b for b in conf["batch_sizes"] if b not in batch_sizes],
                "reason": "speculative decoding verifies one sequence at a time (transformers' assisted generation)"
                if drafts_tokens(handle) else f"backend {handle.backend} streams one sequence at a time"}
        result.metrics.extend(ceiling_metrics(ceil))
        for task, ms in timed.items():
            result.metrics.extend(ms + roofline[task])
        return result

    @staticmethod
    def _measure(handle: ModelHandle, ctx: SuiteContext, conf: dict[str, Any], plen: int,
                 batch: int) -> tuple[dict[str, tuple[list[float], str, bool]], dict[str, Any]]:
        """The configuration's step series and the :class:`LoadMeter` details of its timed repeats."""
        prompts = prompt_ids(handle, plen, batch, ctx.seed)

        def run() -> list[float]:
            return timed_generate(handle, prompts, conf["new_tokens"])

        def timed() -> tuple[list[list[float]], dict[str, Any]]:
            with LoadMeter() as load:
                runs = repeat_until(run, conf["min_repeats"], conf["min_duration_s"], warmup=0)
            return runs, load.details

        for _ in range(conf["warmup"]):
            run()
        runs, load = quietest(timed, conf["remeasure_under_load"])
        return step_series(runs, plen, batch), load


def ceiling_metrics(ceil: dict[str, Any]) -> list[Metric]:
    """The machine's measured ceilings as metrics of the ``ceiling`` task."""
    bw, mm = ceil["bandwidth"], ceil["matmul"]
    load = ceil.get("load") or {}
    details = {"cached": ceil["cached"], "key": ceil["key"], "measured_at": ceil.get("measured_at"),
               "loadavg_1m": ceil.get("loadavg_1m"), "remeasured": ceil.get("remeasured", False),
               "measurements": ceil.get("measurements"), "foreign_load": load.get("foreign_load"),
               "under_load": load.get("under_load", False)}
    return [Metric("latency", "ceiling", "memory_bandwidth", bw["bytes_per_s"],
                   bw["bytes_per_s"] * bw["stdev_rel"] / bw["n"] ** 0.5, bw["n"], "bytes/s", True, bw["method"],
                   {**details, "median": bw["median"], "stdev_rel": bw["stdev_rel"], "stream": bw.get("stream"),
                    "by_stream": bw.get("by_stream")}),
            Metric("latency", "ceiling", "matmul_flops", mm["flops"], mm["flops"] * mm["stdev_rel"] / mm["n"] ** 0.5,
                   mm["n"], "FLOP/s", True, mm["method"], {**details, "median": mm["median"], "shape": mm["shape"],
                                                          "by_shape": mm["by_shape"]})]
