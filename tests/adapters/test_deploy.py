"""deploy.onnxruntime: scoring and generation really go through the ONNX Runtime session, equal to torch
on fp32, different under int8; the artifact reloads into a new session. Slow: SmolLM2 WikiText-2
perplexity and decode speed, ORT against torch, interleaved in one process."""

from __future__ import annotations

import statistics

import pytest
import torch

from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PAIR = [("The river near the old mill", " flows east"), ("She sold", " apples at the market")]
PROMPTS = ["The river", "She sold the old"]


def deploy(handle, tmp_path, **params):
    cls = TECHNIQUES.get("deploy.onnxruntime")
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=tmp_path / "w")).handle


def lls(handle):
    return [x.logprob for x in handle.loglikelihood(PAIR)]


def test_fp32_session_matches_torch(tiny_handle, tmp_path, monkeypatch):
    out = deploy(tiny_handle, tmp_path)
    assert out.backend == "onnxruntime" and not list(out.model.parameters())  # no torch weights left
    calls = []
    run = out.model.session.run
    monkeypatch.setattr(out.model.session, "run", lambda *a: calls.append(1) or run(*a), raising=False)
    assert lls(out) == pytest.approx(lls(tiny_handle), abs=1e-4)
    assert calls, "scoring did not go through the ORT session"
    for kwargs in ({}, {"num_beams": 3}):  # greedy and beam search reuse the ORT KV cache
        assert out.generate(PROMPTS, max_new_tokens=10, **kwargs) == tiny_handle.generate(PROMPTS, max_new_tokens=10,
                                                                                          **kwargs)
    streamed = [e.token_id for e in out.stream("The river", max_new_tokens=6)]
    assert streamed == [e.token_id for e in tiny_handle.stream("The river", max_new_tokens=6)]
    assert out.weight_footprint()["float32"] >= sum(tiny_handle.weight_footprint().values())


def test_int8_quantizes_matmuls_but_not_lm_head(tiny_handle, tmp_path):
    import onnx

    out = deploy(tiny_handle, tmp_path, quantize="int8")
    graph = onnx.load(out.format_state["onnx_file"]).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") >= 14  # 7 linears x 2 layers
    assert any(n.op_type == "MatMul" and "lm_head" in n.name for n in graph.node)
    linears = [m for n, m in tiny_handle.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    # int8 weights plus one int8 zero point per output channel
    assert out.weight_footprint()["int8"] == sum(m.weight.numel() + m.out_features for m in linears)
    assert lls(out) == pytest.approx(lls(tiny_handle), abs=0.05) and lls(out) != lls(tiny_handle)
    back = ModelHandle.load(out.save(tmp_path / "a"))
    assert back.backend == "onnxruntime" and back.model.session is not out.model.session
    assert lls(back) == lls(out)


def test_decoding_applies_on_the_ort_handle(tiny_handle, tmp_path):
    out = deploy(tiny_handle, tmp_path)
    cls = TECHNIQUES.get("infer.decoding")
    sampled = cls(build_params(cls, {"strategy": "sample", "temperature": 1.5, "seed": 1})).run(
        out, TechniqueContext(seed=0, workdir=tmp_path)).handle
    assert type(sampled) is type(out) and sampled.model is out.model
    a, b = sampled.generate(PROMPTS, max_new_tokens=8), sampled.generate(PROMPTS, max_new_tokens=8)
    assert a == b and a != out.generate(PROMPTS, max_new_tokens=8)


def _decode_tps(handle, n_tokens=32):
    events = list(handle.stream("The history of the city begins", max_new_tokens=n_tokens))
    return (len(events) - 1) / (events[-1].time_s - events[0].time_s)


@pytest.mark.slow
def test_smollm2_ort_perplexity_and_decode_speed(smollm2, benchmarks_dir, tmp_path, wikitext):
    lines = wikitext.lines()
    ort32 = deploy(smollm2, tmp_path / "fp32")
    ort8 = deploy(smollm2, tmp_path / "int8", quantize="int8")
    ppl = {"torch": wikitext.ppl(smollm2, lines), "ort_fp32": wikitext.ppl(ort32, lines), "ort_int8": wikitext.ppl(ort8, lines)}
    speed: dict[str, list[float]] = {k: [] for k in ppl}
    handles = {"torch": smollm2, "ort_fp32": ort32, "ort_int8": ort8}
    for h in handles.values():
        _decode_tps(h, 4)  # warm-up
    for _ in range(3):  # interleaved, medians
        for name, h in handles.items():
            speed[name].append(_decode_tps(h))
    tps = {k: statistics.median(v) for k, v in speed.items()}
    print("wikitext-2 perplexity:", {k: round(v, 2) for k, v in ppl.items()})
    print("decode tokens/s:", {k: round(v, 1) for k, v in tps.items()},
          "ratios vs torch:", {k: round(v / tps["torch"], 2) for k, v in tps.items()})
    assert ppl["ort_fp32"] == pytest.approx(ppl["torch"], rel=1e-3)
    assert ppl["torch"] < ppl["ort_int8"] < 2 * ppl["torch"]
    linears = [m for n, m in smollm2.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert ort8.weight_footprint()["int8"] == sum(m.weight.numel() + m.out_features for m in linears)


@pytest.mark.parametrize("quant,params", [("quant.int8", {}), ("quant.rtn", {"group_size": 32})])
def test_torch_quantized_models_are_refused_with_the_ort_alternative(quant, params, tiny_handle, tmp_path):
    from adapters.technique import FormatMismatch

    cls = TECHNIQUES.get(quant)
    quantized = cls(build_params(cls, params)).run(tiny_handle, TechniqueContext(seed=0, workdir=tmp_path)).handle
    with pytest.raises(FormatMismatch, match="quantize: int8"):
        deploy(quantized, tmp_path)


def test_prefix_cache_scores_through_the_ort_session(tiny_handle, tmp_path):
    from adapters.lm import HandleHFLM

    out = deploy(tiny_handle, tmp_path)
    ctx = out.tokenizer("Question: which river flows east?\nAnswer:").input_ids
    requests = [(None, ctx, out.tokenizer(c).input_ids) for c in (" the old mill river", " none", " the Rhine")]
    lm = HandleHFLM(out, prefix_cache=True)
    shared = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    exact = HandleHFLM(tiny_handle)._loglikelihood_tokens(requests, disable_tqdm=True)
    assert lm.prefix_stats == {"groups": 1, "requests": 3, "fallback": 0}
    assert [x for x, _ in shared] == pytest.approx([x for x, _ in exact], abs=1e-4)
    assert [g for _, g in shared] == [g for _, g in exact]


def test_the_execution_provider_follows_the_profiles_device(tiny_handle, tmp_path):
    from adapters.techniques._ort import execution_providers
    from harness.executors import with_runtime
    from harness.hardware import HardwareProfile

    gpu_ort = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cpu", gpu_ort) == (["CPUExecutionProvider"], None)
    assert execution_providers("cuda:1", gpu_ort) == ([("CUDAExecutionProvider", {"device_id": 1}),
                                                       "CPUExecutionProvider"], None)
    providers, reason = execution_providers("cuda", ["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and "onnxruntime-gpu" in reason
    out = deploy(tiny_handle, tmp_path)
    assert out.settings["execution_providers"] == ["CPUExecutionProvider"]
    assert with_runtime(out, HardwareProfile("cpu-1t")) is out
    import onnxruntime

    on_gpu = with_runtime(out, HardwareProfile("gpu", device="cuda"))  # a new session, on the provider it can get
    assert on_gpu is not out and on_gpu.model.target_device == "cuda"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert on_gpu.settings["execution_providers"][0] == "CUDAExecutionProvider"
    else:
        assert on_gpu.settings["execution_providers"] == ["CPUExecutionProvider"]
        assert "onnxruntime-gpu" in on_gpu.settings["execution_provider_fallback"]
    assert lls(on_gpu) == pytest.approx(lls(out), abs=1e-3)
