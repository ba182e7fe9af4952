"""Exporting the documented views to parquet, CSV or JSON with DuckDB's own writers."""

from __future__ import annotations

from pathlib import Path

from adapters.errors import UsageError
from results.queries import VIEWS
from results.store import connect

FORMATS = {"parquet": "(FORMAT parquet)", "csv": "(FORMAT csv, HEADER true)", "json": "(FORMAT json, ARRAY true)"}


def export_views(db: Path, out: Path, fmt: str, views: list[str]) -> list[tuple[Path, int]]:
    """Write one file per view into ``out``; returns (file, row count) pairs."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not allowed (allowed: {', '.join(FORMATS)})")
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise UsageError(f"--views: {bad[0]!r} is not a view (allowed: {', '.join(VIEWS)})")
    if not db.exists():
        raise UsageError(f"results database {db} does not exist (run `slm run` first)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with connect(db, read_only=True) as con:
        for view in views:
            file = out / f"{view}.{fmt}"
            con.execute(f"COPY (SELECT * FROM {view}) TO '{_escape(file)}' {FORMATS[fmt]}")
            row = con.execute(f"SELECT count(*) FROM {view}").fetchone()
            written.append((file, int(row[0]) if row else 0))
    return written


def _escape(path: Path) -> str:
    return str(path).replace("'", "''")
