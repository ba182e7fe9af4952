"""Hardware ceilings for roofline bounds: memory bandwidth and fp32 matmul FLOP/s, measured once per
machine and thread count, cached as JSON in the workspace (``<SLM_HOME>/ceilings.json``).

Bandwidth is a large array copy (bytes read + written over the median time of repeated copies, arrays
much larger than the caches); FLOP/s is the median of repeated square fp32 GEMMs through torch at the
profile's thread count. Both are what a decode step can at best use, so ``bytes per token / bandwidth``
bounds tokens/s from above (Williams et al., 2009, "Roofline").
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

COPY_BYTES = 256 * 2**20
GEMM_N = 1024


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


def measure_bandwidth(repeats: int = 7) -> dict[str, Any]:
    """Copy bandwidth in bytes/s (read + write), median of ``repeats`` copies of a 256 MiB array."""
    import numpy as np

    src = np.ones(COPY_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    times = times[1:]  # the first copy faults the destination pages in
    med = statistics.median(times)
    return {"bytes_per_s": 2 * COPY_BYTES / med, "n": len(times),
            "stdev_rel": statistics.stdev(times) / statistics.mean(times), "method": "measured:numpy-copy-256MiB"}


def measure_matmul(threads: int, repeats: int = 7) -> dict[str, Any]:
    """fp32 GEMM FLOP/s at ``threads`` torch threads, median of ``repeats`` 1024^3 products."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    med = statistics.median(times)
    return {"flops": 2 * GEMM_N**3 / med, "n": len(times), "stdev_rel": statistics.stdev(times) / statistics.mean(times),
            "method": f"measured:torch-mm-fp32-{GEMM_N}"}


def ceilings(threads: int = 1, refresh: bool = False) -> dict[str, Any]:
    """The machine's ceilings at ``threads`` (cached per CPU model and thread count)."""
    key = f"{cpu_model()}|{os.cpu_count()}cpu|{threads}t"
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
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cache[key] = found
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(file)
    return {**found, "cached": False}
