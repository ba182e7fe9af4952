"""The path contract at plan time: formats type-check, a node's hash is its whole identity, and every
path's reproduce snippet is a complete spec that plans to the same leaf."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from adapters.errors import SpecError
from harness.plan import make_plan
from harness.runner import Runner
from harness.spec import parse_spec


def plan(text: str, **kw):
    return make_plan(parse_spec(textwrap.dedent(text), file="spec.yaml"), **kw)


def by_technique(p, technique: str):
    (node,) = [n for n in p.nodes.values() if n.technique == technique]
    return node


# -- formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,expected", [
    ("[quant.int8, quant.rtn]", "step 2 quant.rtn does not accept a torch-int8-dynamic model (made by step 1 "
                                "quant.int8); it accepts torch, torch-sparse, torch-lowrank; the model is already quantized"),
    ("[deploy.onnxruntime, prune.magnitude]", "step 2 prune.magnitude does not accept a onnx model"),
    ("[quant.rtn, deploy.onnxruntime]", "deploy the float model"),
    ("[factorize.svd, quant.awq]", "put quant.awq before factorize.svd"),
])
def test_a_step_that_does_not_accept_its_input_is_refused_in_one_line(steps, expected):
    with pytest.raises(SpecError) as err:
        plan(f"name: x\nbase: tiny-llama\npaths: [{steps}]\n")
    message = str(err.value)
    assert "\n" not in message and message.startswith("spec.yaml: paths[0]")
    assert expected in message


def test_a_grid_drops_and_lists_what_does_not_fit_and_strict_refuses_it():
    text = """
    name: g
    base: tiny-llama
    grid:
      quantize: [none, quant.int8, quant.rtn]
      deploy: [none, deploy.onnxruntime]
    """
    p = plan(text)
    assert sorted(x.name for x in p.paths) == ["baseline", "deploy.onnxruntime", "quant.int8", "quant.rtn"]
    assert sorted(d.name for d in p.dropped) == ["quant.int8 > deploy.onnxruntime", "quant.rtn > deploy.onnxruntime"]
    assert all("does not accept" in d.reason for d in p.dropped)
    # nothing only a dropped path needed is left to compute (the int8 and rtn nodes are still leaves)
    assert sorted(n.technique for n in p.technique_nodes()) == ["deploy.onnxruntime", "quant.int8", "quant.rtn"]
    with pytest.raises(SpecError, match="quant.int8 > deploy.onnxruntime.*does not accept a torch-int8-dynamic"):
        plan(text, strict=True)


def test_plan_command_lists_dropped_combinations(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text("name: g\nbase: tiny-llama\ngrid:\n  q: [none, quant.int8]\n  d: [none, deploy.onnxruntime]\n")
    out = subprocess.run([sys.executable, "-m", "harness.cli", "plan", str(spec), "-w", str(tmp_path / "ws")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "dropped 1 grid combinations" in out.stdout and "(torch-int8-dynamic)" in out.stdout
    strict = subprocess.run([sys.executable, "-m", "harness.cli", "plan", str(spec), "--strict", "-w",
                             str(tmp_path / "ws")], capture_output=True, text=True)
    assert strict.returncode == 2 and len(strict.stderr.strip().splitlines()) == 1, strict.stderr


def test_node_formats_follow_the_declarations():
    p = plan("name: f\nbase: tiny-llama\npaths: [[prune.magnitude, {peft.lora: {keep_sparsity: false}}], "
             "[factorize.svd, prune.magnitude, quant.int8], [quant.rtn, peft.lora]]\n")
    chains = [[p.nodes[h].format for h in path.chain] for path in p.paths]
    assert chains == [["torch", "torch-sparse", "torch"],  # LoRA told not to keep the zeros
                      ["torch", "torch-lowrank", "torch-lowrank", "torch-int8-dynamic"],  # pruned factors stay pairs
                      ["torch", "quanto", "torch"]]  # dequantized, then trained


def test_data_technique_in_a_model_path_is_a_plan_time_error():
    with pytest.raises(SpecError, match=r"paths\[0\]\[0\]: data.perplexity_filter produces a dataset, not a model"):
        plan("name: d\nbase: tiny-llama\npaths: [[data.perplexity_filter, peft.lora]]\n")


def test_a_teacher_of_the_wrong_format_is_refused():
    text = """
    name: t
    base: tiny-llama
    paths:
      - {name: served, steps: [deploy.onnxruntime]}
      - {name: kd, steps: [{distill.logit: {teacher: served}}]}
    """
    with pytest.raises(SpecError, match="distill.logit needs a `teacher:` of format .* deploy.onnxruntime is onnx"):
        plan(text)


# -- node identity ------------------------------------------------------------------------------
IDENTITY = """
name: ident
base: tiny-llama
seed: {seed}
{budget}
datasets:
  notes: {{path: {data}}}
paths:
  - [prune.magnitude]
  - [prune.wanda]
  - [{{peft.lora: {{dataset: notes}}}}]
  - [{{peft.lora: {{max_steps: 3}}}}]
"""


def _hashes(tmp_path: Path, seed: int = 0, budget: str = "", data: Path | None = None) -> dict[str, str]:
    data = data or tmp_path / "notes.txt"
    p = plan(IDENTITY.format(seed=seed, budget=budget, data=data))
    return {n.label: n.hash for n in p.technique_nodes()}


def test_seed_budget_and_dataset_contents_change_exactly_the_nodes_that_depend_on_them(tmp_path):
    (tmp_path / "notes.txt").write_text("the mill is by the river\nbread is made from flour\n")
    base = _hashes(tmp_path)
    changed = lambda other: sorted(k for k in base if base[k] != other[k])  # noqa: E731
    # magnitude pruning does not use the seed; Wanda's calibration texts and LoRA's training do
    assert changed(_hashes(tmp_path, seed=1)) == ["peft.lora(dataset=notes)", "peft.lora(max_steps=3)", "prune.wanda"]
    # the spec's step budget reaches only training steps that have no budget of their own
    assert changed(_hashes(tmp_path, budget="max_steps: 7")) == ["peft.lora(dataset=notes)"]
    # a dataset is its content: editing the file changes its consumer; moving it changes nothing
    moved = tmp_path / "elsewhere.txt"
    moved.write_bytes((tmp_path / "notes.txt").read_bytes())
    assert changed(_hashes(tmp_path, data=moved)) == []
    (tmp_path / "notes.txt").write_text("the mill is by the river\nbread is made from rye\n")
    assert changed(_hashes(tmp_path)) == ["peft.lora(dataset=notes)"]


def test_a_missing_dataset_file_is_a_plan_time_error(tmp_path):
    with pytest.raises(SpecError, match="datasets.notes.path: file not found"):
        plan(IDENTITY.format(seed=0, budget="", data=tmp_path / "absent.txt"))


def test_suite_run_keys_cover_the_data_directory_contents(tmp_path):
    data = tmp_path / "bench"
    data.mkdir()
    (data / "a.jsonl").write_text('{"q": 1}\n')
    text = "name: s\nbase: tiny-llama\nsuites: {quality: {}, latency: {}}\npaths: [[]]\n"

    def keys(**kw):
        return {r.suite.name: r.run_key for r in plan(text, **kw).suite_runs}

    builtin, real = keys(), keys(data_dir=str(data))
    assert builtin["quality"] != real["quality"] and builtin["latency"] == real["latency"]
    (data / "a.jsonl").write_text('{"q": 2}\n')
    assert keys(data_dir=str(data))["quality"] != real["quality"]


def test_list_inputs_hash_every_model_in_order(test_components, tmp_path):
    text = """
    name: m
    base: tiny-llama
    paths:
      - {{name: a, steps: [{{tune.test_noise: {{scale: 0.01}}}}]}}
      - {{name: b, steps: [{{tune.test_noise: {{scale: 0.02}}}}]}}
      - {{name: avg, steps: [{{merge.test_average: {{models: {models}}}}}]}}
    """
    ab, ba = plan(text.format(models="[a, b]")), plan(text.format(models="[b, a]"))
    node = by_technique(ab, "merge.test_average")
    assert isinstance(node.inputs["models"], list) and len(node.inputs["models"]) == 2
    assert node.hash != by_technique(ba, "merge.test_average").hash
    summary = Runner(parse_spec(textwrap.dedent(text.format(models="[a, b]")), file="m.yaml"), tmp_path,
                     progress=False).run()
    assert (summary.steps_executed, summary.steps_failed) == (3, 0), summary.failures


def test_a_named_file_dataset_reaches_the_step_whole_in_either_executor(test_components, tmp_path):
    import json

    import duckdb

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f" A{i}."}) + "\n" for i in range(5)))
    text = f"name: ds\nbase: tiny-llama\ndatasets: {{pairs: {{path: {data}, n: 3}}}}\n" \
           "paths: [[{tune.test_read: {dataset: pairs}}]]\n"
    for executor in ("inprocess", "subprocess"):
        ws = tmp_path / executor
        summary = Runner(parse_spec(text), ws, executor=executor, progress=False).run()
        assert summary.steps_executed == 1, summary.failures
        con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
        (report,) = con.execute("SELECT report FROM node_costs").fetchone()
        con.close()
        assert json.loads(report) == {"n": 3, "first": {"prompt": "Q0?", "completion": " A0."}}


def test_a_new_seed_recomputes_only_seed_dependent_nodes(test_components, tmp_path):
    text = "name: r\nbase: tiny-llama\nseed: {seed}\npaths: [[prune.magnitude], [tune.test_noise]]\n"
    first = Runner(parse_spec(text.format(seed=0)), tmp_path, progress=False).run()
    second = Runner(parse_spec(text.format(seed=1)), tmp_path, progress=False).run()
    assert (first.steps_executed, second.steps_executed, second.steps_cached) == (2, 1, 1)


# -- reproduce snippets ---------------------------------------------------------------------------
def test_every_snippet_is_a_complete_spec_that_plans_to_the_same_leaf(tmp_path):
    (tmp_path / "corpus.txt").write_text("one line\nanother line\n")
    (tmp_path / "box.yaml").write_text("name: box\ndevice: cpu\nthreads: 1\nbatch_size: 2\n")
    spec_file = tmp_path / "full.yaml"
    spec_file.write_text(textwrap.dedent(f"""
    name: full
    bases: {{student: tiny-llama, teacher: {{scratch: {{hidden_size: 32, intermediate_size: 64,
             num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1}}}}}}
    hardware: [cpu-1t, box.yaml]
    seed: 3
    max_steps: 2
    suites: {{quality: {{profile: quick, tasks: [slm_arithmetic]}}}}
    datasets:
      raw: {{path: {tmp_path / "corpus.txt"}, n: 10}}
      clean: {{from: raw, steps: [{{data.perplexity_filter: {{keep: 0.5}}}}]}}
    grid:
      prune: [none, prune.magnitude]
      tune: [none, {{peft.lora: {{dataset: clean}}}}]
    paths:
      - {{name: teacher-tuned, base: teacher, steps: [{{peft.lora: {{dataset: raw}}}}]}}
      - {{name: kd, base: student, steps: [prune.wanda, {{distill.logit: {{teacher: teacher-tuned}}}}]}}
    """))
    from harness.spec import load_spec

    full = make_plan(load_spec(spec_file))
    assert len(full.paths) == 12
    for p in full.paths:
        doc = yaml.safe_load(p.spec_snippet)
        assert {"bases", "hardware", "seed", "max_steps", "suites", "paths"} <= set(doc), doc
        again = make_plan(parse_spec(p.spec_snippet, file="snippet.yaml"))
        (same,) = [q for q in again.paths if q.name == p.name]
        assert (same.leaf, same.path_id, same.hardware) == (p.leaf, p.path_id, p.hardware), p.spec_snippet
