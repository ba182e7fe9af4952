"""Helpers the harness tests share: run a spec text into a workspace, read rows from its database."""

from __future__ import annotations

import textwrap
from pathlib import Path

import duckdb

from harness.runner import Runner
from harness.spec import parse_spec


def run(text: str, ws: Path, **kw):
    """Run the spec ``text`` into workspace ``ws`` (no progress bars); returns the run summary."""
    return Runner(parse_spec(textwrap.dedent(text), file="spec.yaml"), ws, progress=False, **kw).run()


def rows(ws: Path, sql: str):
    """The rows ``sql`` returns from ``ws``'s results database (read-only)."""
    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
