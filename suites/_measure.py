"""Measurement helpers shared by the efficiency suites and the harness' step-cost meter (no torch here).

- :func:`describe`: n, mean, stdev, CV and percentiles of repeated observations.
- :func:`repeat_until`: warm-up, then repeat until both a minimum count and a minimum duration are reached.
- :func:`option`: a suite option from the profile or the spec, validated (bad values name field and range).
- :class:`PeakRSS`: resident memory sampled from a background thread (children included).
- :class:`EnergyMeter`: energy of a window, from RAPL or NVML where the machine has them (measured), else
  codecarbon's offline estimate (estimated); its ``method`` says which.
- :class:`LoadMeter`: CPU time other processes spent during a window (``foreign_load``), flagged
  ``under_load`` above :data:`UNDER_LOAD_CORES`; every timing and energy window records it.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from adapters.errors import UsageError

T = TypeVar("T")

POWERCAP = Path("/sys/class/powercap")
RAPL = POWERCAP / "intel-rapl:0" / "energy_uj"
PROC_STAT = Path("/proc/stat")
UNDER_LOAD_CORES = 0.25  # foreign CPU time above this many cores on average flags a window ``under_load``


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


def none_if_nan(x: float) -> float | None:
    """``None`` for NaN (no uncertainty computable), else ``x``."""
    return None if x != x else x


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


def option(suite: str, options: dict[str, Any], defaults: dict[str, Any], key: str, minimum: float,
           kind: type = int, is_list: bool = False) -> Any:
    """``options[key]`` (else ``defaults[key]``), checked to be a ``kind`` (or a non-empty list of them) >= minimum.

    Raises:
        UsageError: naming ``suite.key``, the value and what is allowed.
    """
    value = options.get(key, defaults[key])
    items = value if is_list else [value]
    ok_type = (int, float) if kind is float else (int,)
    valid = isinstance(items, list) and bool(items) and all(
        isinstance(v, ok_type) and not isinstance(v, bool) and v >= minimum for v in items)
    if not valid:
        what = f"{'an integer' if kind is int else 'a number'} >= {minimum:g}"
        allowed = f"a non-empty list of {what.removeprefix('an ').removeprefix('a ')}s" if is_list else what
        raise UsageError(f"{suite}.{key}: {value!r} is not allowed (allowed: {allowed})")
    return value


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Memory lines of ``/proc/<pid>/status`` in bytes (VmRSS, VmHWM, RssAnon, RssFile, RssShmem)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
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


class RaplCounters:
    """Every RAPL package zone's energy counter (``intel-rapl:N``), read together, wrap-around handled."""

    def __init__(self, root: Path = POWERCAP):
        self.zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1
                            and (p / "energy_uj").exists())

    def read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def joules(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings; a counter that wrapped adds its ``max_energy_range_uj``."""
        total = 0
        for zone, a, b in zip(self.zones, before, after, strict=True):
            delta = b - a
            if delta < 0:
                delta += int((zone / "max_energy_range_uj").read_text())
            total += delta
        return total / 1e6


class EnergyMeter:
    """Energy of a window: ``with EnergyMeter(workdir) as e: ...; e.joules, e.method, e.seconds``.

    The sensor covers the device the work runs on (``device``): for ``cpu``, RAPL package counters
    (``measured:rapl``), never a GPU's counter; for ``cuda``/``cuda:N``, that GPU's NVML energy counter
    (``measured:nvml``); otherwise, or when that sensor is absent, codecarbon's offline tracker (``estimated:codecarbon-<tracking mode>-<cpu
    power model>``). ``joules`` is None when no source works (the reason is in ``error``); ``details`` holds
    the estimate's components (CPU / RAM energy, power model) where there are any.
    """

    def __init__(self, workdir: Path | None = None, measure_power_secs: float = 1.0, tracking_mode: str = "process",
                 powercap: Path = POWERCAP, device: str = "cpu"):
        self.workdir = workdir
        self.device = device
        # "process" attributes CPU power by this process's share of CPU time; "machine" counts every process,
        # which on a shared machine charges the workload for its neighbours.
        self.tracking_mode = tracking_mode
        self.measure_power_secs = measure_power_secs
        self.joules: float | None = None
        self.method = "none"
        self.seconds = 0.0
        self.error: str | None = None
        self.details: dict[str, Any] = {}
        self._rapl = RaplCounters(powercap)
        self._start: Any = None
        self._tracker: Any = None
        self._nvml: list[Any] = []

    def __enter__(self) -> EnergyMeter:
        on_gpu = self.device.startswith("cuda")
        if self._rapl.zones and not on_gpu:
            try:
                self._start, self.method = self._rapl.read(), "measured:rapl"
            except OSError as exc:  # counters exist but are not readable (needs root on recent kernels)
                self.error = f"rapl: {exc}"
        if self._start is None and on_gpu and self._start_nvml():
            self.method = "measured:nvml"
        if self._start is None:
            self._start_codecarbon()
        self._t0 = time.perf_counter()
        return self

    def _start_nvml(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            self._nvml = [pynvml.nvmlDeviceGetHandleByIndex(index)]  # the GPU the work runs on, only
            self._start = [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._nvml]  # mJ
            return bool(self._nvml)
        except Exception:  # no pynvml, no driver or no GPU: not an error, just not this source
            self._nvml, self._start = [], None
            return False

    def _start_codecarbon(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            if self.workdir:
                Path(self.workdir).mkdir(parents=True, exist_ok=True)  # codecarbon fails silently without it
            self._tracker = OfflineEmissionsTracker(
                country_iso_code="USA", save_to_file=False, log_level="error",
                measure_power_secs=self.measure_power_secs, tracking_mode=self.tracking_mode,
                output_dir=str(self.workdir) if self.workdir else ".", allow_multiple_runs=True,
            )
            self._tracker.start()
        except Exception as exc:  # energy is best effort: never fail the measured work over it
            self._tracker = None
            self.error = f"{type(exc).__name__}: {exc}"

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self.method == "measured:rapl":
            self.joules = self._rapl.joules(self._start, self._rapl.read())
        elif self.method == "measured:nvml":
            import pynvml

            end = [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._nvml]
            self.joules = sum(b - a for a, b in zip(self._start, end, strict=True)) / 1e3
        elif self._tracker is not None:
            self._stop_codecarbon()

    def _stop_codecarbon(self) -> None:
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
            self.joules = float(data.energy_consumed) * 3.6e6  # kWh -> J
            cpu = next((h for h in getattr(self._tracker, "_hardware", []) if type(h).__name__ == "CPU"), None)
            cpu_mode = getattr(cpu, "_mode", None) or "unknown"  # e.g. cpu_load (load x TDP) or constant
            self.method = f"estimated:codecarbon-{self.tracking_mode}-{cpu_mode}"
            self.details = {"cpu_j": float(data.cpu_energy) * 3.6e6, "ram_j": float(data.ram_energy) * 3.6e6,
                            "cpu_power_model": cpu_mode, "cpu_tdp_w": getattr(cpu, "_tdp", None),
                            "codecarbon_cpu_model": str(data.cpu_model)}
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def machine_cpu_seconds(stat: Path = PROC_STAT) -> tuple[float, int]:
    """(busy CPU seconds of the whole machine since boot, number of CPUs).

    Busy = user + nice + system + irq + softirq + steal jiffies of ``/proc/stat``'s ``cpu`` line (guest time
    is already inside user; idle and iowait are not busy). Steal counts: it is time a neighbour (another
    virtual machine) held this machine's CPU. Without ``/proc/stat``, psutil's ``cpu_times()`` fields.
    """
    try:
        lines = stat.read_text().splitlines()
        fields = [int(x) for x in lines[0].split()[1:]]
        fields += [0] * (8 - len(fields))
        cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
        jiffies = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        return jiffies / os.sysconf("SC_CLK_TCK"), cpus or (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        import psutil

        t = psutil.cpu_times()
        total = 0.0
        for k in ("user", "nice", "system", "irq", "softirq", "steal"):
            total += float(getattr(t, k, 0.0))
        return total, psutil.cpu_count() or 1


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads (``getrusage(RUSAGE_SELF)``; child
    processes are not included, so their work counts as foreign)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LoadMeter:
    """The machine's load from other processes during a window: ``with LoadMeter() as load: ...; load.details``.

    At entry and exit it reads the machine's busy CPU time (:func:`machine_cpu_seconds`, from ``/proc/stat``)
    and this process's own CPU time (:func:`own_cpu_seconds`). Over the window of ``seconds`` wall time:

    - ``foreign_cpu_s`` = machine busy seconds - own CPU seconds (raw; jiffy rounding can make it slightly
      negative);
    - ``foreign_load`` = max(0, foreign_cpu_s) / seconds, in cores: 1.0 means another process kept one core
      busy for the whole window (child processes of this one count as foreign);
    - ``foreign_load_machine`` = foreign_load / CPUs, the fraction of the machine;
    - ``own_load`` = own CPU seconds / seconds, in cores;
    - ``under_load`` = foreign_load > ``threshold`` (default :data:`UNDER_LOAD_CORES`, a quarter of a core).

    ``/proc/stat`` counts in jiffies (10 ms), so windows shorter than about a second resolve foreign load
    only to ~0.01 s / seconds x CPUs. ``details`` holds all of these (JSON-able), ``load_method`` included.
    The readers are parameters so the arithmetic can be tested with synthetic counters.
    """

    def __init__(self, threshold: float = UNDER_LOAD_CORES,
                 machine_cpu: Callable[[], tuple[float, int]] = machine_cpu_seconds,
                 own_cpu: Callable[[], float] = own_cpu_seconds, clock: Callable[[], float] = time.perf_counter):
        self.threshold = threshold
        self._machine, self._own, self._clock = machine_cpu, own_cpu, clock
        self.seconds = 0.0
        self.cpus = 1
        self.foreign_cpu_s = math.nan
        self.own_cpu_s = math.nan
        self.foreign_load = math.nan
        self.own_load = math.nan
        self.under_load = False

    def __enter__(self) -> LoadMeter:
        self._m0, self.cpus = self._machine()
        self._o0 = self._own()
        self._t0 = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._clock() - self._t0
        m1, self.cpus = self._machine()
        self.own_cpu_s = self._own() - self._o0
        self.foreign_cpu_s = (m1 - self._m0) - self.own_cpu_s
        wall = self.seconds if self.seconds > 0 else math.nan
        self.foreign_load = max(0.0, self.foreign_cpu_s) / wall
        self.own_load = self.own_cpu_s / wall
        self.under_load = bool(self.foreign_load > self.threshold)

    @property
    def details(self) -> dict[str, Any]:
        """The window's load facts, for a metric's ``details``."""
        return {"foreign_load": self.foreign_load, "foreign_load_machine": self.foreign_load / self.cpus,
                "foreign_cpu_s": self.foreign_cpu_s, "own_load": self.own_load, "load_window_s": self.seconds,
                "machine_cpus": self.cpus, "under_load": self.under_load, "under_load_threshold": self.threshold,
                "load_method": "proc-stat-busy-minus-getrusage-self"}


def combine_loads(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of several windows' :attr:`LoadMeter.details`: time-weighted mean ``foreign_load``, its max,
    and ``under_load`` if any window was (the windows' own records stay where they are)."""
    ok = [w for w in windows if w and w.get("load_window_s", 0) > 0]
    if not ok:
        return {"foreign_load": None, "under_load": False}
    total = sum(w["load_window_s"] for w in ok)
    mean = sum(w["foreign_load"] * w["load_window_s"] for w in ok) / total
    return {"foreign_load": mean, "foreign_load_max": max(w["foreign_load"] for w in ok),
            "under_load": any(w["under_load"] for w in ok), "under_load_windows": sum(bool(w["under_load"]) for w in ok),
            "under_load_threshold": ok[0]["under_load_threshold"], "load_method": ok[0]["load_method"],
            "remeasured_windows": sum(w.get("attempts", 1) > 1 for w in ok)}


REMEASURE_PAUSE_S = 2.0  # wait this long before measuring a window again that ran under foreign load


def quietest(measure: Callable[[], tuple[T, dict[str, Any]]], retries: int,
             pause_s: float = REMEASURE_PAUSE_S, sleep: Callable[[float], None] = time.sleep) -> tuple[T, dict[str, Any]]:
    """Measure, and measure again while the window ran ``under_load`` and ``retries`` remain (the spec's
    ``remeasure_under_load``), pausing ``pause_s`` first; keep the attempt with the least foreign load.

    Args:
        measure: returns ``(value, load)``, ``load`` a window's :attr:`LoadMeter.details` (or a
            :func:`combine_loads` summary).
        retries: most extra attempts (0: measure once).

    Returns:
        The kept ``(value, load)``; ``load`` gains ``attempts`` (how many windows were measured) and
        ``attempt_foreign_loads`` (each attempt's foreign load, in order) when there was more than one.
    """
    attempts: list[tuple[T, dict[str, Any]]] = [measure()]
    while attempts[-1][1].get("under_load") and len(attempts) <= retries:
        sleep(pause_s)
        attempts.append(measure())
    if len(attempts) == 1:
        return attempts[0]
    value, load = min(attempts, key=lambda a: (bool(a[1].get("under_load")), a[1].get("foreign_load") or 0.0))
    return value, {**load, "attempts": len(attempts),
                   "attempt_foreign_loads": [a[1].get("foreign_load") for a in attempts]}
