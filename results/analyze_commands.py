"""``slm analyze``: effects of a grid and order effects (data from :mod:`results.effects`, rendered here)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from results.commands import DbOpt, WorkspaceOpt, _db
from results.report import compare_table, fmt, interval, table
from results.views import HEADLINES

analyze_app = typer.Typer(help="Analyses of a run: effects of a grid's stages, order effects.", no_args_is_help=True)

RunOpt = Annotated[str | None, typer.Option("--run", help="run id or prefix (default: the latest run)")]
MetricOpt = Annotated[list[str] | None, typer.Option("--metric", help="headline metric (repeatable; default: all): "
                                                    f"{', '.join(h.name for h in HEADLINES)}, or suite/task/metric")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the analysis as JSON")]


def _plain(value: Any) -> Any:
    """JSON-safe: NaN (e.g. a comparison with a missing value) as null, which strict JSON readers accept."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def effects_text(result: dict[str, Any]) -> str:
    """The effects of a grid as text: per group the design, then per metric its terms and tests."""
    if not result["grid"]:
        return f"run {result['run_id']} has no grid: {result['reason']}"
    out = [f"Effects of the grid of run {result['run_id']} (stages from the {result['source']})"]
    for g in result["groups"]:
        stages = "; ".join(f"{s}: {' | '.join(v['levels'])}" for s, v in g["stages"].items())
        out += ["", f"== {g['base']} [{g['hardware_profile']}]: {len(g['cells'])} paths in the grid; {stages}"]
        out += [f"   left out: {e['path']} ({e['reason']})" for e in g["excluded_paths"]]
        for m in g["metrics"]:
            out += ["", _metric_text(m)]
    return "\n".join(out)


def _metric_text(m: dict[str, Any]) -> str:
    arrow = "↑" if m["higher_is_better"] else "↓"
    lines = [f"{m['label']} {arrow} [{m['unit']}] — {m['method']}; n={m['n_obs']} ({m['n_cells']} cells)"]
    lines += [f"  missing cell {_levels(c['levels'])}: {c['reason']}" for c in m["missing_cells"]]
    lines += [f"  note: {n}" for n in m["notes"]]
    if m["terms"]:
        body = []
        for t in m["terms"]:
            ci = interval(t["ci_low"], t["ci_high"], m["unit"], t.get("stderr"))  # rounded as the estimate
            est = fmt(t["estimate"], t.get("stderr"), unit=m["unit"]) if t["estimable"] else "not estimable"
            body.append([t["term"], est, ci, _p(t["p_value"])])
        lines.append(table(["term (vs reference)", "estimate", "95% CI", "p"], body))
    if any(t["df"] > 1 for t in m.get("tests", [])):  # with two levels a term's joint test is its row's test
        lines.append(table(["term (joint test)", "test", "statistic", "df", "p"],
                           [[t["term"], t["test"], f"{t['statistic']:.3g}", str(t["df"]), _p(t["p_value"])]
                            for t in m["tests"]]))
    return "\n".join(lines)


def _levels(levels: dict[str, str]) -> str:
    return ", ".join(f"{s}={v}" for s, v in levels.items())


def order_text(result: dict[str, Any]) -> str:
    """Order effects as text: per pair of paths, the compare table."""
    if not result["pairs"]:
        return f"Order effects: run {result['run_id']} has no two paths with the same steps in another order"
    out = [f"Order effects (run {result['run_id']}): same steps, another order; B - A with slm compare's tests"]
    for pair in result["pairs"]:
        out += ["", f"A = {pair['path_a']}\nB = {pair['path_b']}  [{pair['hardware_profile']}]"]
        out.append(compare_table(pair["metrics"]) if pair["metrics"] else "  no headline metric in common")
    return "\n".join(out)


@analyze_app.command("effects")
def effects_cmd(run: RunOpt = None, metric: MetricOpt = None, as_json: JsonOpt = False, seed: Annotated[
        int, typer.Option(help="bootstrap seed of the order comparisons")] = 0, db: DbOpt = None,
                workspace: WorkspaceOpt = None) -> None:
    """Main effects and pairwise interactions of a grid's stages per headline metric (OLS/WLS, 95% CI, p), and
    order effects (same steps, another order)."""
    from results.effects import grid_effects, order_effects

    path = _db(db, workspace)
    effects = grid_effects(path, run, metric)
    order = order_effects(path, effects["run_id"], metric, seed=seed)
    if as_json:
        typer.echo(json.dumps(_plain({"effects": effects, "order": order}), default=str, indent=1))
        return
    typer.echo(effects_text(effects))
    typer.echo("")
    typer.echo(order_text(order))


@analyze_app.command("order")
def order_cmd(run: RunOpt = None, metric: MetricOpt = None, as_json: JsonOpt = False, seed: Annotated[
        int, typer.Option(help="bootstrap seed")] = 0, db: DbOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Order effects only: paths with the same steps in another order, compared pairwise."""
    from results.effects import order_effects

    order = order_effects(_db(db, workspace), run, metric, seed=seed)
    typer.echo(json.dumps(_plain(order), default=str, indent=1) if as_json else order_text(order))
