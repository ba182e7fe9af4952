"""Read-side helpers: plain lists of dicts for the CLI and the leaderboard (no torch, no pandas needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from adapters.errors import UsageError
from results.store import connect
from results.views import HEADLINES

VIEWS = ("leaderboard", "metrics_long", "metrics_wide", "node_costs", "trajectories")
_JSON_COLS = {"steps", "report", "lineage_step", "chain", "params", "inputs", "details", "settings", "library_versions", "footprint",
              "environment", "hardware", "spec", "definition"}


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts, JSON columns decoded."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description] if cur.description else []
    out = []
    for values in cur.fetchall():
        rec = dict(zip(names, values, strict=True))
        for k in _JSON_COLS & rec.keys():
            if isinstance(rec[k], str):
                rec[k] = json.loads(rec[k])
        out.append(rec)
    return out


#: the statements ``--sql`` runs (one per call): queries only
SQL_STATEMENTS = ("SELECT", "EXPLAIN")


def run_sql(db: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One read-only query against the database (views: leaderboard, metrics_long, metrics_wide, node_costs), on a
    read-only connection that reaches no other file, no network and no extension (:data:`results.store.SANDBOX`);
    anything but a single SELECT or EXPLAIN is refused before it runs."""
    with connect(db, read_only=True, sandbox=True) as con:
        try:
            statements = con.extract_statements(sql)
            if len(statements) != 1:
                raise UsageError(f"--sql: one query at a time (got {len(statements)} statements)")
            kind = statements[0].type.name
            if kind not in SQL_STATEMENTS:
                raise UsageError(f"--sql runs read-only queries ({', '.join(SQL_STATEMENTS)}), not {kind}")
            cur = con.execute(sql)
        except duckdb.Error as exc:
            raise UsageError(f"--sql: {str(exc).splitlines()[0]} (views: {', '.join(VIEWS)})") from exc
        names = [d[0] for d in cur.description] if cur.description else []
        return names, cur.fetchall()


def headline_metrics() -> list[dict[str, Any]]:
    """The leaderboard's headline columns: name, label, suite, unit and direction."""
    return [{"name": h.name, "label": h.label, "suite": h.suite, "unit": h.unit,
             "higher_is_better": h.higher_is_better} for h in HEADLINES]


def paths_overview(db: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """One dict per path: identity, steps, techniques, and every headline (value, stderr, n, estimate)."""
    with connect(db, read_only=True) as con:
        where = "WHERE path_id IN (SELECT path_id FROM run_paths WHERE run_id = ?)" if run_id else ""
        out = rows(con, f"SELECT * FROM leaderboard {where} ORDER BY path_name, hardware_profile",
                   [run_id] if run_id else None)
        failures = _path_failures(con)
    for rec in out:
        rec["techniques"] = [s["technique"] for s in rec.get("steps") or []]
        rec["failed_step"], rec["failed_suites"] = failures.get(rec["path_id"], (None, []))
    return out


def _path_failures(con: Any) -> dict[str, tuple[str | None, list[str]]]:
    """Path id -> (the technique of the first failed step of its chain, or None; the suites whose latest run on
    its leaf under its hardware profile failed), for paths with either."""
    found = con.execute("""
        WITH steps AS (SELECT p.path_id, n.technique, n.status, c.i
                       FROM paths p, unnest(CAST(p.chain AS VARCHAR[])) WITH ORDINALITY AS c(h, i)
                       JOIN nodes n ON n.node_hash = c.h),
             step AS (SELECT path_id, arg_min(technique, i) AS technique FROM steps
                      WHERE status = 'failed' GROUP BY path_id),
             latest AS (SELECT p.path_id, sr.suite, arg_max(sr.status, sr.recorded_at) AS status
                        FROM paths p JOIN suite_runs sr ON sr.node_hash = p.leaf_hash
                                                       AND sr.hardware_profile = p.hardware_profile
                        GROUP BY ALL),
             suites AS (SELECT path_id, list(suite ORDER BY suite) AS suites FROM latest
                        WHERE status = 'failed' GROUP BY path_id)
        SELECT path_id, step.technique, suites.suites FROM step FULL JOIN suites USING (path_id)""").fetchall()
    return {r[0]: (r[1], list(r[2] or [])) for r in found}


def path_detail(db: str | Path, path_id: str) -> dict[str, Any]:
    """Everything about one path: its lineage with per-step parameters and cost, metrics, environment."""
    with connect(db, read_only=True) as con:
        found = rows(con, "SELECT * FROM paths WHERE path_id = ?", [path_id])
        if not found:
            raise UsageError(f"no path with id {path_id!r} in {db}")
        path = found[0]
        chain = path.get("chain") or []
        nodes = {n["node_hash"]: n for n in rows(
            con, "SELECT * FROM nodes WHERE list_contains(?, node_hash)", [chain])}
        path["lineage"] = [nodes.get(h, {"node_hash": h, "status": "unknown"}) for h in chain]
        path["metrics"] = rows(con, "SELECT * FROM metrics_long WHERE path_id = ? ORDER BY suite, task, metric",
                               [path_id])
        path["suite_runs"] = rows(
            con, "SELECT run_key, run_id, suite, profile, status, error, traceback, wall_time_s, settings "
                 "FROM suite_runs WHERE node_hash = ? AND hardware_profile = ? ORDER BY suite",
            [path["leaf_hash"], path["hardware_profile"]])
        run = rows(con, "SELECT r.run_id, r.spec_name, r.started_at, r.git_commit, r.environment FROM runs r "
                        "JOIN run_paths rp USING (run_id) WHERE rp.path_id = ? ORDER BY r.started_at DESC LIMIT 1",
                   [path_id])
        path["run"] = run[0] if run else None
        path["environment"] = run[0]["environment"] if run else None
    return path


def suite_metrics(db: str | Path, suite: str) -> list[dict[str, Any]]:
    """Every metric of one suite across paths."""
    with connect(db, read_only=True) as con:
        return rows(con, "SELECT * FROM metrics_long WHERE suite = ? ORDER BY task, metric, path_name", [suite])


def suites_present(db: str | Path) -> list[str]:
    with connect(db, read_only=True) as con:
        return [r[0] for r in con.execute("SELECT DISTINCT suite FROM metrics_long ORDER BY suite").fetchall()]


def runs(db: str | Path) -> list[dict[str, Any]]:
    with connect(db, read_only=True) as con:
        return rows(con, "SELECT run_id, spec_name, started_at, finished_at, status, git_commit FROM runs "
                         "ORDER BY started_at")


def latest_run_id(db: str | Path) -> str | None:
    """The most recent run that recorded paths."""
    with connect(db, read_only=True) as con:
        row = con.execute("SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM run_paths rp WHERE "
                          "rp.run_id = r.run_id) ORDER BY r.started_at DESC LIMIT 1").fetchone()
        return row[0] if row else None


def resolve_path(db: str | Path, ref: str) -> dict[str, Any]:
    """A path by id, id prefix or exact name (the name must be unique)."""
    with connect(db, read_only=True) as con:
        found = rows(con, "SELECT path_id, name, hardware_profile, leaf_hash FROM paths WHERE path_id = ? OR "
                          "starts_with(path_id, ?) OR name = ?", [ref, ref, ref])
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no path matches {ref!r} (give a path id, an id prefix or a path name; see `slm results`)")
    listed = ", ".join(f"{f['path_id'][:12]} ({f['name']} [{f['hardware_profile']}])" for f in found[:5])
    raise UsageError(f"{ref!r} matches {len(found)} paths: {listed}; give a path id")
