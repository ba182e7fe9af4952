"""Rendering: compact text tables for the terminal, JUnit XML and Markdown for CI systems."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from results.units import decimals, fixed, quantity, scale_for
from results.views import HEADLINES


def fmt(value: Any, stderr: Any = None, unit: str | None = None) -> str:
    """A number in a unit a person reads, its uncertainty in the same unit and rounded to it (``7.13 ± 0.24 ms``,
    :func:`results.units.quantity`); None or NaN as an em dash; integers below a million without a unit exactly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) and stderr is None and not unit and abs(value) < 10**6:
        return str(value)
    se = float(stderr) if isinstance(stderr, int | float) and not isinstance(stderr, bool) else None
    return quantity(float(value), se, unit)


def interval(low: Any, high: Any, unit: str | None = None, stderr: float | None = None) -> str:
    """``[low, high]`` both in one display unit (chosen from the larger end): rounded to the decimal place of
    ``stderr`` (the estimate's, as :func:`results.units.quantity` rounds it) when one is given, else to four
    significant digits. An infinite ``high`` (an interval open above) prints as ``∞``."""
    if low is None or high is None:
        return "—"
    open_high = math.isinf(high) and high > 0
    scale = scale_for(unit, abs(low) if open_high else max(abs(low), abs(high)))
    rounded = stderr is not None and math.isfinite(stderr) and stderr > 0
    places = decimals(stderr / scale.factor) if stderr is not None and rounded else 0

    def one(v: float) -> str:
        if math.isinf(v) and v > 0:
            return "∞"
        return fixed(v / scale.factor, places) if rounded else f"{v / scale.factor + 0.0:.4g}"

    text = f"[{one(low)}, {one(high)}]"
    return f"{text} {scale.label}" if scale.label else text


_ITEMS = 24  # report entries shown before "… N more"
_SEQ = 4  # list items / nested entries shown inline
_TEXT = 80  # characters of a text value shown


def report_items(report: Any) -> list[tuple[str, str]]:
    """A technique's report (``nodes.report``) as compact ``(key, value)`` text pairs, in key order.

    Numbers go through :func:`fmt` (keys ending in ``_bytes`` as bytes; integers below a million exactly),
    lists and mappings show their first few entries and how many more there are, long text is cut with
    ``…``, and at most a couple dozen entries are listed. A report that is not a mapping is one entry with
    an empty key; no report gives no entries. The text is not escaped: escape it where it is rendered.
    """
    if report is None:
        return []
    if not isinstance(report, dict):
        return [("", compact(report))]
    keys = sorted(report, key=str)
    out = [(_clip(str(k), _TEXT), compact(report[k], unit="bytes" if str(k).endswith("_bytes") else None))
           for k in keys[:_ITEMS]]
    if len(keys) > _ITEMS:
        out.append(("…", f"{len(keys) - _ITEMS} more"))
    return out


def compact(value: Any, unit: str | None = None, depth: int = 0) -> str:
    """One report value as short text: see :func:`report_items`."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 10**6 and unit != "bytes":
        return str(value)
    if isinstance(value, int | float):
        return fmt(value, unit=unit)
    if isinstance(value, dict):
        if depth >= 1:
            return f"{{{len(value)} entries}}" if value else "{}"
        items = [f"{_clip(str(k), _TEXT)}: {compact(v, depth=depth + 1)}" for k, v in list(value.items())[:_SEQ]]
        more = f", … {len(value) - _SEQ} more" if len(value) > _SEQ else ""
        return _clip("{" + ", ".join(items) + more + "}", 2 * _TEXT)
    if isinstance(value, list | tuple):
        if depth >= 1:
            return f"[{len(value)} items]" if value else "[]"
        items = [compact(v, unit=unit, depth=depth + 1) for v in value[:_SEQ]]
        more = f", … {len(value) - _SEQ} more" if len(value) > _SEQ else ""
        return _clip("[" + ", ".join(items) + more + "]", 2 * _TEXT)
    return _clip(str(value), _TEXT)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    """``text`` safe for a terminal: control characters (ESC, CR, BEL, newlines... of a path name or a stored value)
    shown as ``\\xNN`` escapes instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A left-aligned plain-text table (every cell :func:`printable`)."""
    head = [printable(h) for h in headers]
    rows = [[printable(c) for c in r] for r in body]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


#: headline -> (how a path's value compares with its base's, the unit of that ratio) where that is what matters
RELATIVE = {"quality": ("retention", "ratio"), "decode_tps": ("speed-up", "x")}


def overview_table(paths: list[dict[str, Any]]) -> str:
    """Paths x headline metrics, ``value ± stderr`` in units a person reads, estimates marked ``~``; only columns
    with data. A path with a failed step shows ``✗ failed: <step>`` in every empty column, one whose suite run
    failed ``✗ failed: <suite>`` in that suite's columns. Quality and decode speed also show the ratio to the
    path's base (the path without steps on the same base and hardware): retention in %, speed-up ×."""
    cols = [h for h in HEADLINES
            if any(p.get(h.name) is not None or h.suite in (p.get("failed_suites") or []) for p in paths)]
    if not cols and any(p.get("failed_step") for p in paths):  # nothing measured: the failures are the news
        return table(["path", "hw", "status"], [[p["path_name"], p["hardware_profile"], _failure(p, "") or "—"]
                                                for p in paths])
    headers = ["path", "hw", *(f"{h.label} {'↑' if h.higher_is_better else '↓'}" for h in cols)]
    bases = {(p.get("base"), p["hardware_profile"]): p for p in paths if not p.get("n_steps")}
    body = []
    for p in paths:
        base = bases.get((p.get("base"), p["hardware_profile"]))
        body.append([p["path_name"], p["hardware_profile"], *(_cell(p, h, base) for h in cols)])
    notes = []
    if any(p.get(f"{h.name}_estimate") for p in paths for h in cols):
        notes.append("~ estimated (not measured)")
    if any(f"({word} " in c for word, _ in RELATIVE.values() for row in body for c in row[2:]):
        notes.append("(retention, speed-up): the ratio to the path's base, its uncertainty propagated as if the two "
                     "were independent")
    return table(headers, body) + "".join("\n" + n for n in notes)


def _cell(p: dict[str, Any], h: Any, base: dict[str, Any] | None) -> str:
    value = p.get(h.name)
    if value is None:
        return _failure(p, h.suite) or "—"
    text = ("~" if p.get(f"{h.name}_estimate") else "") + fmt(value, p.get(f"{h.name}_stderr"), h.unit)
    if h.name in RELATIVE and base is not None and base is not p and base.get(h.name):
        word, unit = RELATIVE[h.name]
        r, se = ratio(value, p.get(f"{h.name}_stderr"), base[h.name], base.get(f"{h.name}_stderr"))
        text += f" ({word} {fmt(r, se, unit)})"
    return text


def _failure(p: dict[str, Any], suite: str) -> str | None:
    """The failure mark of a path's column: its failed step, else a failed run of ``suite``, else None."""
    if p.get("failed_step"):
        return f"✗ failed: {p['failed_step']}"
    if suite in (p.get("failed_suites") or []):
        return f"✗ failed: {suite}"
    return None


def ratio(a: float, a_se: float | None, b: float, b_se: float | None) -> tuple[float, float | None]:
    """``a / b`` and its standard error by first-order propagation for independent ``a`` and ``b`` (None when
    either has none)."""
    r = a / b
    if a_se is None or b_se is None:
        return r, None
    rel = (a_se / a) ** 2 if a else 0.0
    return r, abs(r) * math.sqrt(rel + (b_se / b) ** 2)


def compare_table(rows: list[dict[str, Any]]) -> str:
    headers = ["suite/task/metric", "A", "B", "B-A", "95% CI", "p", "test", "better"]
    body = []
    for r in rows:
        unit = r["unit"]
        ci = interval(r["ci_low"], r["ci_high"], unit) if r["ci_low"] is not None else "—"
        diff = fmt(r["diff"], unit=unit)
        body.append([f"{r['suite']}/{r['task']}/{r['metric']}" + (" ~" if r["estimate"] else ""),
                     fmt(r["a"], r["a_stderr"], unit), fmt(r["b"], r["b_stderr"], unit),
                     ("+" + diff) if isinstance(r["diff"], int | float) and r["diff"] > 0 else diff, ci,
                     _p(r["p_value"]), r["test"], r["better"] or "="])
    return table(headers, body)


def _p(p: Any) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def check_summary(verdicts: list[dict[str, Any]]) -> str:
    bad = [v for v in verdicts if v["status"] != "ok"]
    lines = [f"{len(verdicts)} checks: {len(verdicts) - len(bad)} hold, {len(bad)} regressed or missing"]
    for v in bad:
        lines.append(f"  {v['status'].upper():10s} {v['path']} [{v['hardware_profile']}] "
                     f"{v['suite']}/{v['task']}/{v['metric']}: {fmt(v['baseline'])} -> {fmt(v['current'])} ({v['why']})")
    return "\n".join(lines)


def junit_xml(verdicts: list[dict[str, Any]]) -> str:
    """One testsuite per suite, one testcase per (path, task, metric); regressions are failures."""
    root = ET.Element("testsuites", name="slm check")
    for suite in sorted({v["suite"] for v in verdicts}):
        items = [v for v in verdicts if v["suite"] == suite]
        ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(items)),
                           failures=str(sum(v["status"] != "ok" for v in items)))
        for v in items:
            case = ET.SubElement(ts, "testcase", classname=f"{v['path']} [{v['hardware_profile']}]",
                                 name=f"{v['task']}/{v['metric']}")
            if v["status"] != "ok":
                fail = ET.SubElement(case, "failure", message=f"{v['status']}: {v['why']}", type=v["status"])
                fail.text = f"baseline {v['baseline']} current {v['current']} {v['unit'] or ''}; rule {v['rule']}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def markdown(verdicts: list[dict[str, Any]], baseline_run: str, current_run: str) -> str:
    bad = [v for v in verdicts if v["status"] != "ok"]
    head = "✅ no regression" if not bad else f"❌ {len(bad)} regression(s)"
    lines = [f"## slm check: {head}", "", f"Baseline run `{baseline_run}`, current run `{current_run}`, "
             f"{len(verdicts)} metrics checked.", "",
             "| status | path | metric | baseline | current | why |", "|---|---|---|---|---|---|"]
    for v in sorted(verdicts, key=lambda v: v["status"] == "ok"):
        lines.append(f"| {v['status']} | {_md(v['path'])} [{v['hardware_profile']}] | "
                     f"{v['suite']}/{_md(v['task'])}/{v['metric']} | {fmt(v['baseline'])} | {fmt(v['current'])} | "
                     f"{_md(v['why'])} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")
