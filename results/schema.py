"""The versioned DuckDB schema: ordered migrations, applied in one transaction each.

A database records the highest migration it has applied in ``schema_version``; opening it with a newer
version of this package applies the missing migrations in order, so an older database keeps its rows.
Views are not versioned: they are (re)created on every open from :mod:`results.views`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import duckdb

_V1 = """
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    spec_name VARCHAR,
    spec JSON,
    spec_text VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    status VARCHAR,
    git_commit VARCHAR,
    environment JSON,
    hardware JSON
);
CREATE TABLE nodes (
    node_hash VARCHAR PRIMARY KEY,
    kind VARCHAR,
    technique VARCHAR,
    technique_version VARCHAR,
    params JSON,
    inputs JSON,
    source VARCHAR,
    status VARCHAR,
    error VARCHAR,
    traceback VARCHAR,
    wall_time_s DOUBLE,
    peak_rss_bytes BIGINT,
    energy_j DOUBLE,
    energy_method VARCHAR,
    library_versions JSON,
    footprint JSON,
    run_id VARCHAR
);
CREATE TABLE paths (
    path_id VARCHAR PRIMARY KEY,
    name VARCHAR,
    base VARCHAR,
    hardware_profile VARCHAR,
    leaf_hash VARCHAR,
    chain JSON,
    steps JSON,
    spec_snippet VARCHAR,
    run_id VARCHAR
);
CREATE TABLE suite_runs (
    run_key VARCHAR PRIMARY KEY,
    run_id VARCHAR,
    node_hash VARCHAR,
    suite VARCHAR,
    profile VARCHAR,
    hardware_profile VARCHAR,
    settings JSON,
    status VARCHAR,
    error VARCHAR,
    traceback VARCHAR,
    wall_time_s DOUBLE,
    recorded_at TIMESTAMP
);
CREATE TABLE metrics (
    run_key VARCHAR,
    suite VARCHAR,
    task VARCHAR,
    metric VARCHAR,
    value DOUBLE,
    stderr DOUBLE,
    n BIGINT,
    unit VARCHAR,
    higher_is_better BOOLEAN,
    method VARCHAR,
    details JSON
);
CREATE TABLE samples (
    run_key VARCHAR,
    suite VARCHAR,
    task VARCHAR,
    sample_id VARCHAR,
    correct BOOLEAN,
    score DOUBLE,
    loglikelihoods DOUBLE[],
    prediction VARCHAR,
    target VARCHAR
);
CREATE TABLE raw_samples (
    run_key VARCHAR,
    suite VARCHAR,
    task VARCHAR,
    name VARCHAR,
    idx BIGINT,
    value DOUBLE,
    unit VARCHAR
);
"""

# v2: environments and hardware profiles get their own tables (deduplicated by content hash), model sources
# are listed, and paths remember every run that measured them (run_paths), so "the latest run" is queryable.
_V2 = """
CREATE TABLE environments (
    env_id VARCHAR PRIMARY KEY,
    cpu VARCHAR,
    cores INTEGER,
    ram_bytes BIGINT,
    gpu VARCHAR,
    details JSON
);
ALTER TABLE runs ADD COLUMN env_id VARCHAR;
CREATE TABLE hardware_profiles (
    name VARCHAR PRIMARY KEY,
    definition JSON
);
CREATE TABLE model_sources (
    source_id VARCHAR PRIMARY KEY,
    node_hash VARCHAR,
    first_seen_run VARCHAR
);
CREATE TABLE run_paths (
    run_id VARCHAR,
    path_id VARCHAR,
    PRIMARY KEY (run_id, path_id)
);
INSERT INTO run_paths SELECT DISTINCT run_id, path_id FROM paths WHERE run_id IS NOT NULL;
CREATE INDEX metrics_run_key ON metrics (run_key);
CREATE INDEX samples_run_key ON samples (run_key);
CREATE INDEX raw_run_key ON raw_samples (run_key);
"""

# v3: the size on disk of every stored artifact (e.g. packed int4 weights next to their in-memory footprint).
_V3 = """
ALTER TABLE nodes ADD COLUMN artifact_bytes BIGINT;
"""

# v4: the path contract: every model node's artifact format, the technique's report of its own work (e.g. the
# sparsity reached, KL before/after, training losses) and its lineage step (input/output format, conversion).
_V4 = """
ALTER TABLE nodes ADD COLUMN format VARCHAR;
ALTER TABLE nodes ADD COLUMN report JSON;
ALTER TABLE nodes ADD COLUMN lineage_step JSON;
"""

# v5: scale-out: where each node was computed and each suite run measured (host, Ray node id, executor, process,
# and env_id into ``environments``: the worker machine's own environment, not only the driver's).
_V5 = """
ALTER TABLE nodes ADD COLUMN machine JSON;
ALTER TABLE suite_runs ADD COLUMN machine JSON;
"""

# v6: the process that owns a run (host, boot id, pid and its start time), so that the next start can finish a run whose
# process died (kill -9, power loss) as ``interrupted`` instead of leaving it ``running`` forever.
_V6 = """
ALTER TABLE runs ADD COLUMN owner JSON;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest migration applied to this database (0 for an empty one)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0) if row else 0


def migrate(con: duckdb.DuckDBPyConnection, upto: int = SCHEMA_VERSION,
            on_step: Callable[[int], None] | None = None) -> int:
    """Apply the missing migrations up to ``upto``; returns the version the database is at afterwards.

    Raises:
        RuntimeError: the database was written by a newer version of this package.
    """
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)")
    have = current_version(con)
    if have > SCHEMA_VERSION:
        raise RuntimeError(f"results database has schema version {have}, newer than this package's "
                           f"{SCHEMA_VERSION}: upgrade slm-lifecycle to open it")
    for version in range(have + 1, upto + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended it: report that error, not this one's
                con.execute("ROLLBACK")
            raise
        if on_step:
            on_step(version)
    return max(have, upto)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
