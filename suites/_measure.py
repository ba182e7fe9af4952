"""Measurement helpers shared by the efficiency suites and the harness' step-cost meter (no torch here).

- :func:`describe`: n, mean, stdev, CV and percentiles of repeated observations.
- :func:`repeat_until`: warm-up, then repeat until both a minimum count and a minimum duration are reached.
- :class:`PeakRSS`: resident memory sampled from a background thread (children included).
- :class:`EnergyMeter`: RAPL where the machine has it (measured), else codecarbon's offline CPU-load
  estimate (estimated); its ``method`` says which.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def describe(values: list[float]) -> dict[str, float]:
    """Summary statistics of observations: n, mean, stdev (sample), stderr, cv, min, max, p50/p90/p95/p99."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {
        "n": n, "mean": mean, "stdev": sd, "stderr": sd / math.sqrt(n) if n > 1 else math.nan,
        "cv": sd / mean if n > 1 and mean else math.nan, "min": min(values) if n else math.nan,
        "max": max(values) if n else math.nan, **{f"p{q}": percentile(values, q) for q in (50, 90, 95, 99)},
    }


def repeat_until(fn: Callable[[], Any], min_repeats: int, min_duration_s: float, warmup: int = 1,
                 max_repeats: int = 1000, clock: Callable[[], float] = time.perf_counter) -> list[Any]:
    """Call ``fn`` ``warmup`` times (discarded), then until ``min_repeats`` calls AND ``min_duration_s``
    seconds are both reached (or ``max_repeats``); returns the kept results."""
    for _ in range(warmup):
        fn()
    out: list[Any] = []
    start = clock()
    while len(out) < max_repeats and (len(out) < min_repeats or clock() - start < min_duration_s):
        out.append(fn())
    return out


class PeakRSS:
    """Peak resident set size of this process (and its children) while the block runs."""

    def __init__(self, interval: float = 0.02, children: bool = True):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.children = children
        self.start_rss = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        rss = int(self.proc.memory_info().rss)
        if self.children:
            try:
                rss += sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except Exception:  # children come and go
                pass
        self.peak = max(self.peak, rss)
        return rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start_rss = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class EnergyMeter:
    """Energy of a window: ``with EnergyMeter(workdir) as e: ...; e.joules, e.method, e.seconds``.

    ``joules`` is None when no source works (the reason is in ``error``).
    """

    def __init__(self, workdir: Path | None = None, measure_power_secs: float = 1.0, tracking_mode: str = "process"):
        self.workdir = workdir
        # "process" attributes CPU power by this process's share of CPU time; "machine" counts every process,
        # which on a shared machine charges the workload for its neighbours.
        self.tracking_mode = tracking_mode
        self.measure_power_secs = measure_power_secs
        self.joules: float | None = None
        self.method = "none"
        self.seconds = 0.0
        self.error: str | None = None
        self._tracker: Any = None
        self._rapl0: int | None = None

    def __enter__(self) -> EnergyMeter:
        if RAPL.exists():
            try:
                self._rapl0 = int(RAPL.read_text())
            except OSError:
                self._rapl0 = None
        if self._rapl0 is None:
            self._start_codecarbon()
        self._t0 = time.perf_counter()
        return self

    def _start_codecarbon(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            if self.workdir:
                Path(self.workdir).mkdir(parents=True, exist_ok=True)  # codecarbon fails silently without it
            self._tracker = OfflineEmissionsTracker(
                country_iso_code="USA", save_to_file=False, log_level="error",
                measure_power_secs=self.measure_power_secs, tracking_mode=self.tracking_mode,
                output_dir=str(self.workdir) if self.workdir else ".",
            )
            self._tracker.start()
        except Exception as exc:  # energy is best effort: never fail the measured work over it
            self._tracker = None
            self.error = f"{type(exc).__name__}: {exc}"

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self._rapl0 is not None:
            delta = int(RAPL.read_text()) - self._rapl0
            self.joules = delta / 1e6 if delta >= 0 else None  # the counter may wrap: drop that window
            self.method = "measured:rapl-package0"
            return
        if self._tracker is None:
            return
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
            self.joules = float(data.energy_consumed) * 3.6e6  # kWh -> J
            self.method = f"estimated:codecarbon-{self.tracking_mode}-cpu_load"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
