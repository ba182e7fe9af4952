"""Numbers in units a person reads: known cases, the rounding rule, and the SQL and JavaScript twins agreeing."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from results.report import fmt, interval, overview_table, ratio
from results.units import SCALES, decimals, parts, quantity, sql_parts_select, sql_quantity

SITE_JS = Path(__file__).parents[2] / "leaderboard" / "static" / "site.js"


@pytest.mark.parametrize("value,stderr,unit,text", [
    (0.007134, 0.000235, "s", "7.13 ± 0.24 ms"),
    (1076.3 * 2**20, 2.87e5, "bytes", "1076.30 ± 0.27 MiB"),  # the stderr in MiB too, never in bytes
    (0.325, 0.02279, "fraction", "32.5 ± 2.3 %"),
    (329.5, 4.029, "tokens/s", "330 ± 4 tokens/s"),  # 403: one significant digit
    (334800.7, 1234.0, "tokens/s", "334.8 ± 1.2 k tokens/s"),
    (0.006237, 0.002206, "J/token", "6.2 ± 2.2 mJ/token"),
    (-0.0003, 0.0012, "J/token", "-0.3 ± 1.2 mJ/token"),  # the scale follows the larger of value and stderr
    (1420.0, 15.0, "s", "23.67 ± 0.25 min"),
    (4e6, None, "J", "1.111 kWh"),
    (2.5e9, None, "bytes", "2384 MiB"),
    (3e10, None, "bytes", "27.94 GiB"),
    (1.03e11, 2e9, "FLOP/s", "103.0 ± 2.0 GFLOP/s"),
    (3146048, None, "count", "3.146 M"),
    (0.0, 0.0, "s", "0 ± 0 s"),
    (12.3, None, "nats", "12.3 nats"),  # an unknown unit: as stored, unscaled
    (0.0967, 0.00967, "x", "0.097 ± 0.010 ×"),  # 967: rounds up to two digits of 0.010
])
def test_known_quantities(value, stderr, unit, text):
    assert quantity(value, stderr, unit) == text
    assert fmt(value, stderr, unit) == text


@pytest.mark.parametrize("stderr,places", [(0.235, 2), (0.36, 1), (0.949, 1), (0.951, 1), (0.0999, 2), (12.0, 0),
                                           (350.0, -1), (3.5, 1), (1.0, 1)])
def test_uncertainty_keeps_one_or_two_digits_by_the_pdg_rule(stderr, places):
    assert decimals(stderr) == places


def test_fmt_keeps_plain_integers_and_missing_values():
    assert fmt(None) == "—" and fmt(float("nan"), 1.0, "s") == "—"
    assert fmt(12288) == "12288" and fmt(4_500_000) == "4.5e+06" and fmt("text") == "text"
    assert interval(-0.0021, 0.0134, "s") == "[-2.1, 13.4] ms"
    assert interval(-0.0021, 0.0134, "s", stderr=0.0039) == "[-2, 13] ms"  # stderr 3.9 ms: one digit, no decimal
    assert interval(0.01234, 0.05678, "fraction", stderr=0.01) == "[1.2, 5.7] %"  # stderr 1.0 %: one decimal
    assert interval(-0.0012, 0.0513, "fraction", stderr=0.00123) == "[-0.12, 5.13] %"


def _cases() -> list[tuple[float | None, float | None, str | None]]:
    rng = random.Random(7)
    units: list[str | None] = [*SCALES, "nats", "", None]
    out: list[tuple[float | None, float | None, str | None]] = [(None, None, "s"), (0.5, float("nan"), "fraction"),
                                                                (-0.0, None, "x"), (2.0, 0.0, "W")]
    for _ in range(250):
        v = rng.choice([1, -1, 1]) * 10 ** rng.uniform(-8, 13)
        out.append((v, rng.choice([None, 0.0, abs(v) * 10 ** rng.uniform(-4, 1)]), rng.choice(units)))
    return out


def test_sql_formats_as_python():
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, v DOUBLE, se DOUBLE, unit VARCHAR)")
    cases = _cases()
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, *c) for i, c in enumerate(cases)])
    got = dict(con.execute(f"SELECT i, {sql_quantity('v', 'se', 'unit')} FROM t").fetchall())
    for i, (v, se, unit) in enumerate(cases):
        assert got[i] == ("—" if v is None else quantity(v, se, unit)), (v, se, unit)


def test_the_staged_sql_gives_the_parts_of_python():
    """sql_parts_select (each intermediate once per row: the site's metric tables) gives parts() texts."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, v DOUBLE, se DOUBLE, unit VARCHAR)")
    cases = _cases()
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, *c) for i, c in enumerate(cases)])
    query = sql_parts_select("SELECT * FROM t", "v", "se", "unit")
    got = {r[0]: r[1:] for r in con.execute(f"SELECT i, value_text, stderr_text, unit_text, v FROM ({query})").fetchall()}
    assert len(got) == len(cases)
    for i, (v, se, unit) in enumerate(cases):
        value, stderr, unit_text, v_back = got[i]
        assert v_back == v or v is None  # the source's columns pass through
        if v is None:
            assert (value, stderr, unit_text) == ("—", "—", "")
            continue
        p = parts(v, se, unit)
        assert (value, stderr, unit_text) == (p.value, p.stderr or "—", f" {p.unit}" if p.unit else ""), (v, se, unit)


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_site_script_formats_as_python():
    cases = [c for c in _cases() if c[0] is not None and (c[1] is None or c[1] == c[1])]
    script = (f"global.document = {{addEventListener() {{}}}};\n{SITE_JS.read_text()}\n"
              f"SCALES = {json.dumps(SCALES)};\n"
              f"console.log(JSON.stringify({json.dumps(cases)}.map(c => fmtQ(c[0], c[1], c[2]))));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    for (v, se, unit), text in zip(cases, got, strict=True):
        assert text == quantity(v, se, unit), (v, se, unit)


def _path(name: str, n_steps: int, **values) -> dict:
    return {"path_id": name, "path_name": name, "base": "b", "hardware_profile": "cpu-1t", "n_steps": n_steps,
            **values}


def test_overview_marks_failed_paths_and_shows_units_and_ratios_to_the_base():
    paths = [_path("baseline", 0, quality=0.5, quality_stderr=0.02, decode_tps=100.0, decode_tps_stderr=2.0),
             _path("quant", 1, quality=0.45, quality_stderr=0.02, decode_tps=150.0, decode_tps_stderr=3.0),
             _path("broken", 1, failed_step="prune.wanda"),
             _path("no-latency", 1, quality=0.5, quality_stderr=0.02, failed_suites=["latency"])]
    text = overview_table(paths)
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert "50.0 ± 2.0 %" in rows["baseline"] and "100 ± 2.0" not in rows["baseline"]
    assert "100.0 ± 2.0 tokens/s" in rows["baseline"] and "retention" not in rows["baseline"]
    assert "(retention 90 ± 5 %)" in rows["quant"] and "(speed-up 1.50 ± 0.04 ×)" in rows["quant"]
    # quality, decode tokens/s and time to first token (shown: the latency suite failed on another path)
    assert rows["broken"].count("✗ failed: prune.wanda") == 3 and "—" not in rows["broken"]
    assert rows["no-latency"].count("✗ failed: latency") == 2 and "✗ failed: prune" not in rows["no-latency"]
    assert "propagated" in text


def test_ratio_propagates_relative_errors():
    r, se = ratio(150.0, 3.0, 100.0, 2.0)
    assert r == 1.5 and se == pytest.approx(1.5 * (0.02**2 + 0.02**2) ** 0.5)
    assert ratio(1.0, None, 2.0, 0.1) == (0.5, None)
