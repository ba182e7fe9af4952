"""The ``trust`` suite: robustness, toxicity, bias, truthfulness, calibration, privacy and consistency, plus
each metric's retention relative to the path's base model.

Each dimension lives in :mod:`suites.trust` (one module each; the metric math in
:mod:`suites.trust.metrics`). Real data come from the data directory (option ``data_dir``, the run's data
directory or ``$SLM_DATA_DIR``; layouts of ``../shared/benchmarks``); where a dataset is absent a seeded
built-in set is used and the metric's ``method`` names it. Sizes per profile are in :data:`PROFILE_N`.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.errors import UsageError
from suites.base import PROFILES, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.quality import DEFAULT_PREFIX_CACHE
from suites.trust import (
    bias,
    calibration,
    consistency,
    data,
    privacy,
    retention,
    robustness,
    toxicity,
    truthfulness,
)
from suites.trust.common import DimConfig, Outcome, Scorer

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

DIMENSIONS: dict[str, Callable[[Scorer, DimConfig], Outcome]] = {
    "robustness": robustness.run, "toxicity": toxicity.run, "bias": bias.run, "truthfulness": truthfulness.run,
    "calibration": calibration.run, "privacy": privacy.run, "consistency": consistency.run}
# Items per dimension (privacy: canaries; PII prompts are twice as many). None: every item of the dataset.
PROFILE_N: dict[str, dict[str, int | None]] = {
    "quick": {"robustness": 16, "toxicity": 8, "bias": 32, "truthfulness": 8, "calibration": 40, "privacy": 4,
              "consistency": 16},
    "standard": {"robustness": 150, "toxicity": 50, "bias": 300, "truthfulness": 200, "calibration": 400,
                 "privacy": 10, "consistency": 150},
    "full": {"robustness": None, "toxicity": None, "bias": None, "truthfulness": None, "calibration": None,
             "privacy": 20, "consistency": None},
}
EXTRA = {"quick": {"k": 3, "m": 40}, "standard": {"k": 5, "m": 200}, "full": {"k": 25, "m": 1000}}
DEFAULT_BATCH = 8


def _dimensions(value: Any) -> list[str]:
    dims = list(DIMENSIONS) if value is None else value
    if not isinstance(dims, list | tuple) or not dims or any(d not in DIMENSIONS for d in dims):
        raise UsageError(f"trust.dimensions: {value!r} is not allowed (a non-empty list of {sorted(DIMENSIONS)})")
    return list(dims)


def _sizes(profile: str, value: Any, dims: list[str]) -> dict[str, int | None]:
    if profile not in PROFILES:
        raise UsageError(f"trust profile: {profile!r} is not allowed (allowed: {list(PROFILES)})")
    sizes = dict(PROFILE_N[profile])
    if value is None:
        return sizes
    override = {d: value for d in dims} if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(override, dict) or any(
            k not in DIMENSIONS or not isinstance(v, int) or isinstance(v, bool) or v < 1 for k, v in override.items()):
        raise UsageError(f"trust.n: {value!r} is not allowed (a positive int, or a mapping from {sorted(DIMENSIONS)} "
                         "to positive ints)")
    return {**sizes, **override}


def _run_dimension(name: str, scorer: Scorer, cfg: DimConfig, extra: dict[str, int]) -> Outcome:
    fn = DIMENSIONS[name]
    if name == "toxicity":
        return toxicity.run(scorer, cfg, k=extra["k"])
    if name == "privacy":
        return privacy.run(scorer, DimConfig(cfg.n or 20, cfg.seed, cfg.data_dir, cfg.profile), m=extra["m"])
    return fn(scorer, cfg)


def evaluate(handle: ModelHandle, plan: dict[str, Any]) -> Outcome:
    """Run the planned dimensions on ``handle``; a failing dimension is recorded in ``settings["errors"]``."""
    saved = (handle.batch_size, handle._lm)
    handle.batch_size, handle._lm = plan["batch_size"], None  # lm-eval's LM is built for one batch size
    total, errors = Outcome(), {}
    try:
        # choices sharing a context score it once (adapters.lm.HandleHFLM.prefix_cache)
        handle.lm().prefix_cache = plan["prefix_cache"]
        scorer = Scorer(handle)
        for name in plan["dimensions"]:
            cfg = DimConfig(plan["n"][name], plan["seed"], plan["data_dir"], plan["profile"])
            start = time.perf_counter()
            try:
                out = _run_dimension(name, scorer, cfg, plan["extra"])
            except UsageError:
                raise
            except Exception:  # a dimension's failure is data; the others still run
                errors[name] = traceback.format_exc(limit=8)
                continue
            total.metrics += out.metrics
            total.samples += out.samples
            total.settings.update(out.settings)
            total.settings.setdefault("dimension_seconds", {})[name] = round(time.perf_counter() - start, 2)
        total.settings["requests_scored"] = scorer.requests
        total.settings["prefix_cache"] = {"enabled": plan["prefix_cache"], **handle.lm().prefix_stats}
    finally:
        handle.batch_size, handle._lm = saved
    if errors:
        total.settings["errors"] = errors
    return total


@suite("trust")
class TrustSuite(Suite):
    """Trustworthiness: robustness, toxicity, bias, truthfulness, calibration, privacy, consistency, retention."""

    options = ("dimensions", "data_dir", "n", "batch_size", "prefix_cache")
    needs_base = True

    def plan(self, ctx: SuiteContext) -> dict[str, Any]:
        """The validated settings of a run (JSON-able; also the key of the base-results cache)."""
        opts = ctx.options
        dims = _dimensions(opts.get("dimensions"))
        batch = opts.get("batch_size", DEFAULT_BATCH)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise UsageError(f"trust.batch_size: {batch!r} is not allowed (a positive int)")
        prefix = opts.get("prefix_cache", DEFAULT_PREFIX_CACHE)
        if not isinstance(prefix, bool):
            raise UsageError(f"trust.prefix_cache: {prefix!r} is not allowed (true or false)")
        data_dir = data.resolve_data_dir(opts.get("data_dir"), ctx.data_dir)
        return {"dimensions": dims, "n": _sizes(ctx.profile, opts.get("n"), dims), "seed": ctx.seed,
                "data_dir": data_dir, "profile": ctx.profile, "extra": EXTRA[ctx.profile], "batch_size": batch,
                "prefix_cache": prefix}

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        plan = self.plan(ctx)
        found = evaluate(handle, plan)
        # A node is its own base only when it is the base handle itself. A path that shares the base's weights
        # (the same model object, e.g. ``baseline > infer.decoding``) but generates differently is measured
        # against the real base, and its results must never be cached as that base's.
        own_base = ctx.base is None or ctx.base is handle
        if own_base:  # the node is its own base: its results serve its descendants in this process
            retention.remember(handle, plan, found.metrics)
        base = None
        if ctx.base is not None and not own_base:
            base_handle = ctx.base
            base = retention.base_metrics(base_handle, plan, lambda: evaluate(base_handle, plan).metrics)
        settings = {**found.settings, **{k: v for k, v in plan.items() if k not in ("data_dir", "prefix_cache")},
                    "data_dir": str(plan["data_dir"]) if plan["data_dir"] else None,
                    "base": "self" if own_base else repr(ctx.base)}
        kept = retention.ratios(found.metrics, base)
        undefined = {m.name: m.details.get("note") for m in kept if math.isnan(m.value)}
        if undefined:
            settings["retention_undefined"] = undefined
        return SuiteResult(metrics=found.metrics + kept, samples=found.samples, settings=settings)
