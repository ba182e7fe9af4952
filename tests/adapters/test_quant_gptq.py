"""quant.gptq on the pico model: 2- and 3-bit weights really on their grid and packed into int32 words, the error
feedback reconstructs each layer's outputs better than round-to-nearest at the same grid, the artifact round-trips,
bad parameters fail clearly; on SmolLM2 (slow): GPTQ-4 perplexity closer to fp32 than RTN-4's at the same group size."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques._training import decoder_linears

pytest.importorskip("llmcompressor")
from test_quant import apply, lls  # noqa: E402 - the helpers of the AWQ tests, after the skip
from test_quant import max_levels_per_group as levels_per_group  # noqa: E402

CHEAP = {"group_size": 32, "n_samples": 8, "seq_len": 64}


@pytest.fixture(scope="module")
def gptq3(tiny_handle, tmp_path_factory):
    return apply("quant.gptq", {**CHEAP, "bits": 3}, tiny_handle, tmp_path_factory.mktemp("gptq3"))


def test_gptq3_weights_are_on_a_three_bit_grid_packed_in_int32(gptq3, tiny_handle, tmp_path):
    from safetensors import safe_open

    for name, lin in decoder_linears(gptq3.model).items():
        assert levels_per_group(lin.weight, 32) <= 8, name
        assert not torch.equal(lin.weight, tiny_handle.model.get_submodule(name).weight)
    assert torch.equal(gptq3.model.lm_head.weight, tiny_handle.model.lm_head.weight)  # ignored, stays fp32
    report = gptq3.lineage[-1].report
    assert report["scheme"] == "W3A16" and report["actorder"] == "weight" and report["n_samples"] == 8
    path = gptq3.save(tmp_path / "a")
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and config["config_groups"]["group_0"]["weights"]["num_bits"] == 3
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        up = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed")  # 128 x 64 int3: 64 * 3 / 32 = 6 words a row
        assert up.dtype == torch.int32 and tuple(up.shape) == (128, 6)
    back = ModelHandle.load(path)
    assert back.format == "compressed-tensors" and lls(back) == lls(gptq3)


def _layer_inputs(handle, blocks, layer):
    """The inputs of ``layer`` (a module of ``handle.model``) on the calibration blocks, stacked."""
    seen = []
    hook = layer.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach().reshape(-1, args[0].shape[-1])))
    try:
        with torch.no_grad():
            for ids in blocks:
                handle.model(input_ids=torch.tensor([ids]))
    finally:
        hook.remove()
    return torch.cat(seen)


def test_gptq_reconstructs_layer_outputs_better_than_round_to_nearest(tiny_handle, tmp_path):
    """The first block's linears see the same calibration inputs in both runs: GPTQ's error feedback must give a
    smaller output error ||XWᵀ - XQᵀ|| there than plain round-to-nearest on the same 2-bit grid (llmcompressor's
    QuantizationModifier, same scheme and observer)."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from adapters.techniques.quant_gptq import GPTQParams
    from adapters.techniques.quant_llmc import calibrated_oneshot, compressed_handle, group_weights

    p = GPTQParams(**CHEAP, bits=2)
    gptq = apply("quant.gptq", {**CHEAP, "bits": 2}, tiny_handle, tmp_path / "gptq")
    ctx = TechniqueContext(seed=0, workdir=tmp_path / "rtn")
    rtn_step = QuantizationModifier(ignore=["lm_head"], config_groups={"group_0": group_weights(p)})
    done = calibrated_oneshot(tiny_handle, ctx, p, [rtn_step], "rtn")
    rtn = compressed_handle(tiny_handle, done.model, tmp_path / "rtn-checkpoint").model  # the weights on the grid
    errors = {}
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj"):
        x = _layer_inputs(tiny_handle, done.data["input_ids"], tiny_handle.model.get_submodule(name))
        w = tiny_handle.model.get_submodule(name).weight.detach()
        q_rtn = rtn.get_submodule(name).weight.detach()
        assert levels_per_group(gptq.model.get_submodule(name).weight, 32) <= 4
        assert levels_per_group(q_rtn, 32) <= 4
        errors[name] = [float((x @ (w - q).T).norm()) for q in (gptq.model.get_submodule(name).weight.detach(), q_rtn)]
    assert all(g < 0.9 * r for g, r in errors.values()), errors


def test_gptq_parameters_and_group_size_are_checked(tiny_handle, tmp_path):
    cls = TECHNIQUES.get("quant.gptq")
    with pytest.raises(UsageError, match=r"bits must be one of 2, 3, 4, 8, got 5"):
        build_params(cls, {"bits": 5})
    with pytest.raises(UsageError, match=r"dampening_frac must be in \[0, 1\), got 1.0"):
        build_params(cls, {"dampening_frac": 1.0})
    with pytest.raises(UsageError, match=r"actorder: 'group' is not allowed \(allowed: 'weight', 'none'\)"):
        build_params(cls, {"actorder": "group"})
    with pytest.raises(UsageError, match="quant.gptq: group_size 48 does not divide the 64 input columns"):
        apply("quant.gptq", {"group_size": 48}, tiny_handle, tmp_path)
