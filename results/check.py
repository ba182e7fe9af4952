"""The CI regression gate: the latest run against a committed baseline, with per-suite tolerances.

Quality and trust use recovery thresholds: a metric holds when it keeps at least ``min_ratio`` of the
baseline (``kept_fraction``: oriented by the metric's direction for values of any sign; a 0 baseline is
held by any improvement), or (when ``alpha`` is set and per-sample outcomes exist on both sides) when it
is not significantly worse at that alpha. Latency, memory and energy use relative tolerances ``rel_tol``;
``rel_tol: auto`` derives the tolerance from the two measurements' own uncertainty (three combined
relative standard errors, never below ``min_tol``); a 0 baseline tolerates no worsening. A baseline
metric missing from the run is a regression.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters.errors import SpecError, UsageError
from results.compare import PathData, compare_metric, load_path_data
from results.queries import latest_run_id
from results.store import connect

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "quality": {"min_ratio": 0.95, "alpha": 0.05},
    "trust": {"min_ratio": 0.95, "alpha": 0.05},
    "latency": {"rel_tol": 0.25},
    "memory": {"rel_tol": 0.10},
    "energy": {"rel_tol": 0.30},
    "*": {"rel_tol": 0.25},
}
_RULE_KEYS = {"min_ratio", "alpha", "rel_tol", "min_tol"}
BASELINE_FORMAT = "slm-baseline"


@dataclass
class Tolerances:
    """Rules by suite (``defaults``), overrides by ``suite/task/metric`` glob (``metrics``), and ``ignore`` globs."""

    defaults: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    ignore: list[str]

    def rule(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        name = "/".join(key)
        if any(fnmatch.fnmatchcase(name, pat) for pat in self.ignore):
            return None
        rule = dict(self.defaults.get(key[0]) or self.defaults.get("*") or {})
        for pattern, override in self.metrics.items():
            if fnmatch.fnmatchcase(name, pattern):
                rule.update(override)
                break
        return rule


def load_tolerances(path: str | Path | None) -> Tolerances:
    """Read a tolerances YAML; every unknown field or bad value is named with the file."""
    defaults = {k: dict(v) for k, v in DEFAULT_RULES.items()}
    if path is None:
        return Tolerances(defaults, {}, [])
    file = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise UsageError(f"--tolerances: {file} does not exist") from exc
    if not isinstance(raw, dict):
        raise SpecError(file=file, field="(top level)", message=f"expected a mapping with defaults/metrics/ignore, got {raw!r}")
    unknown = set(raw) - {"defaults", "metrics", "ignore"}
    if unknown:
        raise SpecError(file=file, field=sorted(unknown)[0], message="unknown field (allowed: defaults, metrics, ignore)")
    for suite, rule in (raw.get("defaults") or {}).items():
        defaults[suite] = {**defaults.get(suite, {}), **_rule(file, f"defaults.{suite}", rule)}
    metrics = {pat: _rule(file, f"metrics.{pat}", rule) for pat, rule in (raw.get("metrics") or {}).items()}
    ignore = raw.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise SpecError(file=file, field="ignore", message=f"expected a list of suite/task/metric globs, got {ignore!r}")
    return Tolerances(defaults, metrics, ignore)


def _rule(file: str, field: str, rule: Any) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise SpecError(file=file, field=field, message=f"expected a mapping of {sorted(_RULE_KEYS)}, got {rule!r}")
    for key, value in rule.items():
        if key not in _RULE_KEYS:
            raise SpecError(file=file, field=f"{field}.{key}", message=f"unknown rule (allowed: {', '.join(sorted(_RULE_KEYS))})")
        ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0)
        if key == "rel_tol" and value == "auto":
            ok = True
        if not ok:
            raise SpecError(file=file, field=f"{field}.{key}", message=f"{value!r} is not allowed (a number >= 0"
                            + (", or auto)" if key == "rel_tol" else ")"))
    return dict(rule)


# -- snapshots ------------------------------------------------------------------------------
def snapshot_from_db(db: str | Path, run_id: str | None = None) -> tuple[str, dict[str, PathData]]:
    """The paths of a run (default: the latest) with their measurements, keyed by path id."""
    if not Path(db).exists():
        raise UsageError(f"results database {db} does not exist (run `slm run` first)")
    run = run_id or latest_run_id(db)
    if run is None:
        raise UsageError(f"{db} holds no run with paths yet")
    with connect(db, read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT path_id FROM run_paths WHERE run_id = ? ORDER BY path_id",
                                         [run]).fetchall()]
        return run, {pid: load_path_data(con, pid) for pid in ids}


def export_baseline(db: str | Path, out: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """Write the latest run's measurements as a JSON baseline users commit next to their code."""
    run, paths = snapshot_from_db(db, run_id)
    doc = {"format": BASELINE_FORMAT, "version": 1, "run_id": run, "paths": [_path_json(p) for p in paths.values()]}
    Path(out).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    return doc


def _path_json(p: PathData) -> dict[str, Any]:
    keep = ("value", "stderr", "n", "unit", "higher_is_better", "method", "is_estimate")
    return {
        "path_id": p.path_id, "name": p.name, "hardware_profile": p.hardware_profile,
        "metrics": [{"key": "/".join(k), **{f: m.get(f) for f in keep}} for k, m in sorted(p.metrics.items())],
        "correct": {"/".join(k): v for k, v in p.correct.items()},
        "scores": {"/".join(k): v for k, v in p.scores.items()},
        "raw": {"/".join(k): v for k, v in p.raw.items()},
    }


def load_baseline(path: str | Path) -> tuple[str, dict[str, PathData]]:
    """A baseline: a results database (its latest run) or an exported JSON baseline."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--baseline: {p} does not exist (create one with `slm baseline export --out {p.name}`)")
    if p.suffix in (".duckdb", ".db"):
        return snapshot_from_db(p)
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline: {p} is neither a DuckDB file nor a JSON baseline ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise UsageError(f"--baseline: {p} is not an slm baseline (expected format {BASELINE_FORMAT!r})")
    out = {}
    for rec in doc["paths"]:
        data = PathData(rec["path_id"], rec["name"], rec["hardware_profile"])
        for m in rec["metrics"]:
            data.metrics[_split(m["key"])] = m
        data.correct = {_split2(k): v for k, v in rec.get("correct", {}).items()}
        data.scores = {_split2(k): v for k, v in rec.get("scores", {}).items()}
        data.raw = {_split(k): v for k, v in rec.get("raw", {}).items()}
        out[data.path_id] = data
    return str(doc.get("run_id")), out


def _split(key: str) -> tuple[str, str, str]:
    suite, rest = key.split("/", 1)
    task, metric = rest.rsplit("/", 1)
    return suite, task, metric


def _split2(key: str) -> tuple[str, str]:
    suite, task = key.split("/", 1)
    return suite, task


# -- the check ------------------------------------------------------------------------------
def run_check(baseline: dict[str, PathData], current: dict[str, PathData], tol: Tolerances) -> list[dict[str, Any]]:
    """One verdict per baseline metric: ``ok``, ``regression`` or ``missing``."""
    by_name = {(p.name, p.hardware_profile): p for p in current.values()}
    verdicts = []
    for base in baseline.values():
        cur = current.get(base.path_id) or by_name.get((base.name, base.hardware_profile))
        for key in sorted(base.metrics):
            rule = tol.rule(key)
            if rule is None or base.metrics[key].get("value") is None:
                continue
            if cur is None or key not in cur.metrics or cur.metrics[key].get("value") is None:
                verdicts.append(_verdict(base, key, "missing", None, rule, "not measured in this run"))
                continue
            verdicts.append(_judge(base, cur, key, rule))
    return verdicts


def kept_fraction(b: float, c: float, higher_is_better: bool) -> float:
    """How much of baseline ``b`` the current value ``c`` keeps: 1 = as good, < 1 = a loss, > 1 = a gain.

    Oriented by the metric's direction for every sign of the values:

    * ``b > 0`` and ``c > 0``: ``c / b`` where higher is better, ``b / c`` where lower is better (the trust
      suite's retention orientation);
    * ``b == c``: 1.0;
    * ``b == 0``: ``math.inf`` when ``c`` is better (a 0 baseline is held by any improvement), 0.0 when worse;
    * any other signs (a negative value, or ``c == 0``): ``1 - worse / |b|``, where ``worse`` is ``b - c`` when
      higher is better and ``c - b`` when lower is better (so -2 -> -3 of a log-likelihood keeps 0.5).
    """
    if b == c:
        return 1.0
    worse = (b - c) if higher_is_better else (c - b)
    if b == 0:
        return 0.0 if worse > 0 else math.inf
    if b > 0 and c > 0:
        return c / b if higher_is_better else b / c
    return 1.0 - worse / abs(b)


def _zero_base_why(c: float, worse: float, tail: str) -> str:
    state = "unchanged" if worse == 0 else ("worse" + tail if worse > 0 else "better")
    return f"baseline 0; now {c:.4g} ({state})"


def _judge(base: PathData, cur: PathData, key: tuple[str, str, str], rule: dict[str, Any]) -> dict[str, Any]:
    row = compare_metric(key, base, cur)
    b, c, hib = row["a"], row["b"], bool(row["higher_is_better"])
    worse = (b - c) if hib else (c - b)  # > 0: the run is worse than the baseline, in the metric's direction
    if "min_ratio" in rule and rule["min_ratio"] is not None and "rel_tol" not in rule:
        kept = kept_fraction(b, c, hib)
        ok = kept >= rule["min_ratio"]
        if b == 0 and b != c:
            why = _zero_base_why(c, worse, f"; no fraction of a 0 baseline, min {rule['min_ratio']:.0%}")
        else:
            why = f"keeps {kept:.1%} of baseline (min {rule['min_ratio']:.0%})"
        alpha = rule.get("alpha")
        if not ok and alpha is not None and row["p_value"] is not None and row["test"] != "z-test":
            ok = row["p_value"] >= alpha
            why += f"; {row['test']} p={row['p_value']:.3g} " + ("not significant" if ok else "significant") + \
                   f" at alpha={alpha}"
        return _verdict(base, key, "ok" if ok else "regression", row, rule, why)
    tol = _tolerance(rule, row)
    if b == 0:  # any worsening of a 0 baseline is an infinite relative change; holding or improving is fine
        ok = worse <= 0
        why = _zero_base_why(c, worse, f": infinite relative change, tolerance {tol:.1%}")
        return _verdict(base, key, "ok" if ok else "regression", row, rule, why)
    rel = worse / abs(b)
    ok = rel <= tol
    return _verdict(base, key, "ok" if ok else "regression", row, rule,
                    f"{'worse' if rel > 0 else 'better'} by {abs(rel):.1%} (tolerance {tol:.1%})")


def _tolerance(rule: dict[str, Any], row: dict[str, Any]) -> float:
    tol = rule.get("rel_tol", 0.25)
    if tol != "auto":
        return float(tol)
    rel = [s / abs(v) for s, v in ((row["a_stderr"], row["a"]), (row["b_stderr"], row["b"])) if s and v]
    return max(float(rule.get("min_tol", 0.02)), 3 * math.sqrt(sum(r * r for r in rel)))


def _verdict(base: PathData, key: tuple[str, str, str], status: str, row: dict[str, Any] | None,
             rule: dict[str, Any], why: str) -> dict[str, Any]:
    bm = base.metrics[key]
    return {"path": base.name, "hardware_profile": base.hardware_profile, "suite": key[0], "task": key[1],
            "metric": key[2], "status": status, "baseline": bm.get("value"), "current": row["b"] if row else None,
            "unit": bm.get("unit"), "test": row["test"] if row else None, "p_value": row["p_value"] if row else None,
            "rule": rule, "why": why}
