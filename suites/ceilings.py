"""Hardware ceilings for roofline bounds: memory bandwidth and fp32 matmul FLOP/s, measured once per
machine and thread count, cached as JSON in the workspace (``<SLM_HOME>/ceilings.json``).

Bandwidth is the best of four streams over 256 MiB arrays (much larger than the caches): a numpy copy and a
torch copy at the profile's thread count (bytes read + written), a numpy sum and a torch sum (bytes read
only; a decoding step mostly reads). FLOP/s is the fastest of repeated fp32 GEMMs through torch at the
profile's thread count, over a few shapes. Ceilings are peaks, so the fastest repeat is kept (the median and
spread are recorded too). The machine's load from other processes during the measurement is recorded
(:class:`suites._measure.LoadMeter`): an entry measured ``under_load`` is not trusted from the cache but
measured again on its next use, and a new measurement never lowers a cached peak (the higher of the two is
kept: a slower repeat measures the neighbours, not the machine). A forward pass can at best use both, so it
takes at least ``max(bytes moved / bandwidth, FLOPs / matmul FLOP/s)``: that bounds prefill and decode
tokens/s from above (Williams et al., 2009, "Roofline"). Bytes and FLOPs are counted from the model
(:class:`RooflineInputs`); a measured rate above its bound beyond the uncertainty is flagged
(:func:`judge_bound`), since then the bound is wrong, not the measurement.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.architecture import activation_bytes, kv_bytes_per_token  # noqa: F401  (re-exported)
from suites._measure import LoadMeter
from suites.base import Metric

COPY_BYTES = 256 * 2**20
GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (128, 576, 576), (256, 1024, 4096))
VERSION = 3  # part of the cache key: entries measured by another method are not reused
SIGMAS = 2.0  # a rate above its bound by more than this many stderrs makes the bound invalid


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


def _best_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # the first pass faults pages in
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _numpy_streams(repeats: int) -> dict[str, dict[str, Any]]:
    import numpy as np

    src = np.ones(COPY_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    return {"numpy-copy": _summary(2 * COPY_BYTES, _best_times(lambda: np.copyto(dst, src), repeats)),
            "numpy-sum": _summary(COPY_BYTES, _best_times(src.sum, repeats))}


def _torch_streams(threads: int, repeats: int) -> dict[str, dict[str, Any]]:
    import torch

    src = torch.ones(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    return {f"torch-copy-{threads}t": _summary(2 * COPY_BYTES, _best_times(lambda: dst.copy_(src), repeats)),
            f"torch-sum-{threads}t": _summary(COPY_BYTES, _best_times(src.sum, repeats))}


def measure_bandwidth(repeats: int = 7, threads: int = 1) -> dict[str, Any]:
    """Memory bandwidth in bytes/s: the best stream over 256 MiB arrays, each the fastest of ``repeats``.

    Streams: numpy copy and torch ``copy_`` at ``threads`` (read + write bytes counted), numpy sum and torch
    sum at ``threads`` (read bytes). A copy counts 2 bytes moved per byte copied though a write-allocate
    cache also reads the destination, and one thread cannot issue enough loads to saturate memory, so a
    read stream at the profile's threads can exceed a single-threaded copy: the ceiling is the best of them
    (``by_stream`` keeps each). A ceiling is the best the machine can do; on a shared machine slower repeats
    measure the neighbours.
    """
    import torch

    by_stream = _numpy_streams(repeats)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_stream.update(_torch_streams(threads, repeats))
    finally:
        torch.set_num_threads(before)
    name, best = max(by_stream.items(), key=lambda kv: kv[1]["peak"])
    st = dict(best)
    return {"bytes_per_s": st.pop("peak"), **st, "stream": name, "method": "measured:best-stream-256MiB",
            "by_stream": {k: round(v["peak"]) for k, v in by_stream.items()}}


def _gemm_times(m: int, k: int, n: int, repeats: int, dtype: str = "float32") -> list[float]:
    import torch

    a, b = torch.randn(m, k, dtype=getattr(torch, dtype)), torch.randn(k, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # warm-up: packing buffers, first-touch
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return times


def measure_matmul(threads: int, repeats: int = 7, dtype: str = "float32") -> dict[str, Any]:
    """GEMM FLOP/s in ``dtype`` (the profile's) at ``threads`` torch threads: the best shape's fastest of ``repeats`` products.

    Shapes: square 1024 and 2048, and a prefill-like tall-skinny product (few rows, wide weights), since
    BLAS efficiency depends on shape and the ceiling must not sit below what a model's own GEMMs reach.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_shape = {shape: _summary(2 * shape[0] * shape[1] * shape[2], _gemm_times(*shape, repeats, dtype))
                    for shape in GEMM_SHAPES}
    finally:
        torch.set_num_threads(before)
    peaks = {"x".join(map(str, s)): round(v["peak"]) for s, v in by_shape.items()}
    shape, best = max(by_shape.items(), key=lambda kv: kv[1]["peak"])
    return {"flops": best.pop("peak"), **best, "shape": list(shape), "method": f"measured:torch-mm-{dtype}-best", "dtype": dtype,
            "by_shape": peaks}


def cache_key(threads: int, dtype: str = "float32") -> str:
    """The cache key of this machine's ceilings at ``threads`` and GEMM ``dtype``: CPU model, CPU count,
    threads, dtype, method version."""
    suffix = "" if dtype == "float32" else f"|{dtype}"
    return f"{cpu_model()}|{os.cpu_count()}cpu|{threads}t|v{VERSION}{suffix}"


def _higher(old: dict[str, Any] | None, new: dict[str, Any], rate: str) -> dict[str, Any]:
    """The measurement with the higher peak ``rate`` (a ceiling is never lowered by a slower re-measurement)."""
    return old if old is not None and old[rate] > new[rate] else new


def ceilings(threads: int = 1, refresh: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """The machine's ceilings at ``threads``, matmul FLOP/s in ``dtype`` (cached per CPU model, thread count
    and dtype).

    Measured when absent, when ``refresh``, or when the cached entry was measured ``under_load`` (other
    processes busy: its peaks may be low); a new measurement keeps the higher of the old and new peak of each
    ceiling. ``remeasured`` says a cached entry was measured again; ``load`` holds the :class:`LoadMeter`
    facts of the last measurement, ``measurements`` how many there have been.
    """
    key = cache_key(threads, dtype)
    file = _cache_file()
    cache: dict[str, Any] = {}
    if file.exists():
        try:
            cache = json.loads(file.read_text())
        except json.JSONDecodeError:
            cache = {}
    old = cache.get(key)
    if old is not None and not refresh and not old.get("load", {}).get("under_load", False):
        return {**old, "cached": True, "remeasured": False}
    with LoadMeter() as load:
        bandwidth, matmul = measure_bandwidth(threads=threads), measure_matmul(threads, dtype=dtype)
    found = {"bandwidth": _higher(old and old.get("bandwidth"), bandwidth, "bytes_per_s"),
             "matmul": _higher(old and old.get("matmul"), matmul, "flops"), "key": key,
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_1m": os.getloadavg()[0],
             "load": load.details, "measurements": (old or {}).get("measurements", 0) + 1}
    cache[key] = found
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs each write their own, then replace
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(file)
    return {**found, "cached": False, "remeasured": old is not None}


@dataclass(frozen=True)
class RooflineInputs:
    """What a forward pass must move and compute, from the model's footprint and config.

    Bytes a decoding step must read at least: every stored weight the forward multiplies, once (the output
    head once, also when tied to the input embedding), plus one input-embedding row per sequence and the KV
    cache of its context; an untied input embedding table is stored but only its tokens' rows are read, so
    it is left out (``input_table_bytes``). Prefill reads the same weights once, one row per prompt token,
    and writes the prompt's KV cache.

    Attributes:
        weight_bytes: stored weight bytes (shared storage once: a tied table is one tensor).
        body_params: matmul parameters applied at every position (all but the embedding and output head).
        head_params: output head parameters (applied at the last position only during prefill).
        kv_bytes_per_token: K+V cache bytes per token per sequence at the model's activation dtype.
        layers, attn_dim: for attention FLOPs (``4 x layers x context x attn_dim`` per token).
        beams: sequences decoded per prompt (``num_beams`` of the handle's decoding settings).
        input_table_bytes: bytes of an input embedding table stored apart from the output head (0 when tied),
            inside ``weight_bytes`` but not read whole by a step.
        embedding_row_bytes: bytes of one input-embedding row (read once per token).
        tied: whether the input embedding and the output head share storage (None: not known).
    """

    weight_bytes: int
    body_params: int
    head_params: int
    kv_bytes_per_token: int
    layers: int
    attn_dim: int
    beams: int = 1
    input_table_bytes: int = 0
    embedding_row_bytes: int = 0
    tied: bool | None = None

    @classmethod
    def of(cls, handle: Any) -> RooflineInputs:
        """The inputs for ``handle``, from its runtime interface only: :meth:`~adapters.handle.ModelHandle.architecture`,
        ``weight_footprint``, ``num_parameters``, ``embedding_facts``, ``kv_bytes_per_token`` and its decoding beams."""
        arch = handle.architecture()
        head = arch.head_params
        weight_bytes, params = sum(handle.weight_footprint().values()), handle.num_parameters()
        emb = handle.embedding_facts()
        return cls(weight_bytes=weight_bytes,
                   body_params=max(0, params - (1 if emb.tied else 2) * head), head_params=head,
                   kv_bytes_per_token=handle.kv_bytes_per_token(), layers=arch.num_layers,
                   attn_dim=arch.attn_dim, beams=int(handle.generation_kwargs.get("num_beams", 1) or 1),
                   input_table_bytes=emb.input_table_bytes, embedding_row_bytes=emb.row_bytes, tied=emb.tied)

    @property
    def weights_read_bytes(self) -> int:
        """Weight bytes a forward pass reads whole: all stored weights but an untied input table."""
        return self.weight_bytes - self.input_table_bytes

    def decode_step(self, batch: int, context: float) -> tuple[float, float]:
        """(bytes, FLOPs) of one decoding step for ``batch`` prompts at mean ``context`` tokens."""
        seqs = batch * self.beams
        return (self.weights_read_bytes + seqs * (self.embedding_row_bytes + context * self.kv_bytes_per_token),
                seqs * (2 * (self.body_params + self.head_params) + 4 * self.layers * context * self.attn_dim))

    def prefill(self, batch: int, prompt: int) -> tuple[float, float]:
        """(bytes, FLOPs) of prefilling ``batch`` prompts of ``prompt`` tokens (causal attention)."""
        return (self.weights_read_bytes + batch * prompt * (self.embedding_row_bytes + self.kv_bytes_per_token),
                batch * (2 * self.body_params * prompt + 2 * self.head_params
                         + 2 * self.layers * prompt * prompt * self.attn_dim))

    def bytes_counted(self, phase: str) -> dict[str, Any]:
        """How the bytes of ``phase`` (``decode`` or ``prefill``) were counted, for a metric's details."""
        per = "sequence per step" if phase == "decode" else "prompt token"
        kv = "KV cache read (sequences x mean context x kv_bytes_per_token)" if phase == "decode" else \
            "KV cache written (prompt tokens x kv_bytes_per_token)"
        tie = {True: "tied: the output head is the input table, read once",
               False: "untied: input table left out, output head read once", None: "tie not known"}[self.tied]
        return {"rule": f"weights read once ({tie}) + 1 embedding row per {per} + {kv}",
                "weights_read_bytes": self.weights_read_bytes, "input_table_excluded_bytes": self.input_table_bytes,
                "embedding_row_bytes": self.embedding_row_bytes, "tied_embeddings": self.tied}


def judge_bound(fraction: float, stderr: float | None, sigmas: float = SIGMAS) -> tuple[bool, str | None]:
    """Whether a measured/bound ``fraction`` is consistent with the bound being one: (valid, reason).

    A rate cannot beat its roofline, so ``fraction - sigmas x stderr > 1`` (the fraction above 1 beyond its
    uncertainty; without a stderr, any fraction above 1) makes the bound invalid: the ceiling was measured
    low or the work was over-counted. The reason says by how much.
    """
    err = stderr if stderr is not None and stderr == stderr else 0.0
    if fraction == fraction and fraction - sigmas * err > 1:
        return False, (f"measured rate is {fraction:.3f} x its bound (stderr {err:.3f}): above 1 by more than "
                       f"{sigmas:g} stderr, so the bound is not a bound (ceiling measured low, e.g. under load, "
                       f"or bytes/FLOPs over-counted)")
    return True, None


def bound(tokens: float, work: tuple[float, float], ceil: dict[str, Any]) -> tuple[float, float, str]:
    """Roofline tokens/s of ``tokens`` produced by ``work`` = (bytes, FLOPs): tokens / max(bytes/BW, FLOPs/peak).

    Returns (tokens/s, its relative stderr from the limiting ceiling, ``memory`` or ``compute``).
    """
    bw, mm = ceil["bandwidth"], ceil["matmul"]
    t_mem, t_flop = work[0] / bw["bytes_per_s"], work[1] / mm["flops"]
    limit = bw if t_mem >= t_flop else mm
    return tokens / max(t_mem, t_flop), limit["stdev_rel"] / limit["n"] ** 0.5, "memory" if t_mem >= t_flop else "compute"


def roofline_metrics(task: str, model: RooflineInputs, ceil: dict[str, Any], prompt: int, batch: int,
                     new_tokens: int, prefill: dict[str, float], decode: dict[str, float],
                     extra: dict[str, Any] | None = None) -> list[Metric]:
    """Roofline bounds of prefill and decode and the achieved fraction (``describe`` stats of tokens/s).

    Details say how the bytes were counted (``bytes_counted``) and whether the bound held
    (``bound_valid``, with ``bound_invalid_reason`` when not: :func:`judge_bound`); ``extra`` (e.g. the timed
    window's load) is merged into every metric's details.
    """
    out = []
    context = prompt + (new_tokens - 1) / 2  # mean context over the decoding steps
    for phase, tokens, work, achieved in (("", batch, model.decode_step(batch, context), decode),
                                          ("prefill_", batch * prompt, model.prefill(batch, prompt), prefill)):
        tps, rel, limit = bound(tokens, work, ceil)
        frac = achieved["mean"] / tps
        frac_rel = math.hypot(rel, achieved["stderr"] / achieved["mean"]) if achieved["n"] > 1 else math.nan
        frac_err = None if frac_rel != frac_rel else frac * frac_rel
        valid, reason = judge_bound(frac, frac_err)
        details = {"bytes": work[0], "flops": work[1], "bound_by": limit, "beams": model.beams,
                   "bandwidth_bytes_per_s": ceil["bandwidth"]["bytes_per_s"], "matmul_flops": ceil["matmul"]["flops"],
                   "weight_bytes": model.weight_bytes, "kv_bytes_per_token": model.kv_bytes_per_token,
                   "bytes_counted": model.bytes_counted("decode" if phase == "" else "prefill"),
                   "bound_valid": valid, **({"bound_invalid_reason": reason} if reason else {}), **(extra or {})}
        ceil_n = ceil["bandwidth"]["n"] if limit == "memory" else ceil["matmul"]["n"]
        out.append(Metric("latency", task, f"{phase}roofline_tokens_per_s", tps, tps * rel, ceil_n, "tokens/s", True,
                          f"derived:roofline-{limit}-bound", dict(details)))
        out.append(Metric("latency", task, f"{phase}roofline_fraction", frac, frac_err, int(achieved["n"]), "fraction",
                          True, f"derived:measured-tokens-per-s/roofline-{limit}-bound", dict(details)))
    return out
