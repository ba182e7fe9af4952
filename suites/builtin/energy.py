"""The ``energy`` suite: energy per prompt token (prefill) and per generated token (decode), idle baseline
subtracted.

Each window runs one kind of work repeatedly for at least ``window_s`` seconds inside an energy meter:
RAPL package energy where the machine exposes it (``measured:rapl-package0``); otherwise codecarbon's
offline tracker, which *estimates* power from CPU load and the CPU's TDP (``estimated:codecarbon-...``:
never shown as a measurement). An idle window of the same length gives the baseline power, subtracted
from every window before dividing by the tokens processed. n is the number of windows per phase.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from adapters.errors import UsageError
from suites._measure import EnergyMeter, describe
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import prompt_ids, timed_generate

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES = {"quick": {"windows": 2, "window_s": 2.0, "prompt_tokens": 128, "new_tokens": 16},
            "standard": {"windows": 3, "window_s": 5.0, "prompt_tokens": 256, "new_tokens": 32},
            "full": {"windows": 5, "window_s": 10.0, "prompt_tokens": 512, "new_tokens": 64}}


def _window(work: Any, window_s: float, workdir: Any) -> tuple[float | None, str, float, int]:
    """Run ``work()`` (returns tokens processed) until ``window_s`` elapsed; (joules, method, seconds, tokens)."""
    tokens = 0
    with EnergyMeter(workdir) as meter:
        end = time.perf_counter() + window_s
        while time.perf_counter() < end:
            tokens += work()
    return meter.joules, meter.method, meter.seconds, tokens


@suite("energy")
class EnergySuite(Suite):
    """Energy per prefill and per decode token, idle baseline subtracted; method says measured or estimated."""

    options = ("windows", "window_s", "prompt_tokens", "new_tokens")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        import torch

        conf = {**PROFILES[ctx.profile], **{k: ctx.options[k] for k in self.options if k in ctx.options}}
        if not (isinstance(conf["windows"], int) and conf["windows"] >= 1 and conf["window_s"] > 0):
            raise UsageError(f"energy: windows {conf['windows']!r} / window_s {conf['window_s']!r} are not allowed "
                             "(windows an integer >= 1, window_s > 0)")
        handle.activate()
        ids = prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed)
        batch = torch.tensor(ids)

        def prefill() -> int:
            with torch.inference_mode():
                handle.model(input_ids=batch)
            return conf["prompt_tokens"]

        def decode() -> int:
            # generate() includes one prefill; subtract its tokens' energy below using the prefill rate
            return len(timed_generate(handle, ids, conf["new_tokens"]))

        timed_generate(handle, ids, 2)  # warm-up
        windows: dict[str, list[tuple[float | None, str, float, int]]] = {"idle": [], "prefill": [], "decode": []}
        for _ in range(conf["windows"]):
            windows["idle"].append(_window(lambda: (time.sleep(0.05), 0)[1], conf["window_s"], ctx.workdir))
            windows["prefill"].append(_window(prefill, conf["window_s"], ctx.workdir))
            windows["decode"].append(_window(decode, conf["window_s"], ctx.workdir))
        return self._metrics(windows, conf)

    @staticmethod
    def _metrics(windows: dict[str, list[tuple[float | None, str, float, int]]], conf: dict[str, Any]) -> SuiteResult:
        res = SuiteResult(settings={"energy": conf})
        methods = {w[1] for ws in windows.values() for w in ws}
        if any(w[0] is None for ws in windows.values() for w in ws) or len(methods) != 1:
            raise RuntimeError(f"energy: no usable energy source on this machine (methods seen: {sorted(methods)})")
        method = methods.pop()
        idle_w = [j / s for j, _, s, _ in windows["idle"]]  # type: ignore[operator]
        idle = sum(idle_w) / len(idle_w)
        prefill = [(j - idle * s) / n for j, _, s, n in windows["prefill"]]  # type: ignore[operator]
        # Each generate() call also prefills its prompt: remove that share at the measured prefill cost.
        pre = sum(prefill) / len(prefill)
        calls = [n / conf["new_tokens"] for *_, n in windows["decode"]]
        decode = [(j - idle * s - pre * conf["prompt_tokens"] * c) / n
                  for (j, _, s, n), c in zip(windows["decode"], calls, strict=True)]  # type: ignore[operator]
        for task, name, values, unit in (("idle", "idle_power_w", idle_w, "W"),
                                         ("prefill", "prefill_j_per_token", prefill, "J/token"),
                                         ("decode", "decode_j_per_token", decode, "J/token"),
                                         ("decode", "decode_power_w",
                                          [j / s for j, _, s, _ in windows["decode"]], "W")):  # type: ignore[operator]
            st = describe(values)
            res.metrics.append(Metric("energy", task, name, st["mean"], None if st["stderr"] != st["stderr"] else
                                      st["stderr"], len(values), unit, False, method,
                                      {**st, "idle_subtracted": name.endswith("per_token"),
                                       "window_s": conf["window_s"]}))
        return res
