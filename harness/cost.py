"""The cost of a lifecycle step: wall time, peak resident memory and an energy figure.

Energy is read from RAPL where the machine exposes it (``measured:rapl``); otherwise codecarbon's
offline tracker estimates it from CPU load and TDP (``estimated:codecarbon-cpu_load``). Costs of
steps shorter than codecarbon's sampling are still reported, with the method saying what they are.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@dataclass
class StepCost:
    """What one step cost. ``energy_method`` says how ``energy_j`` was obtained."""

    wall_time_s: float = 0.0
    peak_rss_bytes: int = 0
    energy_j: float | None = None
    energy_method: str = "none"
    details: dict[str, Any] = field(default_factory=dict)


class _PeakRSS:
    """Samples this process's RSS (children included) from a thread every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = self.proc.memory_info().rss
        try:
            rss += sum(c.memory_info().rss for c in self.proc.children(recursive=True))
        except Exception:  # children come and go
            pass
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class CostMeter:
    """Context manager measuring a step: ``with CostMeter(workdir) as m: ...; m.cost``."""

    def __init__(self, workdir: Path | None = None, energy: bool = True):
        self.workdir = workdir
        self.energy = energy
        self.cost = StepCost()
        self._tracker: Any = None
        self._rapl0: int | None = None

    def __enter__(self) -> CostMeter:
        self._rss = _PeakRSS().__enter__()
        if self.energy:
            self._start_energy()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost.wall_time_s = time.perf_counter() - self._t0
        self._rss.__exit__()
        self.cost.peak_rss_bytes = self._rss.peak
        if self.energy:
            self._stop_energy()

    def _start_energy(self) -> None:
        if RAPL.exists():
            try:
                self._rapl0 = int(RAPL.read_text())
                return
            except OSError:
                self._rapl0 = None
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code="USA", save_to_file=False, log_level="error", measure_power_secs=1,
                output_dir=str(self.workdir) if self.workdir else ".", tracking_mode="machine",
            )
            self._tracker.start()
        except Exception as exc:  # energy is best effort: never fail a step over it
            self._tracker = None
            self.cost.details["energy_error"] = f"{type(exc).__name__}: {exc}"

    def _stop_energy(self) -> None:
        if self._rapl0 is not None:
            delta = int(RAPL.read_text()) - self._rapl0
            self.cost.energy_j = delta / 1e6 if delta >= 0 else None
            self.cost.energy_method = "measured:rapl-package0"
            return
        if self._tracker is None:
            return
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
            self.cost.energy_j = float(data.energy_consumed) * 3.6e6  # kWh -> J
            self.cost.energy_method = f"estimated:codecarbon-{getattr(data, 'tracking_mode', 'machine')}-cpu_load"
        except Exception as exc:
            self.cost.details["energy_error"] = f"{type(exc).__name__}: {exc}"
