"""A handle's lm-eval ``LM`` gives exactly lm-eval's own numbers (issue 2 acceptance).

The task is a small multiple-choice YAML over a local JSONL file (tests/adapters/fixtures/mc_task).
The same converted checkpoint is scored through ``ModelHandle.lm()`` in-process and through the
``lm_eval`` command line, both with batch size 1 and one thread.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "mc_task" / "mini_mc.jsonl"

TASK_YAML = """task: mini_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: answer
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_task(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mini_mc.yaml").write_text(TASK_YAML.format(data=FIXTURE.resolve()))
    return directory


def evaluate_in_process(handle, include: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(include), include_defaults=False)
    out = simple_evaluate(model=handle.lm(), tasks=["mini_mc"], task_manager=tm, batch_size=1)
    return out["results"]["mini_mc"]


def test_tiny_handle_runs_a_local_lm_eval_task(tiny_handle, tmp_path):
    res = evaluate_in_process(tiny_handle, write_task(tmp_path / "tasks"))
    assert 0.0 <= res["acc,none"] <= 1.0 and res["acc_stderr,none"] > 0


@pytest.mark.slow
def test_same_numbers_as_lm_eval_cli(smollm2_1t, tmp_path):
    from adapters.sources import smollm2_checkpoint_dir

    include = write_task(tmp_path / "tasks")
    mine = evaluate_in_process(smollm2_1t, include)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={smollm2_checkpoint_dir()},dtype=float32",
        "--tasks", "mini_mc", "--include_path", str(include), "--batch_size", "1", "--device", "cpu",
        "--output_path", str(tmp_path / "out"),
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    (result_file,) = list((tmp_path / "out").rglob("results_*.json"))
    theirs = json.loads(result_file.read_text())["results"]["mini_mc"]
    for key in ("acc,none", "acc_norm,none", "acc_stderr,none"):
        assert mine[key] == theirs[key], (key, mine[key], theirs[key])
    print("in-process", {k: mine[k] for k in ("acc,none", "acc_norm,none")}, "lm_eval CLI", {k: theirs[k] for k in ("acc,none", "acc_norm,none")})
    assert mine["acc,none"] >= 0.4  # chance is 0.25; SmolLM2-135M gets 0.5 here
