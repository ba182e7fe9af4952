"""Pareto plots a person reads: round ticks in display units, error bars, labels, a frontier that respects the
uncertainty, and unresolved numbers left out with a note."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest

from leaderboard.pareto import Point, dominates, frontier, nice_ticks, resolved_frontier, svg

NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("lo,hi,ticks", [
    (0.27, 0.63, [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]),
    (548.2, 612.7, [550, 560, 570, 580, 590, 600, 610]),
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (-3.2, 17.9, [0, 4, 8, 12, 16]),
    (2.9, 5.6, [3.0, 3.5, 4.0, 4.5, 5.0, 5.5]),
])
def test_nice_ticks(lo, hi, ticks):
    got = nice_ticks(lo, hi)
    assert got == pytest.approx(ticks) and 5 <= len(got) <= 7


def _svg_tree(text: str) -> ET.Element:
    body = text[text.index("<svg"):text.index("</svg>") + 6].replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return ET.fromstring(body)


def test_plot_has_ticks_in_display_units_error_bars_and_labels():
    pts = [Point(1.12e9, 0.50, "base", "p/base.html", 2.0e6, 0.02), Point(0.60e9, 0.45, "int8", "p/int8.html",
                                                                            1.0e6, 0.02)]
    text = svg(pts, "peak RSS", "quality", x_unit="bytes", y_unit="fraction")
    root = _svg_tree(text)
    labels = [t.text for t in root.iter(f"{NS}text") if "label" == t.get("class")]
    assert labels == ["peak RSS (MiB), lower is better", "quality (%)"]  # units a person reads, not bytes and fractions
    xticks = [float(t.text) for t in root.iter(f"{NS}text") if "xtick" in (t.get("class") or "")]
    yticks = [float(t.text) for t in root.iter(f"{NS}text") if "ytick" in (t.get("class") or "")]
    assert 5 <= len(xticks) <= 7 and 5 <= len(yticks) <= 7
    assert xticks == [600, 700, 800, 900, 1000]  # MiB (the points: 572 and 1068 MiB)
    assert all(40 <= y <= 55 for y in yticks)  # percent
    steps = {round(b - a, 9) for a, b in zip(xticks, xticks[1:], strict=False)}
    assert len(steps) == 1  # evenly spaced
    assert len([e for e in root.iter(f"{NS}line") if "xerr" in (e.get("class") or "")]) == 2
    assert len([e for e in root.iter(f"{NS}line") if "yerr" in (e.get("class") or "")]) == 2
    titles = [t.text for t in root.iter(f"{NS}title")]
    assert "base: 50.0 ± 2.0 %, 1068.1 ± 1.9 MiB (on the frontier)" in titles
    assert [t.text for t in root.iter(f"{NS}text") if t.get("class") == "ptlabel"] == ["base", "int8"]


def test_no_error_bar_without_a_stderr():
    text = svg([Point(1.0, 0.5, "a", "a.html"), Point(2.0, 0.6, "b", "b.html")], "t", "q", x_unit="s")
    assert 'class="err' not in text


def test_frontier_does_not_claim_dominance_within_the_noise():
    # b is cheaper and a bit better than a by point estimate, but the intervals overlap on both axes: a cannot
    # be separated from the frontier. c is worse beyond the noise on both axes: dominated.
    a = Point(7.5, 0.32, "a", "", 0.1, 0.02)
    b = Point(6.2, 0.325, "b", "", 2.2, 0.02)
    c = Point(20.0, 0.20, "c", "", 1.0, 0.01)
    pts = [a, b, c]
    assert frontier(pts) == [1]
    assert not dominates(b, a) and dominates(b, c) and dominates(a, c)
    assert resolved_frontier(pts) == [1, 0]
    text = svg(pts, "energy", "quality", x_unit="J/token", y_unit="fraction")
    assert len(re.findall(r'class="pt front"', text)) == 1 and len(re.findall(r'class="pt tie"', text)) == 1
    assert "cannot be separated from the frontier" in text
    # the same points with tiny errors: b dominates a, no ring
    sharp = [Point(p.x, p.y, p.label, "", 0.01, 0.001) for p in pts]
    assert resolved_frontier(sharp) == frontier(sharp) == [1]


@pytest.mark.parametrize("x_higher_is_better", [False, True])
def test_resolved_frontier_equals_the_pairwise_definition(x_higher_is_better: bool):
    """The sorted-scan frontier keeps exactly the points no other point dominates (:func:`dominates`, pair by
    pair), on random clouds with tied values, zero and missing errors."""
    rng = random.Random(5)
    for trial in range(300):
        n = rng.randint(1, 40)
        grid = rng.choice([None, 4, 10])  # coarse values make ties on x, on y, and equal points

        def v(grid: int | None = grid) -> float:
            return rng.randint(0, grid) / grid if grid else rng.random()

        pts = [Point(v(), v(), str(i), "", rng.choice([None, 0.0, rng.random() * 0.1]),
                     rng.choice([None, 0.0, rng.random() * 0.1])) for i in range(n)]
        pairwise = sorted((i for i, p in enumerate(pts)
                           if not any(dominates(q, p, x_higher_is_better) for j, q in enumerate(pts) if j != i)),
                          key=lambda i: pts[i].x)
        assert resolved_frontier(pts, x_higher_is_better) == pairwise, trial


def test_an_unresolved_estimate_is_left_out_with_a_note():
    pts = [Point(0.0075, 0.32, "ok", "ok.html", 0.0001, 0.02),
           Point(-0.002, 0.40, "negative", "n.html", 0.001, 0.02),  # below 0: not a physical energy
           Point(0.001, 0.38, "noisy", "z.html", 0.002, 0.02),  # positive, but its interval includes 0
           Point(0.004, 0.39, "bound", "b.html", 0.0001, 0.02, unresolved="only an upper bound")]
    text = svg(pts, "energy", "quality", x_unit="J/token", y_unit="fraction")
    plot, note = text[:text.index("</svg>")], text[text.index("</svg>"):]
    for name in ("negative", "noisy", "bound"):
        assert f"{name}.html" not in plot and f"{name}:" not in plot and name in note
    assert "-2.0 ± 1.0 mJ/token" in note and "only an upper bound" in note
    assert 'class="pt front"' in plot  # the resolved point is the frontier, not the negative one
    only_bad = svg(pts[1:2], "energy", "quality", x_unit="J/token")
    assert "<svg" not in only_bad and "negative" in only_bad
