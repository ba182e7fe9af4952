"""What a person sees in a terminal during ``slm run``: our progress and results, not library noise (that goes to
the run's log file), in a pseudo-terminal as a user would; and plain lines when stdout is not a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = """
name: console
base: tiny-llama
hardware: cpu-1t
suites:
  test_nll: {profile: quick}
grid:
  tune: [none, tune.test_noisy, prune.test_fail]
"""
NOISE = ("Warning", "warn(", "FutureWarning", "UserWarning", "it/s]", "Tokenizing", "fatal:", "a library's print")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _in_pty(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``args`` with stdin/stdout/stderr on a pseudo-terminal (120 columns); its exit code and what it showed."""
    main, child = pty.openpty()
    os.set_blocking(main, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, cwd=cwd, close_fds=True,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"})
    os.close(child)
    chunks, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def _shown(screen: str) -> list[str]:
    """The lines a terminal shows in the end (escape codes removed, each carriage-return redraw's last state)."""
    return [ANSI.sub("", line.split("\r")[-1] if line.split("\r")[-1].strip() else line).rstrip()
            for line in screen.replace("\r\n", "\n").split("\n")]


def test_run_in_a_terminal_shows_progress_and_results_and_logs_the_noise(test_components, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    code, screen = _in_pty([sys.executable, "-m", "harness.cli", "run", str(spec), "-w", str(ws)], cwd=tmp_path)
    text = ANSI.sub("", screen)
    assert code == 1, text  # prune.test_fail fails on purpose
    for noise in NOISE:
        assert noise not in text, (noise, text)
    assert "technique steps" in text and "suite runs" in text and "ETA" in text and "took" in text  # the bars
    logs = list((ws / "logs").glob("run-*.log"))
    assert len(logs) == 1 and f"log (library warnings and messages): {logs[0]}" in text
    log = logs[0].read_text()
    for diverted in ("FutureWarning: torch.ao.quantization is deprecated", "UserWarning: a user warning",
                     "Warning: a library logger's warning", "Tokenizing inputs", "fatal: not a git repository",
                     "a library's print", "done tune.test_noisy"):
        assert diverted in log, diverted
    lines = _shown(screen)
    table = next(i for i, line in enumerate(lines) if line.startswith("path "))
    rows = {line.split()[0]: line for line in lines[table + 2:table + 5]}
    assert set(rows) == {"baseline", "tune.test_noisy", "prune.test_fail"}, lines[table:]
    assert "✗ failed: prune.test_fail" in rows["prune.test_fail"]
    assert f"leaderboard: {ws / 'site' / 'index.html'}" in text
    assert "failed: prune.test_fail: RuntimeError: boom" in text  # our own error lines stay visible


def test_run_without_a_terminal_prints_one_line_per_item(test_components, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(spec), "-w", str(tmp_path / "ws"),
                          "--no-leaderboard"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "\x1b" not in run.stdout and "\r" not in run.stdout  # no redraws in a CI log
    for noise in NOISE:
        assert noise not in run.stdout + run.stderr, noise
    done = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert re.fullmatch(r"\[1/2 technique steps\] (done|FAILED) \S+  \(elapsed \d+:\d\d, ETA \d+:\d\d\)", done[0])
    assert any(line.startswith("[2/2 technique steps] ") and line.endswith("ETA 0:00)") for line in done)
    assert sum("suite runs]" in line for line in done) == 3  # baseline, noisy, and the failed path's skipped one
    assert "technique steps: 2 to do" in run.stdout
    # no headline metric (test_nll is none): the table shows each path's status
    assert re.search(r"^prune\.test_fail +cpu-1t +✗ failed: prune\.test_fail$", run.stdout, re.M), run.stdout


@pytest.mark.parametrize("done,total,elapsed,eta", [(0, 4, 10.0, None), (1, 4, 10.0, 30.0), (4, 4, 10.0, 0.0)])
def test_eta_is_the_mean_time_of_finished_items_times_those_left(done, total, elapsed, eta):
    from harness.progress import Stage

    stage = Stage("x", total, done=done, first_start=time.monotonic() - elapsed)
    got = stage.eta()
    assert (got is None) if eta is None else got == pytest.approx(eta, abs=0.5)


def test_a_logger_holding_logging_last_resort_is_diverted_too(tmp_path):
    """logging.lastResort's stream is a read-only property (the current sys.stderr): it follows the swap, and
    diverting must not try to set it (an AttributeError once a library had attached it to a logger)."""
    import logging

    from adapters.runtime import library_output_to

    logger = logging.getLogger("slm-test-last-resort")
    logger.addHandler(logging.lastResort)
    try:
        with library_output_to(tmp_path / "run.log") as out:
            logger.warning("library notice")
            out.console.write("")
    finally:
        logger.removeHandler(logging.lastResort)
    assert "library notice" in (tmp_path / "run.log").read_text()
