"""quant.awq on the pico model (weights really on a 4-bit grid per group, packed on disk, deterministic,
round-trips), and the three weight quantizers on SmolLM2 (slow): WikiText-2 perplexity and footprint."""

from __future__ import annotations

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques._training import decoder_linears

pytest.importorskip("llmcompressor")

PAIR = [("The river near the old mill", " flows east"), ("She sold", " apples at the market")]


def apply(name, params, handle, workdir):
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=workdir)).handle


def lls(handle):
    return [x.logprob for x in handle.loglikelihood(PAIR)]


def max_levels_per_group(weight, group_size):
    groups = weight.detach().reshape(weight.shape[0], -1, group_size)
    return max(len(torch.unique(g)) for row in groups for g in row)


@pytest.fixture(scope="module")
def awq_tiny(tiny_handle, tmp_path_factory):
    return apply("quant.awq", {"n_samples": 8, "seq_len": 64}, tiny_handle, tmp_path_factory.mktemp("awq"))


def test_awq_weights_are_on_a_four_bit_grid(awq_tiny, tiny_handle):
    for name, lin in decoder_linears(awq_tiny.model).items():
        assert max_levels_per_group(lin.weight, 64) <= 16, name
        assert not torch.equal(lin.weight, tiny_handle.model.get_submodule(name).weight)
    assert torch.equal(awq_tiny.model.lm_head.weight, tiny_handle.model.lm_head.weight)  # ignored, stays fp32
    assert awq_tiny.lineage[-1].report["scheme"] == "W4A16" and "dequantized" in awq_tiny.lineage[-1].report["runtime"]
    assert lls(awq_tiny) == pytest.approx(lls(tiny_handle), abs=0.1) and lls(awq_tiny) != lls(tiny_handle)


def test_awq_artifact_is_packed_and_round_trips(awq_tiny, tmp_path):
    from safetensors import safe_open

    path = awq_tiny.save(tmp_path / "a")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        packed = [k for k in f.keys() if k.endswith("weight_packed")]
        assert len(packed) == 2 * 7 and f.get_tensor(packed[0]).dtype == torch.int32  # 8 int4 values per int32
    back = ModelHandle.load(path)
    assert lls(back) == lls(awq_tiny)


def test_awq_is_deterministic_and_checks_group_size(awq_tiny, tiny_handle, tmp_path):
    again = apply("quant.awq", {"n_samples": 8, "seq_len": 64}, tiny_handle, tmp_path / "again")
    for (name, a), b in zip(awq_tiny.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(UsageError, match="group_size 48 does not divide the 64"):
        apply("quant.awq", {"group_size": 48}, tiny_handle, tmp_path / "bad")
    with pytest.raises(UsageError, match="bits"):
        build_params(TECHNIQUES.get("quant.awq"), {"bits": 3})


@pytest.mark.slow
def test_smollm2_int8_and_rtn(smollm2, benchmarks_dir, tmp_path, wikitext):
    lines = wikitext.lines()
    out = {"int8": apply("quant.int8", {}, smollm2, tmp_path / "int8"),
           "rtn8": apply("quant.rtn", {"bits": 8}, smollm2, tmp_path / "rtn8"),
           "rtn4": apply("quant.rtn", {"bits": 4, "group_size": 64}, smollm2, tmp_path / "rtn4")}
    ppl = {"base": wikitext.ppl(smollm2, lines), **{k: wikitext.ppl(h, lines) for k, h in out.items()}}
    foot = {k: {d: round(b / 2**20, 1) for d, b in h.weight_footprint().items()} for k, h in out.items()}
    print("wikitext-2 perplexity:", {k: round(v, 2) for k, v in ppl.items()}, "weight footprint MiB:", foot)
    assert foot["int8"]["int8"] > 100 and foot["rtn4"]["uint8"] == pytest.approx(foot["int8"]["int8"] / 2, rel=0.01)
    assert ppl["rtn8"] == pytest.approx(ppl["base"], rel=0.02)  # int8 weights alone barely change quality
    assert 1.02 * ppl["base"] < ppl["rtn4"] < 1.5 * ppl["base"]
    # dynamic int8 also quantizes activations (per tensor, at run time): SmolLM2's outliers cost far more
    assert ppl["rtn4"] < ppl["int8"] < 4 * ppl["base"]


@pytest.mark.slow
def test_smollm2_awq_beats_rtn_at_int4(smollm2, benchmarks_dir, tmp_path, wikitext):
    """(GPTQ's place between the two, 46.5 against RTN's 52.2 and fp32's 39.5, is a benchmark:
    benchmarks/quant_gptq_sq.yaml; it took minutes here, so CI checks GPTQ's mechanism on the pico model only.)"""
    lines = wikitext.lines()
    awq = apply("quant.awq", {"n_samples": 8, "seq_len": 128}, smollm2, tmp_path / "awq")
    rtn = apply("quant.rtn", {"bits": 4, "group_size": 64}, smollm2, tmp_path / "rtn")
    ppl = {"base": wikitext.ppl(smollm2, lines), "awq4": wikitext.ppl(awq, lines), "rtn4": wikitext.ppl(rtn, lines)}
    print("wikitext-2 perplexity:", {k: round(v, 2) for k, v in ppl.items()},
          "awq packed on disk MiB:", round(awq.lineage[-1].report["packed_bytes"] / 2**20, 1))
    for name, lin in decoder_linears(awq.model).items():
        assert max_levels_per_group(lin.weight, 64) <= 16, name
    assert ppl["base"] < ppl["awq4"] < ppl["rtn4"]  # activation-aware scales beat plain round-to-nearest
