"""The ``energy`` suite: energy per prompt token (prefill) and per generated token (decode), idle baseline
subtracted.

Each window runs one kind of work repeatedly for at least ``window_s`` seconds inside an energy meter
(:class:`suites._measure.EnergyMeter`): RAPL package counters (``measured:rapl``) or NVML GPU counters
(``measured:nvml``) where the machine has them; otherwise codecarbon's offline tracker, which *estimates*
power from this process's CPU load, the CPU's TDP and a RAM power model
(``estimated:codecarbon-<tracking mode>-<cpu power model>``: never shown as a measurement). Idle, prefill and
decode windows are interleaved; the mean idle power is subtracted from every work window before dividing
by the tokens it processed. n is the number of windows per phase.

Honest under noise (:func:`idle_subtracted`): the stderr of an idle-subtracted figure combines the spread
over its windows with the uncertainty of the idle power it subtracts (and, for decode, of the prefill share
it removes). Energy is never reported below zero: when the difference is not resolved (not above
:data:`SIGMAS` stderrs) the row stays, its value is the upper bound ``max(difference, 0) + SIGMAS x stderr``
("at most"), its stderr the difference's, and ``details`` has ``resolved: false``, ``value_is:
"upper_bound"``, the raw ``difference``, its ``difference_stderr`` and the windows' noise. Every window also
records the machine's load from other processes (:class:`suites._measure.LoadMeter`); a row whose windows
(idle ones included for idle-subtracted rows) ran under foreign load says ``under_load: true``. With the option
``remeasure_under_load: N`` a window metered under foreign load is metered again, up to N more times after a
pause, and the quietest attempt kept (``remeasured_windows`` in the row's details counts them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from suites._measure import EnergyMeter, LoadMeter, combine_loads, describe, none_if_nan, option, quietest
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import prompt_ids, timed_generate

if TYPE_CHECKING:
    from pathlib import Path

    from adapters.handle import ModelHandle

PROFILES = {"quick": {"windows": 2, "window_s": 2.0, "prompt_tokens": 128, "new_tokens": 16},
            "standard": {"windows": 3, "window_s": 5.0, "prompt_tokens": 256, "new_tokens": 32},
            "full": {"windows": 5, "window_s": 10.0, "prompt_tokens": 512, "new_tokens": 64}}
MIN_WINDOW_S = 0.1  # shorter windows would measure mostly the meter's own start and stop
SIGMAS = 2.0  # an idle-subtracted difference is resolved when above this many of its stderrs


@dataclass(frozen=True)
class Window:
    """One metered window: energy (None if no source worked), how it was obtained, its length, the
    tokens processed in it and the meter's extra facts (e.g. an estimate's CPU and RAM shares)."""

    joules: float | None
    method: str
    seconds: float
    tokens: int
    details: dict[str, Any]


def metered(work: Any, window_s: float, workdir: Path, device: str = "cpu") -> Window:
    """Run ``work()`` (returns tokens processed) until ``window_s`` elapsed, inside an energy meter; a load
    meter inside it covers the work (``details["load"]``: :attr:`LoadMeter.details`), not the energy meter's
    own start and stop (codecarbon's first start runs helper processes that would read as foreign load)."""
    tokens = 0
    with EnergyMeter(workdir, device=device) as meter, LoadMeter() as load:
        end = time.perf_counter() + window_s
        while time.perf_counter() < end:
            tokens += work()
    return Window(meter.joules, meter.method, meter.seconds, tokens,
                  {**meter.details, "error": meter.error, "load": load.details})


@suite("energy")
class EnergySuite(Suite):
    """Energy per prefill and per decode token, idle baseline subtracted; method says measured or estimated."""

    options = ("windows", "window_s", "prompt_tokens", "new_tokens", "remeasure_under_load")
    exclusive = True

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        import torch

        d, o = PROFILES[ctx.profile], ctx.options
        conf = {"windows": option("energy", o, d, "windows", 2), "window_s": option("energy", o, d, "window_s",
                                                                                    MIN_WINDOW_S, kind=float),
                "prompt_tokens": option("energy", o, d, "prompt_tokens", 1), "new_tokens": option("energy", o, d,
                                                                                                  "new_tokens", 2),
                "remeasure_under_load": option("energy", o, {"remeasure_under_load": 0}, "remeasure_under_load", 0)}
        handle.activate()
        ids = prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed)
        batch = torch.tensor(ids)

        def prefill() -> int:
            handle.forward(batch)
            return conf["prompt_tokens"]

        def decode() -> int:  # each call also prefills once: that share is removed in phase_metrics
            return len(timed_generate(handle, ids, conf["new_tokens"]))

        def idle() -> int:
            time.sleep(0.05)
            return 0

        prefill()  # warm-up both kinds of work
        timed_generate(handle, ids, 2)
        windows: dict[str, list[Window]] = {"idle": [], "prefill": [], "decode": []}
        device = str(ctx.hardware.get("device", "cpu"))

        def window(work: Any) -> tuple[Window, dict[str, Any]]:
            w = metered(work, conf["window_s"], ctx.workdir, device)
            return w, w.details["load"]

        for _ in range(conf["windows"]):
            for phase, work in (("idle", idle), ("prefill", prefill), ("decode", decode)):
                w, load = quietest(lambda work=work: window(work), conf["remeasure_under_load"])
                windows[phase].append(replace(w, details={**w.details, "load": load}))
        return SuiteResult(metrics=phase_metrics(windows, conf), settings={"energy": conf})


def idle_subtracted(active_j: list[float], seconds: list[float], tokens: list[float], idle_w: list[float],
                    shared_j_per_token: float = 0.0, shared_stderr: float = 0.0,
                    sigmas: float = SIGMAS) -> dict[str, Any]:
    """Joules per token above idle over work windows, judged against its own noise.

    Per work window i: ``net_i = (active_j[i] - P_idle x seconds[i]) / tokens[i] - shared_j_per_token`` with
    ``P_idle`` the mean of ``idle_w`` (one power per idle window). The difference ``d = mean(net_i)``; its
    stderr ``se`` combines the stderr of the mean of ``net_i`` (spread over windows), the idle power's stderr
    times the mean ``seconds/tokens`` (the same subtraction in every window) and ``shared_stderr`` (the
    uncertainty of ``shared_j_per_token``, e.g. the prefill share removed from decode windows).

    Resolved when ``d > sigmas x se``: then ``value = d`` and ``stderr = se``. Otherwise (negative, or not
    clear of its noise) ``value = max(d, 0) + sigmas x se``, an upper bound, never below zero, still with
    ``stderr = se``; with no stderr (one window) ``value = max(d, 0)``. Returns ``value``, ``stderr``, ``n``,
    ``resolved``, ``value_is`` (``estimate`` or ``upper_bound``), ``difference``, ``difference_stderr``,
    ``upper_bound``, ``per_window`` (the ``net_i``), ``noise_j_per_token`` (their stdev: one window's noise),
    ``spread_stderr``, ``idle_stderr_j_per_token``, ``shared_stderr``, ``idle_power_w``, ``idle_power_stdev_w``
    and ``sigmas``.
    """
    idle = describe(idle_w)
    p_idle = idle["mean"]
    net = [(j - p_idle * s) / t - shared_j_per_token for j, s, t in zip(active_j, seconds, tokens, strict=True)]
    st = describe(net)
    d = st["mean"]
    idle_se = idle["stderr"] * sum(s / t for s, t in zip(seconds, tokens, strict=True)) / len(net)
    se = math.sqrt(st["stderr"] ** 2 + idle_se ** 2 + shared_stderr ** 2)  # NaN when one window
    known = se == se
    resolved = bool(known and d > sigmas * se)
    upper = max(d, 0.0) + sigmas * se if known else math.nan
    value = d if resolved else (upper if known else max(d, 0.0))
    return {"value": value, "stderr": se, "n": len(net), "resolved": resolved,
            "value_is": "estimate" if resolved else "upper_bound", "difference": d, "difference_stderr": se,
            "upper_bound": upper, "per_window": net, "noise_j_per_token": st["stdev"], "spread_stderr": st["stderr"],
            "idle_stderr_j_per_token": idle_se, "shared_stderr": shared_stderr, "idle_power_w": p_idle,
            "idle_power_stdev_w": idle["stdev"], "sigmas": sigmas}


def phase_metrics(windows: dict[str, list[Window]], conf: dict[str, Any]) -> list[Metric]:
    """Idle power, power under load and idle-subtracted joules per token of each phase (:func:`idle_subtracted`)."""
    every = [w for ws in windows.values() for w in ws]
    methods = {w.method for w in every}
    if any(w.joules is None for w in every) or len(methods) != 1:
        errors = sorted({str(w.details.get("error")) for w in every if w.joules is None})
        raise RuntimeError(f"energy: no usable energy source (methods seen: {sorted(methods)}; errors: {errors})")
    method = methods.pop()

    def power(phase: str) -> list[float]:
        return [w.joules / w.seconds for w in windows[phase]]  # type: ignore[operator]

    def net(phase: str, shared: float = 0.0, shared_se: float = 0.0) -> dict[str, Any]:
        ws = windows[phase]
        return idle_subtracted([w.joules for w in ws], [w.seconds for w in ws],  # type: ignore[misc]
                               [w.tokens for w in ws], power("idle"), shared, shared_se)

    prefill = net("prefill")
    # Each generate() call also prefills its prompt: remove that share at the measured prefill cost (its raw
    # difference, with its stderr carried into decode's).
    ratio = conf["prompt_tokens"] / conf["new_tokens"]
    pre_se = prefill["difference_stderr"] if prefill["difference_stderr"] == prefill["difference_stderr"] else 0.0
    decode = net("decode", prefill["difference"] * ratio, pre_se * ratio)
    out = []
    for task, name, phases, est in (("idle", "idle_power_w", ("idle",), power("idle")),
                                    ("prefill", "prefill_power_w", ("prefill",), power("prefill")),
                                    ("prefill", "prefill_j_per_token", ("prefill", "idle"), prefill),
                                    ("decode", "decode_power_w", ("decode",), power("decode")),
                                    ("decode", "decode_j_per_token", ("decode", "prefill", "idle"), decode)):
        phase = windows[task]
        loads = [w.details.get("load") or {} for p in phases for w in windows[p]]
        details = {"idle_subtracted": name.endswith("per_token"), "window_s": conf["window_s"],
                   "tokens": [w.tokens for w in phase], "seconds": [w.seconds for w in phase],
                   "meter": [{k: v for k, v in w.details.items() if v is not None and k != "load"} for w in phase],
                   "loads": [w.details.get("load") for w in phase], **combine_loads(loads)}
        if isinstance(est, dict):  # idle-subtracted J/token
            value, stderr, n, unit = est["value"], est["stderr"], est["n"], "J/token"
            details.update({k: v for k, v in est.items() if k not in ("value", "stderr", "n")},
                           per_window_stats=describe(est["per_window"]))
        else:  # power in W: a ratio of positive quantities, reported as measured
            st = describe(est)
            value, stderr, n, unit = st["mean"], st["stderr"], len(est), "W"
            details.update(st)
        out.append(Metric("energy", task, name, value, none_if_nan(stderr), n, unit, False, method, details))
    return out
