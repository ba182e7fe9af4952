"""The ``energy`` suite: energy per prompt token (prefill) and per generated token (decode), idle baseline
subtracted.

Each window runs one kind of work repeatedly for at least ``window_s`` seconds inside an energy meter
(:class:`suites._measure.EnergyMeter`): RAPL package counters (``measured:rapl``) or NVML GPU counters
(``measured:nvml``) where the machine has them; otherwise codecarbon's offline tracker, which *estimates*
power from this process's CPU load, the CPU's TDP and a RAM power model
(``estimated:codecarbon-<tracking mode>-<cpu power model>``: never shown as a measurement). Idle, prefill and
decode windows are interleaved; the mean idle power is subtracted from every work window before dividing
by the tokens it processed. n is the number of windows per phase, and the stderr is over those windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suites._measure import EnergyMeter, describe, none_if_nan, option
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import prompt_ids, timed_generate

if TYPE_CHECKING:
    from pathlib import Path

    from adapters.handle import ModelHandle

PROFILES = {"quick": {"windows": 2, "window_s": 2.0, "prompt_tokens": 128, "new_tokens": 16},
            "standard": {"windows": 3, "window_s": 5.0, "prompt_tokens": 256, "new_tokens": 32},
            "full": {"windows": 5, "window_s": 10.0, "prompt_tokens": 512, "new_tokens": 64}}
MIN_WINDOW_S = 0.1  # shorter windows would measure mostly the meter's own start and stop


@dataclass(frozen=True)
class Window:
    """One metered window: energy (None if no source worked), how it was obtained, its length, the
    tokens processed in it and the meter's extra facts (e.g. an estimate's CPU and RAM shares)."""

    joules: float | None
    method: str
    seconds: float
    tokens: int
    details: dict[str, Any]


def metered(work: Any, window_s: float, workdir: Path) -> Window:
    """Run ``work()`` (returns tokens processed) until ``window_s`` elapsed, inside an energy meter."""
    tokens = 0
    with EnergyMeter(workdir) as meter:
        end = time.perf_counter() + window_s
        while time.perf_counter() < end:
            tokens += work()
    return Window(meter.joules, meter.method, meter.seconds, tokens, {**meter.details, "error": meter.error})


@suite("energy")
class EnergySuite(Suite):
    """Energy per prefill and per decode token, idle baseline subtracted; method says measured or estimated."""

    options = ("windows", "window_s", "prompt_tokens", "new_tokens")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        import torch

        d, o = PROFILES[ctx.profile], ctx.options
        conf = {"windows": option("energy", o, d, "windows", 2), "window_s": option("energy", o, d, "window_s",
                                                                                    MIN_WINDOW_S, kind=float),
                "prompt_tokens": option("energy", o, d, "prompt_tokens", 1), "new_tokens": option("energy", o, d,
                                                                                                  "new_tokens", 2)}
        handle.activate()
        ids = prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed)
        batch = torch.tensor(ids)

        def prefill() -> int:
            with torch.no_grad():
                handle.model(input_ids=batch)
            return conf["prompt_tokens"]

        def decode() -> int:  # each call also prefills once: that share is removed in phase_metrics
            return len(timed_generate(handle, ids, conf["new_tokens"]))

        def idle() -> int:
            time.sleep(0.05)
            return 0

        prefill()  # warm-up both kinds of work
        timed_generate(handle, ids, 2)
        windows: dict[str, list[Window]] = {"idle": [], "prefill": [], "decode": []}
        for _ in range(conf["windows"]):
            for phase, work in (("idle", idle), ("prefill", prefill), ("decode", decode)):
                windows[phase].append(metered(work, conf["window_s"], ctx.workdir))
        return SuiteResult(metrics=phase_metrics(windows, conf), settings={"energy": conf})


def phase_metrics(windows: dict[str, list[Window]], conf: dict[str, Any]) -> list[Metric]:
    """Idle power, power under load and idle-subtracted joules per token of each phase."""
    every = [w for ws in windows.values() for w in ws]
    methods = {w.method for w in every}
    if any(w.joules is None for w in every) or len(methods) != 1:
        errors = sorted({str(w.details.get("error")) for w in every if w.joules is None})
        raise RuntimeError(f"energy: no usable energy source (methods seen: {sorted(methods)}; errors: {errors})")
    method = methods.pop()
    idle_w = [w.joules / w.seconds for w in windows["idle"]]  # type: ignore[operator]
    idle = sum(idle_w) / len(idle_w)
    prefill = [(w.joules - idle * w.seconds) / w.tokens for w in windows["prefill"]]  # type: ignore[operator]
    # Each generate() call also prefills its prompt: remove that share at the measured prefill cost.
    pre = sum(prefill) / len(prefill)
    decode = [(w.joules - idle * w.seconds - pre * conf["prompt_tokens"] * w.tokens / conf["new_tokens"])  # type: ignore[operator]
              / w.tokens for w in windows["decode"]]
    rows = (("idle", "idle_power_w", idle_w, "W"),
            ("prefill", "prefill_power_w", [w.joules / w.seconds for w in windows["prefill"]], "W"),  # type: ignore[operator]
            ("prefill", "prefill_j_per_token", prefill, "J/token"),
            ("decode", "decode_power_w", [w.joules / w.seconds for w in windows["decode"]], "W"),  # type: ignore[operator]
            ("decode", "decode_j_per_token", decode, "J/token"))
    out = []
    for task, name, values, unit in rows:
        st = describe(values)
        phase = windows[task]
        details = {**st, "idle_subtracted": name.endswith("per_token"), "window_s": conf["window_s"],
                   "tokens": [w.tokens for w in phase], "seconds": [w.seconds for w in phase],
                   "meter": [{k: v for k, v in w.details.items() if v is not None} for w in phase]}
        out.append(Metric("energy", task, name, st["mean"], none_if_nan(st["stderr"]), len(values), unit, False,
                          method, details))
    return out
