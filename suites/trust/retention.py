"""Retention: each trust metric of a path relative to the same metric on the path's base model.

Retention is oriented so that 1 means "as good as the base", below 1 a loss and above 1 a gain, for every
metric: ``value(path) / value(base)`` where higher is better (accuracies, MC2, agreement) and
``value(base) / value(path)`` where lower is better (toxicity, ECE, Brier, exposure, PII leakage). Every
``retention_<name>`` is therefore higher-is-better and can be averaged or gated (``slm check`` min_ratio).
Its standard error is the delta method's with the two runs taken as independent samples (they score the
same items, so this errs on the wide side). Signed quantities and ones whose ideal lies inside their range
(drops, BBQ bias scores, ``pct_stereotype``) have no meaningful ratio and get none; a ratio with a zero
denominator (e.g. a toxic fraction that fell to 0) is undefined and reported as NaN with a note. Base
results are cached per process, keyed by what identifies the base run, so a base is scored once however
many paths share it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from suites.base import Metric
from suites.trust import metrics
from suites.trust.common import metric

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

NO_RATIO_PREFIXES = ("drop_", "retention_")
NO_RATIO = {"acc_drop", "ambig_bias", "disambig_bias", "pct_stereotype"}
_BASE_CACHE: dict[str, list[Metric]] = {}


def has_ratio(m: Metric) -> bool:
    """Whether ``m`` gets a retention ratio (unsigned, one-directional quantities only)."""
    return m.name not in NO_RATIO and not m.name.startswith(NO_RATIO_PREFIXES)


def base_key(handle: ModelHandle, settings: dict[str, Any]) -> str:
    """What identifies a base run: the model's source, lineage, backend, generation defaults and the suite
    settings (profile, options, seed, data directory). A path that shares the base's weights but generates
    differently (``infer.decoding``) has its own key: its lineage and generation defaults differ."""
    lineage = [(s.technique, s.version, s.params) for s in handle.lineage]
    ident = {"source": handle.source, "lineage": lineage, "backend": handle.backend,
             "generation": handle.generation_kwargs, "settings": settings}
    return json.dumps(ident, sort_keys=True, default=str)


def base_metrics(handle: ModelHandle, settings: dict[str, Any], compute: Callable[[], list[Metric]]) -> list[Metric]:
    """The base's trust metrics, from the process cache or computed now (and cached)."""
    key = base_key(handle, settings)
    if key not in _BASE_CACHE:
        _BASE_CACHE[key] = [m for m in compute() if has_ratio(m)]
    return _BASE_CACHE[key]


def remember(handle: ModelHandle, settings: dict[str, Any], found: list[Metric]) -> None:
    """Cache a run's metrics as base results (a node that is its own base serves its descendants)."""
    _BASE_CACHE.setdefault(base_key(handle, settings), [m for m in found if has_ratio(m)])


def _retention(m: Metric, value: float, stderr: float | None, method: str, **details: Any) -> Metric:
    return metric(m.task, f"retention_{m.name}", value, stderr, m.n, "ratio", True, method, of=m.name,
                  of_higher_is_better=m.higher_is_better, **details)


def ratios(path: list[Metric], base: list[Metric] | None) -> list[Metric]:
    """``retention_<name>`` for every ratio-able path metric; with no base (the node is the base), 1 exactly."""
    out = []
    by_key = {(m.task, m.name): m for m in base or []}
    for m in filter(has_ratio, path):
        if base is None:
            out.append(_retention(m, 1.0, 0.0, "ratio:path/base", base="self", note="the node is its own base"))
            continue
        b = by_key.get((m.task, m.name))
        if b is None:
            continue
        if m.higher_is_better:
            r, method = metrics.ratio(m.value, m.stderr, b.value, b.stderr), "ratio:path/base"
        else:
            r, method = metrics.ratio(b.value, b.stderr, m.value, m.stderr), "ratio:base/path"
        out.append(_retention(m, r.value, r.stderr, method, base_value=b.value, base_stderr=b.stderr, base_n=b.n,
                              path_value=m.value, note=r.note, stderr_method="delta"))
    return out
