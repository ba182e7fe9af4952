"""Rendering: compact text tables for the terminal, JUnit XML and Markdown for CI systems."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from results.views import HEADLINES


def fmt(value: Any, stderr: Any = None, unit: str | None = None) -> str:
    """``0.512±0.021``; large numbers in engineering form; None as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = _num(value, unit)
    if stderr is not None and not (isinstance(stderr, float) and math.isnan(stderr)):
        text += "±" + _num(stderr, unit)
    return text


def _num(v: float, unit: str | None) -> str:
    if unit == "bytes" and abs(v) >= 1e6:
        return f"{v / 2**20:.1f}MiB"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.4g}"


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


def overview_table(paths: list[dict[str, Any]]) -> str:
    """Paths x headline metrics, value±stderr, estimates marked with ``~``; only columns with data."""
    cols = [h for h in HEADLINES if any(p.get(h.name) is not None for p in paths)]
    headers = ["path", "hw", *(f"{h.label} {'↑' if h.higher_is_better else '↓'}" for h in cols)]
    body = []
    for p in paths:
        cells = [("~" if p.get(f"{h.name}_estimate") else "") + fmt(p.get(h.name), p.get(f"{h.name}_stderr"), h.unit)
                 for h in cols]
        body.append([p["path_name"], p["hardware_profile"], *cells])
    note = "\n~ estimated (not measured)" if any(p.get(f"{h.name}_estimate") for p in paths for h in cols) else ""
    return table(headers, body) + note


def compare_table(rows: list[dict[str, Any]]) -> str:
    headers = ["suite/task/metric", "A", "B", "B-A", "95% CI", "p", "test", "better"]
    body = []
    for r in rows:
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if r["ci_low"] is not None else "—"
        body.append([f"{r['suite']}/{r['task']}/{r['metric']}" + (" ~" if r["estimate"] else ""),
                     fmt(r["a"], r["a_stderr"], r["unit"]), fmt(r["b"], r["b_stderr"], r["unit"]),
                     fmt(r["diff"]), ci, fmt(r["p_value"]), r["test"], r["better"] or "="])
    return table(headers, body)


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
