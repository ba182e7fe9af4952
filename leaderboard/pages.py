"""The lineage rows of a path's page: each step with its parameters, status and cost.

Rows repeat on each of up to 10,000 pages, so they are rendered by precompiled format strings (a Jinja loop
costs ~60 µs a row, this ~5 µs), once per step however many paths share it, and handed to the Jinja page as
markup. Every text field goes through :func:`html.escape`. (The metric rows are rendered by DuckDB, see
:mod:`leaderboard.data`.)
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from markupsafe import Markup

from results.report import fmt

_STEP_ROW = ('<tr><td class="num">{}</td><td>{}</td><td><code>{}</code></td><td class="{}">{}</td>'
             '<td class="num">{}</td><td class="num">{}</td><td class="num{}" title="{}">{}</td><td class="num">{}</td></tr>').format
_ERROR_ROW = ('<tr><td></td><td colspan="7"><details><summary class="err">{}</summary><pre>{}</pre></details>'
              '</td></tr>').format


class Lineage:
    """Renders lineages over one node table; a node shared by many paths (a common prefix) is rendered once."""

    def __init__(self, nodes: dict[str, dict[str, Any]]):
        self.nodes = nodes
        self._done: dict[tuple[int, str], str] = {}

    def rows(self, chain: list[str]) -> Markup:
        """One row per step (source first) with its parameters, status and cost; a failed step gets a row
        with its error and traceback."""
        out = []
        for i, node_hash in enumerate(chain):
            key = (i, node_hash)
            if key not in self._done:
                self._done[key] = _step(i, node_hash, self.nodes.get(node_hash))
            out.append(self._done[key])
        return Markup("".join(out))


def _step(index: int, node_hash: str, n: dict[str, Any] | None) -> str:
    if n is None:
        return _STEP_ROW(index, escape(node_hash), "", "err", "not recorded", "—", "—", "", "", "—", "—")
    method = n.get("energy_method") or ""
    est = method.startswith("estimated")
    status = n.get("status") or "unknown"
    energy = "—" if n.get("energy_j") is None else ("~" if est else "") + f"{n['energy_j']:.0f} J"
    row = _STEP_ROW(
        index, escape(n.get("technique") or n.get("source") or "source"),
        escape(json.dumps(n.get("params") or {}, sort_keys=True)),
        "err" if status in ("failed", "skipped") else "", escape(status),
        "—" if n.get("wall_time_s") is None else f"{n['wall_time_s']:.1f} s",
        escape(fmt(n.get("peak_rss_bytes"), unit="bytes")), " est" if est else "", escape(method), energy,
        escape(fmt(n.get("artifact_bytes"), unit="bytes")))
    if n.get("error"):
        row += _ERROR_ROW(escape(n["error"]), escape(n.get("traceback") or ""))
    return row
