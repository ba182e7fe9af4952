"""The static site: overview, Pareto views, a page per path, a comparison view and a page per suite.

Plain files with relative links and no CDN, so the site works from ``file://`` and any static host.
The data the scripts need is embedded in each page as JSON (never fetched: ``file://`` forbids it).
Templates are Jinja2 with autoescaping on; JSON inside ``<script>`` has ``<``, ``>`` and ``&`` escaped as
unicode, so a name containing HTML renders as text everywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from leaderboard.data import SiteData, load
from leaderboard.pareto import Point, svg
from results.report import fmt

HERE = Path(__file__).parent
COSTS = (("decode_tps", "decode tokens/s (batch 1)", True), ("ttft_s", "time to first token (s)", False),
         ("peak_rss", "peak RSS while generating (bytes)", False),
         ("energy_per_token", "energy per decode token (J)", False))


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals["fmt"] = fmt
    return env


def safe_json(value: Any) -> str:
    """JSON that cannot close a ``<script>`` element or open a comment."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_site(db: str | Path, out: str | Path) -> Path:
    """Write the whole site for the database ``db`` into ``out`` (replacing it); returns ``out``."""
    out = Path(out)
    data = load(db)
    env = _env()
    if out.exists():
        shutil.rmtree(out)
    (out / "paths").mkdir(parents=True)
    (out / "suites").mkdir()
    shutil.copytree(HERE / "static", out / "static")
    common = {"suites": data.suites}
    _write(out / "index.html", env.get_template("index.html").render(
        title="Overview", root="", paths=data.paths, data_json=safe_json(_overview_json(data)),
        hardware=sorted({p["hardware_profile"] for p in data.paths}), bases=sorted({p["base"] or "" for p in data.paths}),
        techniques=sorted({t for p in data.paths for t in p.get("techniques", [])}), **common))
    _write(out / "pareto.html", env.get_template("pareto.html").render(
        title="Pareto", root="", plots=_plots(data), quality_label=data.headlines[0]["label"], **common))
    _write(out / "compare.html", env.get_template("compare.html").render(
        title="Compare", root="", has_paths=bool(data.paths), data_json=safe_json(_compare_json(data)), **common))
    path_tpl = env.get_template("path.html")
    for p in data.paths:
        _write(out / "paths" / f"{page(p['path_id'])}.html", path_tpl.render(root="../", title=p["path_name"],
                                                                         **_path_context(data, p), **common))
    suite_tpl = env.get_template("suite.html")
    names = {p["path_id"]: p for p in data.paths}
    for suite in data.suites:
        rows = [[page(pid), names[pid]["path_name"], names[pid]["hardware_profile"], m["task"], m["metric"],
                 m["value"], m["stderr"], m["n"], m["unit"], m["higher_is_better"], m["method"], m["is_estimate"]]
                for pid, ms in data.metrics.items() if pid in names for m in ms if m["suite"] == suite]
        rows.sort(key=lambda r: (r[3], r[4], r[1]))
        _write(out / "suites" / f"{suite}.html", suite_tpl.render(root="../", title=suite, suite=suite,
                                                                  data_json=safe_json({"rows": rows}), **common))
    return out


def page(path_id: str) -> str:
    """The file name of a path's page: the id itself when it is a plain token (harness ids are hex)."""
    import hashlib
    import re

    return path_id if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", path_id) else hashlib.sha1(path_id.encode()).hexdigest()


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _overview_json(data: SiteData) -> dict[str, Any]:
    keys = ["path_id", "path_name", "base", "hardware_profile", "techniques"]
    for h in data.headlines:
        keys += [h["name"], f"{h['name']}_stderr", f"{h['name']}_estimate"]
    return {"headlines": data.headlines,
            "paths": [{**{k: p.get(k) for k in keys}, "page": page(p["path_id"])} for p in data.paths]}


def _compare_json(data: SiteData) -> dict[str, Any]:
    return {"paths": [{"path_id": p["path_id"], "name": p["path_name"], "hardware_profile": p["hardware_profile"]}
                      for p in data.paths],
            "metrics": {pid: {f"{m['suite']}/{m['task']}/{m['metric']}": [m["value"], m["stderr"],
                                                                          m["higher_is_better"]] for m in ms}
                        for pid, ms in data.metrics.items()}}


def _plots(data: SiteData) -> list[tuple[str, list[tuple[str, str]]]]:
    quality = data.headlines[0]["name"]
    out = []
    for hw in sorted({p["hardware_profile"] for p in data.paths}):
        paths = [p for p in data.paths if p["hardware_profile"] == hw and p.get(quality) is not None]
        items = []
        for key, label, hib in COSTS:
            pts = [Point(float(p[key]), float(p[quality]), p["path_name"], f"paths/{page(p['path_id'])}.html")
                   for p in paths if p.get(key) is not None]
            if pts:
                items.append((f"{data.headlines[0]['label']} vs {label}", svg(pts, label, data.headlines[0]["label"],
                                                                              x_higher_is_better=hib)))
        if items:
            out.append((hw, items))
    return out


def _path_context(data: SiteData, p: dict[str, Any]) -> dict[str, Any]:
    lineage = []
    for h in p.get("chain") or []:
        n = dict(data.nodes.get(h, {"node_hash": h, "status": "unknown"}))
        method = n.get("energy_method") or ""
        n.update(params_text=json.dumps(n.get("params") or {}, sort_keys=True),
                 wall=f"{n['wall_time_s']:.1f} s" if n.get("wall_time_s") is not None else "—",
                 rss=fmt(n.get("peak_rss_bytes"), unit="bytes"),
                 energy=(f"{n['energy_j']:.0f} J" if n.get("energy_j") is not None else "—"),
                 energy_est=method.startswith("estimated"))
        lineage.append(n)
    runs = data.suite_runs.get((str(p.get("leaf_hash")), p["hardware_profile"]), [])
    run = data.run_of_path.get(p["path_id"])
    env = (run or {}).get("environment") or {}
    return {"p": p, "page": page(p["path_id"]), "lineage": lineage, "metrics": data.metrics.get(p["path_id"], []), "run": run,
            "failed_runs": [r for r in runs if r["status"] != "ok"],
            "env_text": json.dumps(env, indent=1, sort_keys=True, default=str)}
