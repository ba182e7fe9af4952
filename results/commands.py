"""CLI commands of the results package: ``slm results``, ``slm export``, ``slm compare``, ``slm check``,
``slm baseline export``, ``slm analyze`` (:mod:`results.analyze_commands`). Registered on the ``slm`` app by
:func:`register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adapters.errors import UsageError
from results.store import database_path

DbOpt = Annotated[str | None, typer.Option("--db", help="results database (default: <workspace>/results.duckdb)")]
WorkspaceOpt = Annotated[str | None, typer.Option("--workspace", "-w", help="workspace (default $SLM_HOME or .slm)")]


def _db(db: str | None, workspace: str | None) -> Path:
    return Path(db) if db else database_path(workspace)


def results_cmd(
    sql: Annotated[str | None, typer.Option("--sql", help="SQL over the views leaderboard, metrics_long, "
                                            "metrics_wide, node_costs")] = None,
    run: Annotated[str | None, typer.Option("--run", help="only the paths of this run id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows")] = False,
    repair: Annotated[bool, typer.Option("--repair", help="copy what DuckDB can still read of a damaged database "
                                         "into a new one (the damaged file is kept as results.duckdb.broken-<time>)")]
    = False,
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Paths x headline metrics (value±stderr), or the rows of a SQL query; --repair rebuilds a damaged database."""
    from results import queries, report

    path = _db(db, workspace)
    if repair:
        from results.repair import describe, repair_database

        typer.echo(describe(repair_database(path)))
        return
    if sql:
        names, body = queries.run_sql(path, sql)
        if as_json:
            typer.echo(json.dumps([dict(zip(names, r, strict=True)) for r in body], default=str, indent=1))
        else:
            typer.echo(report.table(names, [[report.fmt(c) for c in r] for r in body]))
        return
    paths = queries.paths_overview(path, run_id=run)
    if as_json:
        typer.echo(json.dumps(paths, default=str, indent=1))
    elif not paths:
        typer.echo(f"no results yet in {path} (run `slm run`)")
    else:
        typer.echo(report.overview_table(paths))


def export_cmd(
    fmt: Annotated[str, typer.Option("--format", help="parquet | csv | json")] = "parquet",
    out: Annotated[str, typer.Option("--out", help="output directory")] = "slm-export",
    views: Annotated[str, typer.Option("--views", help="comma-separated views")] = "leaderboard,metrics_long,"
                                                                                   "metrics_wide,node_costs",
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Export the documented views as parquet, CSV or JSON files (one file per view)."""
    from results.export import export_views

    written = export_views(_db(db, workspace), Path(out), fmt, [v.strip() for v in views.split(",") if v.strip()])
    for file, n in written:
        typer.echo(f"{file}: {n} rows")


def compare_cmd(
    a: Annotated[str, typer.Argument(help="path (id, id prefix or name) or run id")],
    b: Annotated[str, typer.Argument(help="path or run to compare with A")],
    db_b: Annotated[str | None, typer.Option("--db-b", help="B's database, if not the same")] = None,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    trajectory: Annotated[bool, typer.Option("--trajectory/--no-trajectory", help="below the table, each compared "
                                             "path's chain base -> steps with every metric at each measured node "
                                             "(shown when intermediate nodes were measured: evaluate: all)")] = True,
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Per metric: B - A with a paired test (McNemar / paired bootstrap) or a bootstrap CI of medians."""
    from results import report
    from results.compare import compare, compared_trajectories
    from results.trajectories import trajectory_table

    rows = compare(_db(db, workspace), a, b, db_b=db_b, seed=seed)
    if not rows:
        raise UsageError(f"{a} and {b} have no metric in common")
    typer.echo(f"A = {rows[0]['path_a']}\nB = {rows[0]['path_b']}")
    typer.echo(report.compare_table(rows))
    for traj in compared_trajectories(_db(db, workspace), a, b, db_b=db_b) if trajectory else []:
        typer.echo(f"\ntrajectory of {traj.path_name} [{traj.hardware_profile}] (~: estimate)")
        typer.echo(trajectory_table(traj))


def check_cmd(
    baseline: Annotated[str, typer.Option("--baseline", help="baseline: a results .duckdb or an exported .json")],
    tolerances: Annotated[str | None, typer.Option("--tolerances", help="YAML of rules")] = None,
    junit: Annotated[str | None, typer.Option("--junit", help="write JUnit XML here")] = None,
    markdown: Annotated[str | None, typer.Option("--markdown", help="write a Markdown summary here")] = None,
    run: Annotated[str | None, typer.Option("--run", help="run to check (default: the latest)")] = None,
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Gate: exit 0 when every baseline metric holds, 1 on a regression, 2 on a usage error."""
    from results import report
    from results.check import load_baseline, load_tolerances, run_check, snapshot_from_db

    tol = load_tolerances(tolerances)
    base_run, base = load_baseline(baseline)
    cur_run, cur = snapshot_from_db(_db(db, workspace), run)
    verdicts = run_check(base, cur, tol)
    if not verdicts:
        raise UsageError(f"baseline {baseline} has no metric to check (is it empty, or all ignored?)")
    typer.echo(report.check_summary(verdicts))
    if junit:
        Path(junit).write_text(report.junit_xml(verdicts))
    if markdown:
        Path(markdown).write_text(report.markdown(verdicts, base_run, cur_run))
    if any(v["status"] != "ok" for v in verdicts):
        raise typer.Exit(1)


baseline_app = typer.Typer(help="Baselines for `slm check`.", no_args_is_help=True)


@baseline_app.command("export")
def baseline_export(
    out: Annotated[str, typer.Option("--out", help="baseline JSON to write")] = "slm-baseline.json",
    run: Annotated[str | None, typer.Option("--run", help="run to export (default: the latest)")] = None,
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write the latest run's metrics and per-sample outcomes as a JSON file to commit with your code."""
    from results.check import export_baseline

    doc = export_baseline(_db(db, workspace), out, run)
    n = sum(len(p["metrics"]) for p in doc["paths"])
    typer.echo(f"{out}: run {doc['run_id']}, {len(doc['paths'])} paths, {n} metrics")


def register(app: typer.Typer) -> None:
    app.command("results")(results_cmd)
    app.command("export")(export_cmd)
    app.command("compare")(compare_cmd)
    app.command("check")(check_cmd)
    app.add_typer(baseline_app, name="baseline")
    from results import breakeven_commands
    from results.analyze_commands import analyze_app  # imports this module's options: registered here

    breakeven_commands.register_analyze(analyze_app)  # `slm analyze breakeven`
    app.add_typer(analyze_app, name="analyze")
