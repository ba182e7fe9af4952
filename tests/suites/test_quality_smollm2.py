"""Real-model quality acceptance (slow): the suite's ARC-Easy numbers (with and without its prefix cache) equal
lm_eval's own command line to the last digit on 60 seeded items of the Dev file (the full 570-item comparison,
with wall times, is ``benchmarks/quality_vs_lmeval.py``), and SmolLM2 is clearly above chance on every built-in probe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from suites import probes
from suites.base import SUITES, SuiteContext

pytestmark = pytest.mark.slow


LIMIT = 60  # the suite draws a seeded subsample; lm-eval's CLI is handed the same document ids (--samples)


def test_arc_easy_equals_lm_eval_cli(smollm2_1t, tmp_path, benchmarks_dir):
    from adapters.sources import smollm2_checkpoint_dir

    runs = {}
    for prefix_cache in (True, False):  # the suite's default engine, and lm-eval's own one-pass-per-choice path
        ctx = SuiteContext(profile="full", workdir=tmp_path / f"suite{prefix_cache}", data_dir=benchmarks_dir,
                           options={"tasks": ["arc_easy"], "batch_size": 8, "prefix_cache": prefix_cache,
                                    "limit": LIMIT})
        runs[prefix_cache] = {m.name: m for m in SUITES.get("quality")().run(smollm2_1t, ctx).metrics}
        assert runs[prefix_cache]["acc"].n == LIMIT
    import random

    from suites.tasks import TASKS_DIR

    ids = sorted(random.Random("arc_easy:0").sample(range(570), LIMIT))  # suites.builtin.quality.pick_samples

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SLM_DATA_DIR": str(benchmarks_dir)}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf",
           "--model_args", f"pretrained={smollm2_checkpoint_dir()},dtype=float32", "--tasks", "arc_easy",
           "--include_path", str(TASKS_DIR), "--batch_size", "8",
           "--samples", json.dumps({"arc_easy": ids}), "--device", "cpu", "--output_path", str(tmp_path / "out")]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    (result_file,) = list((tmp_path / "out").rglob("results_*.json"))
    theirs = json.loads(result_file.read_text())["results"]["arc_easy"]
    for prefix_cache, mine in runs.items():
        print(f"suite prefix_cache={prefix_cache}", {k: mine[k].value for k in ("acc", "acc_norm")}, "lm_eval CLI",
              {k: theirs[f"{k},none"] for k in ("acc", "acc_norm")})
        for k in ("acc", "acc_norm"):
            assert mine[k].value == theirs[f"{k},none"]
            assert mine[k].stderr == theirs[f"{k}_stderr,none"]


def test_smollm2_is_above_chance_on_every_probe(smollm2, tmp_path):
    ctx = SuiteContext(profile="standard", workdir=tmp_path, options={"limit": 200})
    res = SUITES.get("quality")().run(smollm2, ctx)
    for m in res.metrics:
        if m.name != "acc":
            continue
        chance = probes.PROBES[m.task][1]
        z = (m.value - chance) / math.sqrt(chance * (1 - chance) / m.n)
        print(m.task, m.value, m.n, f"z={z:.1f}")
        assert m.n == 200 and z > 4, (m.task, m.value)  # one-sided p < 3e-5 per probe
