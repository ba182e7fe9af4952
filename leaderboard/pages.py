"""The lineage rows of a path's page: each step with its format, parameters, status and cost.

Below a step that converted its input (e.g. dequantized it) or whose technique reported on its own work
(the sparsity reached, KL before/after, training losses), a second row gives the conversion sentence and
the report as a compact ``key = value`` list (:func:`results.report.report_items`). Steps recorded before
the results schema had formats and reports (v4) show a dash for the format and nothing extra.

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

from results.report import fmt, report_items

_STEP_ROW = ('<tr><td class="num">{}</td><td>{}</td><td class="format">{}</td><td><code>{}</code></td>'
             '<td class="{}">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num{}" title="{}">{}</td>'
             '<td class="num">{}</td></tr>').format
_ERROR_ROW = ('<tr><td></td><td colspan="8"><details><summary class="err">{}</summary><pre>{}</pre></details>'
              '</td></tr>').format
_DETAIL_ROW = '<tr class="step-detail"><td></td><td colspan="8">{}</td></tr>'.format
_CONVERSION = '<div class="conversion">conversion: {}</div>'.format
_REPORT = '<div class="report"><span class="muted">report:</span> {}</div>'.format
_ITEM = '<span class="kv"><span class="k">{}</span> = {}</span>'.format


class Lineage:
    """Renders lineages over one node table; a node shared by many paths (a common prefix) is rendered once."""

    def __init__(self, nodes: dict[str, dict[str, Any]]):
        self.nodes = nodes
        self._done: dict[tuple[int, str, str | None], str] = {}

    def rows(self, chain: list[str]) -> Markup:
        """One row per step (source first) with its format, parameters, status and cost; a step that
        converted its input or reported on its work gets a row with the conversion and the report, a failed
        step one with its error and traceback."""
        out = []
        previous: str | None = None  # the output format of the step before
        for i, node_hash in enumerate(chain):
            node = self.nodes.get(node_hash)
            key = (i, node_hash, previous)
            if key not in self._done:
                self._done[key] = _step(i, node_hash, node, previous)
            out.append(self._done[key])
            previous = (node or {}).get("format")
        return Markup("".join(out))


def _format_cell(n: dict[str, Any], index: int, previous: str | None) -> str:
    """The output format; ``input → output`` when the step received another format than the previous
    step's output (a conversion between steps)."""
    out = n.get("format")
    if not out:
        return "—"
    text = f"<code>{escape(str(out))}</code>"
    received = n.get("input_format")
    if index > 0 and received and previous and received != previous:
        text = f'<code title="input format">{escape(str(received))}</code> → {text}'
    return text


def _detail(n: dict[str, Any]) -> str:
    """The conversion sentence and the report of a step, or nothing when it has neither."""
    parts = []
    if n.get("conversion"):
        parts.append(_CONVERSION(escape(str(n["conversion"]))))
    items = report_items(n.get("report"))
    if items:
        parts.append(_REPORT(" · ".join(_ITEM(escape(k), escape(v)) if k else escape(v) for k, v in items)))
    return _DETAIL_ROW("".join(parts)) if parts else ""


def _step(index: int, node_hash: str, n: dict[str, Any] | None, previous: str | None = None) -> str:
    if n is None:
        return _STEP_ROW(index, escape(node_hash), "—", "", "err", "not recorded", "—", "—", "", "", "—", "—")
    method = n.get("energy_method") or ""
    est = method.startswith("estimated")
    status = n.get("status") or "unknown"
    energy = "—" if n.get("energy_j") is None else ("~" if est else "") + fmt(n["energy_j"], unit="J")
    row = _STEP_ROW(
        index, escape(n.get("technique") or n.get("source") or "source"), _format_cell(n, index, previous),
        escape(json.dumps(n.get("params") or {}, sort_keys=True)),
        "err" if status in ("failed", "skipped") else "", escape(status),
        escape(fmt(n.get("wall_time_s"), unit="s")),
        escape(fmt(n.get("peak_rss_bytes"), unit="bytes")), " est" if est else "", escape(method), energy,
        escape(fmt(n.get("artifact_bytes"), unit="bytes")))
    row += _detail(n)
    if n.get("error"):
        row += _ERROR_ROW(escape(n["error"]), escape(n.get("traceback") or ""))
    return row
