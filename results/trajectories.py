"""Trajectories: a path's chain ``base -> step 1 -> ... -> leaf`` with every metric measured at each node.

With ``evaluate: all`` in a spec every node of a path is measured (suite runs on the intermediate node hashes of the
path's ``chain``); otherwise only the leaf, and the base where another path (or a base path) measured it. The rows
come from the ``trajectories`` view (:mod:`results.views`): the latest measurement of each node under the path's
hardware profile. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from results.queries import rows
from results.store import connect
from results.views import TRAJECTORIES_SELECT

Key = tuple[str, str, str]


@dataclass
class TrajectoryNode:
    """One node of a path's chain.

    Attributes:
        position: 0 for the base, i for the node after the i-th step.
        node_hash: the node's hash.
        label: ``base`` or the technique of the step that made it.
        metrics: ``(suite, task, metric)`` -> the row (value, stderr, n, unit, higher_is_better, method, is_estimate);
            empty when the node was not measured.
    """

    position: int
    node_hash: str
    label: str
    metrics: dict[Key, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Trajectory:
    """A path and its chain of nodes, base first."""

    path_id: str
    path_name: str
    hardware_profile: str
    nodes: list[TrajectoryNode]

    @property
    def measured(self) -> list[TrajectoryNode]:
        return [n for n in self.nodes if n.metrics]

    @property
    def has_intermediate(self) -> bool:
        """Whether a node between the base and the leaf was measured (``evaluate: all``)."""
        last = len(self.nodes) - 1
        return any(n.metrics for n in self.nodes if 0 < n.position < last)

    def keys(self) -> list[Key]:
        """Every metric measured at some node, sorted."""
        return sorted({k for n in self.nodes for k in n.metrics})

    def to_dict(self) -> dict[str, Any]:
        return {"path_id": self.path_id, "path_name": self.path_name, "hardware_profile": self.hardware_profile,
                "nodes": [{"position": n.position, "node_hash": n.node_hash, "label": n.label,
                           "metrics": [{"suite": k[0], "task": k[1], "metric": k[2], **v}
                                       for k, v in sorted(n.metrics.items())]} for n in self.nodes]}


def path_trajectory(con: duckdb.DuckDBPyConnection, path_id: str) -> Trajectory:
    """The trajectory of one path (every node of its chain, measured or not)."""
    head = rows(con, "SELECT path_id, name, hardware_profile, chain, steps FROM paths WHERE path_id = ?", [path_id])
    if not head:
        from adapters.errors import UsageError

        raise UsageError(f"no path with id {path_id!r}")
    path = head[0]
    steps = path.get("steps") or []
    nodes = [TrajectoryNode(i, h, "base" if i == 0 else str((steps[i - 1] if i - 1 < len(steps) else {})
                                                                .get("technique") or f"step {i}"))
             for i, h in enumerate(path.get("chain") or [])]
    for r in rows(con, f"SELECT * FROM ({TRAJECTORIES_SELECT}) WHERE path_id = ? ORDER BY position", [path_id]):
        if r["position"] < len(nodes):
            nodes[r["position"]].metrics[(r["suite"], r["task"], r["metric"])] = {
                k: r[k] for k in ("value", "stderr", "n", "unit", "higher_is_better", "method", "is_estimate")}
    return Trajectory(path["path_id"], path["name"], path["hardware_profile"], nodes)


def trajectories(db: str | Path, path_ids: list[str]) -> list[Trajectory]:
    """The trajectories of the given paths, in order."""
    with connect(db, read_only=True) as con:
        return [path_trajectory(con, p) for p in path_ids]


def trajectory_table(traj: Trajectory, keys: list[Key] | None = None) -> str:
    """A text table: one row per metric, one column per measured node (``value±stderr (n)``; ``~`` marks estimates)."""
    from results.report import fmt, table

    shown = traj.measured
    headers = ["suite/task/metric", "unit", *(f"{n.position}:{n.label}" for n in shown)]
    body = []
    for key in keys or traj.keys():
        unit = next((n.metrics[key]["unit"] for n in shown if key in n.metrics), "")
        body.append(["/".join(key), str(unit or ""), *(_cell(n.metrics.get(key), fmt) for n in shown)])
    return table(headers, body)


def _cell(m: dict[str, Any] | None, fmt: Any) -> str:
    if not m:
        return "—"
    return f"{'~' if m.get('is_estimate') else ''}{fmt(m['value'], m['stderr'], m['unit'])} (n={m['n']})"


def node_metrics(con: duckdb.DuckDBPyConnection, node_hash: str, hardware_profile: str) -> dict[Key, dict[str, Any]]:
    """Every metric measured on one node under one hardware profile (the latest suite run of each metric wins),
    whether or not a path ends at that node."""
    found = rows(con, """
        SELECT m.suite, m.task, m.metric, m.value, m.stderr, m.n, m.unit, m.higher_is_better, m.method, m.details,
               starts_with(m.method, 'estimated') AS is_estimate
        FROM suite_runs sr JOIN metrics m ON m.run_key = sr.run_key
        WHERE sr.node_hash = ? AND sr.hardware_profile = ? AND sr.status = 'ok'
        QUALIFY row_number() OVER (PARTITION BY m.suite, m.task, m.metric ORDER BY sr.recorded_at DESC) = 1""",
                 [node_hash, hardware_profile])
    return {(r["suite"], r["task"], r["metric"]): r for r in found}
