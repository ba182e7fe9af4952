"""Import boundaries of DESIGN.md: harness, results and leaderboard never import torch at import time."""

import subprocess
import sys


def test_harness_results_leaderboard_import_no_torch():
    code = (
        "import sys, importlib\n"
        "for m in ('harness', 'harness.cli', 'results', 'leaderboard', 'suites.base', 'adapters.technique'):\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != m: raise\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'lm_eval'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()[:300]}"
