"""Harness tests use a plugin module (tests/harness/slm_test_plugin.py) registered through
``SLM_PLUGINS`` for the duration of a test only, so the registry-wide smoke tests never see it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from adapters.technique import TECHNIQUES
from suites.base import SUITES

HERE = Path(__file__).parent
PLUGIN = "slm_test_plugin"
NAMES = {"technique": ("prune.test_fail", "tune.test_noise", "merge.test_average", "tune.test_read",
         "tune.test_noisy"), "suite": ("test_nll",)}


def _unregister():
    for n in NAMES["technique"]:
        TECHNIQUES.unregister(n)
    for n in NAMES["suite"]:
        SUITES.unregister(n)


@pytest.fixture()
def test_components(monkeypatch):
    """Registers the plugin in this process and exports it for child processes."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("SLM_PLUGINS", PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(HERE) + ":" + str(HERE.parents[1]))
    TECHNIQUES.names()
    SUITES.names()  # discover built-ins first
    _unregister()
    if PLUGIN in sys.modules:
        importlib.reload(sys.modules[PLUGIN])
    else:
        importlib.import_module(PLUGIN)
    yield
    _unregister()
