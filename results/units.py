"""Numbers in units a person reads: ``7.13 ± 0.24 ms``, ``1076.30 ± 0.27 MiB``, ``6.2 ± 2.2 mJ/token``.

A value and its standard error are shown in the same display unit, chosen from the larger of the two
magnitudes (seconds as ns/µs/ms/s/min/h, bytes as B/KiB/MiB/GiB/TiB, energy as µJ/mJ/J/kJ/kWh, rates with
SI prefixes, fractions and ratios as %). The uncertainty keeps one or two significant digits by the Particle
Data Group's rule (two when its three leading digits are 100-354, one for 355-949, and 950-999 round up to
two digits of the next power of ten) and the value is rounded to the same decimal place. Without an
uncertainty the value keeps four significant digits (trailing zeros dropped).

The same rules exist in SQL (:func:`sql_quantity`, for the site's metric tables built by DuckDB) and in
``leaderboard/static/site.js`` (``fmtQ``); tests check that they agree.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple


class Scale(NamedTuple):
    """A display unit: used from ``at`` (in the stored unit) upwards, ``factor`` stored units per display unit."""

    at: float
    factor: float
    label: str


def _si(unit: str, sep: str = "", small: bool = True) -> tuple[Scale, ...]:
    low = (Scale(0, 1e-9, f"n{sep}{unit}"), Scale(1e-6, 1e-6, f"µ{sep}{unit}"),
           Scale(1e-3, 1e-3, f"m{sep}{unit}")) if small else (Scale(0, 1, unit),)
    return low + (Scale(1, 1, unit), Scale(1e4, 1e3, f"k{sep}{unit}"), Scale(1e6, 1e6, f"M{sep}{unit}"),
                  Scale(1e9, 1e9, f"G{sep}{unit}"), Scale(1e12, 1e12, f"T{sep}{unit}"))


_BINARY = (Scale(0, 1, "B"), Scale(10 * 2**10, 2**10, "KiB"), Scale(10 * 2**20, 2**20, "MiB"),
           Scale(10 * 2**30, 2**30, "GiB"), Scale(10 * 2**40, 2**40, "TiB"))
_PERCENT = (Scale(0, 0.01, "%"),)

#: stored unit -> its display units, ascending. Units not listed are shown as stored, unscaled.
_SECONDS = (Scale(0, 1e-9, "ns"), Scale(1e-6, 1e-6, "µs"), Scale(1e-3, 1e-3, "ms"), Scale(1, 1, "s"))
SCALES: dict[str, tuple[Scale, ...]] = {
    "s": (*_SECONDS, Scale(600, 60, "min"), Scale(36000, 3600, "h")),
    "s/token": tuple(Scale(s.at, s.factor, f"{s.label}/token") for s in _SECONDS),
    "bytes": _BINARY,
    "byte": _BINARY,
    "bytes/s": tuple(Scale(s.at, s.factor, f"{s.label}/s") for s in _BINARY),
    "J": (Scale(0, 1e-6, "µJ"), Scale(1e-3, 1e-3, "mJ"), Scale(1, 1, "J"), Scale(1e4, 1e3, "kJ"),
          Scale(3.6e5, 3.6e6, "kWh")),
    "J/token": (Scale(0, 1e-6, "µJ/token"), Scale(1e-3, 1e-3, "mJ/token"), Scale(1, 1, "J/token")),
    "W": (Scale(0, 1e-3, "mW"), Scale(1, 1, "W"), Scale(1e4, 1e3, "kW")),
    "tokens/s": _si("tokens/s", sep=" ", small=False),
    "FLOP/s": _si("FLOP/s", small=False),
    "count": tuple(Scale(s.at, s.factor, s.label.strip()) for s in _si("", sep=" ", small=False)),
    "fraction": _PERCENT,
    "ratio": _PERCENT,
    "x": (Scale(0, 1, "×"),),
}


def scale_for(unit: str | None, magnitude: float) -> Scale:
    """The display unit for numbers of ``magnitude`` (stored units) in ``unit``; unscaled for unknown units."""
    scales = SCALES.get(unit or "")
    if not scales:
        return Scale(0, 1, unit or "")
    if magnitude == 0:  # a zero in the unit itself (0 s, not 0 ns)
        return next((s for s in scales if s.factor == 1), scales[0])
    chosen = scales[0]
    for s in scales:
        if magnitude >= s.at:
            chosen = s
    return chosen


def decimals(stderr: float) -> int:
    """Decimal places that keep one or two significant digits of a positive ``stderr`` (PDG rule); negative
    when the uncertainty's digits lie left of the decimal point (round to tens, hundreds ...)."""
    exp = math.floor(math.log10(stderr))
    lead = round(stderr / 10 ** (exp - 2))  # the three leading digits, 100..1000
    if lead >= 1000:  # 9.96 -> 1000 after rounding: the next power of ten
        exp, lead = exp + 1, 100
    if lead >= 950:
        return -exp  # rounds up to 10^(exp+1): two digits of that, i.e. one decimal more than exp+1's
    digits = 2 if lead <= 354 else 1
    return digits - 1 - exp


def _round(v: float, places: int) -> float:
    """Half away from zero, computed as DuckDB's ``round`` and the site's script compute it (so the three agree)."""
    if places >= 0:
        r = math.copysign(math.floor(abs(v) * 10**places + 0.5), v) / 10**places
    else:
        r = math.copysign(math.floor(abs(v) / 10**-places + 0.5), v) * 10**-places
    return r + 0.0  # no "-0.0"


def fixed(v: float, places: int) -> str:
    """``v`` rounded half away from zero to ``places`` decimals (tens, hundreds ... when negative), as text."""
    return f"{_round(v, places):.{max(places, 0)}f}"


def _sig(v: float) -> str:
    return f"{v + 0.0:.4g}"


class Parts(NamedTuple):
    """A quantity's texts: the value and the stderr (None without one), both in the display ``unit``."""

    value: str
    stderr: str | None
    unit: str


def parts(value: float, stderr: float | None = None, unit: str | None = None) -> Parts:
    """The value and stderr texts of :func:`quantity`, and their display unit."""
    se = stderr if stderr is not None and math.isfinite(stderr) else None
    magnitude = max(abs(value), abs(se) if se is not None else 0.0)
    scale = scale_for(unit, magnitude)
    v = value / scale.factor
    if se is None:
        return Parts(_sig(v), None, scale.label)
    if se == 0:
        return Parts(_sig(v), "0", scale.label)
    s = abs(se) / scale.factor
    places = decimals(s)
    return Parts(fixed(v, places), fixed(s, places), scale.label)


def quantity(value: float, stderr: float | None = None, unit: str | None = None) -> str:
    """``value ± stderr`` in a display unit of ``unit`` (see the module docstring); no ``±`` without a finite
    stderr. ``quantity(0.007134, 0.000235, "s") == "7.13 ± 0.24 ms"``."""
    p = parts(value, stderr, unit)
    text = p.value if p.stderr is None else f"{p.value} ± {p.stderr}"
    return f"{text} {p.unit}" if p.unit else text


def _suffix(label: str) -> str:
    return f"' {label}'" if label else "''"


_REF = re.compile(r"\{(q_[a-z]+)\}")


def _sql_stages(value: str, stderr: str, unit: str) -> tuple[list[tuple[str, str]], Parts]:
    """The SQL of :func:`parts` as named intermediate columns, in order, each referring to earlier ones as
    ``{q_name}``, and the three texts over them. :func:`sql_parts` inlines them; :func:`sql_parts_select`
    computes each once per row (inlined, the display unit's CASE is repeated a dozen times per row)."""
    factor, label = [], []
    for name, scales in SCALES.items():
        unit_scale = scale_for(name, 0)
        factor.append(f"WHEN {unit} = '{name}' AND {{q_mag}} = 0 THEN {unit_scale.factor!r}")
        label.append(f"WHEN {unit} = '{name}' AND {{q_mag}} = 0 THEN {_suffix(unit_scale.label)}")
        for sc in reversed(scales):
            cond = f"{unit} = '{name}' AND {{q_mag}} >= {sc.at!r}"
            factor.append(f"WHEN {cond} THEN {sc.factor!r}")
            label.append(f"WHEN {cond} THEN {_suffix(sc.label)}")
    stages = [
        ("q_se", f"CASE WHEN isfinite({stderr}) THEN abs({stderr}) END"),
        ("q_mag", f"greatest(abs({value}), coalesce({{q_se}}, 0))"),
        ("q_f", f"CASE {' '.join(factor)} ELSE 1.0 END"),
        ("q_lab", f"CASE {' '.join(label)} WHEN coalesce({unit}, '') = '' THEN '' ELSE ' ' || {unit} END"),
        ("q_s", "{q_se} / {q_f}"),
        ("q_v", f"{value} / {{q_f}}"),
        ("q_exp", "CASE WHEN {q_s} > 0 AND isfinite({q_s}) THEN floor(log10({q_s})) END"),  # rows that use it
        ("q_lead", "round({q_s} / pow(10, {q_exp} - 2))"),
        ("q_places", "(CASE WHEN {q_lead} >= 1000 THEN -({q_exp} + 1) + 1 WHEN {q_lead} >= 950 THEN -{q_exp} "
                     "WHEN {q_lead} <= 354 THEN 1 - {q_exp} ELSE -{q_exp} END)::INTEGER"),
    ]

    def sql_fixed(x: str) -> str:
        return f"printf('%.*f', greatest({{q_places}}, 0), round({x}, {{q_places}}) + 0.0)"

    missing = f"{value} IS NULL OR NOT isfinite({value})"
    texts = Parts(
        f"(CASE WHEN {missing} THEN '—' WHEN coalesce({{q_se}}, 0) = 0 THEN printf('%.4g', {{q_v}} + 0.0) "
        f"ELSE {sql_fixed('{q_v}')} END)",
        f"(CASE WHEN {missing} OR {{q_se}} IS NULL THEN '—' WHEN {{q_se}} = 0 THEN '0' ELSE {sql_fixed('{q_s}')} END)",
        f"(CASE WHEN {missing} THEN '' ELSE {{q_lab}} END)")
    return stages, texts


def _resolve(expr: str, env: dict[str, str]) -> str:
    return _REF.sub(lambda m: env[m.group(1)], expr)


def sql_parts(value: str, stderr: str, unit: str) -> Parts:
    """SQL expressions for :func:`parts` of the columns ``value``/``stderr``/``unit`` (for DuckDB). The value text
    is ``—`` for a null or non-finite value, the stderr text ``—`` without a stderr, and the unit text starts
    with a space unless empty. One self-contained expression each: for many rows, :func:`sql_parts_select`."""
    stages, texts = _sql_stages(value, stderr, unit)
    env: dict[str, str] = {}
    for name, expr in stages:
        env[name] = f"({_resolve(expr, env)})"
    return Parts(*(_resolve(t or "", env) for t in texts))


def sql_parts_select(source: str, value: str, stderr: str, unit: str) -> str:
    """A query of every column of the query ``source`` plus ``value_text``, ``stderr_text`` and ``unit_text``
    (:func:`sql_parts` of its columns), each intermediate computed once per row: the site formats half a
    million metric rows this way, several times faster than with the inlined expressions."""
    stages, texts = _sql_stages(value, stderr, unit)
    env = {name: name for name, _ in stages}
    query = source
    for name, expr in stages:
        query = f"SELECT *, {_resolve(expr, env)} AS {name} FROM ({query})"
    names = ", ".join(env)
    return (f"SELECT * EXCLUDE ({names}), {_resolve(texts.value, env)} AS value_text, "
            f"{_resolve(texts.stderr or '', env)} AS stderr_text, {_resolve(texts.unit, env)} AS unit_text "
            f"FROM ({query})")


def sql_quantity(value: str, stderr: str, unit: str) -> str:
    """An SQL expression formatting the columns as :func:`quantity` does (``—`` for a null value)."""
    p = sql_parts(value, stderr, unit)
    return (f"(CASE WHEN {value} IS NULL OR NOT isfinite({value}) THEN '—' "
            f"WHEN {p.stderr} = '—' THEN {p.value} || {p.unit} ELSE {p.value} || ' ± ' || {p.stderr} || {p.unit} END)")
