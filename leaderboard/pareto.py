"""Pareto frontiers and their inline SVG plots (no plotting library and no script: the site must be self-contained
and work from ``file://``).

A plot shows quality against one cost, each path a point with ±1 standard-error bars on both axes where known,
axes with 5-7 round ticks in units a person reads (:mod:`results.units`), and the frontier. Uncertainty decides
dominance: a path is dominated only by one that is at least as good on both axes and better on one by more than
the noise (the 95% intervals, ±1.96 standard errors, do not overlap). Points on the point-estimate frontier are
filled; points that no path dominates beyond the noise but that lie off that frontier are drawn as rings ("cannot
be separated from the frontier"). A value that is not resolved (an upper bound, or a cost that must be positive
whose 95% interval reaches 0 or below, like an energy estimate under its noise) is left out, with a note.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

from results.units import scale_for

Z95 = 1.96  # standard errors either side of a value: its 95% interval (normal approximation)


@dataclass(frozen=True)
class Point:
    """One path in a quality-vs-cost plot.

    Attributes:
        x: the cost (latency, memory, energy): lower is better unless ``x_higher_is_better``.
        y: quality: higher is better.
        label: the path's name.
        href: its page.
        x_err, y_err: the standard errors (None: unknown).
        unresolved: why ``x`` is not a value to plot (e.g. only an upper bound); None when it is one.
    """

    x: float
    y: float
    label: str
    href: str
    x_err: float | None = None
    y_err: float | None = None
    unresolved: str | None = None


def frontier(points: list[Point], x_higher_is_better: bool = False) -> list[int]:
    """Indices of the non-dominated points by point estimate (no other point is at least as good on both axes and
    better on one), in order of x. A sweep from the best x keeps each point that beats every better-x point."""
    sign = -1.0 if x_higher_is_better else 1.0
    order = sorted(range(len(points)), key=lambda i: (sign * points[i].x, -points[i].y))
    out: list[int] = []
    best = -math.inf
    for i in order:
        if points[i].y > best:
            out.append(i)
            best = points[i].y
    return sorted(out, key=lambda i: points[i].x)


def _clearly_better(a: float, a_err: float | None, b: float, b_err: float | None, higher: bool) -> bool:
    """Whether ``a`` beats ``b`` beyond the noise: their 95% intervals do not overlap (no stderr: zero width)."""
    sa, sb = Z95 * (a_err or 0.0), Z95 * (b_err or 0.0)
    return a - sa > b + sb if higher else a + sa < b - sb


def dominates(q: Point, p: Point, x_higher_is_better: bool = False) -> bool:
    """Whether ``q`` dominates ``p`` beyond the noise: at least as good on both axes (point estimates) and
    better on one with separated 95% intervals."""
    sx = -1.0 if x_higher_is_better else 1.0
    if sx * q.x > sx * p.x or q.y < p.y:
        return False
    return (_clearly_better(q.x, q.x_err, p.x, p.x_err, x_higher_is_better)
            or _clearly_better(q.y, q.y_err, p.y, p.y_err, True))


def resolved_frontier(points: list[Point], x_higher_is_better: bool = False) -> list[int]:
    """Indices of the points that no other point dominates beyond the noise (:func:`dominates`), in order of x:
    the point-estimate frontier plus the points that cannot be separated from it.

    In O(n log n) instead of testing every pair: with ``u`` the cost signed so that lower is better, ``q``
    dominates ``p`` exactly when (a) ``u_q <= u_p`` and ``q``'s 95% interval of quality lies above ``p``'s, or
    (b) ``y_q >= y_p`` and ``q``'s 95% interval of cost lies below ``p``'s (each clear separation implies the
    weak inequality on its own axis). So a point is dominated when the best lower quality bound among the points
    of no greater cost beats its upper one, or the best upper cost bound among the points of no lower quality
    beats its lower one: two sorted prefix scans. A point never passes its own test (errors are >= 0)."""
    sx = -1.0 if x_higher_is_better else 1.0
    u = [sx * p.x for p in points]
    xe = [Z95 * (p.x_err or 0.0) for p in points]
    ye = [Z95 * (p.y_err or 0.0) for p in points]
    y_low = _prefix_best(u, [p.y - e for p, e in zip(points, ye, strict=True)], max)
    u_high = _prefix_best([-p.y for p in points], [a + e for a, e in zip(u, xe, strict=True)], min)
    keep = [i for i, p in enumerate(points) if not (y_low[i] > p.y + ye[i] or u_high[i] < u[i] - xe[i])]
    return sorted(keep, key=lambda i: points[i].x)


def _prefix_best(keys: list[float], values: list[float], pick: Callable[[float, float], float]) -> list[float]:
    """Per index i: ``pick`` over the values of every index j with ``keys[j] <= keys[i]`` (ties included)."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    out = [0.0] * len(keys)
    start, best = 0, None
    while start < len(order):
        end = start
        while end < len(order) and keys[order[end]] == keys[order[start]]:
            end += 1
        for j in order[start:end]:
            best = values[j] if best is None else pick(best, values[j])
        for j in order[start:end]:
            out[j] = best  # type: ignore[assignment]
        start = end
    return out


def unresolved_reason(p: Point, x_must_be_positive: bool = True) -> str | None:
    """Why ``p``'s cost is not a value to plot, or None. ``x_must_be_positive``: a cost below or at 0 is not
    physical (energy, time, memory), so a 95% interval that reaches 0 means the measurement did not resolve it."""
    if p.unresolved:
        return p.unresolved
    if not (math.isfinite(p.x) and math.isfinite(p.y)):
        return "not a finite number"
    if x_must_be_positive and p.x - Z95 * (p.x_err or 0.0) <= 0:
        return "its 95% interval reaches 0 or below: not resolved from its noise"
    return None


def nice_ticks(lo: float, hi: float, want: tuple[int, int] = (5, 7)) -> list[float]:
    """Round tick values covering ``[lo, hi]``: a step of 1, 2, 2.5, 4 or 5 times a power of ten that gives between
    ``want`` ticks inside the range where one does (else the count closest to 6)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    span = hi - lo
    best: tuple[float, list[float]] | None = None
    base = 10 ** math.floor(math.log10(span / 6))
    for rank, mults in enumerate(((1, 2, 5), (2.5,), (4,))):  # the roundest steps first
        for mult in mults:
            for power in (0.1, 1, 10):
                step = base * mult * power
                first = math.ceil(lo / step - 1e-9)
                ticks = [_clean((first + k) * step, step)
                         for k in range(int(math.floor(hi / step + 1e-9)) - first + 1)]
                score = rank if want[0] <= len(ticks) <= want[1] else 10 + abs(len(ticks) - 6)
                if best is None or score < best[0]:
                    best = (score, ticks)
    assert best is not None
    return best[1]


def _clean(v: float, step: float) -> float:
    places = max(0, -math.floor(math.log10(step)) + 2)
    return round(v, places) + 0.0


def _tick_text(v: float, ticks: list[float]) -> str:
    """A tick's label with as many decimals as its step needs (0.25 -> 2, 2.5 -> 1, 25 -> 0)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    exp = math.floor(math.log10(step) + 1e-9)
    quarter = round(step / 10**exp, 6) == 2.5
    return f"{v + 0.0:.{max(0, -exp + quarter)}f}"


@dataclass(frozen=True)
class Axis:
    """An axis in display units: the scale's factor, its label and the data range shown."""

    factor: float
    unit: str
    lo: float
    hi: float
    ticks: list[float]


def _axis(values: list[float], errs: list[float], unit: str | None) -> Axis:
    scale = scale_for(unit, max(abs(v) for v in values))
    lows = [(v - e) / scale.factor for v, e in zip(values, errs, strict=True)]
    highs = [(v + e) / scale.factor for v, e in zip(values, errs, strict=True)]
    lo, hi = min(lows), max(highs)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    ticks = nice_ticks(lo, hi)
    return Axis(scale.factor, scale.label, lo, hi, ticks)


def svg(points: list[Point], x_label: str, y_label: str, x_higher_is_better: bool = False,
        x_unit: str | None = None, y_unit: str | None = None, width: int = 640, height: int = 420) -> str:
    """The plot (see the module docstring) as inline SVG, followed by a note naming the points left out; each
    point links to its path page and has a tooltip (``<title>``) with its values. All text is escaped."""
    kept, left_out = [], []
    for p in points:
        why = unresolved_reason(p)
        (left_out.append((p, why)) if why else kept.append(p))
    note = _note(left_out, x_unit)
    if not kept:
        return '<p class="empty">No path has both numbers resolved yet.</p>' + note
    xa = _axis([p.x for p in kept], [p.x_err or 0.0 for p in kept], x_unit)
    ya = _axis([p.y for p in kept], [p.y_err or 0.0 for p in kept], y_unit)
    left, right, top, bottom = 64, 16, 16, 52
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v / xa.factor - xa.lo) / (xa.hi - xa.lo) * pw

    def sy(v: float) -> float:
        return top + ph - (v / ya.factor - ya.lo) / (ya.hi - ya.lo) * ph

    xl = (f"{x_label} ({xa.unit})" if xa.unit else x_label) + f", {'higher' if x_higher_is_better else 'lower'} is better"
    yl = f"{y_label} ({ya.unit})" if ya.unit else y_label
    parts = [f'<svg class="pareto" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>',
             f'<text x="{left + pw / 2}" y="{height - 8}" class="label">{html.escape(xl)}</text>',
             f'<text x="14" y="{top + ph / 2}" class="label" transform="rotate(-90 14 {top + ph / 2})">'
             f'{html.escape(yl)}</text>']
    for t in xa.ticks:
        x = left + (t - xa.lo) / (xa.hi - xa.lo) * pw
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 16}" class="tick xtick">{_tick_text(t, xa.ticks)}</text>')
    for t in ya.ticks:
        y = top + ph - (t - ya.lo) / (ya.hi - ya.lo) * ph
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick ytick end">{_tick_text(t, ya.ticks)}</text>')
    front = frontier(kept, x_higher_is_better)
    near = set(resolved_frontier(kept, x_higher_is_better)) - set(front)
    line = " ".join(f"{sx(kept[i].x):.1f},{sy(kept[i].y):.1f}" for i in front)
    parts.append(f'<polyline points="{line}" class="frontier"/>')
    for i, p in enumerate(kept):
        parts.append(_point(p, sx, sy, "pt front" if i in front else "pt tie" if i in near else "pt",
                            x_unit, y_unit, len(kept) <= 12, flip=sx(p.x) > width - 140))
    parts.append("</svg>")
    return "".join(parts) + note


def _point(p: Point, sx: Callable[[float], float], sy: Callable[[float], float], cls: str, x_unit: str | None,
           y_unit: str | None, labelled: bool, flip: bool = False) -> str:
    from results.units import quantity

    cx, cy = sx(p.x), sy(p.y)
    out = []
    if p.x_err:
        out.append(f'<line x1="{sx(p.x - p.x_err):.1f}" y1="{cy:.1f}" x2="{sx(p.x + p.x_err):.1f}" y2="{cy:.1f}" '
                   'class="err xerr"/>')
    if p.y_err:
        out.append(f'<line x1="{cx:.1f}" y1="{sy(p.y - p.y_err):.1f}" x2="{cx:.1f}" y2="{sy(p.y + p.y_err):.1f}" '
                   'class="err yerr"/>')
    state = {"pt front": "on the frontier", "pt tie": "cannot be separated from the frontier within its "
             "uncertainty", "pt": "dominated beyond the noise"}[cls]
    tip = f"{p.label}: {quantity(p.y, p.y_err, y_unit)}, {quantity(p.x, p.x_err, x_unit)} ({state})"
    out.append(f'<a href="{html.escape(p.href)}"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" class="{cls}">'
               f'<title>{html.escape(tip)}</title></circle></a>')
    if labelled:  # right of the point; left of it near the right edge (``flip``), so it is not cut off
        anchor = ' text-anchor="end"' if flip else ""
        out.append(f'<text x="{cx - 8 if flip else cx + 8:.1f}" y="{cy - 6:.1f}" class="ptlabel"{anchor}>'
                   f'{html.escape(p.label[:40])}</text>')
    return "".join(out)


def _note(left_out: list[tuple[Point, str]], x_unit: str | None) -> str:
    if not left_out:
        return ""
    from results.units import quantity

    items = "; ".join(f"{html.escape(p.label)} ({html.escape(quantity(p.x, p.x_err, x_unit))}: {html.escape(why)})"
                      for p, why in left_out)
    return f'<p class="note plot-note">Not plotted: {items}.</p>'
