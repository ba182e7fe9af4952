"""Pareto frontiers and their inline SVG plots (no plotting library: the site must be self-contained)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """One path in a quality-vs-cost plot."""

    x: float  # the cost (latency, memory, energy): lower is better unless ``x_higher_is_better``
    y: float  # quality: higher is better
    label: str
    href: str


def frontier(points: list[Point], x_higher_is_better: bool = False) -> list[int]:
    """Indices of the non-dominated points (no other point is at least as good on both axes and better on
    one), in order of x. A sweep from the best x keeps each point that beats every better-x point's quality."""
    sign = -1.0 if x_higher_is_better else 1.0
    order = sorted(range(len(points)), key=lambda i: (sign * points[i].x, -points[i].y))
    out: list[int] = []
    best = -math.inf
    for i in order:
        if points[i].y > best:
            out.append(i)
            best = points[i].y
    return sorted(out, key=lambda i: points[i].x)


def svg(points: list[Point], x_label: str, y_label: str, x_higher_is_better: bool = False,
        width: int = 640, height: int = 400) -> str:
    """A scatter plot with the frontier drawn as a line and frontier points highlighted; each point links
    to its path page and has a tooltip. All text is escaped."""
    pts = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    if not pts:
        return '<p class="empty">No path has both numbers yet.</p>'
    front = set(frontier(pts, x_higher_is_better))
    pad = 56
    x0, x1 = _range([p.x for p in pts])
    y0, y1 = _range([p.y for p in pts])

    def sx(v: float) -> float:
        return pad + (v - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(v: float) -> float:
        return height - pad - (v - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [f'<svg class="pareto" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>',
             f'<text x="{width / 2}" y="{height - 12}" class="label">{html.escape(x_label)}</text>',
             f'<text x="14" y="{height / 2}" class="label" transform="rotate(-90 14 {height / 2})">'
             f'{html.escape(y_label)}</text>',
             f'<text x="{pad}" y="{height - pad + 16}" class="tick">{_fmt(x0)}</text>',
             f'<text x="{width - pad}" y="{height - pad + 16}" class="tick">{_fmt(x1)}</text>',
             f'<text x="{pad - 6}" y="{height - pad}" class="tick end">{_fmt(y0)}</text>',
             f'<text x="{pad - 6}" y="{pad + 4}" class="tick end">{_fmt(y1)}</text>']
    line = " ".join(f"{sx(pts[i].x):.1f},{sy(pts[i].y):.1f}" for i in frontier(pts, x_higher_is_better))
    parts.append(f'<polyline points="{line}" class="frontier"/>')
    for i, p in enumerate(pts):
        cls = "pt front" if i in front else "pt"
        parts.append(f'<a href="{html.escape(p.href)}"><circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="6" '
                     f'class="{cls}"><title>{html.escape(p.label)} ({_fmt(p.x)}, {_fmt(p.y)})</title></circle></a>')
    parts.append("</svg>")
    return "".join(parts)


def _range(vals: list[float]) -> tuple[float, float]:
    lo, hi = min(vals), max(vals)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    span = hi - lo
    return lo - 0.05 * span, hi + 0.05 * span


def _fmt(v: float) -> str:
    return f"{v:.3g}"
