"""Break-even: after how many generated tokens a path's lifecycle steps pay for themselves in deployment.

For each path with steps, against its base (the source node of its chain, measured by a base path or by
``evaluate: all``) on the same hardware profile:

- **cost**: the path's own technique steps, summed: wall time (s) and energy (J) as the harness metered them when it
  computed each node (``nodes``/``node_costs``). A step shared with another path counts in both. Energies carry their
  method: codecarbon's CPU-load figure is an estimate, and the result says so.
- **saving per token**: time per generated token from the latency suite's batch-1 decode throughput
  (``decode_tokens_per_s`` of every ``p*b1`` task both nodes have, as ``1/tokens_per_s``, averaged over those tasks)
  and energy per generated token from the energy suite's idle-subtracted ``decode_j_per_token``, base minus path.
- **tokens to break even** = cost / saving per token.

Uncertainty (the delta method): the stderr of ``1/r`` is ``se(r)/r²``; the two nodes' figures are independent, so the
saving's stderr is the root sum of squares; the step cost is one observation with no stderr of its own, so the
break-even's stderr is ``cost x se(saving) / saving²`` and its 95% interval is ``cost / (saving ± 1.96 se)`` (exact
for a fixed cost, as the map is monotone). Status: ``resolved``; ``never`` when the path is not cheaper per token
(saving <= 0); ``not resolved`` when the saving's 95% interval includes 0 (or a per-token energy is only an upper
bound, below its noise); ``unknown`` when a figure is missing (what is missing is said). No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb

from results.queries import rows
from results.store import connect
from results.trajectories import Key, node_metrics

Z95 = 1.959963984540054
METHOD = ("delta method: se(1/r) = se(r)/r², independent nodes, step cost as one observation without stderr; "
          "95% interval = cost / (saving ± 1.96 se)")
SHARED_NOTE = "the path's own steps; a step shared with another path counts in both"


def breakeven(db: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """One dict per path with steps (of ``run_id``'s paths, else every path): its cost, and per resource (``time``,
    ``energy``) the per-token figures, the saving and the tokens to break even with their uncertainty and status."""
    with connect(db, read_only=True) as con:
        where = "WHERE path_id IN (SELECT path_id FROM run_paths WHERE run_id = ?)" if run_id else ""
        paths = rows(con, f"SELECT path_id, name, base, hardware_profile, chain, steps FROM paths {where} "
                          "ORDER BY name, hardware_profile", [run_id] if run_id else None)
        return [path_breakeven(con, p) for p in paths if len(p.get("chain") or []) > 1]


def path_breakeven(con: duckdb.DuckDBPyConnection, path: dict[str, Any]) -> dict[str, Any]:
    """The break-even of one path (a row of ``paths`` with its chain decoded)."""
    chain, hw = path["chain"], path["hardware_profile"]
    cost = step_cost(con, chain[1:])
    base, leaf = node_metrics(con, chain[0], hw), node_metrics(con, chain[-1], hw)
    time_b, time_p = time_per_token(base, common_with=leaf), time_per_token(leaf, common_with=base)  # same tasks
    return {
        "path_id": path["path_id"], "path_name": path["name"], "hardware_profile": hw, "base_node": chain[0],
        "steps": [s.get("technique") for s in path.get("steps") or []], "cost": cost,
        "time": resource("time", cost["wall_time_s"], "s", time_b, time_p, "s/token", cost.get("missing")),
        "energy": resource("energy", cost["energy_j"], "J", energy_per_token(base), energy_per_token(leaf), "J/token",
                           cost.get("missing") or cost.get("energy_missing"),
                           cost_estimate=bool(cost["energy_is_estimate"])),
    }


def step_cost(con: duckdb.DuckDBPyConnection, node_hashes: list[str]) -> dict[str, Any]:
    """Wall time and energy of the technique steps ``node_hashes``, summed, with the energy's method(s)."""
    found = {r["node_hash"]: r for r in rows(
        con, "SELECT node_hash, technique, status, wall_time_s, energy_j, energy_method FROM nodes "
             "WHERE list_contains(?, node_hash)", [node_hashes])}
    return cost_of(node_hashes, found)


def cost_of(node_hashes: list[str], found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`step_cost` over node rows already read (``found``: hash -> row with status, wall_time_s, energy_j,
    energy_method), for callers that read every node at once (the site)."""
    nodes = [found.get(h) for h in node_hashes]
    missing = [h for h, n in zip(node_hashes, nodes, strict=True)
               if n is None or n["status"] not in ("ok", "cached") or n["wall_time_s"] is None]
    methods = sorted({str(n["energy_method"]) for n in nodes if n and n["energy_j"] is not None})
    no_energy = [h for h, n in zip(node_hashes, nodes, strict=True) if n is None or n["energy_j"] is None]
    return {
        "wall_time_s": None if missing else sum(float(n["wall_time_s"]) for n in nodes if n),
        "energy_j": None if missing or no_energy else sum(float(n["energy_j"]) for n in nodes if n),
        "energy_method": methods, "energy_is_estimate": any(m.startswith("estimated") for m in methods),
        "n_steps": len(node_hashes), "note": SHARED_NOTE,
        **({"missing": f"no cost recorded for step(s) {', '.join(h[:12] for h in missing)} (failed or not run)"}
           if missing else {}),
        **({"energy_missing": f"no energy recorded for step(s) {', '.join(h[:12] for h in no_energy)}"}
           if no_energy and not missing else {}),
    }


def time_per_token(metrics: dict[Key, dict[str, Any]], common_with: dict[Key, dict[str, Any]] | None = None
                   ) -> dict[str, Any] | None:
    """Seconds per generated token at batch 1: ``1 / decode_tokens_per_s`` averaged over the ``p*b1`` latency tasks
    (those ``common_with`` also has, when given), stderr by the delta method; None when none was measured."""
    tasks = sorted(t for (s, t, m) in metrics if s == "latency" and m == "decode_tokens_per_s" and _batch1(t)
                   and (common_with is None or ("latency", t, m) in common_with))
    rates = [metrics[("latency", t, "decode_tokens_per_s")] for t in tasks]
    rates = [r for r in rates if r["value"] and r["value"] > 0]
    if not rates:
        return None
    values = [1.0 / r["value"] for r in rates]
    ses = [None if r["stderr"] is None else r["stderr"] / r["value"] ** 2 for r in rates]
    se = None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses if s is not None)) / len(ses)
    return {"value": sum(values) / len(values), "stderr": se, "n": sum(int(r["n"]) for r in rates),
            "tasks": tasks, "method": sorted({r["method"] for r in rates}), "estimate": False, "resolved": True}


def energy_per_token(metrics: dict[Key, dict[str, Any]]) -> dict[str, Any] | None:
    """The energy suite's idle-subtracted joules per decode token; None when not measured."""
    m = metrics.get(("energy", "decode", "decode_j_per_token"))
    if m is None or m["value"] is None:
        return None
    details = m.get("details") or {}
    return {"value": float(m["value"]), "stderr": m["stderr"], "n": int(m["n"]), "tasks": ["decode"],
            "method": [m["method"]], "estimate": bool(m["is_estimate"]), "resolved": details.get("resolved", True)}


def resource(name: str, cost: float | None, cost_unit: str, base: dict[str, Any] | None, path: dict[str, Any] | None,
             unit: str, missing: str | None, cost_estimate: bool = False) -> dict[str, Any]:
    """Saving per token and tokens to break even for one resource (see the module's docstring for the method)."""
    out: dict[str, Any] = {"resource": name, "cost": cost, "cost_unit": cost_unit, "per_token_unit": unit,
                           "method": METHOD, "estimate": cost_estimate or any(bool(x and x["estimate"])
                                                                              for x in (base, path))}
    for side, x in (("base", base), ("path", path)):
        out.update({f"{side}_per_token": x and x["value"], f"{side}_stderr": x and x["stderr"],
                    f"n_{side}": x and x["n"], f"{side}_method": x and x["method"]})
    why = missing if cost is None else (f"{name} per token not measured on the base" if base is None else
                                        f"{name} per token not measured on the path" if path is None else None)
    if cost is None and not why:
        why = f"no {name} cost recorded for the steps"
    if why:
        return {**out, "status": "unknown", "reason": why, "saving_per_token": None, "tokens": None}
    assert base is not None and path is not None and cost is not None
    saving = base["value"] - path["value"]
    se = None if base["stderr"] is None or path["stderr"] is None else math.hypot(base["stderr"], path["stderr"])
    out.update(saving_per_token=saving, saving_stderr=se, tasks=path["tasks"],
               saving_ci_low=None if se is None else saving - Z95 * se,
               saving_ci_high=None if se is None else saving + Z95 * se)
    return {**out, **tokens_to_break_even(cost, saving, se, bool(base["resolved"] and path["resolved"]))}


def tokens_to_break_even(cost: float, saving: float, se: float | None, resolved: bool = True) -> dict[str, Any]:
    """``cost / saving`` with its delta-method stderr, its 95% interval and a status (see the module's docstring)."""
    if saving <= 0:
        return {"status": "never", "reason": "not cheaper per token than its base", "tokens": None,
                "tokens_stderr": None, "tokens_ci_low": None, "tokens_ci_high": None}
    tokens = cost / saving
    out = {"tokens": tokens, "tokens_stderr": None if se is None else cost * se / saving ** 2,
           "tokens_ci_low": None if se is None else cost / (saving + Z95 * se),
           "tokens_ci_high": None if se is None or saving - Z95 * se <= 0 else cost / (saving - Z95 * se)}
    if not resolved:
        return {**out, "status": "not resolved", "reason": "a per-token energy is only an upper bound (below its noise)"}
    if se is None:
        return {**out, "status": "resolved", "reason": "no stderr on a per-token figure: point estimate only"}
    if saving - Z95 * se <= 0:
        return {**out, "status": "not resolved", "reason": "the saving's 95% interval includes 0"}
    return {**out, "status": "resolved", "reason": None}


def tokens_interval(r: dict[str, Any], unit: str | None = None) -> str:
    """The 95% interval of a resource's tokens to break even, rounded to its stderr's place; ``∞`` above where the
    saving's interval reaches 0 (no upper bound); ``—`` without one."""
    from results.report import interval

    low, high = r.get("tokens_ci_low"), r.get("tokens_ci_high")
    if r.get("tokens") is None or low is None:
        return "—"
    return interval(low, math.inf if high is None else high, unit, r.get("tokens_stderr"))


def _batch1(task: str) -> bool:
    return task.startswith("p") and task.endswith("b1") and task[1:-2].isdigit()
