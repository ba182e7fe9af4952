"""The ``parity`` suite: torch vs ONNX Runtime on the pico model (fp32 agrees to float noise, int8 does not), the
statistics on hand-made scores, the skipped record on a torch model, option checks, and the harness handing the
suite the deploy step's torch input (a pico run of a spec)."""

from __future__ import annotations

import math
import textwrap

import pytest

from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from suites.base import SUITES, SuiteContext
from suites.parity import Item, loglikelihood_metrics, task_items, wilson

pytest.importorskip("onnxruntime")


def deploy(handle, tmp_path, **params):
    cls = TECHNIQUES.get("deploy.onnxruntime")
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=tmp_path)).handle


def parity(handle, reference, **options):
    ctx = SuiteContext(profile="quick", options={"n": 12, "prompts": 4, "new_tokens": 8, **options},
                       reference=reference)
    result = SUITES.get("parity")().run(handle, ctx)
    return {(m.task, m.name): m for m in result.metrics}, result


@pytest.fixture(scope="module")
def ort_handles(tiny_handle, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return deploy(tiny_handle, root / "fp32"), deploy(tiny_handle, root / "int8", quantize="int8")


def test_fp32_onnx_matches_torch_and_int8_does_not(tiny_handle, ort_handles):
    fp32, int8 = ort_handles
    same, result = parity(fp32, tiny_handle)
    for task in ("slm_world_facts", "slm_arithmetic"):
        worst, mean = same[(task, "max_abs_delta_ll")], same[(task, "mean_abs_delta_ll")]
        assert 0 <= worst.value < 1e-3 and worst.n == 12 * 4 and worst.unit == "nats" and not worst.higher_is_better
        assert 0 <= mean.value <= worst.value and mean.n == 12 and mean.stderr is not None
        agree = same[(task, "choice_agreement")]
        assert agree.value == 1.0 and agree.n == 12 and agree.details["ci_low"] == pytest.approx(wilson(12, 12)[0])
    assert same[("greedy", "identical_tokens")].value == 1.0 and same[("greedy", "identical_tokens")].n == 4
    assert same[("greedy", "matching_prefix")].value == 1.0
    assert {s.sample_id for s in result.samples if s.task == "slm_arithmetic"} == \
        {i.id for i in task_items("slm_arithmetic", None, 0, 12)}
    assert result.settings["backend"] == "onnxruntime" and "skipped" not in result.settings

    perturbed, _ = parity(int8, tiny_handle)
    for task in ("slm_world_facts", "slm_arithmetic"):
        worst = perturbed[(task, "max_abs_delta_ll")].value
        assert worst > 1e-3 and worst > 20 * same[(task, "max_abs_delta_ll")].value
        assert perturbed[(task, "mean_abs_delta_ll")].value > 5 * same[(task, "mean_abs_delta_ll")].value


def test_torch_model_is_skipped_with_the_reason(tiny_handle):
    metrics, result = parity(tiny_handle, tiny_handle)
    assert not metrics and "same backend (torch)" in result.settings["skipped"]


def test_onnx_without_a_torch_reference_is_skipped(ort_handles):
    metrics, result = parity(ort_handles[0], None)
    assert not metrics and "no torch model" in result.settings["skipped"]


def test_statistics_on_known_scores():
    items = [Item("a", "c", (" x", " y"), 0), Item("b", "c", (" x", " y", " z"), 2)]
    ours = [-1.0, -2.0, -3.0, -1.0, -1.5]  # item b picks choice 1
    torch = [-1.1, -2.0, -3.0, -2.0, -1.2]  # item b picks choice 2
    metrics, samples = loglikelihood_metrics("t", items, ours, torch, {})
    by = {m.name: m for m in metrics}
    assert by["max_abs_delta_ll"].value == pytest.approx(1.0) and by["max_abs_delta_ll"].n == 5
    assert by["max_abs_delta_ll"].details["worst_item"] == "b"
    per_item = [0.05, (0 + 1.0 + 0.3) / 3]
    assert by["mean_abs_delta_ll"].value == pytest.approx(sum(per_item) / 2) and by["mean_abs_delta_ll"].n == 2
    assert by["mean_abs_delta_ll"].stderr == pytest.approx(abs(per_item[0] - per_item[1]) / 2)
    assert by["choice_agreement"].value == 0.5 and by["choice_agreement"].details["disagreeing"] == ["b"]
    assert [s.correct for s in samples] == [True, False] and samples[1].prediction == "1" and samples[1].target == "2"


def test_wilson_interval():
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)  # the textbook value for 10/10
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert not math.isnan(wilson(0, 3)[1])


@pytest.mark.parametrize(("options", "field"), [({"tasks": ["hellaswag"]}, "tasks"), ({"against": "onnx"}, "against"),
                                                ({"prompts": 0}, "prompts"), ({"n": "many"}, "n")])
def test_bad_options_name_the_field(options, field):
    problem = SUITES.get("parity").check_options(options)
    assert problem and problem[0] == field


def test_local_benchmark_items_are_seeded_subsamples(benchmarks_dir):
    a, b = task_items("arc_easy", benchmarks_dir, 0, 10), task_items("arc_easy", benchmarks_dir, 0, 10)
    assert a == b and len(a) == 10 and task_items("arc_easy", benchmarks_dir, 1, 10) != a
    assert all(i.context.startswith("Question: ") and i.context.endswith("\nAnswer:") for i in a)
    assert all(0 <= i.gold < len(i.choices) and all(c.startswith(" ") for c in i.choices) for i in a)
    piqa = task_items("piqa", benchmarks_dir, 0, 5)
    assert len(piqa) == 5 and all(len(i.choices) == 2 for i in piqa)


def test_a_run_compares_the_onnx_leaf_with_the_deploy_input(tmp_path):
    from run_helpers import rows, run  # tests/harness, on sys.path by pyproject's pytest `pythonpath`

    spec = """
    name: parity
    base: tiny-llama
    evaluate: all
    suites: {parity: {n: 6, prompts: 2, new_tokens: 4}}
    paths:
      - {name: onnx, steps: [{deploy.onnxruntime: {}}]}
    """
    summary = run(textwrap.dedent(spec), tmp_path)
    assert summary.suite_runs_executed == 2 and not summary.failures
    got = dict(rows(tmp_path, "SELECT task || '/' || metric, value FROM metrics_long WHERE suite = 'parity'"))
    assert got["slm_world_facts/max_abs_delta_ll"] < 1e-3 and got["slm_world_facts/choice_agreement"] == 1.0
    skipped = rows(tmp_path, "SELECT json_extract_string(settings, '$.skipped') FROM suite_runs sr JOIN paths p "
                             "ON sr.node_hash = p.chain->>'$[0]'")
    assert skipped and "same backend" in skipped[0][0]


def test_the_reference_is_the_nearest_torch_model_of_the_lineage():
    from harness.executors import torch_reference
    from harness.plan import Node

    def node(h, fmt, parent=None, kind="model"):
        return Node(h, kind, None if kind == "source" else "t", "1", {}, {"model": parent} if parent else {},
                    format=fmt)

    nodes = {n.hash: n for n in (node("src", None, kind="source"), node("pruned", "torch-sparse", "src"),
                                 node("onnx", "onnx", "pruned"), node("decoding", "onnx", "onnx"),
                                 node("gguf-src", "gguf", kind="source"), node("gguf-infer", "gguf", "gguf-src"))}
    assert torch_reference(nodes, "decoding") == torch_reference(nodes, "onnx") == "pruned"
    assert torch_reference(nodes, "pruned") is None and torch_reference(nodes, "src") is None
    assert torch_reference(nodes, "gguf-infer") is None
