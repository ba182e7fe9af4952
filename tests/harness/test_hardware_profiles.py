"""Hardware profiles are applied: a profile this machine cannot honour is refused (or skipped among
several) at plan time, the profile's dtype reaches the measured model, and memory_cap_gb refuses, before
loading, what cannot fit, recorded as data."""

from __future__ import annotations

import textwrap

import duckdb
import pytest

from adapters.errors import SpecError
from harness.executors import with_runtime
from harness.hardware import HardwareProfile, cuda_available
from harness.plan import make_plan
from harness.runner import Runner
from harness.spec import parse_spec

no_gpu = pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA GPU")


def plan(text: str):
    return make_plan(parse_spec(textwrap.dedent(text), file="hw.yaml"))


def rows(ws, sql):
    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@no_gpu
@pytest.mark.parametrize("hardware", ["cuda", "{name: gpu0, device: 'cuda:0'}"])
def test_a_cuda_profile_on_a_cpu_machine_is_one_plan_time_line(hardware):
    with pytest.raises(SpecError) as err:
        plan(f"name: c\nbase: tiny-llama\nhardware: {hardware}\npaths: [[]]\n")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("hw.yaml: hardware: profile") and "needs a CUDA GPU" in str(err.value)


@no_gpu
def test_an_unavailable_profile_among_several_is_skipped_with_its_reason():
    p = plan("name: c\nbase: tiny-llama\nhardware: [cpu-1t, cuda]\npaths: [[]]\n")
    assert [x.hardware.name for x in p.paths] == ["cpu-1t"]
    assert [(s.name, "needs a CUDA GPU" in s.reason) for s in p.skipped_profiles] == [("cuda", True)]


def test_a_malformed_cap_or_device_is_refused():
    with pytest.raises(SpecError, match="memory_cap_gb must be a number > 0"):
        plan("name: c\nbase: tiny-llama\nhardware: {name: x, memory_cap_gb: 0}\npaths: [[]]\n")
    with pytest.raises(SpecError, match="allowed: cpu, cuda, cuda:N"):
        plan("name: c\nbase: tiny-llama\nhardware: {name: x, device: tpu}\npaths: [[]]\n")


@pytest.mark.parametrize(("hardware", "fragment"), [
    ("[]", "hardware: no profile given: name at least one"),
    ("[cpu-1t, cpu-1t]", "hardware[1]: two profiles are named 'cpu-1t': names must be unique"),
    ("[{name: box, threads: 1}, {name: box, threads: 2}]", "two profiles are named 'box' with different definitions"),
    ("{name: cpu-1t, threads: 2}", "'cpu-1t' is a builtin profile's name"),
    ("{name: 5}", "`name:` must be a non-empty string, got 5"),
])
def test_profile_names_are_unique_strings_and_builtin_names_keep_their_definition(hardware, fragment):
    """A custom `{name: cpu-1t, threads: 2}` once reused the builtin's path ids (2-thread latency next to 1-thread
    quality in one row) and overwrote the stored definition of every earlier cpu-1t run."""
    with pytest.raises(SpecError) as err:
        plan(f"name: c\nbase: tiny-llama\nhardware: {hardware}\npaths: [[]]\n")
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert [p.hardware.name for p in plan("name: c\nbase: tiny-llama\nhardware: {name: cpu-1t, device: cpu, "
                                          "threads: 1}\npaths: [[]]\n").paths] == ["cpu-1t"]  # the same: fine


def test_the_profile_dtype_reaches_the_measured_weights(tiny_handle):
    bf16 = with_runtime(tiny_handle, HardwareProfile("bf16", dtype="bfloat16"))
    assert set(bf16.weight_footprint()) == {"bfloat16"}
    assert sum(bf16.weight_footprint().values()) * 2 == sum(tiny_handle.weight_footprint().values())
    assert bf16.settings["dtype"] == "bfloat16" and tiny_handle.settings["dtype"] == "float32"
    assert with_runtime(tiny_handle, HardwareProfile("fp32")) is tiny_handle  # nothing to change: no copy
    (a,), (b,) = tiny_handle.loglikelihood([("The river", " flows")]), bf16.loglikelihood([("The river", " flows")])
    assert a.logprob != b.logprob and b.logprob == pytest.approx(a.logprob, rel=0.05)


def test_a_bf16_profile_is_measured_in_bf16(test_components, tmp_path):
    text = """
    name: d
    base: tiny-llama
    hardware: [cpu-1t, {name: cpu-bf16, dtype: bfloat16}]
    suites: {test_nll: {}}
    paths: [[]]
    """
    summary = Runner(parse_spec(textwrap.dedent(text)), tmp_path, progress=False).run()
    assert summary.suite_runs_executed == 2, summary.failures
    got = dict(rows(tmp_path, "SELECT hardware_profile, json_extract_string(settings, '$.dtype') FROM suite_runs"))
    assert got == {"cpu-1t": "float32", "cpu-bf16": "bfloat16"}
    values = dict(rows(tmp_path, "SELECT hardware_profile, value FROM metrics_long"))
    assert values["cpu-1t"] != values["cpu-bf16"]


def test_memory_cap_refuses_before_loading_and_records_why(test_components, tmp_path):
    text = """
    name: cap
    base: tiny-llama
    hardware: {{name: small, memory_cap_gb: {cap}}}
    suites: {{test_nll: {{}}}}
    paths: [[], [tune.test_noise]]
    """
    tight = Runner(parse_spec(textwrap.dedent(text.format(cap=0.005))), tmp_path / "tight", progress=False).run()
    assert (tight.suite_runs_executed, tight.suite_runs_refused, tight.steps_failed) == (0, 1, 1)
    (status, error), = rows(tmp_path / "tight", "SELECT status, error FROM suite_runs")
    assert status == "refused" and "memory_cap_gb 0.005" in error and "GB at float32" in error
    (node_status,) = rows(tmp_path / "tight", "SELECT status FROM nodes WHERE technique = 'tune.test_noise'")[0]
    assert node_status == "refused"
    roomy = Runner(parse_spec(textwrap.dedent(text.format(cap=2))), tmp_path / "roomy", progress=False).run()
    assert (roomy.suite_runs_executed, roomy.suite_runs_refused, roomy.steps_failed) == (2, 0, 0)


def test_matmul_ceilings_are_measured_at_the_profile_dtype(monkeypatch):
    import suites.ceilings as ceilings_mod

    seen = []
    monkeypatch.setattr(ceilings_mod, "_gemm_times", lambda m, k, n, repeats, dtype: seen.append(dtype) or [1.0, 1.1])
    found = ceilings_mod.measure_matmul(1, repeats=1, dtype="bfloat16")
    assert set(seen) == {"bfloat16"} and found["method"] == "measured:torch-mm-bfloat16-best"
    assert ceilings_mod.cache_key(1, "bfloat16") != ceilings_mod.cache_key(1)


def test_latency_measures_against_the_dtype_the_weights_run_in(tiny_handle):
    from suites.builtin.latency import gemm_dtype

    assert gemm_dtype(tiny_handle) == "float32"
    assert gemm_dtype(with_runtime(tiny_handle, HardwareProfile("bf16", dtype="bfloat16"))) == "bfloat16"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_cuda_profile_places_and_casts_the_measured_model(tiny_handle, dtype):
    import torch

    placed = with_runtime(tiny_handle, HardwareProfile("gpu", device="cuda", dtype=dtype))
    first = next(placed.model.parameters())
    assert first.device.type == "cuda" and first.dtype == getattr(torch, dtype)
    assert set(placed.weight_footprint()) == {dtype}
    (ll,) = placed.loglikelihood([("The river", " flows")])
    (ref,) = tiny_handle.loglikelihood([("The river", " flows")])
    assert ll.logprob == pytest.approx(ref.logprob, rel=0.05)
    assert isinstance(placed.generate(["Hello"], max_new_tokens=3)[0], str)


@pytest.mark.cuda
def test_a_cuda_profile_plans_where_a_gpu_exists():
    p = plan("name: c\nbase: tiny-llama\nhardware: [cpu-1t, cuda]\npaths: [[]]\n")
    assert [x.hardware.name for x in p.paths] == ["cpu-1t", "cuda"] and not p.skipped_profiles


def test_techniques_get_their_models_on_the_profiles_device_and_the_step_says_where(tiny, tiny_handle, tmp_path,
                                                                                    monkeypatch):
    """``runs_on_device`` techniques receive the model and the teacher on ``ctx.device``; the others on the
    CPU; the lineage step records the device the step ran on."""
    import adapters.runtime as runtime
    from adapters.technique import TECHNIQUES, TechniqueContext, build_params

    seen: list[tuple[str, str]] = []
    real = runtime.on_device

    def spy(handle, device):
        seen.append((handle.source, device))
        return real(handle, "cpu")  # this machine has one device: record the request, stay on the CPU

    monkeypatch.setattr(runtime, "on_device", spy)
    on_device = {n for n in TECHNIQUES.names() if getattr(TECHNIQUES.get(n), "runs_on_device", False)}
    assert {"tune.sft", "peft.lora", "distill.logit", "init.scratch", "prune.wanda", "factorize.svd",
            "quant.awq"} <= on_device
    for name, expected in (("distill.logit", "cuda:3"), ("prune.magnitude", "cpu")):
        cls = TECHNIQUES.get(name)
        seen.clear()
        ctx = TechniqueContext(seed=0, workdir=tmp_path / name, hardware={"device": "cuda:3"},
                               inputs={"teacher": tiny_handle}, max_steps=1)
        out = cls(build_params(cls, {})).run(tiny, ctx).handle
        assert seen and {d for _, d in seen} == {expected}, (name, seen)
        assert out.lineage[-1].device == expected
        if name == "distill.logit":
            assert len(seen) == 2  # the student and the teacher


@pytest.mark.cuda
def test_every_weight_technique_runs_on_a_cuda_profile(tmp_path):
    """On a GPU: each technique that runs on the device trains/calibrates there, its output model lives on
    the GPU, scores like a model should and reloads from its saved artifact."""
    import math

    from adapters.handle import ModelHandle
    from adapters.sources import load_source
    from adapters.technique import TECHNIQUES, TechniqueContext, build_params

    model = load_source("tiny-llama", threads=1)
    for name in TECHNIQUES.names():
        cls = TECHNIQUES.get(name)
        if not getattr(cls, "runs_on_device", False):
            continue
        ctx = TechniqueContext(seed=0, workdir=tmp_path / name, hardware={"device": "cuda"},
                               inputs={"teacher": model}, max_steps=2)
        out = cls(build_params(cls, {})).run(model, ctx).handle
        assert out.lineage[-1].device == "cuda" and out.device.startswith("cuda"), name
        (ll,) = out.loglikelihood([("The river", " flows")])
        assert math.isfinite(ll.logprob), name
        out.save(tmp_path / f"{name}-saved")
        (back,) = ModelHandle.load(tmp_path / f"{name}-saved").loglikelihood([("The river", " flows")])
        assert back.logprob == pytest.approx(ll.logprob, abs=1e-2), name
