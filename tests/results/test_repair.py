"""``slm results --repair`` (issue 22): what DuckDB can still read of a damaged results database is copied into a
new one and counted; a file DuckDB cannot open at all is one line saying so and what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from results_builders import REPO, latencies, outcomes, write_run

from adapters.errors import UsageError
from results.repair import describe, repair_database
from results.store import ResultStore, connect


def _counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ws" / "results.duckdb"
    base = outcomes(3000, 0.7, 1)
    write_run(path, "run1", {"base": {"acc_correct": base, "latency": latencies(50, 0.05, 1), "energy": 0.5},
                             "pruned": {"acc_correct": base, "latency": latencies(50, 0.04, 2), "energy": 0.4}})
    return path


def test_a_database_that_reads_completely_is_left_as_it_is(db: Path):
    before = db.read_bytes()
    repair = repair_database(db)
    assert repair.broken is None and repair.complete
    assert {t.table: t.recovered for t in repair.tables} == _counts(db)
    assert "nothing to repair" in describe(repair) and db.read_bytes() == before
    assert [p.name for p in db.parent.iterdir() if "broken" in p.name or "repair" in p.name] == []


@pytest.mark.parametrize("content", [b"", b"\x07" * 9000, os.urandom(70_000)], ids=["zero-byte", "bell", "random"])
def test_a_file_duckdb_cannot_open_is_one_line_and_left_alone(tmp_path: Path, content: bytes):
    path = tmp_path / "results.duckdb"
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        repair_database(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "cannot open it at all" in text
    assert "restore it from a backup" in text and "slm baseline export" in text
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["results.duckdb",
                                                                                         "results.duckdb.lock"]


def test_a_truncated_database_keeps_what_is_readable(db: Path):
    full = _counts(db)
    os.truncate(db, int(db.stat().st_size * 0.7))
    with pytest.raises(duckdb.Error):  # the damage: some tables cannot be read any more
        with connect(db, read_only=True) as con:
            for table in full:
                con.execute(f"SELECT * FROM {table}").fetchall()
    repair = repair_database(db)
    assert repair.broken is not None and repair.broken.exists() and repair.broken.name.startswith(
        "results.duckdb.broken-")
    got = _counts(db)
    by_table = {t.table: t for t in repair.tables}
    assert set(by_table) == set(full)
    for name, t in by_table.items():
        assert t.recovered == got[name] and t.expected == full[name], t
        assert (t.error is None) == (t.recovered == full[name]), t
    lost = [t for t in repair.tables if t.error]
    assert lost and any(t.recovered == full[t.table] > 0 for t in repair.tables)  # some lost, some whole
    text = describe(repair)
    assert f"{lost[0].table}: {lost[0].recovered} of {full[lost[0].table]} rows recovered, the rest lost" in text
    # the new database is a working results database: keys kept (upserts work), views and schema version there
    store = ResultStore(db)
    store.start_run(run_id="run2", spec_name="t", spec={}, spec_text="", environment={"cpu_model": "x"},
                    hardware={}, git_commit=None)
    store.finish_run("run2", "ok")
    store.finish_run("run2", "ok")
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs WHERE run_id = 'run2'").fetchone() == (1,)
        con.execute("SELECT * FROM leaderboard").fetchall()
    with pytest.raises(duckdb.ConstraintException):
        con = duckdb.connect(str(db))
        try:
            con.execute("INSERT INTO runs (run_id) VALUES ('run2')")
        finally:
            con.close()


_WRITE_AND_DIE = textwrap.dedent("""
    import os, sys
    import duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("SET wal_autocheckpoint = '10GB'")
    con.execute("INSERT INTO runs (run_id, status) SELECT 'late-' || range, 'running' FROM range(50)")
    os._exit(0)  # as kill -9 would: the rows are in the write-ahead log only
""")


def test_a_write_ahead_log_that_fails_to_replay_loses_only_what_came_after_the_checkpoint(db: Path):
    shutil.copyfile(db, db.with_name("checkpointed.duckdb"))
    subprocess.run([sys.executable, "-c", _WRITE_AND_DIE, str(db)], check=True, cwd=REPO)
    wal = Path(str(db) + ".wal")
    assert wal.stat().st_size > 0
    data = bytearray(wal.read_bytes())
    for i in range(len(data) // 10, len(data) * 8 // 10):  # the entries after the header
        data[i] ^= 0xFF
    wal.write_bytes(bytes(data))
    with pytest.raises(UsageError) as info:  # every reader: one line that names the file and --repair
        with connect(db, read_only=True):
            pass
    assert "\n" not in str(info.value) and "slm results --repair" in str(info.value) and str(db) in str(info.value)
    repair = repair_database(db)
    assert repair.broken is not None and Path(str(repair.broken) + ".wal").exists() and not wal.exists()
    assert any("could not be replayed" in n and "after the last checkpoint are lost" in n for n in repair.notes)
    assert _counts(db) == _counts(db.with_name("checkpointed.duckdb")) == {t.table: t.recovered for t in repair.tables}
    assert "note: the write-ahead log results.duckdb.wal could not be replayed" in describe(repair)


def test_slm_results_repair_from_the_command_line(tmp_path: Path, db: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    garbage = tmp_path / "bad"
    garbage.mkdir()
    (garbage / "results.duckdb").write_bytes(b"\x07" * 9000)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "results", "--repair", "-w", str(garbage)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "cannot open it at all" in out.stderr
    os.truncate(db, int(db.stat().st_size * 0.7))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "results", "--repair", "-w", str(db.parent)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "repaired; the damaged file is kept as results.duckdb.broken-" in out.stdout and "rows lost" in out.stdout
