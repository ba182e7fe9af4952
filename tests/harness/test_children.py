"""Children of the harness (memory-suite measurements, subprocess workers) die with their parent: a SIGKILLed
``slm run`` leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from adapters.runtime import child_env
    code = "from adapters.runtime import die_with_parent; die_with_parent(); import time; time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code], env=child_env())
    print(child.pid, flush=True)
    time.sleep(120)
""")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is dead)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_when_its_parent_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    child = int(parent.stdout.readline())
    assert running(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while running(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(child)
