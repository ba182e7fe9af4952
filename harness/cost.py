"""The cost of a lifecycle step: wall time, peak resident memory and an energy figure.

Energy is read from RAPL where the machine exposes it (``measured:rapl``); otherwise codecarbon's
offline tracker estimates it from CPU load and TDP (``estimated:codecarbon-cpu_load``). Costs of
steps shorter than codecarbon's sampling are still reported, with the method saying what they are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suites._measure import EnergyMeter, PeakRSS


@dataclass
class StepCost:
    """What one step cost. ``energy_method`` says how ``energy_j`` was obtained."""

    wall_time_s: float = 0.0
    peak_rss_bytes: int = 0
    energy_j: float | None = None
    energy_method: str = "none"
    details: dict[str, Any] = field(default_factory=dict)


class CostMeter:
    """Context manager measuring a step: ``with CostMeter(workdir) as m: ...; m.cost``."""

    def __init__(self, workdir: Path | None = None, energy: bool = True):
        self.workdir = workdir
        self.energy = energy
        self.cost = StepCost()

    def __enter__(self) -> CostMeter:
        self._rss = PeakRSS(interval=0.05).__enter__()
        self._energy = EnergyMeter(self.workdir).__enter__() if self.energy else None
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost.wall_time_s = time.perf_counter() - self._t0
        self._rss.__exit__()
        self.cost.peak_rss_bytes = self._rss.peak
        if self._energy is not None:
            self._energy.__exit__()
            self.cost.energy_j = self._energy.joules
            self.cost.energy_method = self._energy.method
            if self._energy.error:
                self.cost.details["energy_error"] = self._energy.error
