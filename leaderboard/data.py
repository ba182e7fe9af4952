"""Everything the site shows, read from the results database in a few bulk queries.

No per-path query: a site of 10,000 paths (half a million metric rows) must build in seconds. Metric rows
stay tuples (:data:`METRIC_FIELDS`), and the large JSON payloads (suite tables, per-path data for the
comparison view) are produced by DuckDB itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from results.queries import headline_metrics, paths_overview, rows
from results.store import connect
from results.units import sql_parts_select
from results.views import HEADLINES

_KEY = ("suite", "task", "metric", "unit", "higher_is_better", "method", "is_estimate")
_SITE_METRICS = """
CREATE TEMP TABLE site_metrics AS
SELECT path_id, suite, task, metric, CASE WHEN isfinite(value) THEN value END AS value,
       CASE WHEN isfinite(stderr) THEN stderr END AS stderr, n, coalesce(unit, '') AS unit,
       coalesce(higher_is_better, false) AS higher_is_better, coalesce(method, '') AS method,
       coalesce(is_estimate, false) AS is_estimate,
       coalesce(TRY_CAST(json_extract_string(details, '$.under_load') AS BOOLEAN), false) AS under_load,
       CASE WHEN isfinite(TRY_CAST(json_extract_string(details, '$.foreign_load') AS DOUBLE))
            THEN TRY_CAST(json_extract_string(details, '$.foreign_load') AS DOUBLE) END AS foreign_load,
       coalesce(json_extract_string(details, '$.value_is') = 'upper_bound'
                OR TRY_CAST(json_extract_string(details, '$.resolved') AS BOOLEAN) = false, false) AS upper_bound,
       coalesce(TRY_CAST(json_extract_string(details, '$.bound_valid') AS BOOLEAN) = false, false) AS bound_invalid,
       json_extract_string(details, '$.bound_invalid_reason') AS bound_reason
FROM metrics_long
"""
# Tooltips of the markers below; no quotes in them, they go into SQL strings and HTML attributes as they are.
LOAD_NOTE = "measured while other processes used {load} CPU cores; compare with care"
UPPER_NOTE = ("an upper bound, not a measurement: the energy above idle was below its noise, so the true value "
              "is at most this")
INVALID_NOTE = "roofline bound not valid"


def _esc(col: str) -> str:
    """SQL escaping a text column for HTML text and attributes, as :func:`html.escape` does."""
    out = col
    for ch, ent in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("''", "&#x27;")):
        out = f"replace({out}, '{ch}', '{ent}')"
    return out


def _sql_text(text: str) -> str:
    """A Python string (with ``{load}`` for the foreign load) as an SQL string expression."""
    load_sql = "' || printf('%.2g', foreign_load) || '"
    return "'" + text.replace("'", "''").replace("{load}", load_sql) + "'"


# Markers of a metric row's value (from its ``details``), built in SQL like the rows: "≤" before an upper
# bound; after the value, "⚠ load N cores" when measured while other processes loaded the CPU, and "invalid
# bound" (the reason in the tooltip) for a roofline bound that does not hold. Only numbers and escaped text.
_PRE = f"""CASE WHEN upper_bound THEN {_sql_text(f'<span class="ub" title="{UPPER_NOTE}">≤</span>')} ELSE '' END"""
_POST = (
    "CASE WHEN NOT under_load THEN '' WHEN foreign_load IS NULL THEN "
    + _sql_text(f' <span class="load" title="{LOAD_NOTE.format(load="over 0.25")}">⚠ under load</span>')
    + " ELSE " + _sql_text(f' <span class="load" title="{LOAD_NOTE}">⚠ load {{load}} cores</span>') + " END"
    + " || CASE WHEN NOT bound_invalid THEN '' ELSE ' <span class=\"invalid\" title=\"' || "
    + _esc(f"coalesce('{INVALID_NOTE}: ' || bound_reason, '{INVALID_NOTE}')") + " || '\">invalid bound</span>' END"
)
_SITE_ROWS = f"""
CREATE TEMP TABLE site_rows AS SELECT * EXCLUDE (unit) FROM ({sql_parts_select(
    f"SELECT path_id, kid, value, stderr, n, idx, unit, {_PRE} AS pre, {_POST} AS post FROM site_metrics "
    f"JOIN site_keys USING ({', '.join(_KEY)}) JOIN site_ids USING (path_id)",
    "value", "stderr", _esc("unit"))})
"""


# Built by DuckDB, not Python: half a million metric rows turned into Python objects cost seconds. Text
# fields live in the small key table, escaped by Python (``head``/``tail``); rows carry numbers and their texts
# (``value_text``, ``stderr_text``, ``unit_text``: one display unit, rounded to the stderr, as
# :func:`results.units.quantity` does; an unknown unit is shown as it is, escaped).
_ROW = ("""head || pre || value_text || unit_text || post || '</td><td class="num">' || stderr_text || """
        """CASE WHEN stderr_text = '—' THEN '' ELSE unit_text END || """
        """'</td><td class="num">' || coalesce(n::VARCHAR, '—') || tail""")
_QUERIES = {
    "metric_html": f"SELECT path_id, string_agg({_ROW}, '' ORDER BY kid) FROM site_rows JOIN site_keys USING (kid)"
                   " GROUP BY path_id",
    "path_json": "SELECT path_id, to_json(list([kid, value, stderr]))::VARCHAR FROM site_rows GROUP BY path_id",
    "suite_json": "SELECT suite, to_json(list([idx, kid, value, stderr, n]))::VARCHAR FROM site_rows "
                  "JOIN site_keys USING (kid) GROUP BY suite ORDER BY suite",
}


@dataclass
class SiteData:
    """What the site shows.

    Attributes:
        headlines: the headline columns (name, label, suite, unit, higher_is_better).
        paths: one dict per path (the ``leaderboard`` view plus chain, spec_snippet, leaf_hash, page, run_id,
            and per headline ``<name>_under_load``, ``<name>_load``, ``<name>_upper_bound``), in display order.
        metric_html: path id -> the HTML rows of its metrics table (suite, task, metric, value, stderr, n,
            unit, direction, method; estimates, upper bounds, measurements under load and invalid roofline
            bounds marked, from the metric's ``details``), every text escaped.
        nodes: node hash -> node record (technique, params, status, error, traceback, costs, and from schema
            v4 on: ``format`` (output), ``input_format``, ``conversion`` and ``report``; None when unrecorded).
        failed_suite_runs: (node hash, hardware profile) -> suite runs whose status is not ``ok``.
        runs: run id -> run record (spec name, start, git commit, environment).
        suites: suite names that have metrics.
        keys: the distinct metric identities ``[suite, task, metric, unit, higher_is_better, method,
            is_estimate]``, sorted; the JSON payloads refer to them by index (``kid``).
        suite_json: suite -> JSON array of ``[path index, kid, value, stderr, n]`` (path index into
            ``paths``; unordered).
        path_json: path id -> JSON array of ``[kid, value, stderr]`` for the comparison view (unordered).
    """

    headlines: list[dict[str, Any]]
    paths: list[dict[str, Any]]
    metric_html: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_suite_runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)
    keys: list[list[Any]] = field(default_factory=list)
    suite_json: dict[str, str] = field(default_factory=dict)
    path_json: dict[str, str] = field(default_factory=dict)


def page_name(key: str) -> str:
    """A safe file name for a path id or suite: the key itself when it is a plain token (harness ids are
    hex), otherwise a hash of it (so no name can escape the site's folders or collide with another)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", key):
        return key
    return "h" + hashlib.sha1(key.encode()).hexdigest()


def load(db: str | Path) -> SiteData:
    """Read the whole site's data; a missing or empty database gives a site with no paths."""
    data = SiteData(headline_metrics(), paths_overview(db))
    if not data.paths:
        return data
    ids = [p["path_id"] for p in data.paths]
    with connect(db, read_only=True) as con:
        _attach_path_fields(con, data.paths)
        con.execute("SET enable_progress_bar = false")
        con.execute(_SITE_METRICS)
        con.execute("CREATE TEMP TABLE site_ids AS SELECT unnest(?::VARCHAR[]) AS path_id, unnest(range(?)) AS idx",
                    [ids, len(ids)])
        _attach_headline_flags(con, data.paths)
        data.keys = _key_table(con)
        con.execute(_SITE_ROWS)
        data.metric_html = dict(con.execute(_QUERIES["metric_html"]).fetchall())
        data.path_json = dict(con.execute(_QUERIES["path_json"]).fetchall())
        data.suite_json = dict(con.execute(_QUERIES["suite_json"]).fetchall())
        data.nodes = _nodes(con)
        for s in rows(con, "SELECT node_hash, hardware_profile, suite, profile, status, error, traceback "
                           "FROM suite_runs WHERE status != 'ok' ORDER BY suite"):
            data.failed_suite_runs.setdefault((s["node_hash"], s["hardware_profile"]), []).append(s)
        data.runs = {r["run_id"]: r for r in rows(
            con, "SELECT run_id, spec_name, started_at, git_commit, environment FROM runs")}
    data.suites = list(data.suite_json)
    return data


_NODE_COLS = ("node_hash, kind, technique, technique_version, params, source, status, error, traceback, "
              "wall_time_s, peak_rss_bytes, energy_j, energy_method")
_LATER_COLS = ("artifact_bytes", "format", "report", "lineage_step")  # schema v3 and v4


def _nodes(con: Any) -> dict[str, dict[str, Any]]:
    """Every node by hash, with its format, conversion and report unpacked from the v4 columns.

    A database opened read-only is not migrated, so columns added by later migrations may be missing: they
    read as null, like those of nodes recorded before the migration.
    """
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'nodes'").fetchall()}
    later = ", ".join(c if c in have else f"NULL AS {c}" for c in _LATER_COLS)
    out = {}
    for n in rows(con, f"SELECT {_NODE_COLS}, {later} FROM nodes"):
        step = _loads(n.pop("lineage_step"))
        step = step if isinstance(step, dict) else {}
        report = _loads(n["report"])
        n.update(format=n["format"] or step.get("output_format"), input_format=step.get("input_format"),
                 conversion=step.get("conversion"), report=step.get("report") if report is None else report)
        out[n["node_hash"]] = n
    return out


def _loads(text: Any) -> Any:
    """A JSON column's value (DuckDB hands JSON over as text); text that is not JSON stays as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _attach_path_fields(con: Any, paths: list[dict[str, Any]]) -> None:
    """Add chain, spec snippet, leaf hash, the latest run and the page name to each overview row."""
    extra = {r[0]: r[1:] for r in con.execute(
        "SELECT p.path_id, p.chain, p.spec_snippet, p.leaf_hash, latest.run_id FROM paths p LEFT JOIN "
        "(SELECT rp.path_id, arg_max(r.run_id, r.started_at) AS run_id FROM run_paths rp JOIN runs r USING (run_id) "
        " GROUP BY rp.path_id) latest USING (path_id)").fetchall()}
    for p in paths:
        chain, snippet, leaf, run_id = extra.get(p["path_id"], (None, None, None, None))
        p.update(chain=json.loads(chain) if chain else [], spec_snippet=snippet, leaf_hash=leaf, run_id=run_id,
                 page=page_name(p["path_id"]))


def _headline_flags_sql() -> str:
    """Per path and headline, from its metrics' ``details``: ``<name>_under_load`` (any measured under
    load), ``<name>_load`` (the highest foreign load among those, in CPU cores) and ``<name>_upper_bound``
    (any is an upper bound, so the mean is one too); the headline's metrics are those of the ``leaderboard``
    view (:data:`results.views.HEADLINES`)."""
    cols = []
    for h in HEADLINES:
        like = " OR ".join(f"metric LIKE '{m}'" for m in h.metrics)
        where = f"suite = '{h.suite}' AND task LIKE '{h.task}' AND ({like})"
        cols.append(f"bool_or(under_load) FILTER (WHERE {where}) AS {h.name}_under_load, "
                    f"max(foreign_load) FILTER (WHERE {where} AND under_load) AS {h.name}_load, "
                    f"bool_or(upper_bound) FILTER (WHERE {where}) AS {h.name}_upper_bound")
    return f"SELECT path_id, {', '.join(cols)} FROM site_metrics GROUP BY path_id"


def _attach_headline_flags(con: Any, paths: list[dict[str, Any]]) -> None:
    """Add the headline flags of :func:`_headline_flags_sql` to each overview row (None without metrics)."""
    found = {r["path_id"]: r for r in rows(con, _headline_flags_sql())}
    names = [f"{h.name}_{f}" for h in HEADLINES for f in ("under_load", "load", "upper_bound")]
    for p in paths:
        r = found.get(p["path_id"], {})
        p.update({k: r.get(k) for k in names})


def _key_table(con: Any) -> list[list[Any]]:
    """The distinct metric identities, sorted, as the temp table ``site_keys`` (kid, the identity, and the
    escaped HTML ``head``/``tail`` of a metric row around its numbers); returns them as lists."""
    keys = sorted(con.execute(f"SELECT DISTINCT {', '.join(_KEY)} FROM site_metrics").fetchall())
    cols: list[list[Any]] = [[k[i] for k in keys] for i in range(len(_KEY))]
    heads, tails = [], []
    for suite, task, metric, unit, hib, method, est in keys:
        heads.append(f"<tr><td>{escape(suite)}</td><td>{escape(task)}</td><td>{escape(metric)}</td>"
                     + ('<td class="num est" title="estimated, not measured">~' if est else '<td class="num">'))
        tails.append(f'</td><td>{escape(unit)}</td><td>{"↑" if hib else "↓"}</td>'
                     f'<td class="muted">{escape(method)}</td></tr>')
    types = ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN", "VARCHAR", "BOOLEAN"]
    select = ", ".join(f"unnest(?::{t}[]) AS {c}" for c, t in zip(_KEY, types, strict=True))
    con.execute(f"CREATE TEMP TABLE site_keys AS SELECT unnest(range(?)) AS kid, {select}, "
                "unnest(?::VARCHAR[]) AS head, unnest(?::VARCHAR[]) AS tail",
                [len(keys), *cols, heads, tails])
    return [list(k) for k in keys]
