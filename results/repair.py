"""``slm results --repair``: copy what DuckDB can still read of a damaged results database into a new one.

DuckDB has no repair tool. What it can still do with a damaged file decides what is recovered:

* a write-ahead log (``results.duckdb.wal``) that fails to replay: the database as of its last checkpoint opens
  without the log, so everything but the changes written since that checkpoint is recovered;
* a file that opens but some of whose blocks are lost (truncated, overwritten): each table is copied on its own, a
  table that cannot be read whole is copied row group by row group, and what is left is counted as lost;
* a file DuckDB cannot open at all (zero bytes, garbage, a lost header): nothing can be recovered; the error says so
  and what to do instead.

The new database gets each table's own definition (keys and all), then its rows, indexes, the migrations this package
has and the views. The damaged file is kept next to it as ``results.duckdb.broken-<timestamp>`` (its log as
``...broken-<timestamp>.wal``). A database that reads completely is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import duckdb

from adapters.errors import UsageError
from results.schema import migrate
from results.store import locked
from results.views import create_views

#: rows per row group in DuckDB's storage: the unit a damaged table is copied by when it cannot be read whole
ROW_GROUP = 122_880


class TableRecovery(NamedTuple):
    """What was copied of one table.

    Attributes:
        table: the table's name.
        recovered: rows copied into the new database.
        expected: rows the damaged database's metadata counts (None: not even the count was readable).
        error: the first line of the read error when rows were lost (None: copied whole).
    """

    table: str
    recovered: int
    expected: int | None
    error: str | None = None


class Repair(NamedTuple):
    """The outcome of :func:`repair_database`.

    Attributes:
        path: the database.
        broken: where the damaged file was moved (None: it read completely and was left as it was).
        tables: per table, what was recovered.
        notes: what else was lost or done (e.g. a write-ahead log that could not be replayed).
    """

    path: Path
    broken: Path | None
    tables: tuple[TableRecovery, ...]
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.notes and all(t.error is None for t in self.tables)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def cannot_open(path: Path, exc: BaseException) -> UsageError:
    """The one-line error for a file DuckDB cannot open at all."""
    return UsageError(f"{path}: DuckDB cannot open it at all ({_first_line(exc)}), so nothing can be recovered: restore "
                      f"it from a backup, or move it aside and the next `slm run` starts a new database (a baseline "
                      f"written by `slm baseline export` keeps a run's metrics for `slm check`)")


def _readable_source(path: Path, work: Path) -> tuple[Path, list[str]]:
    """The file to copy from: ``path`` itself, or a copy of it without a log that fails to replay."""
    try:
        duckdb.connect(str(path), read_only=True).close()
        return path, []
    except duckdb.Error as exc:
        wal = Path(str(path) + ".wal")
        if not wal.exists():
            raise cannot_open(path, exc) from None
        copy = work / "checkpoint.duckdb"
        shutil.copyfile(path, copy)
        try:
            duckdb.connect(str(copy), read_only=True).close()
        except duckdb.Error:
            raise cannot_open(path, exc) from None
        return copy, [f"the write-ahead log {wal.name} could not be replayed ({_first_line(exc)}): the changes written "
                      f"after the last checkpoint are lost"]


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int | None:
    try:
        row = con.execute(f'SELECT count(*) FROM old.main."{table}"').fetchone()
        return int(row[0]) if row else None
    except duckdb.Error:
        return None


def _copy_table(con: duckdb.DuckDBPyConnection, table: str) -> TableRecovery:
    """Copy ``old.main.<table>`` into ``main.<table>`` whole, else row group by row group."""
    expected = _count(con, table)
    try:
        con.execute(f'INSERT INTO main."{table}" SELECT * FROM old.main."{table}"')
        return TableRecovery(table, expected if expected is not None else _rows(con, table), expected)
    except duckdb.Error as exc:
        error = _first_line(exc)
    try:
        row = con.execute(f'SELECT max(rowid) FROM old.main."{table}"').fetchone()
        last = int(row[0]) if row and row[0] is not None else (expected or 0)
    except duckdb.Error:
        last = expected or 0
    for start in range(0, last + 1, ROW_GROUP):
        with contextlib.suppress(duckdb.Error):  # a row group with a lost block: its rows are lost
            con.execute(f'INSERT INTO main."{table}" SELECT * FROM old.main."{table}" '
                        f"WHERE rowid >= {start} AND rowid < {start + ROW_GROUP}")
    return TableRecovery(table, _rows(con, table), expected, error)


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f'SELECT count(*) FROM main."{table}"').fetchone()
    return int(row[0]) if row else 0


def _rebuild(source: Path, target: Path) -> tuple[TableRecovery, ...]:
    """A new database at ``target`` with every table of ``source`` and what can be read of its rows."""
    con = duckdb.connect(str(target))
    try:
        quoted = str(source).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS old (READ_ONLY)")
        try:
            tables = con.execute("SELECT table_name, sql FROM duckdb_tables() WHERE database_name = 'old' AND "
                                 "schema_name = 'main' AND NOT temporary ORDER BY table_name").fetchall()
            indexes = [r[0] for r in con.execute("SELECT sql FROM duckdb_indexes() WHERE database_name = 'old' AND "
                                                 "sql IS NOT NULL").fetchall()]
        except duckdb.Error as exc:
            raise cannot_open(source, exc) from None
        out = []
        for name, sql in tables:
            con.execute(sql)
            out.append(_copy_table(con, name))
        con.execute("DETACH old")
        for sql in indexes:
            with contextlib.suppress(duckdb.Error):  # an index of a table whose rows broke a key: queries still work
                con.execute(sql)
        migrate(con)
        create_views(con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return tuple(out)


def repair_database(path: str | Path) -> Repair:
    """Copy what DuckDB can read of the database at ``path`` into a new database in its place; the damaged file is
    kept as ``<name>.broken-<timestamp>``. A database that reads completely is left as it is.

    Raises:
        UsageError: no database at ``path``, or DuckDB cannot open it at all (nothing to recover).
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no results database here to repair")
    with locked(path), tempfile.TemporaryDirectory(prefix=".slm-repair-", dir=path.parent) as tmp:
        work = Path(tmp)
        source, notes = _readable_source(path, work)
        tables = _rebuild(source, work / "repaired.duckdb")
        if not notes and all(t.error is None for t in tables):
            return Repair(path, None, tables)
        broken = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, broken)
        wal = Path(str(path) + ".wal")
        if wal.exists():
            os.replace(wal, Path(str(broken) + ".wal"))
        os.replace(work / "repaired.duckdb", path)
        return Repair(path, broken, tables, tuple(notes))


def describe(repair: Repair) -> str:
    """What :func:`repair_database` did, as the lines ``slm results --repair`` prints."""
    if repair.broken is None:
        rows = sum(t.recovered for t in repair.tables)
        return f"{repair.path}: reads completely ({len(repair.tables)} tables, {rows} rows): nothing to repair"
    lines = [f"{repair.path}: repaired; the damaged file is kept as {repair.broken.name}"]
    lines += [f"  note: {n}" for n in repair.notes]
    for t in repair.tables:
        if t.error is None:
            lines.append(f"  {t.table}: {_rows_text(t.recovered)} recovered")
        else:
            of = f" of {t.expected}" if t.expected is not None else ""
            lines.append(f"  {t.table}: {t.recovered}{of} rows recovered, the rest lost ({t.error})")
    lost = sum(max(0, (t.expected or 0) - t.recovered) for t in repair.tables)
    lines.append(f"recovered {_rows_text(sum(t.recovered for t in repair.tables))} in {len(repair.tables)} tables"
                 + (f"; {_rows_text(lost)} lost" if lost else ""))
    return "\n".join(lines)


def _rows_text(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
