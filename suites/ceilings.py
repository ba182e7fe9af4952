"""Hardware ceilings for roofline bounds: memory bandwidth and fp32 matmul FLOP/s, measured once per
machine and thread count, cached as JSON in the workspace (``<SLM_HOME>/ceilings.json``).

Bandwidth is a large array copy (bytes read + written over the fastest of repeated copies, arrays much
larger than the caches); FLOP/s is the fastest of repeated fp32 GEMMs through torch at the profile's thread
count, over a few shapes. Ceilings are peaks, so the fastest repeat is kept (the median and spread are
recorded too); the 1-minute load average at measurement time is kept with them. A forward pass can at best use both, so it takes at least
``max(bytes moved / bandwidth, FLOPs / matmul FLOP/s)``: that bounds prefill and decode tokens/s from above
(Williams et al., 2009, "Roofline"). Bytes and FLOPs are counted from the model (:class:`RooflineInputs`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suites.base import Metric

COPY_BYTES = 256 * 2**20
GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (128, 576, 576), (256, 1024, 4096))
VERSION = 2  # part of the cache key: entries measured by another method are not reused


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), shared with the harness' environment record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    return Path(os.environ.get("SLM_HOME", ".slm")) / "ceilings.json"


def _summary(work: float, times: list[float]) -> dict[str, Any]:
    """Peak rate (work / fastest repeat), the median rate, n and the relative stdev of the times."""
    return {"peak": work / min(times), "median": work / statistics.median(times), "n": len(times),
            "stdev_rel": statistics.stdev(times) / statistics.mean(times)}


def measure_bandwidth(repeats: int = 7) -> dict[str, Any]:
    """Copy bandwidth in bytes/s (read + write) of a 256 MiB array: the fastest of ``repeats`` copies.

    A ceiling is the best the machine can do; on a shared machine slower repeats measure the neighbours.
    """
    import numpy as np

    src = np.ones(COPY_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    st = _summary(2 * COPY_BYTES, times[1:])  # the first copy faults the destination pages in
    return {"bytes_per_s": st.pop("peak"), **st, "method": "measured:numpy-copy-256MiB-best"}


def _gemm_times(m: int, k: int, n: int, repeats: int) -> list[float]:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)  # warm-up: packing buffers, first-touch
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return times


def measure_matmul(threads: int, repeats: int = 7) -> dict[str, Any]:
    """fp32 GEMM FLOP/s at ``threads`` torch threads: the best shape's fastest of ``repeats`` products.

    Shapes: square 1024 and 2048, and a prefill-like tall-skinny product (few rows, wide weights), since
    BLAS efficiency depends on shape and the ceiling must not sit below what a model's own GEMMs reach.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_shape = {shape: _summary(2 * shape[0] * shape[1] * shape[2], _gemm_times(*shape, repeats))
                    for shape in GEMM_SHAPES}
    finally:
        torch.set_num_threads(before)
    peaks = {"x".join(map(str, s)): round(v["peak"]) for s, v in by_shape.items()}
    shape, best = max(by_shape.items(), key=lambda kv: kv[1]["peak"])
    return {"flops": best.pop("peak"), **best, "shape": list(shape), "method": "measured:torch-mm-fp32-best",
            "by_shape": peaks}


def ceilings(threads: int = 1, refresh: bool = False) -> dict[str, Any]:
    """The machine's ceilings at ``threads`` (cached per CPU model and thread count)."""
    key = f"{cpu_model()}|{os.cpu_count()}cpu|{threads}t|v{VERSION}"
    file = _cache_file()
    cache: dict[str, Any] = {}
    if file.exists():
        try:
            cache = json.loads(file.read_text())
        except json.JSONDecodeError:
            cache = {}
    if key in cache and not refresh:
        return {**cache[key], "cached": True}
    found = {"bandwidth": measure_bandwidth(), "matmul": measure_matmul(threads), "key": key,
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_1m": os.getloadavg()[0]}
    cache[key] = found
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs each write their own, then replace
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(file)
    return {**found, "cached": False}


def activation_bytes(model: Any) -> int:
    """Bytes per activation (and KV-cache) value: the model's float dtype, fp32 for integer-weight models."""
    dtype: Any = getattr(model, "dtype", None)
    return int(dtype.itemsize) if getattr(dtype, "is_floating_point", False) else 4


def kv_bytes_per_token(config: Any, bytes_per_value: int) -> int:
    """Bytes of K and V cache per token per sequence: 2 x layers x kv heads x head dim x bytes per value."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv * head_dim * bytes_per_value


@dataclass(frozen=True)
class RooflineInputs:
    """What a forward pass must move and compute, from the model's footprint and config.

    Attributes:
        weight_bytes: stored weight bytes (every step reads all of them once).
        body_params: matmul parameters applied at every position (all but the embedding and output head).
        head_params: output head parameters (applied at the last position only during prefill).
        kv_bytes_per_token: K+V cache bytes per token per sequence at the model's activation dtype.
        layers, attn_dim: for attention FLOPs (``4 x layers x context x attn_dim`` per token).
        beams: sequences decoded per prompt (``num_beams`` of the handle's decoding settings).
    """

    weight_bytes: int
    body_params: int
    head_params: int
    kv_bytes_per_token: int
    layers: int
    attn_dim: int
    beams: int = 1

    @classmethod
    def of(cls, handle: Any) -> RooflineInputs:
        config, value_bytes = handle.model.config, activation_bytes(handle.model)
        head = config.vocab_size * config.hidden_size
        tied = bool(getattr(config, "tie_word_embeddings", False))
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(weight_bytes=sum(handle.weight_footprint().values()),
                   body_params=max(0, handle.num_parameters() - (1 if tied else 2) * head), head_params=head,
                   kv_bytes_per_token=kv_bytes_per_token(config, value_bytes), layers=config.num_hidden_layers,
                   attn_dim=heads * head_dim, beams=int(handle.generation_kwargs.get("num_beams", 1) or 1))

    def decode_step(self, batch: int, context: float) -> tuple[float, float]:
        """(bytes, FLOPs) of one decoding step for ``batch`` prompts at mean ``context`` tokens."""
        seqs = batch * self.beams
        return (self.weight_bytes + seqs * context * self.kv_bytes_per_token,
                seqs * (2 * (self.body_params + self.head_params) + 4 * self.layers * context * self.attn_dim))

    def prefill(self, batch: int, prompt: int) -> tuple[float, float]:
        """(bytes, FLOPs) of prefilling ``batch`` prompts of ``prompt`` tokens (causal attention)."""
        return (self.weight_bytes + batch * prompt * self.kv_bytes_per_token,
                batch * (2 * self.body_params * prompt + 2 * self.head_params
                         + 2 * self.layers * prompt * prompt * self.attn_dim))


def bound(tokens: float, work: tuple[float, float], ceil: dict[str, Any]) -> tuple[float, float, str]:
    """Roofline tokens/s of ``tokens`` produced by ``work`` = (bytes, FLOPs): tokens / max(bytes/BW, FLOPs/peak).

    Returns (tokens/s, its relative stderr from the limiting ceiling, ``memory`` or ``compute``).
    """
    bw, mm = ceil["bandwidth"], ceil["matmul"]
    t_mem, t_flop = work[0] / bw["bytes_per_s"], work[1] / mm["flops"]
    limit = bw if t_mem >= t_flop else mm
    return tokens / max(t_mem, t_flop), limit["stdev_rel"] / limit["n"] ** 0.5, "memory" if t_mem >= t_flop else "compute"


def roofline_metrics(task: str, model: RooflineInputs, ceil: dict[str, Any], prompt: int, batch: int,
                     new_tokens: int, prefill: dict[str, float], decode: dict[str, float]) -> list[Metric]:
    """Roofline bounds of prefill and decode and the achieved fraction (``describe`` stats of tokens/s)."""
    out = []
    context = prompt + (new_tokens - 1) / 2  # mean context over the decoding steps
    for phase, tokens, work, achieved in (("", batch, model.decode_step(batch, context), decode),
                                          ("prefill_", batch * prompt, model.prefill(batch, prompt), prefill)):
        tps, rel, limit = bound(tokens, work, ceil)
        details = {"bytes": work[0], "flops": work[1], "bound_by": limit, "beams": model.beams,
                   "bandwidth_bytes_per_s": ceil["bandwidth"]["bytes_per_s"], "matmul_flops": ceil["matmul"]["flops"],
                   "weight_bytes": model.weight_bytes, "kv_bytes_per_token": model.kv_bytes_per_token}
        frac = achieved["mean"] / tps
        frac_rel = math.hypot(rel, achieved["stderr"] / achieved["mean"]) if achieved["n"] > 1 else math.nan
        ceil_n = ceil["bandwidth"]["n"] if limit == "memory" else ceil["matmul"]["n"]
        out.append(Metric("latency", task, f"{phase}roofline_tokens_per_s", tps, tps * rel, ceil_n, "tokens/s", True,
                          f"derived:roofline-{limit}-bound", details))
        out.append(Metric("latency", task, f"{phase}roofline_fraction", frac, None if frac_rel != frac_rel
                          else frac * frac_rel, int(achieved["n"]), "fraction", True,
                          f"derived:measured-tokens-per-s/roofline-{limit}-bound", details))
    return out
