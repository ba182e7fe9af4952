"""quant.smoothquant on the pico model with outlier activation channels planted in it (a function-preserving
rescaling of its norms): smoothing leaves the float function unchanged and moves the outliers into the weights, so
int8 weights and activations (fbgemm) lose far less than plain dynamic int8; the three modes make their formats and
round-trip; on SmolLM2 (slow): SmoothQuant W8A8 perplexity well below plain dynamic int8's."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, FormatMismatch, build_params

pytest.importorskip("llmcompressor")
from test_quant import apply  # noqa: E402 - the helper of the AWQ tests, after the skip

PAIRS = [("The river near the old mill", " flows east"), ("She sold", " apples at the market"),
         ("1 2 3 4", " 5 6 7")]
CHEAP = {"n_samples": 4, "seq_len": 64}
OUTLIERS = (5, 40)  # hidden channels made 30x larger at the norms' outputs
FACTOR = 30.0


def lls(handle):
    return torch.tensor([x.logprob for x in handle.loglikelihood(PAIRS)])


@pytest.fixture(scope="module")
def outliers(tiny_handle):
    """The pico model computing the same function, with two hidden channels 30x larger after every norm (as LLMs'
    activations have): the norms' weights scaled up, the columns of the linears they feed scaled down."""
    model = copy.deepcopy(tiny_handle.model)
    with torch.no_grad():
        for block in model.model.layers:
            for norm, linears in ((block.input_layernorm, (block.self_attn.q_proj, block.self_attn.k_proj,
                                                           block.self_attn.v_proj)),
                                  (block.post_attention_layernorm, (block.mlp.gate_proj, block.mlp.up_proj))):
                for c in OUTLIERS:
                    norm.weight[c] *= FACTOR
                    for lin in linears:
                        lin.weight[:, c] /= FACTOR
    h = tiny_handle
    return ModelHandle(model, h.tokenizer, source=h.source, threads=h.threads, batch_size=h.batch_size)


@pytest.fixture(scope="module")
def smoothed_int8(outliers, tmp_path_factory):
    return apply("quant.smoothquant", CHEAP, outliers, tmp_path_factory.mktemp("sq"))


def test_outlier_fixture_computes_the_same_function(outliers, tiny_handle):
    assert torch.allclose(lls(outliers), lls(tiny_handle), atol=1e-4)


def test_smoothquant_int8_loses_far_less_than_plain_dynamic_int8(smoothed_int8, outliers, tmp_path):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    plain = apply("quant.int8", {}, outliers, tmp_path / "int8")
    assert smoothed_int8.format == "torch-int8-dynamic"
    assert isinstance(smoothed_int8.model.model.layers[1].mlp.down_proj, DynamicLinear)
    assert smoothed_int8.model.model.layers[0].self_attn.q_proj.weight().dtype == torch.qint8
    reference = lls(outliers)
    err_plain = float((lls(plain) - reference).abs().sum())
    err_smooth = float((lls(smoothed_int8) - reference).abs().sum())
    assert err_smooth < err_plain / 2, (err_smooth, err_plain)
    report = smoothed_int8.lineage[-1].report
    assert report["quantized_layers"] == 14 and "fbgemm" in report["runtime"]
    assert report["outlier_ratio_after"] < report["outlier_ratio_before"] / 3, report
    # the planted channels get the largest scales: s_j = max|X_j|^0.8 / max|W_j|^0.2 grows with the outlier
    assert report["scales"]["input_layernorm"]["max"] > 5 * report["scales"]["input_layernorm"]["median"], report
    assert report["smoothed"] == 6  # 2 blocks x (input norm, post-attention norm, up_proj)
    back = ModelHandle.load(smoothed_int8.save(tmp_path / "a"))
    assert torch.equal(lls(back), lls(smoothed_int8))


def test_smooth_only_keeps_the_function_and_the_format(outliers, tmp_path):
    from adapters.techniques.quant_smoothquant import smoothing_scales

    smooth = apply("quant.smoothquant", {**CHEAP, "mode": "smooth_only"}, outliers, tmp_path / "s")
    assert smooth.format == "torch" and smooth.lineage[-1].report["quantized_layers"] == 0
    assert torch.allclose(lls(smooth), lls(outliers), atol=1e-3)
    scales = smoothing_scales(outliers.model, smooth.model, down_proj=True)
    for per_layer in scales["input_layernorm"]:
        assert set(per_layer.topk(2).indices.tolist()) == set(OUTLIERS)  # the planted channels were divided most
    pruned = apply("prune.magnitude", {"sparsity": 0.5}, outliers, tmp_path / "p")
    smooth_sparse = apply("quant.smoothquant", {**CHEAP, "mode": "smooth_only"}, pruned, tmp_path / "ps")
    assert smooth_sparse.format == "torch-sparse"
    w0, w1 = (h.model.model.layers[0].mlp.up_proj.weight for h in (pruned, smooth_sparse))
    assert torch.equal(w0 == 0, w1 == 0) and not torch.equal(w0, w1)


def test_w8a8_writes_int8_weights_and_dynamic_int8_activations(outliers, tmp_path):
    from safetensors import safe_open

    out = apply("quant.smoothquant", {**CHEAP, "mode": "w8a8"}, outliers, tmp_path / "w")
    assert out.format == "compressed-tensors" and out.lineage[-1].report["packed_bytes"] > 0
    path = out.save(tmp_path / "a")
    group = json.loads((path / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    assert group["format"] == "int-quantized" and group["weights"]["num_bits"] == 8
    assert group["input_activations"]["num_bits"] == 8 and group["input_activations"]["dynamic"] is True
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype == torch.int8
    assert torch.equal(lls(ModelHandle.load(path)), lls(out))


def test_smoothquant_parameters_and_formats_are_checked():
    cls = TECHNIQUES.get("quant.smoothquant")
    with pytest.raises(UsageError, match=r"smoothing_strength must be in \(0, 1\), got 1.5"):
        build_params(cls, {"smoothing_strength": 1.5})
    with pytest.raises(UsageError, match=r"mode: 'int4' is not allowed \(allowed: 'int8', 'smooth_only', 'w8a8'\)"):
        build_params(cls, {"mode": "int4"})
    smooth = build_params(cls, {"mode": "smooth_only"})
    assert [cls.output_format(f, smooth) for f in ("torch", "torch-sparse")] == ["torch", "torch-sparse"]
    assert cls.output_format("torch", build_params(cls, {"mode": "w8a8"})) == "compressed-tensors"
    with pytest.raises(FormatMismatch, match="before factorize.svd"):
        cls.output_format("torch-lowrank", smooth)


def test_smooth_only_then_onnx_int8_plans():
    from harness.plan import make_plan
    from harness.spec import parse_spec

    spec = ("name: sq\nbase: tiny-llama\npaths:\n  - [{quant.smoothquant: {mode: smooth_only}}, "
            "{deploy.onnxruntime: {quantize: int8}}]\n")
    steps = make_plan(parse_spec(spec, file="sq.yaml")).paths[0].steps
    assert [s["format"] for s in steps[-2:]] == ["torch", "onnx"]


@pytest.mark.slow
def test_smollm2_smoothquant_w8a8_beats_dynamic_int8(smollm2, benchmarks_dir, tmp_path, wikitext):
    lines = wikitext.lines()
    smooth = apply("quant.smoothquant", {"n_samples": 8, "seq_len": 128}, smollm2, tmp_path / "sq")
    plain = apply("quant.int8", {}, smollm2, tmp_path / "int8")
    ppl = {"base": wikitext.ppl(smollm2, lines), "smoothquant_w8a8": wikitext.ppl(smooth, lines),
           "int8": wikitext.ppl(plain, lines)}
    report = smooth.lineage[-1].report
    print("wikitext-2 perplexity:", {k: round(v, 2) for k, v in ppl.items()}, "outlier ratio:",
          report["outlier_ratio_before"], "->", report["outlier_ratio_after"], "scales:", report["scales"])
    assert report["outlier_ratio_after"] < report["outlier_ratio_before"] / 2
    assert ppl["base"] < ppl["smoothquant_w8a8"] < 0.75 * ppl["int8"], ppl
