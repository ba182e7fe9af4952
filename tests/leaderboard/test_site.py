"""The static site from results databases: pages, escaping of hostile names, the empty case, Pareto math."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import duckdb
import pytest

from adapters.errors import UsageError
from leaderboard.build import build_site, safe_json
from leaderboard.data import page_name
from leaderboard.pareto import Point, frontier
from results.report import fmt, interval, report_items
from results.store import ResultStore
from results.units import sql_quantity

sys.path.insert(0, str(Path(__file__).parents[1] / "results"))
from results_builders import latencies, metric, outcomes, write_run  # noqa: E402

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {
        "base": {"acc_correct": outcomes(200, 0.7, 1), "latency": latencies(30, 0.05, 1), "energy": 0.5},
        HOSTILE: {"acc_correct": outcomes(200, 0.6, 2), "latency": latencies(30, 0.04, 2), "energy": 0.4},
        "slow-bad": {"acc_correct": outcomes(200, 0.5, 3), "latency": latencies(30, 0.09, 3), "energy": 0.9},
    })
    store = ResultStore(db)  # a failed step, a failed suite and hostile text in every metric field
    store.record_node("r1", dict(node_hash="n-bad", kind="model", technique=f"quant.{HOSTILE}", params={"x": HOSTILE},
                                 inputs={"model": "src"}, status="failed", error=f"ValueError: {HOSTILE}",
                                 traceback=f"Traceback (most recent call last):\n  {HOSTILE}"))
    store.record_path("r1", dict(path_id="p/../../evil", name="broken", base=HOSTILE, hardware_profile=HOSTILE,
                                 leaf_hash="n-bad", chain=["src", "n-bad"], steps=[{"technique": "quant.x"}],
                                 spec_snippet=HOSTILE))
    store.record_suite_run("r1", dict(run_key="t-base", node_hash="n-base", suite=HOSTILE, profile="quick",
                                      hardware_profile="cpu-1t", settings={}, status="ok", wall_time_s=1.0,
                                      metrics=[metric(HOSTILE, HOSTILE, HOSTILE, 2.5e8, None, 1, HOSTILE, True,
                                                      "estimated:" + HOSTILE)], samples=[], raw=[]))
    store.record_suite_run("r1", dict(run_key="f-bad", node_hash="n-bad", suite="quality", profile="quick",
                                      hardware_profile=HOSTILE, settings={}, status="failed", error="boom",
                                      traceback="Traceback: boom-trace", metrics=[], samples=[], raw=[]))
    return build_site(db, tmp_path / "site")


def test_pages_exist_and_link(site: Path):
    for name in ("index.html", "pareto.html", "compare.html", "static/site.js", "static/site.css",
                 "suites/quality.html", "suites/latency.html", "paths/p-base.html", "data/compare-0.js"):
        assert (site / name).exists(), name
    assert len(list((site / "paths").glob("*.html"))) == 4
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page  # self-contained: no CDN
        for href in re.findall(r'(?:href|src)="([^"?#]+)', text):
            assert (page.parent / href).resolve().exists(), (page, href)


def test_path_page_shows_lineage_costs_metrics_and_reproduction(site: Path):
    detail = (site / "paths" / "p-base.html").read_text()
    assert "prune.magnitude" in detail and "{&#34;sparsity&#34;: 0.5}" in detail.replace("&quot;", "&#34;")
    assert "1.5 s" in detail and "95.37 MiB" in detail and "~3 J" in detail  # the step's wall time, RSS, energy
    assert "lm-eval 0.4.13" in detail and "estimated:codecarbon-cpu_load" in detail
    assert re.search(r'class="num est"[^>]*>~500 mJ/token<', detail)  # the energy estimate is marked, in mJ
    # accuracy and its stderr in %, rounded to the stderr's two leading digits (PDG: 100-354 -> two)
    assert re.search(r'<td class="num">\d\d\.\d %</td><td class="num">3\.\d %</td><td class="num">200</td>', detail)
    assert '"cpu_model": "x"' in detail.replace("&#34;", '"')  # the environment


def test_failures_are_shown_with_tracebacks(site: Path):
    broken = (site / "paths" / f"{page_name('p/../../evil')}.html").read_text()
    assert "failed" in broken and "ValueError: &lt;script&gt;" in broken and "Traceback (most recent" in broken
    assert "boom-trace" in broken and "No metrics recorded" in broken


def test_hostile_names_render_as_text(site: Path):
    for page in site.rglob("*"):
        if page.is_file():
            text = page.read_text()
            assert "<script>alert" not in text, page
            assert "</script><" not in text.replace('</script><script src=', '').replace("</script></body>", ""), page
    assert not (site.parent / "evil.html").exists() and page_name("p/../../evil").startswith("h")
    base = (site / "paths" / "p-base.html").read_text()
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in base  # the hostile suite, task, metric and unit
    assert "\\u003cscript\\u003ealert(1)" in (site / "index.html").read_text()  # inside JSON
    assert "</script>" not in safe_json({"x": HOSTILE})
    suite = next(p for p in (site / "suites").glob("h*.html"))
    payload = re.search(r'id="suite-data">(.*?)</script>', suite.read_text(), re.S)
    assert payload and json.loads(payload.group(1))["keys"][0][0] == HOSTILE


CONVERSION = "dequantized the torch-int8-dynamic weights to float before <i>peft.lora</i>"


def test_path_page_shows_formats_conversion_and_report_escaped(tmp_path: Path):
    db = tmp_path / "results.duckdb"
    common = {"acc_correct": outcomes(50, 0.6, 1), "latency": latencies(10, 0.05, 1), "energy": 0.5}
    write_run(db, "r1", {
        "lora": {**common, "format": "torch", "report": {
            "first_loss": 2.71828, "final_loss": 0.123456, "trainable_params": 12288, "total_params": 4_500_000,
            "sparsity_kept": True, "note": "<b>x</b>", HOSTILE: HOSTILE, "losses": [3.0, 2.5, 2.0, 1.5, 1.0, 0.5],
            "teacher": {"name": "<b>t</b>", "kl": 0.5}, "peak_bytes": 3 * 2**20},
            "lineage_step": {"technique": "peft.lora", "version": "1", "params": {}, "library_versions": {},
                             "input_format": "torch-int8-dynamic", "output_format": "torch",
                             "conversion": CONVERSION}},
        "pruned": {**common, "format": "torch-sparse", "report": {"sparsity": 0.5, "pattern": "unstructured"},
                   "lineage_step": {"technique": "prune.magnitude", "input_format": "torch",
                                    "output_format": "torch-sparse", "conversion": None}},
        "plain": {**common, "format": "torch"},
    }, source_format="torch")
    site = build_site(db, tmp_path / "site")
    lora = (site / "paths" / "p-lora.html").read_text()
    # the step's output format, and its input format since it is not what the step before produced
    assert "<code>torch</code>" in lora  # the source
    assert '<code title="input format">torch-int8-dynamic</code> → <code>torch</code>' in lora
    assert "conversion: dequantized the torch-int8-dynamic weights to float before &lt;i&gt;peft.lora&lt;/i&gt;" in lora
    for item in ("first_loss</span> = 2.718", "final_loss</span> = 0.1235", "trainable_params</span> = 12288",
                 "total_params</span> = 4.5e+06", "sparsity_kept</span> = true", "peak_bytes</span> = 3072 KiB",
                 "note</span> = &lt;b&gt;x&lt;/b&gt;", "losses</span> = [3, 2.5, 2, 1.5, … 2 more]",
                 "teacher</span> = {kl: 0.5, name: &lt;b&gt;t&lt;/b&gt;}",
                 "&lt;script&gt;alert(1)&lt;/script&gt;</span> = &lt;script&gt;alert(1)&lt;/script&gt;"):
        assert item in lora, item
    assert "<b>x</b>" not in lora and "<b>t</b>" not in lora and "<i>peft" not in lora and "<script>alert" not in lora
    pruned = (site / "paths" / "p-pruned.html").read_text()
    assert "<code>torch-sparse</code>" in pruned and "input format" not in pruned  # no conversion between steps
    assert "sparsity</span> = 0.5" in pruned and "pattern</span> = unstructured" in pruned
    assert "conversion:" not in pruned
    plain = (site / "paths" / "p-plain.html").read_text()  # no report, no conversion: nothing extra
    assert "step-detail" not in plain and "<code>torch</code>" in plain


def test_path_page_of_a_database_without_formats_and_reports(tmp_path: Path):
    """A database written before schema v4 and opened read-only (not migrated) builds, with no formats."""
    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {"old": {"acc_correct": outcomes(50, 0.6, 1), "latency": latencies(10, 0.05, 1),
                                 "energy": 0.5}})
    con = duckdb.connect(str(db))
    con.execute("DROP VIEW node_costs")
    for col in ("format", "report", "lineage_step"):
        con.execute(f"ALTER TABLE nodes DROP COLUMN {col}")
    con.execute("DELETE FROM schema_version WHERE version = 4")
    con.close()
    page = (build_site(db, tmp_path / "site") / "paths" / "p-old.html").read_text()
    assert "prune.magnitude" in page and "step-detail" not in page and "<th>format</th>" in page


def test_report_items_are_compact_and_truncated():
    assert report_items(None) == [] and report_items({}) == []
    assert report_items([1, 2]) == [("", "[1, 2]")]
    items = dict(report_items({"text": "y" * 500, "big": {str(i): i for i in range(10)}, "nan": float("nan"),
                               "none": None, "n": 10**7, "deep": [[1, 2], {"a": 1}]}))
    assert items["text"] == "y" * 79 + "…" and items["none"] == "—" and items["nan"] == "—"
    assert items["big"] == "{0: 0, 1: 1, 2: 2, 3: 3, … 6 more}" and items["n"] == "1e+07"
    assert items["deep"] == "[[2 items], {1 entries}]"
    many = report_items({f"k{i:02d}": i for i in range(30)})
    assert len(many) == 25 and many[-1] == ("…", "6 more")


def test_overview_data_carries_headlines_and_estimates(site: Path):
    raw = re.search(r'id="site-data">(.*?)</script>', (site / "index.html").read_text(), re.S)
    assert raw
    data = json.loads(raw.group(1))
    rows = {r[data["keys"].index("path_name")]: dict(zip(data["keys"], r, strict=True)) for r in data["paths"]}
    assert set(rows) == {"base", HOSTILE, "slow-bad", "broken"}
    assert rows["base"]["quality"] == pytest.approx(sum(outcomes(200, 0.7, 1)) / 200)
    assert rows["base"]["energy_per_token_estimate"] is True and rows["base"]["quality_estimate"] is False
    assert rows["broken"]["quality"] is None and rows["base"]["techniques"] == ["prune.magnitude"]


def test_pareto_page_marks_the_frontier(site: Path):
    text = (site / "pareto.html").read_text()
    assert 'class="frontier"' in text and "pt front" in text
    # quality vs energy on cpu-1t: base (0.7, 0.5 J) and the hostile path (0.6, 0.4 J) are both optimal,
    # slow-bad (0.5, 0.9 J) is dominated
    energy = text[text.index("vs energy per decode token"):]
    energy = energy[:energy.index("</svg>")]
    front = re.findall(r'class="pt front"><title>(.*?): [^<]* mJ/token \(on the frontier\)</title>', energy)
    assert sorted(front) == sorted(["base", "&lt;script&gt;alert(1)&lt;/script&gt;"])
    assert re.search(r'class="pt"><title>slow-bad: [^<]*\(dominated beyond the noise\)</title>', energy)


def test_empty_and_missing_database_say_no_results(tmp_path: Path):
    ResultStore(tmp_path / "empty.duckdb")
    for db in (tmp_path / "missing.duckdb", tmp_path / "empty.duckdb"):
        out = build_site(db, tmp_path / "site")
        for page in ("index.html", "pareto.html", "compare.html"):
            assert "No results yet" in (out / page).read_text(), (db, page)


def test_refuses_to_replace_a_folder_that_is_not_a_site(tmp_path: Path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("keep me")
    with pytest.raises(UsageError, match="not a leaderboard site"):
        build_site(tmp_path / "missing.duckdb", tmp_path / "home")
    assert (tmp_path / "home" / "thesis.tex").exists()
    build_site(tmp_path / "missing.duckdb", tmp_path / "site")
    build_site(tmp_path / "missing.duckdb", tmp_path / "site")  # a site of ours is replaced


@pytest.mark.parametrize("value,unit", [(0.51234, "fraction"), (12.3456, "s"), (123456.7, "tokens/s"),
                                        (0.00012345, "J/token"), (0.0, "s"), (2.5e8, "bytes"), (5e5, "bytes"),
                                        (-3.25, "ratio")])
def test_sql_number_format_matches_python(value: float, unit: str):
    con = duckdb.connect()
    got = con.execute(f"SELECT {sql_quantity('v', 'NULL::DOUBLE', 'unit')} FROM (SELECT ?::DOUBLE AS v, ?::VARCHAR AS unit)", [value, unit])
    assert got.fetchone() == (fmt(value, unit=unit),)


def test_frontier_known_case():
    pts = [Point(1, 0.5, "a", ""), Point(2, 0.7, "b", ""), Point(3, 0.6, "c", ""), Point(2, 0.4, "d", ""),
           Point(4, 0.9, "e", ""), Point(4, 0.9, "e2", "")]
    assert [pts[i].label for i in frontier(pts)] == ["a", "b", "e"]  # a tie is kept once
    # higher-is-better x (e.g. tokens/s): e is both the fastest and the best, so it dominates everything
    assert [pts[i].label for i in frontier(pts, x_higher_is_better=True)] == ["e"]
    assert frontier([]) == []


def test_frontier_is_exactly_the_non_dominated_set():
    import random

    rng = random.Random(0)
    for _ in range(50):
        pts = [Point(rng.randint(0, 6), rng.randint(0, 6), str(i), "") for i in range(rng.randint(1, 12))]
        got = {(pts[i].x, pts[i].y) for i in frontier(pts)}
        want = {(p.x, p.y) for p in pts if not any(q.x <= p.x and q.y >= p.y and (q.x, q.y) != (p.x, p.y)
                                                   for q in pts)}
        assert got == want


def _metric_rows(page: str) -> dict[str, str]:
    """metric name -> its row's HTML in a path page's metric table."""
    body = page[page.index('<table class="metrics">'):]
    body = body[:body.index("</table>")]
    return {re.findall(r"<td>(.*?)</td>", row)[2]: row for row in re.findall(r"<tr><td>.*?</tr>", body)}


def test_load_upper_bound_and_invalid_bound_are_marked(tmp_path: Path):
    db = tmp_path / "results.duckdb"
    common = {"acc_correct": outcomes(50, 0.6, 1), "latency": latencies(10, 0.05, 1), "energy": 0.5}
    write_run(db, "r1", {
        "loaded": {**common, "latency_details": {"foreign_load": 0.6, "under_load": True},
                   "energy_details": {"resolved": False, "value_is": "upper_bound"}},
        "busy": {**common, "latency_details": {"foreign_load": 0.1, "under_load": False, "bound_valid": False,
                                               "bound_invalid_reason": HOSTILE},
                 "energy_details": {"foreign_load": 1.234, "under_load": True}},
        "plain": common,
    })
    site = build_site(db, tmp_path / "site")
    loaded = _metric_rows((site / "paths" / "p-loaded.html").read_text())
    assert '<span class="load" title="measured while other processes used 0.6 CPU cores; compare with care">' \
           "⚠ load 0.6 cores</span>" in loaded["itl_s"]
    assert re.search(r'>~<span class="ub" title="an upper bound[^"]*">≤</span>500 mJ/token<', loaded["decode_j_per_token"])
    assert "⚠" not in loaded["decode_j_per_token"] and "≤" not in loaded["itl_s"] and "acc" in loaded
    busy_page = (site / "paths" / "p-busy.html").read_text()
    busy = _metric_rows(busy_page)
    assert "⚠ load 1.2 cores" in busy["decode_j_per_token"] and "⚠" not in busy["itl_s"]  # 0.1 is not under load
    assert ('<span class="invalid" title="roofline bound not valid: &lt;script&gt;alert(1)&lt;/script&gt;">'
            "invalid bound</span>") in busy["itl_s"]
    assert "<script>alert" not in busy_page
    plain_page = (site / "paths" / "p-plain.html").read_text()
    for row in _metric_rows(plain_page).values():  # no details: no marker
        assert "⚠" not in row and "≤" not in row and "invalid bound" not in row and "<span" not in row
    assert "⚠ load N cores" in plain_page and "invalid bound</span> the" in plain_page  # the legend explains them
    index = (site / "index.html").read_text()
    data = json.loads(re.search(r'id="site-data">(.*?)</script>', index, re.S).group(1))  # type: ignore[union-attr]
    rows = {r[data["keys"].index("path_name")]: dict(zip(data["keys"], r, strict=True)) for r in data["paths"]}
    assert rows["loaded"]["energy_per_token_upper_bound"] is True and not rows["loaded"]["energy_per_token_under_load"]
    assert rows["busy"]["energy_per_token_under_load"] is True and rows["busy"]["energy_per_token_load"] == 1.234
    assert not rows["busy"]["energy_per_token_upper_bound"] and not rows["busy"]["quality_under_load"]
    assert not any(rows["plain"][f"{h}_{f}"] for h in ("quality", "energy_per_token")
                   for f in ("under_load", "load", "upper_bound"))
    assert "{load} CPU cores" in data["notes"]["load"] and "upper bound" in data["notes"]["upper_bound"]
    assert '<span class="load">⚠</span> measured while other processes' in index  # the overview legend
    script = (site / "static" / "site.js").read_text()
    assert '"_under_load"' in script and '"_upper_bound"' in script and " ⚠" in script


def test_concurrent_builds_of_one_site_all_succeed_and_leave_it_whole(tmp_path: Path):
    """The race seen: two runs building the site at once deleted each other's files. Each build now writes a folder of
    its own and swaps it in under a lock: 6 builds at once, 0 errors, the site whole, nothing left beside it."""
    import multiprocessing as mp

    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {"base": {"acc_correct": outcomes(50, 0.7, 1), "latency": latencies(10, 0.05, 1),
                                  "energy": 0.5}})
    out = tmp_path / "site"
    build_site(db, out)
    pages = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    with mp.get_context("spawn").Pool(6) as pool:
        results = [pool.apply_async(build_site, (db, out)) for _ in range(6)]
        assert [r.get(timeout=300) for r in results] == [out] * 6
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == pages
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.lock", "results.duckdb", "results.duckdb.lock", "site"]
    assert out.stat().st_mode & 0o777 == 0o755


# -- the analysis pages: effects, DAG, trajectories, parity, break-even, change vs base ----------------------------
from analysis_builders import HOSTILE as H2  # noqa: E402
from analysis_builders import PARITY, write_all, write_order_pair  # noqa: E402

from results.effects import grid_effects  # noqa: E402


@pytest.fixture(scope="module")
def analysis_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("analysis")
    write_all(tmp / "results.duckdb")
    return build_site(tmp / "results.duckdb", tmp / "site")


def _overview_rows(site: Path) -> dict[str, dict]:
    raw = re.search(r'id="site-data">(.*?)</script>', (site / "index.html").read_text(), re.S)
    assert raw
    data = json.loads(raw.group(1))
    return {r[data["keys"].index("path_name")]: dict(zip(data["keys"], r, strict=True)) for r in data["paths"]}


def test_effects_page_shows_terms_intervals_and_a_forest_plot(analysis_site: Path):
    index = (analysis_site / "index.html").read_text()
    assert 'href="effects.html"' in index and 'href="dag.html"' in index
    page = (analysis_site / "effects.html").read_text()
    (group,) = grid_effects(analysis_site.parent / "results.duckdb", "grid1")["groups"]
    quality = next(m for m in group["metrics"] if m["metric"] == "quality")
    inter = next(t for t in quality["terms"] if t["term"] == "prune=prune.magnitude × recover=peft.lora")
    section = page[page.index('data-metric="quality"'):]
    section = section[:section.index("</table>")]
    row = next(r for r in re.findall(r"<tr class=\"interaction\">.*?</tr>", section, re.S)
               if "prune=prune.magnitude × recover=peft.lora" in r)
    # estimate ± stderr and the interval in one display unit, rounded to the stderr's place (as the CLI prints them)
    assert fmt(inter["estimate"], inter["stderr"], "fraction") in row and inter["estimate"] > 0.1  # LoRA recovers
    assert interval(inter["ci_low"], inter["ci_high"], "fraction", inter["stderr"]) in row and "&lt;0.001" in row
    assert f">{quality['n_obs']}<" in row
    assert "cluster-robust" in section and "n = 2400 observations over 8 cells" in section
    svg = section[section.index("<svg"):section.index("</svg>")]
    assert svg.count('class="est-dot"') == 6 and svg.count('class="ci"') == 6  # 3 main effects, 3 interactions
    assert 'class="zero"' in svg and "effect (fraction)" in svg
    assert 'data-metric="decode_tps"' in page  # the value-only metric too (WLS)


def test_effects_page_lists_missing_cells_and_order_effects(tmp_path: Path):
    from test_effects import write_grid

    db = tmp_path / "results.duckdb"
    write_grid(db, n_items=100, skip=((True, True, False),), fail=((True, True, True),))
    write_order_pair(db)
    page = (build_site(db, tmp_path / "site") / "effects.html").read_text()
    assert "prune=prune.magnitude, recover=peft.lora, quantize=none: no path in the run" in page
    assert "not estimable: the present cells cannot separate it" in page
    order = page[page.index('class="order-effects"'):]
    order = order[:order.index("</table>")]
    assert "prune.magnitude &gt; quant.int8" in order and "mcnemar-exact" in order and "&lt;0.001" in order


def test_no_grid_no_effects_link(site: Path):
    assert "effects.html" not in (site / "index.html").read_text()
    assert "No grid run yet" in (site / "effects.html").read_text()


def test_dag_draws_a_shared_node_once_with_an_edge_to_each_child(analysis_site: Path):
    page = (analysis_site / "dag.html").read_text()
    run = page[page.index('data-run="r1"'):]
    run = run[:run.index("</section>")]
    svg = run[run.index("<svg"):run.index("</svg>")]
    assert svg.count('data-node="pr"') == 1 and svg.count('data-node="src"') == 1
    assert svg.count('data-from="pr"') == 2 and 'data-to="q"' in svg and 'data-to="sft"' in svg
    assert svg.count('data-from="src"') == 3  # pr, slow, the hostile step: one edge each, pr drawn once
    assert re.search(r'<a class="dag-node" data-node="pr" data-paths="2" href="paths/p-fast.html">', svg)
    assert ">prune.wanda</text>" in svg and ">builtin:tiny-llama</text>" in svg
    assert '<a href="paths/p-fast.html">fast</a>, <a href="paths/p-pr-sft.html">pr-sft</a>' in run
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg


def test_path_page_trajectory_parity_and_breakeven(analysis_site: Path):
    page = (analysis_site / "paths" / "p-fast.html").read_text()
    traj = page[page.index('<table class="trajectory">'):]
    traj = traj[:traj.index("</table>")]
    assert ">0: base</th>" in traj and ">1: prune.wanda</th>" in traj and ">2: quant.int8</th>" in traj
    acc = next(r for r in traj.split("<tr>") if r.startswith("<td>quality/probe/acc</td>"))
    cells = re.findall(r'<td class="num">([^<]*) \(100\)</td>', acc)  # fractions shown as % (results.units)
    assert [c.split("±")[0].strip() for c in cells] == ["60.0", "50.0", "55.0"] and all(c.endswith("%") for c in cells)
    energy = next(r for r in traj.split("<tr>") if "decode_j_per_token" in r)
    assert energy.count("—") == 1  # not measured at the intermediate node
    multiples = page[page.index('<div class="multiples">'):]
    acc_svg = next(s for s in multiples.split("<svg")[1:] if "quality/probe/acc" in s.split("</title>")[0])
    assert acc_svg.count("<circle") == 3 and acc_svg.count('class="ci"') == 3 and 'class="traj"' in acc_svg
    parity = page[page.index('<table class="parity">'):]
    parity = parity[:parity.index("</table>")]
    assert all(m in parity for _, m, *_ in PARITY) and fmt(0.975, 0.0247, "fraction") in parity
    be = page[page.index('<table class="breakeven">'):]
    be = be[:be.index("</table>")]
    time_row = be[be.index('class="be-time"'):be.index('class="be-energy')]
    tokens = re.search(r'<td class="num tokens">([^<]*)</td>', time_row).group(1)  # 120 s / (1/20 - 1/25) s/token
    assert float(tokens.split("±")[0]) == pytest.approx(12000, rel=0.01) and tokens.endswith(" tokens")
    assert ">resolved" in time_row
    assert "120 s" in time_row and "s/token" in time_row
    assert "50.00 ± 0.35 ms/token" in time_row  # the base's 1/20 s per token, in the display unit of slm analyze
    assert re.search(r"\[1\d{4}, 1\d{4}\] tokens", time_row), time_row  # its interval rounded as slm analyze's
    energy_row = be[be.index('class="be-energy'):]
    energy_tokens = re.search(r'<td class="num tokens">~([^<]*)</td>', energy_row).group(1)  # 240 J / 0.1 J/token
    assert "be-energy est" in energy_row and float(energy_tokens.split("±")[0]) == pytest.approx(2400, rel=0.01)
    assert "delta method" in page
    slow = (analysis_site / "paths" / "p-slow.html").read_text()
    assert '<table class="trajectory">' not in slow and '<table class="parity">' not in slow  # nothing in between
    assert ">never" in slow[slow.index('<table class="breakeven">'):]
    assert '<table class="breakeven">' not in (analysis_site / "paths" / "p-base.html").read_text()


def test_overview_change_vs_base(analysis_site: Path):
    rows = _overview_rows(analysis_site)
    fast = rows["fast"]
    assert fast["base_path"] == "base"
    assert fast["quality_vs_base"]["text"] == "Δ -5.0 ± 2.8 pts"  # 0.55 vs 0.6, hypot(0.02, 0.02)
    assert "vs base path base" in fast["quality_vs_base"]["title"] and "retention 91.7%" in fast["quality_vs_base"]["title"]
    assert fast["decode_tps_vs_base"]["text"].startswith("×1.25 ± ")
    assert fast["energy_per_token_vs_base"]["text"].startswith("~×0.8")  # an estimate stays marked
    assert rows["base"]["base_path"] is None and rows["base"]["quality_vs_base"] is None
    assert rows["slow"]["quality_vs_base"] is None  # slow's quality not measured
    grid = rows["baseline"]  # the grid run's source was measured by no base path on its own...
    assert grid["base_path"] == "base"  # ...but shares the source node `src` with run r1's base path
    script = (analysis_site / "static" / "site.js").read_text()
    assert "addVsBase" in script and '"vs base —"' in script
    assert "\\u003cscript\\u003e" in (analysis_site / "index.html").read_text() and H2 == HOSTILE


def test_change_vs_base_is_a_dash_without_a_base_path(site: Path):
    rows = _overview_rows(site)
    assert all(r["base_path"] is None and r["quality_vs_base"] is None for r in rows.values())


def test_a_run_too_large_to_fit_during_a_build_is_named_not_fitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from analysis_builders import write_lifecycle

    from leaderboard import analysis

    monkeypatch.setattr(analysis, "MAX_GRID_PATHS", 3)
    write_lifecycle(tmp_path / "results.duckdb")
    page = (build_site(tmp_path / "results.duckdb", tmp_path / "site") / "effects.html").read_text()
    assert "Not analysed here: 5 paths, more than the 3" in page and "slm analyze effects --run r1" in page
    assert "<svg" not in page


def test_a_dag_too_large_to_draw_is_summarised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from analysis_builders import write_lifecycle

    from leaderboard import build

    monkeypatch.setattr(build, "MAX_DAG_NODES", 4)
    write_lifecycle(tmp_path / "results.duckdb")
    page = (build_site(tmp_path / "results.duckdb", tmp_path / "site") / "dag.html").read_text()
    assert "6 nodes: too many to draw" in page and "<svg" not in page and "6 nodes, 5 paths, 2 nodes shared" in page
