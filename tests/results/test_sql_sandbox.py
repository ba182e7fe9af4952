"""``slm results --sql`` can only read the workspace: every escape that once worked is refused with one line, and
nothing changes on disk (the database, files elsewhere, the extension directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.errors import UsageError
from results import queries


def counts(db: Path) -> list[tuple]:
    return queries.run_sql(db, "SELECT count(*) FROM metrics")[1] + queries.run_sql(db, "SELECT count(*) FROM nodes")[1]


@pytest.mark.parametrize(("sql", "fragment"), [
    ("DROP TABLE metrics CASCADE", "not DROP"),
    ("DELETE FROM metrics", "not DELETE"),
    ("CREATE TABLE x AS SELECT 1", "not CREATE"),
    ("SELECT 1; DROP TABLE metrics", "one query at a time (got 2 statements)"),
    ("INSTALL httpfs", "not LOAD"),  # DuckDB parses INSTALL as a LOAD statement
    ("LOAD httpfs", "not LOAD"),
    ("SET enable_external_access = true", "not SET"),
    ("PRAGMA enable_profiling", "not PRAGMA"),
    ("CHECKPOINT", "not"),
    ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM glob('/etc/*')", "file system operations are disabled"),
])
def test_only_one_query_that_reads_the_workspace_runs(two_path_db: Path, sql: str, fragment: str):
    before = counts(two_path_db)
    with pytest.raises(UsageError) as info:
        queries.run_sql(two_path_db, sql)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert counts(two_path_db) == before


def test_copy_and_export_write_no_file(two_path_db: Path, tmp_path: Path):
    for sql in (f"COPY metrics TO '{tmp_path / 'out.csv'}'", f"EXPORT DATABASE '{tmp_path / 'dump'}'",
                f"COPY (SELECT 1) TO '{tmp_path / 'q.csv'}'"):
        with pytest.raises(UsageError, match="--sql runs read-only queries"):
            queries.run_sql(two_path_db, sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "dump").exists() and not (tmp_path / "q.csv").exists()


def test_a_missing_workspace_cannot_attach_and_drop_a_real_one(two_path_db: Path, tmp_path: Path):
    """The escape seen: with a workspace that does not exist (an in-memory database), ATTACH the real one and drop a
    table of it."""
    before = counts(two_path_db)
    missing = tmp_path / "nowhere" / "results.duckdb"
    with pytest.raises(UsageError, match="not ATTACH"):
        queries.run_sql(missing, f"ATTACH '{two_path_db}' AS w")
    with pytest.raises(UsageError):
        queries.run_sql(missing, f"ATTACH '{two_path_db}' AS w; DROP TABLE w.metrics CASCADE")
    with pytest.raises(UsageError, match="file system operations are disabled"):  # a SELECT that reads a file
        queries.run_sql(missing, f"SELECT count(*) FROM '{two_path_db}'")
    assert counts(two_path_db) == before


def test_queries_over_the_views_still_run(two_path_db: Path, tmp_path: Path):
    names, body = queries.run_sql(two_path_db, "WITH m AS (SELECT * FROM metrics_long) SELECT count(*) AS n FROM m")
    assert names == ["n"] and body[0][0] > 0
    assert queries.run_sql(two_path_db, "EXPLAIN SELECT * FROM leaderboard")[1]
    assert queries.run_sql(tmp_path / "empty" / "results.duckdb", "SELECT count(*) FROM leaderboard")[1] == [(0,)]
