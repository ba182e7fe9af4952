"""The user's workflow through the CLI on the pico model: run, results, baseline export, check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SPEC = """
name: workflow
base: tiny-llama
hardware: cpu-1t
suites:
  test_nll: {profile: quick}
grid:
  tune: [none, {tune.test_noise: {scale: 0.05}}]
"""


def slm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_run_results_baseline_check(test_components, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    run = slm("run", str(spec), "--workspace", str(ws), "--no-progress", "--no-leaderboard", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "technique steps executed 1" in run.stdout and "suite runs executed 2" in run.stdout
    assert str(ws / "results.duckdb") in run.stdout
    res = slm("results", "--workspace", str(ws), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p["path_name"] for p in json.loads(res.stdout)) == ["baseline", "tune.test_noise(scale=0.05)"]
    base = tmp_path / "baseline.json"
    exp = slm("baseline", "export", "--workspace", str(ws), "--out", str(base), cwd=tmp_path)
    assert exp.returncode == 0 and "2 paths" in exp.stdout, exp.stdout + exp.stderr
    ok = slm("check", "--workspace", str(ws), "--baseline", str(base), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # A baseline that claims a better model than this run: the gate must fail with exit 1.
    doc = json.loads(base.read_text())
    for path in doc["paths"]:
        for m in path["metrics"]:
            m["value"] = m["value"] * (0.5 if not m["higher_is_better"] else 2.0)
    base.write_text(json.dumps(doc))
    bad = slm("check", "--workspace", str(ws), "--baseline", str(base), cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "REGRESSION" in bad.stdout


def test_a_path_name_cannot_drive_the_terminal(test_components, tmp_path):
    """A path named with escape sequences (clear screen, set the window title) is printed escaped by plan, run and
    results: no control character reaches the terminal."""
    spec = tmp_path / "spec.yaml"
    spec.write_text('name: hostile\nbase: tiny-llama\nsuites:\n  test_nll: {profile: quick}\npaths:\n'
                    '  - {name: "evil\\e[2J\\e]0;pwned\\a", steps: [{tune.test_noise: {scale: 0.05}}]}\n')
    ws = tmp_path / "ws"
    outputs = [slm("plan", str(spec), "--workspace", str(ws), cwd=tmp_path),
               slm("run", str(spec), "--workspace", str(ws), "--no-progress", "--no-leaderboard", cwd=tmp_path),
               slm("results", "--workspace", str(ws), cwd=tmp_path)]
    for out in outputs:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07" in outputs[0].stdout and "evil\\x1b[2J" in outputs[2].stdout


def test_readers_create_nothing(test_components, tmp_path):
    """results, plan and compare on a workspace write nothing into it (no lock file, no folder, no migration); on a
    workspace that does not exist they create none."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    assert slm("run", str(spec), "--workspace", str(ws), "--no-progress", "--no-leaderboard", cwd=tmp_path).returncode == 0
    (ws / "results.duckdb.lock").unlink()

    def listing():
        return sorted((str(p.relative_to(ws)), p.stat().st_mtime_ns) for p in ws.rglob("*"))

    before = listing()
    for args in (("results",), ("results", "--sql", "SELECT count(*) FROM metrics"), ("plan", str(spec))):
        out = slm(*args, "--workspace", str(ws), cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
    assert listing() == before
    missing = tmp_path / "nowhere"
    for args in (("results",), ("plan", str(spec))):
        assert slm(*args, "--workspace", str(missing), cwd=tmp_path).returncode == 0
    assert not missing.exists()


def test_a_broken_database_is_one_line_naming_it(tmp_path):
    """A zero-byte, garbage or truncated results database: one line naming the file and what to do, no traceback."""
    import shutil

    good = tmp_path / "good"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nbase: tiny-llama\nsuites: {}\npaths: [[]]\n")
    assert slm("run", str(spec), "-w", str(good), "--no-progress", "--no-leaderboard", cwd=tmp_path).returncode == 0
    for kind, make in (("zero", lambda f: f.write_bytes(b"")), ("garbage", lambda f: f.write_bytes(b"\x07" * 9000)),
                       ("truncated", lambda f: (shutil.copy(good / "results.duckdb", f),
                                                open(f, "r+b").truncate(5000)))):
        ws = tmp_path / kind
        ws.mkdir()
        make(ws / "results.duckdb")
        for args in (("results",), ("results", "--sql", "SELECT 1"), ("run", str(spec), "--no-progress")):
            out = slm(*args, "-w", str(ws), cwd=tmp_path)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(lines) == 1, (kind, args, out.stderr[-2000:])
            assert "not a readable results database" in lines[0] and str(ws / "results.duckdb") in lines[0]
