"""``slm run``, ``slm plan``, ``slm cache`` and ``slm env``: the harness's commands."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.workspace import resolve_workspace

DEFAULT_SPEC = "default.yaml"

WorkspaceOpt = Annotated[str | None, typer.Option("--workspace", "-w", help="workspace directory (default .slm or $SLM_HOME)")]


def default_spec_path() -> Path:
    return Path(str(resources.files("harness") / "specs" / DEFAULT_SPEC))


def _echo(text: str) -> None:
    """One line for the terminal, control characters in names escaped (a path name cannot drive the terminal)."""
    from results.report import printable

    typer.echo(printable(text))


def _load(spec: str | None) -> Any:
    from harness.spec import load_spec

    return load_spec(spec or default_spec_path())


def run_cmd(
    spec: Annotated[str | None, typer.Argument(help="experiment spec (YAML); default: the built-in experiment")] = None,
    workspace: WorkspaceOpt = None,
    executor: Annotated[str | None, typer.Option(help="inprocess | subprocess | ray (default: inprocess; "
                                                      "subprocess when --jobs > 1)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="tasks at once: child processes (subprocess), or the "
                                                           "CPUs of a local Ray instance")] = 1,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="an existing Ray cluster (auto, "
                                                                          "ray://host:10001); default: start a local one")] = None,
    retries: Annotated[int, typer.Option(help="Ray: retries of a task whose worker died (OOM, lost node)")] = 2,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="local benchmark data (or $SLM_DATA_DIR)")] = None,
    leaderboard: Annotated[bool, typer.Option(help="build the static leaderboard after the run")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    strict: Annotated[bool, typer.Option("--strict", help="refuse grid combinations whose formats do not fit "
                                                            "instead of dropping them")] = False,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="exit 0 even when a technique step or a "
                                                                        "suite run failed")] = False,
) -> None:
    """Run an experiment: compute every path's nodes, run the suites, store the results, build the site.

    Exits 1 when a technique step or a suite run failed (every other path still ran and is stored), unless
    ``--allow-partial``."""
    import os

    from adapters.runtime import library_output_to
    from harness.runner import Runner, new_run_id

    ws = resolve_workspace(workspace)
    parsed = _load(spec)
    if executor is None:
        executor = "ray" if ray_address else ("subprocess" if jobs > 1 else "inprocess")
    run_id = new_run_id()
    found = None
    with library_output_to(ws / "logs" / f"run-{run_id}.log") as out:
        runner = Runner(parsed, ws, executor=executor, data_dir=data_dir or os.environ.get("SLM_DATA_DIR"),
                        progress=progress, strict=strict, jobs=jobs, ray_address=ray_address, retries=retries,
                        run_id=run_id, console=out.console)
        if parsed.search is not None:  # `search:`: Optuna picks the paths to run (harness/search.py)
            from harness.search import Search

            def console_echo(text: str) -> None:  # sys.stdout goes to the log inside this block
                from results.report import printable

                out.console.write(printable(text) + "\n")
                out.console.flush()

            found = Search(runner, echo=console_echo).run()
            summary = found.run
        else:
            summary = runner.run()
    for dropped in summary.dropped:
        _echo(f"  dropped (formats do not fit): {dropped}")
    _echo(
        f"run {summary.run_id} ({parsed.name}): {summary.status} in {summary.wall_time_s:.1f}s; "
        f"technique steps executed {summary.steps_executed}, cached {summary.steps_cached}, failed {summary.steps_failed}; "
        f"suite runs executed {summary.suite_runs_executed}, already done {summary.suite_runs_skipped}, "
        f"failed {summary.suite_runs_failed}" + (f", refused {summary.suite_runs_refused}" if summary.suite_runs_refused else "")
    )
    for refusal in summary.refusals:
        _echo(f"  refused: {refusal[:300]}")
    for skipped in summary.skipped_profiles:
        _echo(f"  hardware profile skipped: {skipped}")
    for failure in summary.failures:
        _echo(f"  failed: {failure.splitlines()[0][:300]}")
    if found is not None:
        from harness.search import summary_lines

        for line in summary_lines(found, parsed.search):
            _echo(line)
    _headline_table(summary.db_path, summary.run_id)
    _echo(f"results: {summary.db_path}")
    if leaderboard:
        site = _build_site(summary.db_path, ws / "site")
        if site:
            _echo(f"leaderboard: {site / 'index.html'}")
    _echo(f"log (library warnings and messages): {out.log_path}")
    if summary.status != "ok" and not allow_partial:
        typer.echo(f"exit 1: {summary.steps_failed} technique steps and {summary.suite_runs_failed} suite runs failed "
                   f"(the rest is stored; --allow-partial exits 0)", err=True)
        raise typer.Exit(1)


def _headline_table(db: Path, run_id: str) -> None:
    """The headline table of this run's paths (as ``slm results``), between blank lines."""
    from results import queries, report

    paths = queries.paths_overview(db, run_id=run_id)
    if paths:
        typer.echo("\n" + report.overview_table(paths) + "\n")


def _build_site(db: Path, out: Path) -> Path | None:
    try:
        from leaderboard.build import build_site
    except ModuleNotFoundError:
        _echo("leaderboard: not built (the leaderboard package is not installed)")
        return None
    build_site(db, out)
    return out


def plan_cmd(
    spec: Annotated[str | None, typer.Argument(help="experiment spec (YAML); default: the built-in experiment")] = None,
    workspace: WorkspaceOpt = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="local benchmark data (or $SLM_DATA_DIR)")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="refuse grid combinations whose formats do not fit "
                                                            "instead of dropping them")] = False,
) -> None:
    """Print the DAG with each model's format, which nodes are cached, the dropped combinations, and how
    much work a run would do, without running."""
    import os

    from harness.cache import ArtifactCache
    from harness.plan import make_plan

    ws = resolve_workspace(workspace)
    parsed = _load(spec)
    plan = make_plan(parsed, strict=strict, data_dir=data_dir or os.environ.get("SLM_DATA_DIR"))
    if parsed.search is not None:
        from harness.search import check_metrics

        check_metrics(parsed)
    cache = ArtifactCache(ws / "artifacts")
    done = _completed_runs(ws / "results.duckdb")
    _echo(f"experiment {plan.spec.name}: {len(plan.paths)} paths, {len(plan.nodes)} nodes")
    for node in plan.nodes.values():
        state = "source" if node.kind == "source" else ("cached" if cache.has(node.hash) or node.technique is None else "todo")
        inputs = ", ".join(f"{role}={_short(h)}" for role, h in node.inputs.items())
        fmt = f" ({node.format})" if node.format else ""
        _echo(f"  {node.hash[:12]} [{state:6s}] {node.kind:7s} {node.label}{fmt}" + (f"  <- {inputs}" if inputs else ""))
    steps = sum(1 for n in plan.technique_nodes() if not cache.has(n.hash))
    runs = sum(1 for r in plan.suite_runs if r.run_key not in done)
    _echo("paths:")
    for p in plan.paths:
        _echo(f"  {p.path_id[:12]} [{p.hardware.name}] {p.name}")
    for skipped in plan.skipped_profiles:
        _echo(f"hardware profile {skipped.name} skipped: {skipped.reason}")
    if plan.dropped:
        _echo(f"dropped {len(plan.dropped)} grid combinations whose formats do not fit (--strict refuses them):")
        for d in plan.dropped:
            _echo(f"  {d.reason}")
    _echo(f"would execute {steps} technique steps and {runs} suite runs "
               f"({len(plan.technique_nodes()) - steps} steps cached, {len(plan.suite_runs) - runs} suite runs done)")
    if parsed.search is not None:  # a search runs only the paths its sampler picks: at most `trials` of them
        from harness.search import describe

        _echo("(for the whole grid; the search runs at most its trial budget of these paths)")
        for line in describe(parsed, plan):
            _echo(line)


def _short(ref: Any) -> str:
    return "[" + ", ".join(h[:8] for h in ref) + "]" if isinstance(ref, list) else str(ref)[:8]


def _completed_runs(db: Path) -> set[str]:
    """The suite runs stored as done (read-only: planning writes nothing, and reads a read-only workspace)."""
    if not db.exists():
        return set()
    from results.store import connect

    with connect(db, read_only=True) as con:
        return {r[0] for r in con.execute("SELECT run_key FROM suite_runs WHERE status = 'ok'").fetchall()}


cache_app = typer.Typer(help="The artifact cache (<workspace>/artifacts).", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(workspace: WorkspaceOpt = None) -> None:
    """List cached artifacts: hash, kind, technique, size, compute time."""
    from harness.cache import ArtifactCache

    entries = ArtifactCache(resolve_workspace(workspace) / "artifacts").entries()
    for e in entries:
        cost = e.get("cost") or {}
        typer.echo(f"{e['hash']}  {e.get('kind', '?'):7s} {e.get('label', ''):50.50s} "
                   f"{e['bytes'] / 1e6:9.1f} MB  {cost.get('wall_time_s', 0):7.1f} s")
    typer.echo(f"{len(entries)} artifacts, {sum(e['bytes'] for e in entries) / 1e6:.1f} MB")


@cache_app.command("show")
def cache_show(
    node: Annotated[str, typer.Argument(help="a node hash, or its first digits (as `slm plan` and `slm cache ls` "
                                             "print them)")],
    workspace: WorkspaceOpt = None,
    records: Annotated[int, typer.Option("--records", "-n", help="records of a dataset to print")] = 5,
) -> None:
    """Show a cached node: what made it (technique, parameters, inputs, report) and, for a dataset (e.g. a
    teacher's generated responses), its first records, one JSON record per line."""
    import json

    from harness.cache import ArtifactCache
    from harness.materialize import DATASET_FILE

    cache = ArtifactCache(resolve_workspace(workspace) / "artifacts")
    h = cache.find(node)
    meta = cache.meta(h)
    keys = ("hash", "kind", "technique", "version", "label", "format", "params", "inputs", "report")
    typer.echo(json.dumps({k: meta[k] for k in keys if k in meta}, indent=2, default=str))
    data = cache.path(h) / DATASET_FILE
    if meta.get("kind") == "dataset" and data.is_file():
        lines = data.read_text(encoding="utf-8").splitlines()
        typer.echo(f"{len(lines)} records in {data}" + (f"; the first {min(records, len(lines))}:" if records > 0 else ""))
        for line in lines[: max(records, 0)]:
            typer.echo(json.dumps(json.loads(line)["text"], ensure_ascii=False))


@cache_app.command("prune")
def cache_prune(
    workspace: WorkspaceOpt = None,
    keep_spec: Annotated[str | None, typer.Option("--keep-spec", help="keep only the nodes of this spec")] = None,
    all_: Annotated[bool, typer.Option("--all", help="remove every artifact")] = False,
) -> None:
    """Remove temporary leftovers; with --keep-spec, artifacts that spec does not use; with --all, everything."""
    from harness.cache import ArtifactCache
    from harness.plan import make_plan

    keep = set(make_plan(_load(keep_spec)).nodes) if keep_spec else None
    removed = ArtifactCache(resolve_workspace(workspace) / "artifacts").prune(keep=keep, everything=all_)
    typer.echo(f"removed {len(removed)} entries")


def env_cmd() -> None:
    """Show the detected environment that is recorded with every run."""
    import json

    from harness.hardware import BUILTIN_PROFILES, detect_environment

    typer.echo(json.dumps(detect_environment(), indent=2))
    typer.echo("hardware profiles: " + ", ".join(BUILTIN_PROFILES))


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("plan")(plan_cmd)
    app.command("env")(env_cmd)
    app.add_typer(cache_app, name="cache")
