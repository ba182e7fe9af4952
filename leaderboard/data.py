"""Everything the site shows, read from the results database in a few bulk queries (no per-path queries:
a site of 10,000 paths must build in seconds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.queries import headline_metrics, paths_overview, rows
from results.store import connect


@dataclass
class SiteData:
    """Paths with headlines, every metric by path, lineage nodes, suite runs, and the latest run."""

    headlines: list[dict[str, Any]]
    paths: list[dict[str, Any]]
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    suite_runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    run_of_path: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)


def load(db: str | Path) -> SiteData:
    """Read the whole site's data; a missing database gives an empty site."""
    data = SiteData(headline_metrics(), paths_overview(db))
    if not data.paths:
        return data
    with connect(db, read_only=True) as con:
        for m in rows(con, "SELECT path_id, suite, task, metric, value, stderr, n, unit, higher_is_better, method, "
                           "is_estimate FROM metrics_long ORDER BY suite, task, metric"):
            data.metrics.setdefault(m.pop("path_id"), []).append(m)
        for n in rows(con, "SELECT node_hash, kind, technique, technique_version, params, source, status, error, "
                           "traceback, wall_time_s, peak_rss_bytes, energy_j, energy_method FROM nodes"):
            data.nodes[n["node_hash"]] = n
        for s in rows(con, "SELECT node_hash, hardware_profile, suite, profile, status, error, traceback, wall_time_s "
                           "FROM suite_runs ORDER BY suite"):
            data.suite_runs.setdefault((s["node_hash"], s["hardware_profile"]), []).append(s)
        for r in rows(con, "SELECT rp.path_id, r.run_id, r.spec_name, r.started_at, r.git_commit, r.environment "
                           "FROM run_paths rp JOIN runs r USING (run_id) ORDER BY r.started_at"):
            data.run_of_path[r.pop("path_id")] = r  # the latest run wins
        extra = rows(con, "SELECT path_id, chain, spec_snippet, leaf_hash FROM paths")
    by_id = {e["path_id"]: e for e in extra}
    for p in data.paths:
        p.update({k: v for k, v in by_id.get(p["path_id"], {}).items() if k != "path_id"})
    data.suites = sorted({m["suite"] for ms in data.metrics.values() for m in ms})
    return data
