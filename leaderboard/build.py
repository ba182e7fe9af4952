"""The static site: overview, Pareto views, a page per path, a comparison view and a page per suite.

Plain files with relative links and no CDN, so the site works from ``file://`` and any static host. The data
the scripts need is embedded in the pages as JSON, or, for the comparison view, in ``data/*.js`` files that
assign to a global and are loaded with ``<script>`` tags (``file://`` forbids fetching). Templates are Jinja2
with autoescaping on; JSON inside ``<script>`` has ``<``, ``>`` and ``&`` escaped as unicode, so a name
containing HTML renders as text everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from adapters.errors import UsageError, writing
from leaderboard import analysis, charts
from leaderboard.data import LOAD_NOTE, UPPER_NOTE, SiteData, load, page_name
from leaderboard.pages import Lineage
from leaderboard.pareto import Point, svg
from results.breakeven import tokens_interval
from results.report import fmt, interval
from results.store import connect
from results.units import SCALES

HERE = Path(__file__).parent
MARKER = ".slm-leaderboard"  # a directory holding this file is a site we built and may replace
SHARD = 200  # paths per comparison data file
MAX_DAG_NODES = 400  # a run's DAG with more nodes is summarised, not drawn
COSTS = (("decode_tps", True), ("ttft_s", False), ("peak_rss", False), ("energy_per_token", False))


def script_safe(text: str) -> str:
    """JSON text that cannot close a ``<script>`` element or open a comment (``<``, ``>``, ``&`` escaped)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def safe_json(value: Any) -> str:
    """:func:`json.dumps` made safe to embed in a ``<script>`` element."""
    return script_safe(json.dumps(value, default=str, separators=(",", ":")))


def build_site(db: str | Path, out: str | Path) -> Path:
    """Write the whole site for the database ``db`` into ``out`` (replacing a site built there before).

    Raises:
        UsageError: ``out`` exists, is not empty and is not a site this function built.
        StorageError: the disk is full or the folder read-only (one line).
    """
    final = Path(out)
    with writing(final, final.parent):
        return _build(db, final)


def _build(db: str | Path, final: Path) -> Path:
    _check_replaceable(final)
    data = load(db)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.build-", dir=final.parent))  # built aside, then swapped in
    out.chmod(0o755)  # a site is for reading (mkdtemp makes it private)
    try:
        _prepare(out)
        _render(db, data, out)
        with _site_lock(final):  # two runs building the same site: one swap after the other, never interleaved
            _check_replaceable(final)
            _swap(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return final


def _render(db: str | Path, data: SiteData, out: Path) -> None:
    # a path next to this file, not PackageLoader: setuptools' strict editable installs (as tox makes them)
    # expose no package directory for non-Python folders
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(fmt=fmt, pval=_pval, ci=charts.fmt_ci, interval=interval, tokens_interval=tokens_interval)
    extra = _analyses(db, data)
    common = {"suites": [(s, page_name(s)) for s in data.suites], "has_paths": bool(data.paths),
              "has_effects": bool(extra["effects"]), "has_dag": bool(extra["dags"])}
    hw = sorted({p["hardware_profile"] or "" for p in data.paths})
    _write(out / "index.html", env.get_template("index.html").render(
        title="Overview", root="", data_json=safe_json(_overview(data)), hardware=hw,
        bases=sorted({p["base"] or "" for p in data.paths}),
        techniques=sorted({t for p in data.paths for t in p["techniques"]}), **common))
    _write(out / "pareto.html", env.get_template("pareto.html").render(
        title="Pareto", root="", plots=_plots(data), quality_label=data.headlines[0]["label"], **common))
    _write(out / "compare.html", env.get_template("compare.html").render(
        title="Compare", root="", data_json=safe_json(
            {"paths": [[p["path_id"], p["path_name"], p["hardware_profile"], i // SHARD]
                       for i, p in enumerate(data.paths)], "keys": data.keys, "scales": SCALES}), **common))
    _write_compare_data(out, data)
    _write_paths(out, env, data, common, extra)
    _write(out / "effects.html", env.get_template("effects.html").render(
        title="Effects", root="", runs=[_effects_view(e) for e in extra["effects"]], **common))
    _write(out / "dag.html", env.get_template("dag.html").render(
        title="Lifecycle DAG", root="", dags=[_dag_view(d) for d in extra["dags"]], **common))
    suite_tpl = env.get_template("suite.html")
    index = safe_json([[p["page"], p["path_name"], p["hardware_profile"]] for p in data.paths])
    keys = safe_json(data.keys)
    scales = safe_json(SCALES)
    for suite, payload in data.suite_json.items():
        _write(out / "suites" / f"{page_name(suite)}.html", suite_tpl.render(
            root="../", title=suite, suite=suite,
            data_json=f'{{"paths":{index},"keys":{keys},"scales":{scales},"rows":{script_safe(payload)}}}', **common))


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not one of our sites."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise UsageError(f"{out} exists and is not a leaderboard site built here: give an empty or new --out")


@contextlib.contextmanager
def _site_lock(out: Path) -> Iterator[None]:
    with open(out.parent / f".{out.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _swap(built: Path, out: Path) -> None:
    """Put the built site at ``out``: the old one is renamed aside first and deleted after (a reader sees the old or
    the new site whole, never a half-written one)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "site")
    os.rename(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _prepare(out: Path) -> None:
    """Lay out an empty folder for a new build."""
    for sub in ("paths", "suites", "data"):
        (out / sub).mkdir(parents=True)
    (out / MARKER).write_text("built by slm leaderboard build; the whole folder is replaced on rebuild\n")
    shutil.copytree(HERE / "static", out / "static")


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _overview(data: SiteData) -> dict[str, Any]:
    keys = ["path_id", "path_name", "base", "hardware_profile", "techniques", "page", "failed_step", "failed_suites"]
    for h in data.headlines:
        keys += [h["name"], f"{h['name']}_stderr", f"{h['name']}_estimate", f"{h['name']}_under_load",
                 f"{h['name']}_load", f"{h['name']}_upper_bound"]
    keys += ["base_path"] + [f"{h['name']}_vs_base" for h in data.headlines]  # change vs base (leaderboard.analysis)
    return {"headlines": data.headlines, "paths": [[p.get(k) for k in keys] for p in data.paths], "keys": keys,
            "notes": {"load": LOAD_NOTE, "upper_bound": UPPER_NOTE}, "scales": SCALES}


def _write_compare_data(out: Path, data: SiteData) -> None:
    """``data/compare-<k>.js``: the metrics of paths ``k*SHARD ..`` for the comparison view."""
    for k in range(0, len(data.paths), SHARD):
        body = ",".join(f"{safe_json(p['path_id'])}:{script_safe(data.path_json.get(p['path_id'], '[]'))}"
                        for p in data.paths[k:k + SHARD])
        _write(out / "data" / f"compare-{k // SHARD}.js",
               f"window.SLM_COMPARE=window.SLM_COMPARE||{{}};Object.assign(window.SLM_COMPARE,{{{body}}});\n")


def _write_paths(out: Path, env: Environment, data: SiteData, common: dict[str, Any],
                 extra: dict[str, Any]) -> None:
    """One page per path, from one precompiled template; rows come from :mod:`leaderboard.pages`."""
    template = env.get_template("path.html")
    lineage = Lineage(data.nodes)
    env_text: dict[str | None, str] = {}
    for p in data.paths:
        run = data.runs.get(p["run_id"] or "")
        if p["run_id"] not in env_text:
            env_text[p["run_id"]] = json.dumps((run or {}).get("environment") or {}, indent=1, sort_keys=True,
                                               default=str)
        _write(out / "paths" / f"{p['page']}.html", template.render(
            root="../", title=p["path_name"], p=p, run=run, env_text=env_text[p["run_id"]],
            lineage=lineage.rows(p["chain"]), metrics=Markup(data.metric_html.get(p["path_id"], "")),
            failed_runs=data.failed_suite_runs.get((str(p["leaf_hash"]), p["hardware_profile"]), []),
            breakeven=extra["breakeven"].get(p["path_id"]), parity=extra["parity"].get(p["path_id"], []),
            trajectory=_trajectory_view(extra["trajectories"].get(p["path_id"]), p, data.nodes), **common))


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _plots(data: SiteData) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per hardware profile, quality against each cost headline, as SVG."""
    quality = data.headlines[0]
    heads = {h["name"]: h for h in data.headlines}
    out = []
    for hw in sorted({p["hardware_profile"] or "" for p in data.paths}):
        paths = [p for p in data.paths if (p["hardware_profile"] or "") == hw and p.get(quality["name"]) is not None]
        items = []
        for key, hib in COSTS:
            pts = [Point(float(p[key]), float(p[quality["name"]]), p["path_name"], f"paths/{p['page']}.html",
                         x_err=_float(p.get(f"{key}_stderr")), y_err=_float(p.get(f"{quality['name']}_stderr")),
                         unresolved="only an upper bound" if p.get(f"{key}_upper_bound") else None)
                   for p in paths if p.get(key) is not None]
            if pts:
                items.append((f"{quality['label']} vs {heads[key]['label']}",
                              svg(pts, heads[key]["label"], quality["label"], x_higher_is_better=hib, x_unit=heads[key]["unit"],
                                  y_unit=quality["unit"])))
        if items:
            out.append((hw, items))
    return out


# -- the analyses: effects, break-even, trajectories, parity, change vs base, the DAG (leaderboard.analysis) ----------
def _analyses(db: str | Path, data: SiteData) -> dict[str, Any]:
    """Everything :mod:`leaderboard.analysis` reads, keyed by page block; empty without paths."""
    out: dict[str, Any] = {"effects": [], "dags": [], "breakeven": {}, "trajectories": {}, "parity": {}}
    if not data.paths:
        return out
    analysis.vs_base(data.paths, data.headlines)
    with connect(db, read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        runs = analysis.latest_runs(con)
        out.update(dags=analysis.dags(con, runs, data.paths, data.nodes),
                   breakeven=analysis.breakevens(con, data.paths, data.nodes),
                   trajectories=analysis.trajectories(con), parity=analysis.parity(con))
    out["effects"] = analysis.effects(db, runs)
    return out


def _effects_view(entry: dict[str, Any]) -> dict[str, Any]:
    """One run's effects for the template: per group and metric, the terms and a forest plot of them."""
    grid = entry.get("grid") or {}
    groups = []
    for g in grid.get("groups", []):
        metrics = []
        for m in g["metrics"]:
            terms = [t for t in m.get("terms", []) if t.get("order")]  # the intercept is the reference cell
            plot = [charts.Interval(t["term"], t["estimate"], t.get("ci_low"), t.get("ci_high"),
                                    t.get("note") or "") for t in terms]
            intercept = next((t for t in m.get("terms", []) if not t.get("order")), None)
            metrics.append({**m, "shown_terms": terms, "intercept": intercept,
                            "svg": Markup(charts.forest(plot, m.get("unit") or "")) if plot else None})
        groups.append({**g, "metric_views": metrics})
    return {**entry, "groups": groups, "not_grid": None if grid.get("grid", True) else grid.get("reason")}


def _dag_view(entry: dict[str, Any]) -> dict[str, Any]:
    nodes = entry["nodes"]
    shared = sorted((n for n in nodes.values() if len(n.paths) > 1), key=lambda n: (n.depth, n.label))
    n_paths = len({name for n in nodes.values() for name, _ in n.paths})
    if len(nodes) > MAX_DAG_NODES:  # a picture of thousands of boxes is unreadable (and megabytes)
        return {"run": entry["run"], "svg": None, "nodes": [], "n_shared": len(shared), "n_paths": n_paths,
                "too_large": len(nodes)}
    return {"run": entry["run"], "svg": Markup(charts.dag(nodes)), "too_large": None, "nodes": sorted(
        nodes.values(), key=lambda n: (n.depth, n.label, n.node_hash)), "n_shared": len(shared),
        "n_paths": len({name for n in nodes.values() for name, _ in n.paths})}


def _trajectory_view(t: dict[str, Any] | None, p: dict[str, Any], nodes: dict[str, dict[str, Any]]
                     ) -> dict[str, Any] | None:
    """A path's trajectory for its page: position labels, a row per metric and a small chart per metric."""
    if not t:
        return None
    chain = p.get("chain") or []
    labels = ["base"] + [str((nodes.get(h) or {}).get("technique") or f"step {i + 1}")
                         for i, h in enumerate(chain[1:])]
    labels += [f"step {i}" for i in range(len(labels), t["length"])]
    metrics = []
    for m in t["metrics"]:
        pts = [charts.Point(i, labels[i], r["value"], r["stderr"], bool(r["is_estimate"]))
               for i, r in enumerate(m["points"]) if r is not None]
        metrics.append({**m, "svg": Markup(charts.line(pts, m["key"], m["unit"], t["length"]))})
    return {"labels": labels, "metrics": metrics}


def _pval(p: Any) -> str:
    """A p-value as text: ``<0.001`` below a thousandth, else three decimals; ``—`` for none."""
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
