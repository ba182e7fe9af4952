"""``slm analyze breakeven``: tokens until a path's lifecycle steps pay for themselves (:mod:`results.breakeven`).

:func:`register_analyze` adds the command to the ``slm analyze`` sub-app (results.analyze_commands)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from results.commands import DbOpt, WorkspaceOpt, _db


def breakeven_cmd(
    run: Annotated[str | None, typer.Option("--run", help="only the paths of this run id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows")] = False,
    db: DbOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Per path: step cost (time, energy) / saving per generated token vs its base = tokens to break even."""
    from results.breakeven import METHOD, breakeven

    path = _db(db, workspace)
    found = breakeven(path, run_id=run)
    if as_json:
        typer.echo(json.dumps(found, default=str, indent=1))
    elif not found:
        typer.echo(f"no path with steps in {path}" + (f" for run {run}" if run else ""))
    else:
        typer.echo(breakeven_table(found))
        typer.echo(f"~: an estimate. Uncertainty: {METHOD}. Cost: {found[0]['cost']['note']}.")


def breakeven_table(found: list[dict[str, Any]]) -> str:
    """One row per path: cost, saving per token and tokens to break even, for time and for energy."""
    from results.report import fmt, table

    headers = ["path", "hardware", "steps", "time cost", "Δ time/token", "tokens (time) [95%]", "energy cost",
               "Δ energy/token", "tokens (energy) [95%]"]
    body = []
    for row in found:
        cells = [row["path_name"], row["hardware_profile"], " > ".join(str(s) for s in row["steps"])]
        for res in ("time", "energy"):
            r = row[res]
            mark = "~" if r["estimate"] else ""
            cells += [mark + fmt(r["cost"], None, r["cost_unit"]) if r["cost"] is not None else "—",
                      mark + fmt(r.get("saving_per_token"), r.get("saving_stderr"), r["per_token_unit"]), _tokens(r)]
        body.append(cells)
    return table(headers, body)


def _tokens(r: dict[str, Any]) -> str:
    from results.breakeven import tokens_interval
    from results.report import fmt

    if r["status"] in ("never", "unknown"):
        return f"{r['status']} ({r['reason']})" if r["status"] == "unknown" else "never"
    ci = "" if r.get("tokens_ci_low") is None else " " + tokens_interval(r)
    text = ("~" if r["estimate"] else "") + fmt(r["tokens"], r.get("tokens_stderr")) + ci
    return text if r["status"] == "resolved" else f"not resolved: {text}"


def register_analyze(analyze_app: typer.Typer) -> None:
    """Add ``breakeven`` to the ``slm analyze`` sub-app."""
    analyze_app.command("breakeven")(breakeven_cmd)
