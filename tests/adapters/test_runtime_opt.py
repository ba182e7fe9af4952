"""deploy.compile and deploy.speculative: runtime settings on the handle (pico model), and on SmolLM2 one slow test of
speculative decoding with a real draft (greedy equality, acceptance rate)."""

from __future__ import annotations

import pytest
import yaml

from adapters.errors import ModelLoadError, SpecError, UsageError
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques.runtime_opt import CompileHook, SpeculativeHook, counting_drafts, probe_prompts

PROMPT = "1 2 3 4 5 6 7 8 1 2 3"


def run(name, params, handle, tmp_path, **inputs):
    cls = get_technique(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(workdir=tmp_path / name, inputs=inputs))


@pytest.fixture(scope="module")
def compiled(tiny_handle, tmp_path_factory):
    return run("deploy.compile", {"backend": "eager", "warmup_tokens": 2}, tiny_handle, tmp_path_factory.mktemp("c"))


def test_compile_report_and_hook(compiled, tiny_handle):
    out, report = compiled
    assert out.model is tiny_handle.model and out.inference_hooks[-1] == CompileHook("eager", "default", False, None)
    assert report.warmup_s > 0 and report.warmup_tokens == 2 and report.backend == "eager"
    assert report.graph_breaks == 0  # a float Llama traces into whole graphs
    assert out.lineage[-1].report["warmup_s"] == report.warmup_s


def test_compile_streaming_runs_the_compiled_static_cache_forward(compiled, monkeypatch):
    """Every decode step of the latency suite's streaming path goes through the compiled forward over a static cache."""
    from transformers import StaticCache

    out, _ = compiled
    model = out.model
    calls, caches = [], []
    make = model.get_compiled_call

    def spy(config):
        fn = make(config)
        assert config.backend == "eager" and config._compile_all_devices

        def counted(*args, **kwargs):
            calls.append(1)
            caches.append(type(kwargs["past_key_values"]))
            return fn(*args, **kwargs)
        return counted

    monkeypatch.setattr(model, "get_compiled_call", spy)
    events = list(out.stream(PROMPT, max_new_tokens=6))
    assert len(events) == 6
    assert len(calls) == 5 and set(caches) == {StaticCache}  # the first token is the (eager) prefill's
    eager = out.derive(inference_hooks=())
    assert [e.token_id for e in events] == [e.token_id for e in eager.stream(PROMPT, max_new_tokens=6)]


def test_compile_params_and_formats():
    cls = get_technique("deploy.compile")
    with pytest.raises(UsageError, match="max_cache_len must be >= 32"):
        build_params(cls, {"max_cache_len": 8})
    with pytest.raises(UsageError, match="backend"):
        build_params(cls, {"backend": "cudagraphs"})
    params = build_params(cls, {})
    for fmt in ("torch-int8-dynamic", "compressed-tensors", "onnx"):
        with pytest.raises(Exception, match=f"does not accept a {fmt} model"):
            cls.output_format(fmt, params)
    assert cls.output_format("quanto", params) == "quanto"


def test_prompt_lookup_equals_greedy_and_counts_drafts(tiny_handle, tmp_path):
    out, report = run("deploy.speculative", {"probe_prompts": 2, "probe_tokens": 12}, tiny_handle, tmp_path)
    assert out.inference_hooks[-1].method == "prompt_lookup" and report.method == "prompt_lookup"
    assert out.generate([PROMPT], max_new_tokens=12) == tiny_handle.generate([PROMPT], max_new_tokens=12)
    for g in report.generations:  # every verification round emits its accepted drafts plus the target's own token
        assert g["new_tokens"] == 12 == g["rounds"] + g["accepted"] and g["accepted"] <= g["proposed"]
    assert report.acceptance_rate == sum(g["accepted"] for g in report.generations) / sum(
        g["proposed"] for g in report.generations)
    # saved with the handle: prompt lookup is plain generate arguments, restored on load
    restored = SpeculativeHook.from_dict(out.inference_hooks[-1].to_dict())
    assert restored.generate_kwargs(out) == {"prompt_lookup_num_tokens": 5, "max_matching_ngram_size": 2}


def test_assisted_draft_equals_target_greedy(tiny_handle, tmp_path):
    draft = run("prune.layers", {"n_layers": 1, "n_calibration": 2, "seq_len": 16}, tiny_handle, tmp_path).handle
    out, report = run("deploy.speculative", {"num_tokens": 3, "probe_prompts": 2, "probe_tokens": 10}, tiny_handle,
                      tmp_path, draft=draft)
    assert report.method == "assisted" and report.same_tokenizer and report.draft.endswith("-> prune.layers")
    prompts = probe_prompts(tiny_handle, 3)
    for p in prompts:
        assert out.generate_ids([p], 10).tolist() == tiny_handle.generate_ids([p], 10).tolist()
    assert all(g["proposed"] > 0 for g in report.generations)
    # the draft's own node is not reconfigured: the hook drafts with a view carrying its own generation config
    assert out.inference_hooks[-1].draft.generation_config.num_assistant_tokens == 3
    assert draft.model.generation_config.num_assistant_tokens != 3
    with pytest.raises(ModelLoadError, match="re-apply the step"):
        SpeculativeHook.from_dict(out.inference_hooks[-1].to_dict())


def test_self_draft_accepts_everything_it_can(tiny_handle, tmp_path):
    """The target as its own draft agrees with itself: every proposal is accepted, and each round emits its accepted
    proposals plus the target's own token (rounds of 4 + 1, 4 + 1, then 0 + 1 for the last token of the budget)."""
    out, _ = run("deploy.speculative", {"num_tokens": 4, "probe_prompts": 0}, tiny_handle, tmp_path, draft=tiny_handle)
    with counting_drafts(out.model) as count:
        out.generate_ids([probe_prompts(tiny_handle, 1)[0]], 11)
    assert (count.rounds, count.proposed, count.accepted) == (3, 8, 8)


def test_latency_timing_counts_emitted_tokens(tiny_handle, tmp_path):
    from suites.builtin.latency import timed_generate

    out, _ = run("deploy.speculative", {"num_tokens": 4, "probe_prompts": 0}, tiny_handle, tmp_path, draft=tiny_handle)
    stamps = timed_generate(out, [probe_prompts(tiny_handle, 1)[0]], 9)
    assert len(stamps) == 9 and stamps == sorted(stamps)  # one stamp per token, not per logits-processor call
    assert len(set(stamps)) < 9  # tokens accepted in one round share their time


def _plan(steps):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    spec = {"name": "t", "base": "tiny-llama", "paths": [{"name": "p", "steps": steps}]}
    return make_plan(parse_spec(yaml.safe_dump(spec), file="t.yaml"))


@pytest.mark.parametrize(("steps", "message"), [
    ([{"deploy.compile": {}}, {"kv.window": {}}], "also sets the KV cache"),
    ([{"infer.decoding": {"strategy": "beam"}}, "deploy.speculative"], "searches with beams"),
    (["deploy.speculative", "deploy.onnxruntime"], "makes a onnx model"),
    (["deploy.compile", "quant.int8"], "makes a torch-int8-dynamic model"),
    ([{"deploy.speculative": {"draft": "base"}}, {"prune.magnitude": {"sparsity": 0.5}}], "put deploy.speculative after"),
])
def test_plan_refuses_conflicts(steps, message):
    with pytest.raises(SpecError, match=message):
        _plan(steps)


def test_plan_accepts_compositions():
    plan = _plan([{"prune.magnitude": {"sparsity": 0.5}}, {"quant.rtn": {"bits": 4, "group_size": 16}},
                  {"deploy.speculative": {"draft": "base"}}])
    assert plan.paths[0].steps[-1]["format"] == "quanto"


@pytest.mark.slow
def test_smollm2_draft_greedy_equality_and_acceptance(smollm2, wikitext, tmp_path):
    """SmolLM2 drafted by its own quanto int8 copy: greedy outputs equal the target's on WikiText-2 prompts, and the
    draft, which nearly always agrees with the target, has most of its proposals accepted (a random draft: 1 in
    49152). (A 10-block SmolLM2 without recovery training is accepted ~2% of the time: benchmarks/runtime_opt.py.)"""
    draft = run("quant.rtn", {"bits": 8}, smollm2, tmp_path).handle
    out, report = run("deploy.speculative", {"probe_prompts": 0}, smollm2, tmp_path, draft=draft)
    rates = []
    for text in wikitext.lines(2):
        ids = smollm2.tokenizer(text, add_special_tokens=False).input_ids[:48]
        plain = smollm2.generate_ids([ids], 20).tolist()
        with counting_drafts(out.model) as count:
            assert out.generate_ids([ids], 20).tolist() == plain
        rates.append(count.acceptance_rate)
    assert report.method == "assisted" and all(r is not None and r > 0.5 for r in rates), rates
