"""Small inline SVG charts for the analysis pages: a forest plot of effects, a line chart of a metric along a
path's chain, and the lifecycle DAG of a run.

Generated in Python as plain SVG text (no JavaScript library, so the pages work from ``file://``); every text
goes through :func:`html.escape`. Numbers on axes are rounded to the tick step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1) * 0.5, hi + (abs(hi) or 1) * 0.5
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    out = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        out.append(round(first + k * step, 12))
        k += 1
    if out and out[-1] < hi:
        out.append(round(first + k * step, 12))
    return out


def tick_label(v: float, unit: str = "") -> str:
    """A tick value with the unit's human scale (bytes in MiB)."""
    if unit == "bytes":
        return f"{v / 2**20:.4g} MiB" if v else "0"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.2g}" if a >= 1e5 or a < 1e-3 else f"{v:.4g}"


@dataclass
class Interval:
    """One row of a forest plot: a label, an estimate and its interval (None: not estimable / no interval)."""

    label: str
    estimate: float | None
    low: float | None = None
    high: float | None = None
    note: str = ""


def forest(rows: Sequence[Interval], unit: str, width: int = 640) -> str:
    """A forest plot: per row a dot at the estimate and a bar over its 95% interval, a zero line, x ticks with
    the unit. Rows without an estimate are listed with "not estimable" instead of a dot."""
    row_h, top, left, right, bottom = 22, 8, 320, 16, 36
    height = top + row_h * max(len(rows), 1) + bottom
    xs = [v for r in rows for v in (r.estimate, r.low, r.high) if v is not None and math.isfinite(v)] + [0.0]
    tv = ticks(min(xs), max(xs))
    lo, hi = (tv[0], tv[-1]) if tv else (-1.0, 1.0)
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (v - lo) / ((hi - lo) or 1) * plot_w

    out = [f'<svg class="chart forest" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>effects and 95% intervals ({escape(unit)})</title>']
    base = top + row_h * max(len(rows), 1)
    for t in tv:
        out.append(f'<line class="grid-line" x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{base}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{base + 14}" text-anchor="middle">'
                   f'{escape(tick_label(t, unit))}</text>')
    out.append(f'<line class="zero" x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{base}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>')
    out.append(f'<text class="label" x="{left + plot_w / 2:.1f}" y="{base + 30}">effect ({escape(unit)})</text>')
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        label = r.label if len(r.label) <= 50 else r.label[:49] + "…"
        out.append(f'<text class="tick end" x="{left - 6}" y="{y + 4:.1f}"><title>{escape(r.label)}</title>'
                   f"{escape(label)}</text>")
        if r.estimate is None:
            out.append(f'<text class="tick na" x="{left + 4}" y="{y + 4:.1f}">{escape(r.note or "not estimable")}</text>')
            continue
        tip = f"{r.label}: {tick_label(r.estimate)}"
        if r.low is not None and r.high is not None:
            out.append(f'<line class="ci" x1="{x(r.low):.1f}" y1="{y:.1f}" x2="{x(r.high):.1f}" y2="{y:.1f}"/>')
            tip += f" [{tick_label(r.low)}, {tick_label(r.high)}] 95% CI"
        else:
            tip += " (no interval)"
        out.append(f'<circle class="est-dot" cx="{x(r.estimate):.1f}" cy="{y:.1f}" r="4">'
                   f"<title>{escape(tip)}</title></circle>")
    out.append("</svg>")
    return "".join(out)


@dataclass
class Point:
    """One measured node on a trajectory: its position in the chain, label, value and stderr (None: none)."""

    position: int
    label: str
    value: float | None
    stderr: float | None = None
    estimate: bool = False


def line(points: Sequence[Point], title: str, unit: str, n_positions: int, width: int = 240,
         height: int = 140) -> str:
    """A tiny line chart of one metric along a chain (x: position, base first) with ±1 stderr error bars; nodes
    not measured are gaps."""
    left, right, top, bottom = 46, 10, 20, 30
    pts = [p for p in points if p.value is not None and math.isfinite(p.value)]
    ys = [v for p in pts for v in (p.value - (p.stderr or 0), p.value + (p.stderr or 0))]  # type: ignore[operator]
    tv = ticks(min(ys), max(ys), 4) if ys else []
    lo, hi = (tv[0], tv[-1]) if tv else (0.0, 1.0)
    pw, ph = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (i / max(n_positions - 1, 1)) * pw

    def y(v: float) -> float:
        return top + ph - (v - lo) / ((hi - lo) or 1) * ph

    out = [f'<svg class="chart spark" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)} ({escape(unit)})</title>',
           f'<text class="label" x="{width / 2:.0f}" y="12">{escape(title)}</text>']
    for t in tv:
        out.append(f'<line class="grid-line" x1="{left}" y1="{y(t):.1f}" x2="{width - right}" y2="{y(t):.1f}"/>'
                   f'<text class="tick end" x="{left - 4}" y="{y(t) + 3:.1f}">{escape(tick_label(t, unit))}</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}"/>')
    for i in range(n_positions):
        out.append(f'<text class="tick" x="{x(i):.1f}" y="{top + ph + 13}" text-anchor="middle">{i}</text>')
    out.append(f'<text class="tick" x="{left + pw / 2:.0f}" y="{height - 3}" text-anchor="middle">'
               f"step (0 = base) · {escape(unit)}</text>")
    segs = []
    for a, b in zip(pts, pts[1:], strict=False):
        if b.position == a.position + 1:
            segs.append(f"M{x(a.position):.1f},{y(a.value):.1f}L{x(b.position):.1f},{y(b.value):.1f}")  # type: ignore[arg-type]
    if segs:
        out.append(f'<path class="traj" d="{"".join(segs)}"/>')
    for p in pts:
        assert p.value is not None
        if p.stderr:
            out.append(f'<line class="ci" x1="{x(p.position):.1f}" y1="{y(p.value - p.stderr):.1f}" '
                       f'x2="{x(p.position):.1f}" y2="{y(p.value + p.stderr):.1f}"/>')
        tip = f"{p.position}: {p.label}: {'~' if p.estimate else ''}{tick_label(p.value)}"
        tip += f" ± {tick_label(p.stderr)}" if p.stderr else ""
        out.append(f'<circle class="est-dot{" est" if p.estimate else ""}" cx="{x(p.position):.1f}" '
                   f'cy="{y(p.value):.1f}" r="3"><title>{escape(tip)} {escape(unit)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


@dataclass
class DagNode:
    """A node of a run's lifecycle DAG: its hash, depth (step index), label and the paths through it."""

    node_hash: str
    depth: int
    label: str
    parent: str | None
    paths: list[tuple[str, str]] = field(default_factory=list)  # (path name, page href)
    failed: bool = False


def dag(nodes: dict[str, DagNode], width_per_col: int = 190, row_h: int = 34) -> str:
    """The DAG laid out by depth (column = step index): a node shared by several paths is drawn once, with an edge
    to each child; leaves take consecutive rows and a parent sits at the mean of its children's rows."""
    children: dict[str | None, list[str]] = {}
    for h, n in nodes.items():
        children.setdefault(n.parent if n.parent in nodes else None, []).append(h)
    for v in children.values():
        v.sort(key=lambda h: (nodes[h].label, h))
    row: dict[str, float] = {}
    counter = [0]

    def place(h: str) -> float:
        kids = children.get(h, [])
        if not kids:
            row[h] = float(counter[0])
            counter[0] += 1
        else:
            ys = [place(k) for k in kids]
            row[h] = sum(ys) / len(ys)
        return row[h]

    for root in children.get(None, []):
        place(root)
    depth = max((n.depth for n in nodes.values()), default=0)
    box_w, box_h, pad = 150, 24, 10
    width = pad * 2 + (depth + 1) * width_per_col
    height = pad * 2 + max(counter[0], 1) * row_h

    def xy(h: str) -> tuple[float, float]:
        return pad + nodes[h].depth * width_per_col, pad + row[h] * row_h

    out = [f'<svg class="chart dag" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>lifecycle DAG</title>']
    for h, n in nodes.items():
        if n.parent in nodes:
            px, py = xy(n.parent)  # type: ignore[arg-type]
            cx, cy = xy(h)
            out.append(f'<path class="edge" data-from="{escape(n.parent or "")}" data-to="{escape(h)}" '
                       f'd="M{px + box_w:.1f},{py + box_h / 2:.1f} C{px + box_w + 20:.1f},{py + box_h / 2:.1f} '
                       f'{cx - 20:.1f},{cy + box_h / 2:.1f} {cx:.1f},{cy + box_h / 2:.1f}"/>')
    for h, n in nodes.items():
        x, y = xy(h)
        label = n.label if len(n.label) <= 22 else n.label[:21] + "…"
        tip = f"{n.label} ({h[:12]}); paths: {', '.join(name for name, _ in n.paths) or '—'}"
        body = (f'<rect class="node{" failed" if n.failed else ""}" x="{x:.1f}" y="{y:.1f}" width="{box_w}" '
                f'height="{box_h}" rx="4"/><text class="node-label" x="{x + 6:.1f}" y="{y + 16:.1f}">'
                f"{escape(label)}</text><title>{escape(tip)}</title>")
        href = n.paths[0][1] if n.paths else None
        attrs = f'class="dag-node" data-node="{escape(h)}" data-paths="{len(n.paths)}"'
        out.append(f'<a {attrs} href="{escape(href)}">{body}</a>' if href else f"<g {attrs}>{body}</g>")
    out.append("</svg>")
    return "".join(out)


def fmt_ci(low: Any, high: Any) -> str:
    """``[low, high]`` or an em dash."""
    if low is None or high is None:
        return "—"
    return f"[{tick_label(float(low))}, {tick_label(float(high))}]"
