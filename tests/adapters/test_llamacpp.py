"""deploy.llamacpp: llama.cpp's converter and quantizer make the GGUF, llama-cpp-python runs it behind the runtime
interface. Fast tests on the pico model (F32 equals torch, quantized types are what they say, the artifact reloads,
generation and streaming behave); slow tests on SmolLM2 (scores equal llama-cpp-python's own log-probabilities and
torch's, Q4_K_M keeps the perplexity while Q2_K loses it)."""

from __future__ import annotations

import math
import sys

import pytest
import yaml

from adapters.errors import MissingDependencyError, SpecError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

PAIRS = [("The river near the old mill", " flows east"), ("She sold", " apples at the market"), ("", "Hello there")]
PROMPTS = ["1 2 3", "She sold the old"]


def deploy(handle, workdir, **params):
    cls = TECHNIQUES.get("deploy.llamacpp")
    ctx = TechniqueContext(seed=0, workdir=workdir, hardware={"threads": 1})
    return cls(build_params(cls, params)).run(handle, ctx)


def lls(handle, pairs=PAIRS):
    return [x.logprob for x in handle.loglikelihood(pairs)]


def test_without_llama_cpp_python_the_step_names_the_install(tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install llama-cpp-python==0\.3\.36") as err:
        deploy(tiny_handle, tmp_path)
    assert "CMAKE_ARGS" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def f32(tiny_handle, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    return deploy(tiny_handle, tmp_path_factory.mktemp("f32"), quant="F32")


def test_f32_gguf_scores_and_generates_as_torch(f32, tiny_handle):
    import gguf

    out, report = f32
    assert out.format == "gguf" and out.backend == "llama.cpp" and type(out).__name__ == "LlamaCppHandle"
    assert report.tensor_types == {"F32": 20} and report.bits_per_weight == 32.0
    assert lls(out) == pytest.approx(lls(tiny_handle), abs=2e-4)
    assert out.loglikelihood_rolling(["one two three four five six"]) == pytest.approx(
        tiny_handle.loglikelihood_rolling(["one two three four five six"]), abs=5e-4)
    assert out.generate(PROMPTS, max_new_tokens=8) == tiny_handle.generate(PROMPTS, max_new_tokens=8)
    assert not hasattr(gguf, "LazyChunkedTensor")  # the installed gguf is back after the converter's own ran
    assert not any("third_party" in p for p in sys.path)


def test_the_gguf_vocabulary_tokenizes_as_the_hf_tokenizer(f32):
    out, report = f32
    assert report.byte_level_tokenizer_rewritten  # transformers' GGUF import marks SmolLM2's BPE byte_fallback
    for text in ("The river flows east, 1234 times!", "  spaces\tand\nnewlines", "naïve café ünïcode",
                 "<|im_start|>user\nHi<|im_end|>"):
        assert out.model.tokenize(text) == out.tokenizer(text, add_special_tokens=False).input_ids


def test_architecture_and_footprint_come_from_the_file(f32, tiny_handle):
    out, report = f32
    assert out.architecture() == tiny_handle.architecture()
    assert out.num_parameters() == tiny_handle.num_parameters()  # the tied head stored once
    assert out.weight_footprint() == {"F32": 4 * tiny_handle.num_parameters()}
    assert out.embedding_facts().tied and out.kv_bytes_per_token() == tiny_handle.kv_bytes_per_token() // 2  # F16 KV
    assert out.gguf_file.stat().st_size == report.gguf_bytes > 4 * tiny_handle.num_parameters()
    assert out.model.n_ctx == tiny_handle.model.config.max_position_embeddings == 2048  # 4096 capped at training
    ids = [[5, 6, 7, 8, 9, 10]]
    assert out.forward(ids).numpy() == pytest.approx(tiny_handle.forward(ids).numpy(), abs=1e-3)  # F16 KV cache


def test_the_artifact_reloads_to_the_same_model(f32, tmp_path):
    out, _ = f32
    back = ModelHandle.load(out.save(tmp_path / "a"), threads=1)
    assert back.format == "gguf" and back.lineage == out.lineage and back.model is not out.model
    assert lls(back) == lls(out)
    assert back.generate(PROMPTS, max_new_tokens=6) == out.generate(PROMPTS, max_new_tokens=6)


def test_stream_timestamps_each_token_and_matches_greedy(f32):
    out, _ = f32
    events = list(out.stream("1 2 3", max_new_tokens=12))
    times = [e.time_s for e in events]
    assert [e.index for e in events] == list(range(12)) and times == sorted(times) and times[0] > 0
    prompt = out.tokenizer("1 2 3", add_special_tokens=False).input_ids
    full = out.generate_ids([prompt], 12, min_new_tokens=12)
    assert full[0].tolist() == prompt + [e.token_id for e in events]


def test_sampling_is_seeded_and_stops_at_stop_strings(f32, tmp_path):
    out, _ = f32
    cls = TECHNIQUES.get("infer.decoding")
    sampled = cls(build_params(cls, {"strategy": "sample", "temperature": 1.5, "seed": 3})).run(
        out, TechniqueContext(seed=0, workdir=tmp_path)).handle
    assert type(sampled) is type(out) and sampled.model is out.model
    a, b = sampled.generate(PROMPTS, max_new_tokens=12), sampled.generate(PROMPTS, max_new_tokens=12)
    assert a == b and a != out.generate(PROMPTS, max_new_tokens=12)
    greedy = out.generate(["1 2 3"], max_new_tokens=12)[0]
    stop = greedy[len(greedy) // 2: len(greedy) // 2 + 3]  # text of the greedy continuation: generation ends there
    cut = out.generate(["1 2 3"], max_new_tokens=12, stop=[stop])[0]
    assert cut == greedy.split(stop)[0] and len(cut) < len(greedy)
    lm = out.lm()
    ids = lm.tok_encode("1 2 3")
    tokens = out.model.generate(ids, 12, out.sampling(), out.stop_ids(),
                                should_stop=lambda t: stop in lm.tok_decode(t))
    assert len(tokens) < 12  # decoding stopped at the stop string, not only the text cut after it


def test_llama_cpp_quantizes_to_the_type_asked(tiny_handle, f32, tmp_path):
    import torch

    out, report = deploy(tiny_handle, tmp_path / "q4", quant="Q4_0")
    linears = [m for n, m in tiny_handle.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert report.quantize_s is not None and report.tensor_types["Q4_0"] == len(linears)
    # Q4_0: blocks of 32 weights in 18 bytes (16 bytes of 4-bit values and an f16 scale)
    assert out.weight_footprint()["Q4_0"] == sum(m.weight.numel() for m in linears) * 18 // 32
    # the tied embedding, which is also the output head, is kept at higher precision (Q6_K; 64 columns are no
    # multiple of 256, so llama.cpp falls back to Q8_0)
    assert report.tensor_types["Q8_0"] == 1 and report.bits_per_weight < 32
    drift = max(abs(a - b) for a, b in zip(lls(out), lls(f32[0]), strict=True))
    assert 1e-4 < drift < 0.5  # quantized: changed, not broken


def test_the_parity_suite_compares_the_gguf_with_torch(tiny_handle, f32, tmp_path):
    """The parity suite on llama.cpp: F32 agrees with torch to float noise; Q4_0 moves the log-likelihoods."""
    from suites.base import SUITES, SuiteContext

    def parity(handle):
        ctx = SuiteContext(profile="quick", options={"n": 12, "prompts": 4, "new_tokens": 8}, reference=tiny_handle)
        result = SUITES.get("parity")().run(handle, ctx)
        return {(m.task, m.name): m.value for m in result.metrics}, result.settings

    same, settings = parity(f32[0])
    assert settings["backend"] == "llama.cpp" and "skipped" not in settings
    q4, _ = parity(deploy(tiny_handle, tmp_path / "q4", quant="Q4_0")[0])
    for task in ("slm_world_facts", "slm_arithmetic"):
        assert 0 <= same[(task, "max_abs_delta_ll")] < 1e-3 and same[(task, "choice_agreement")] == 1.0
        assert q4[(task, "max_abs_delta_ll")] > 10 * max(same[(task, "max_abs_delta_ll")], 1e-5)
    assert same[("greedy", "identical_tokens")] == 1.0 and same[("greedy", "matching_prefix")] == 1.0


def _plan(steps):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    text = yaml.safe_dump({"name": "t", "base": "tiny-llama", "paths": [steps]}, sort_keys=False)
    return make_plan(parse_spec(text, file="t.yaml"))


def test_the_planner_refuses_what_llama_cpp_cannot_run():
    ok = _plan([{"deploy.llamacpp": {"quant": "Q8_0"}}, {"infer.decoding": {"strategy": "sample"}}, "infer.cot"])
    assert [s["format"] for s in ok.paths[0].steps][-3:] == ["gguf", "gguf", "gguf"]
    for steps, words in [
        ([{"deploy.llamacpp": {}}, {"infer.decoding": {"strategy": "beam"}}], "beam search"),
        ([{"infer.decoding": {"strategy": "beam"}}, {"deploy.llamacpp": {}}], "beam search"),
        (["deploy.onnxruntime", "deploy.llamacpp"], "deploy.llamacpp does not accept a onnx model"),
        (["deploy.llamacpp", {"peft.lora": {}}], "peft.lora does not accept a gguf model"),
        (["deploy.llamacpp", "deploy.llamacpp"], "a GGUF model already"),
    ]:
        with pytest.raises(SpecError, match=words) as err:
            _plan(steps)
        assert "\n" not in str(err.value)


def test_a_low_rank_model_is_multiplied_back_to_dense(tiny_handle, tmp_path):
    from adapters.formats import lowrank_ranks

    pytest.importorskip("llama_cpp")
    cls = TECHNIQUES.get("factorize.svd")
    low = cls(build_params(cls, {"rank": 8})).run(tiny_handle, TechniqueContext(seed=0, workdir=tmp_path)).handle
    out, report = deploy(low, tmp_path / "g", quant="F32")
    assert report.densified_pairs == len(lowrank_ranks(low.model)) > 0
    assert "multiplied each low-rank pair" in out.lineage[-1].conversion
    assert lls(out) == pytest.approx(lls(low), abs=2e-4)


# -- real weights -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_f32(smollm2, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    return deploy(smollm2, tmp_path_factory.mktemp("smol"), quant="F32")


def _direct_logprobs(gguf_file, requests):
    """llama-cpp-python's own answer: ``Llama(logits_all=True).eval`` and ``Llama.logits_to_logprobs`` on its scores."""
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_file), n_ctx=512, logits_all=True, n_threads=1, verbose=False)
    out = []
    for ctx, cont in requests:
        llm.reset()
        llm.eval(ctx + cont[:-1])
        logprobs = llama_cpp.Llama.logits_to_logprobs(llm.scores[: len(ctx) + len(cont) - 1])
        out.append(float(sum(logprobs[len(ctx) - 1 + i, t] for i, t in enumerate(cont))))
    return out


@pytest.mark.slow
def test_smollm2_scores_equal_llama_cpp_python_and_torch(smollm2_f32, smollm2, wikitext):
    from adapters.techniques.llamacpp import llamacpp_handle

    out, report = smollm2_f32
    lm = out.lm()
    requests = [lm._encode_pair(c, x) for c, x in PAIRS[:2]] + [(lm._encode_pair("Paris is the capital of", " France"))]
    pairs = PAIRS[:2] + [("Paris is the capital of", " France")]
    mine = lls(out, pairs)
    assert mine == pytest.approx(_direct_logprobs(out.gguf_file, requests), abs=1e-4)
    torch_lls = lls(smollm2, pairs)
    assert mine == pytest.approx(torch_lls, rel=5e-4, abs=2e-3)  # llama.cpp's F16 KV cache
    f32_cache = llamacpp_handle(out.gguf_file, out, {**out.format_state, "kv_cache": "f32"})
    assert lls(f32_cache, pairs) == pytest.approx(torch_lls, abs=2e-4)
    lines = wikitext.lines(4)
    assert wikitext.ppl(out, lines) == pytest.approx(wikitext.ppl(smollm2, lines), rel=1e-3)
    assert report.tensor_types.get("F32", 0) == sum(report.tensor_types.values())


@pytest.mark.slow
def test_smollm2_q4_k_m_keeps_the_perplexity_q2_k_loses_it(smollm2_f32, smollm2, wikitext, tmp_path):
    from adapters.techniques._gguf_convert import quantize_gguf
    from adapters.techniques._llamacpp import file_stats
    from adapters.techniques.llamacpp import llamacpp_handle

    out, _ = smollm2_f32
    lines = wikitext.lines(4)
    ppl, types = {"F32": wikitext.ppl(out, lines)}, {}
    for quant in ("Q4_K_M", "Q2_K"):
        target = tmp_path / f"{quant}.gguf"
        quantize_gguf(out.gguf_file, target, quant, threads=1)
        handle = llamacpp_handle(target, out, {**out.format_state, "gguf_file": str(target), "quant": quant})
        ppl[quant], types[quant] = wikitext.ppl(handle, lines), file_stats(target).by_type
    print("SmolLM2 WikiText-2 perplexity on llama.cpp:", {k: round(v, 2) for k, v in ppl.items()})
    assert all(math.isfinite(v) for v in ppl.values())
    assert ppl["F32"] < ppl["Q4_K_M"] < 1.15 * ppl["F32"]
    assert ppl["Q2_K"] > 1.25 * ppl["F32"] and ppl["Q2_K"] > ppl["Q4_K_M"]
    # k-quants need rows of 256 values: of SmolLM2's linears only the down projections (1536 columns) have them, and
    # llama.cpp's Q2_K mix gives those Q3_K; the six 576-column linears per layer fall back to Q4_0. No tensor is
    # 2-bit, which is why Q2_K loses quality here without collapsing.
    layers = smollm2.architecture().num_layers
    assert "Q2_K" not in types["Q2_K"] and types["Q2_K"]["Q3_K"]["tensors"] == layers
    assert types["Q2_K"]["Q4_0"]["tensors"] == 6 * layers
