"""``slm leaderboard build`` and ``slm leaderboard serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from adapters.errors import UsageError

app = typer.Typer(help="The static leaderboard site.", no_args_is_help=True)


def _workspace(workspace: str | None) -> Path:
    return Path(workspace or os.environ.get("SLM_HOME", ".slm")).expanduser().resolve()


@app.command("build")
def build(
    db: Annotated[str | None, typer.Option("--db", help="results database (default <workspace>/results.duckdb)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="output directory (default <workspace>/site)")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="workspace")] = None,
) -> None:
    """Write the self-contained static site (works from file:// and any static host)."""
    from leaderboard.build import build_site

    ws = _workspace(workspace)
    site = build_site(Path(db) if db else ws / "results.duckdb", Path(out) if out else ws / "site")
    typer.echo(f"leaderboard: {site / 'index.html'}")


@app.command("serve")
def serve(
    out: Annotated[str | None, typer.Option("--out", help="site directory (default <workspace>/site)")] = None,
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="workspace")] = None,
) -> None:
    """Serve the built site on http://127.0.0.1:PORT for preview."""
    import functools
    import http.server

    site = Path(out) if out else _workspace(workspace) / "site"
    if not (site / "index.html").exists():
        raise UsageError(f"no site in {site}: run `slm leaderboard build` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        typer.echo(f"serving {site} on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        httpd.serve_forever()


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="leaderboard")
