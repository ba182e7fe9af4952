"""Import boundaries of DESIGN.md: harness, results and leaderboard never import torch at import time."""

import subprocess
import sys

REPORT = (
    "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'lm_eval'))\n"
    "print(','.join(heavy))\n"
)


def heavy_imports(code: str) -> str:
    """The heavy modules (torch, transformers, lm_eval) a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code + REPORT], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_harness_results_leaderboard_import_no_torch():
    code = (
        "import importlib\n"
        "for m in ('harness', 'harness.cli', 'results', 'leaderboard', 'suites.base', 'adapters.technique'):\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != m: raise\n"
    )
    heavy = heavy_imports(code)
    assert heavy == "", f"imported: {heavy[:300]}"


def test_listing_techniques_and_planning_a_path_import_no_torch():
    """The registry (every technique module, every artifact format) and the planner's format check stay light."""
    code = (
        "from adapters.technique import TECHNIQUES\n"
        "from adapters.formats import FORMATS\n"
        "TECHNIQUES.names(); FORMATS.names()\n"
        "from harness.plan import make_plan\n"
        "from harness.spec import parse_spec\n"
        "make_plan(parse_spec('name: x\\nbase: tiny-llama\\npaths: [[factorize.svd, quant.int8, infer.decoding]]\\n'))\n"
    )
    heavy = heavy_imports(code)
    assert heavy == "", f"imported: {heavy[:300]}"
