"""merge.* on mergekit (pico model): a merge of a model with itself is that model, a linear merge equals
mergekit's own command line on the same inputs and YAML tensor for tensor, weights and model counts are checked
when the spec is planned, and a spec merges one path with another by name."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from adapters.errors import SpecError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

pytest.importorskip("mergekit")

MERGES = ("merge.linear", "merge.slerp", "merge.task_arithmetic", "merge.ties", "merge.dare")


def merge(name, handle, others, tmp_path, base=None, **params):
    cls = TECHNIQUES.get(name)
    inputs = {"models": list(others), **({"base": base} if base is not None else {})}
    ctx = TechniqueContext(seed=0, workdir=tmp_path / name, inputs=inputs)
    return cls(build_params(cls, params)).run(handle, ctx)


def noisy(handle, scale, seed):
    model = copy.deepcopy(handle.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return ModelHandle(model, handle.tokenizer, source=f"noisy-{seed}")


def state(handle):
    return {k: v.detach().clone() for k, v in handle.model.state_dict().items()}


@pytest.mark.parametrize("name", MERGES)
def test_a_merge_of_a_model_with_itself_is_that_model(name, tiny_handle, tmp_path):
    params = {"density": 1.0} if name == "merge.dare" else {}
    out = merge(name, tiny_handle, [tiny_handle], tmp_path, base=tiny_handle, **params)
    assert out.handle.format == "torch" and out.handle.lineage[-1].technique == name
    mine, theirs = state(out.handle), state(tiny_handle)
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], atol=1e-6, rtol=1e-5, msg=k)
    assert out.report.models == 2 and out.report.method in out.report.config


def test_linear_merge_equals_mergekits_command_line_tensor_for_tensor(tiny_handle, tmp_path):
    from safetensors.torch import load_file

    a, b = noisy(tiny_handle, 0.02, 1), noisy(tiny_handle, 0.02, 2)
    out = merge("merge.linear", a, [b], tmp_path, weights=[0.3, 0.7])
    config = yaml.safe_load(out.report.config)
    assert [m["parameters"]["weight"] for m in config["models"]] == [0.3, 0.7]
    cfg = tmp_path / "cli.yml"
    cfg.write_text(out.report.config)
    cli = Path(sys.executable).with_name("mergekit-yaml")
    subprocess.run([str(cli), str(cfg), str(tmp_path / "cli-out")], check=True, capture_output=True)
    theirs = {}
    for f in sorted((tmp_path / "cli-out").glob("*.safetensors")):
        theirs.update(load_file(f))
    mine = state(out.handle)
    for k, v in theirs.items():
        assert torch.equal(mine[k], v), k
    expected = 0.3 * a.model.model.layers[0].mlp.up_proj.weight + 0.7 * b.model.model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(out.handle.model.model.layers[0].mlp.up_proj.weight, expected)
    back = ModelHandle.load(out.handle.save(tmp_path / "saved"))
    assert back.loglikelihood([("The river", " flows")]) == out.handle.loglikelihood([("The river", " flows")])


def test_ties_keeps_the_largest_entries_of_each_task_vector(tiny_handle, tmp_path):
    a, b = noisy(tiny_handle, 0.05, 3), noisy(tiny_handle, 0.05, 4)
    out = merge("merge.ties", a, [b], tmp_path, base=tiny_handle, density=0.3)
    delta = out.handle.model.model.layers[0].mlp.up_proj.weight - tiny_handle.model.model.layers[0].mlp.up_proj.weight
    zero = float((delta.abs() < 1e-9).float().mean())
    assert 0.3 < zero < 0.75, zero  # each task vector trimmed to 30%: most entries of the merge are the base's
    assert not torch.allclose(out.handle.model.model.layers[0].mlp.up_proj.weight,
                              a.model.model.layers[0].mlp.up_proj.weight)


SPEC = """
name: merges
base: tiny-llama
paths:
  - name: a
    steps: [{{prune.magnitude: {{sparsity: 0.3}}}}]
  - name: ab
    steps: [{{prune.magnitude: {{sparsity: 0.5}}}}, {step}]
"""


def test_a_path_merges_with_another_by_name_and_bad_counts_fail_at_plan_time(tmp_path):
    from harness.plan import make_plan
    from harness.runner import Runner
    from harness.spec import parse_spec

    good = SPEC.format(step="{merge.linear: {models: [a], weights: [0.5, 0.5]}}")
    plan = make_plan(parse_spec(textwrap.dedent(good), file="m.yaml"))
    (leaf,) = [p.leaf for p in plan.paths if p.name == "ab"]
    (a_leaf,) = [p.leaf for p in plan.paths if p.name == "a"]
    assert plan.nodes[leaf].inputs["models"] == [a_leaf]
    summary = Runner(parse_spec(textwrap.dedent(good), file="m.yaml"), tmp_path / "ws", progress=False).run()
    assert summary.status == "ok" and summary.steps_executed == 3
    for step, message in (("{merge.linear: {models: [a], weights: [1.0]}}", "has 1 weights for 2 models"),
                          ("{merge.slerp: {models: [a, base]}}", "name exactly one (got 2)"),
                          ("{merge.ties: {models: [nowhere]}}", "'nowhere' names no base or path")):
        with pytest.raises(SpecError, match=re.escape(message)):
            make_plan(parse_spec(textwrap.dedent(SPEC.format(step=step)), file="m.yaml"))
