"""The analyses the site shows besides the metric tables: effects of grid runs, order effects, break-even,
trajectories, parity, change vs base and the lifecycle DAG of each run.

The numbers come from :mod:`results.effects`, :mod:`results.breakeven` and the ``trajectories`` view; this module
only reads them in bulk (a few queries for the whole site, not one per path) and shapes them for the templates.
No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adapters.errors import SLMError
from results.breakeven import cost_of, energy_per_token, resource, time_per_token
from results.queries import rows
from results.report import ratio
from results.views import TRAJECTORIES_SELECT

MAX_RUNS = 10  # the latest runs analysed for the effects and DAG pages
MAX_GRID_PATHS = 64  # runs with more paths are not fitted during a build (~0.1 s a path); the page says so
QUALITY_UNITS = ("fraction", "ratio")  # headlines whose change vs base is in points, not a ratio


def latest_runs(con: Any, limit: int = MAX_RUNS) -> list[dict[str, Any]]:
    """The latest runs that recorded paths, newest first."""
    return rows(con, "SELECT r.run_id, r.spec_name, r.started_at, count(*) AS n_paths FROM runs r JOIN run_paths rp "
                     "USING (run_id) GROUP BY ALL ORDER BY r.started_at DESC LIMIT ?", [limit])


def effects(db: str | Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run (newest first) with a grid or order pairs: ``{"run", "grid": grid_effects(..), "order":
    order_effects(..)}``; a run whose analysis fails says why in ``error`` instead."""
    out = []
    for run in runs:
        if run.get("n_paths", 0) > MAX_GRID_PATHS:
            out.append({"run": run, "grid": None, "order": None, "error": None, "skipped": (
                f"{run['n_paths']} paths, more than the {MAX_GRID_PATHS} a site build analyses: run "
                f"`slm analyze effects --run {run['run_id']}` and `slm analyze order --run {run['run_id']}`")})
            continue
        # statsmodels takes ~1 s to import: only when a run is small enough to analyse
        from results.effects import grid_effects, order_effects

        try:
            grid = grid_effects(db, run["run_id"])
            order = order_effects(db, run["run_id"])
        except SLMError as e:
            out.append({"run": run, "grid": None, "order": None, "error": str(e), "skipped": None})
            continue
        if grid["grid"] or order["pairs"]:
            out.append({"run": run, "grid": grid, "order": order, "error": None, "skipped": None})
    return out


_RATE_METRICS = """
SELECT sr.node_hash, sr.hardware_profile, m.suite, m.task, m.metric, m.value, m.stderr, m.n, m.unit, m.method,
       m.details, starts_with(m.method, 'estimated') AS is_estimate
FROM suite_runs sr JOIN metrics m ON m.run_key = sr.run_key
WHERE sr.status = 'ok' AND ((m.suite = 'latency' AND m.metric = 'decode_tokens_per_s')
                            OR (m.suite = 'energy' AND m.task = 'decode' AND m.metric = 'decode_j_per_token'))
QUALIFY row_number() OVER (PARTITION BY sr.node_hash, sr.hardware_profile, m.suite, m.task, m.metric
                           ORDER BY sr.recorded_at DESC) = 1
"""


def breakevens(con: Any, paths: list[dict[str, Any]], nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """path id -> its break-even (as :func:`results.breakeven.path_breakeven` computes it), for every path with
    steps; the per-token figures of all nodes are read in one query."""
    per_node: dict[tuple[str, str], dict[tuple[str, str, str], dict[str, Any]]] = {}
    for r in rows(con, _RATE_METRICS):
        per_node.setdefault((r["node_hash"], r["hardware_profile"]), {})[(r["suite"], r["task"], r["metric"])] = r
    out = {}
    for p in paths:
        chain, hw = p.get("chain") or [], p["hardware_profile"]
        if len(chain) < 2:
            continue
        cost = cost_of(chain[1:], nodes)
        base, leaf = per_node.get((chain[0], hw), {}), per_node.get((chain[-1], hw), {})
        out[p["path_id"]] = {
            "cost": cost,
            "time": resource("time", cost["wall_time_s"], "s", time_per_token(base, common_with=leaf),
                             time_per_token(leaf, common_with=base), "s/token", cost.get("missing")),
            "energy": resource("energy", cost["energy_j"], "J", energy_per_token(base), energy_per_token(leaf),
                               "J/token", cost.get("missing") or cost.get("energy_missing"),
                               cost_estimate=bool(cost["energy_is_estimate"])),
        }
    return out


def trajectories(con: Any) -> dict[str, dict[str, Any]]:
    """path id -> ``{"positions": [labels], "metrics": [{"key", "unit", "hib", "points": [position -> row|None]}]}``
    for the paths with a measured node between the base and the leaf (``evaluate: all``)."""
    found = rows(con, f"""
        WITH t AS ({TRAJECTORIES_SELECT})
        SELECT path_id, position, chain_length, technique, suite, task, metric, value, stderr, n, unit,
               higher_is_better, is_estimate
        FROM t WHERE path_id IN (SELECT path_id FROM t WHERE position > 0 AND position < chain_length - 1)
        ORDER BY path_id, suite, task, metric, position""")
    out: dict[str, dict[str, Any]] = {}
    for r in found:
        t = out.setdefault(r["path_id"], {"length": r["chain_length"], "metrics": {}})
        key = f"{r['suite']}/{r['task']}/{r['metric']}"
        m = t["metrics"].setdefault(key, {"key": key, "unit": r["unit"] or "", "hib": r["higher_is_better"],
                                          "points": [None] * r["chain_length"]})
        m["points"][r["position"]] = {k: r[k] for k in ("value", "stderr", "n", "is_estimate")}
    for t in out.values():
        t["metrics"] = list(t["metrics"].values())
    return out


def parity(con: Any) -> dict[str, list[dict[str, Any]]]:
    """path id -> its ``parity`` suite metrics (task, metric, value, stderr, n, unit, direction, method)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows(con, "SELECT path_id, task, metric, value, stderr, n, unit, higher_is_better, method, is_estimate "
                       "FROM metrics_long WHERE suite = 'parity' ORDER BY path_id, task, metric"):
        out.setdefault(r.pop("path_id"), []).append(r)
    return out


def vs_base(paths: list[dict[str, Any]], headlines: list[dict[str, Any]]) -> None:
    """Add to each overview row ``base_path`` (the name of the path measuring its chain's source node on the same
    hardware, None when none does) and per headline ``<name>_vs_base``: ``{"text", "title"}`` with the change
    (points for fractions/ratios, a factor × for the rest; its stderr from both stderrs as independent), or
    None when either value is missing."""
    bases = {(p["chain"][0], p["hardware_profile"]): p for p in paths if len(p.get("chain") or []) == 1}
    for p in paths:
        chain = p.get("chain") or []
        base = bases.get((chain[0], p["hardware_profile"])) if len(chain) > 1 else None
        p["base_path"] = base["path_name"] if base else None
        for h in headlines:
            p[f"{h['name']}_vs_base"] = _change(p, base, h) if base else None


def _change(p: dict[str, Any], base: dict[str, Any], h: dict[str, Any]) -> dict[str, str] | None:
    name, unit = h["name"], h["unit"]
    v, b = p.get(name), base.get(name)
    if v is None or b is None or not (math.isfinite(v) and math.isfinite(b)):
        return None
    se_v, se_b = p.get(f"{name}_stderr"), base.get(f"{name}_stderr")
    est = bool(p.get(f"{name}_estimate") or base.get(f"{name}_estimate"))
    tilde = "~" if est else ""
    if unit in QUALITY_UNITS:
        d = (v - b) * 100
        se = None if se_v is None or se_b is None else math.hypot(se_v, se_b) * 100
        text = f"{tilde}Δ {d:+.1f}" + (f" ± {se:.1f}" if se is not None else "") + " pts"
        how = "difference in percentage points"
        if b:
            how += f"; retention {v / b * 100:.1f}%"
    else:
        if b == 0:
            return None
        r, se = ratio(v, se_v, b, se_b)
        text = f"{tilde}×{r:.3g}" + (f" ± {se:.2g}" if se is not None else "")
        how = "ratio path / base" + (f" ({(r - 1) * 100:+.1f}%)" if unit == "bytes" else "")
    title = (f"vs base path {base['path_name']!s}: {how}; ± 1 stderr, both values taken as independent"
             + ("; estimated" if est else ""))
    return {"text": text, "title": title}


def dags(con: Any, runs: list[dict[str, Any]], paths: list[dict[str, Any]],
         nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run (newest first): ``{"run", "nodes": {hash: DagNode}}`` over the chains of its paths."""
    from leaderboard.charts import DagNode

    by_id = {p["path_id"]: p for p in paths}
    members: dict[str, list[str]] = {}
    for run_id, path_id in con.execute("SELECT run_id, path_id FROM run_paths WHERE list_contains(?, run_id)",
                                       [[r["run_id"] for r in runs]]).fetchall():
        members.setdefault(run_id, []).append(path_id)
    out = []
    for run in runs:
        dag_nodes: dict[str, DagNode] = {}
        for pid in sorted(members.get(run["run_id"], []), key=lambda i: by_id[i]["path_name"] if i in by_id else i):
            p = by_id.get(pid)
            if p is None:
                continue
            for i, h in enumerate(p.get("chain") or []):
                n = nodes.get(h) or {}
                if h not in dag_nodes:
                    label = (n.get("technique") or n.get("source") or p.get("base") or "source") if i else \
                        (n.get("source") or p.get("base") or "source")
                    dag_nodes[h] = DagNode(h, i, str(label), p["chain"][i - 1] if i else None,
                                           failed=(n.get("status") in ("failed", "skipped")))
                dag_nodes[h].paths.append((p["path_name"], f"paths/{p['page']}.html"))
        if dag_nodes:
            out.append({"run": run, "nodes": dag_nodes})
    return out
