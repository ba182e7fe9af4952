"""factorize.svd: layers really replaced by rank-r pairs, the best rank-r approximation, persisted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques._training import decoder_linears


def _svd(params, handle, tmp_path):
    cls = get_technique("factorize.svd")
    return cls(build_params(cls, params)).run(handle, TechniqueContext(workdir=tmp_path)).handle


def _product(pair):
    return pair[1].weight.detach() @ pair[0].weight.detach()


def test_rank_replaces_layers_with_the_best_rank_r_pair(tiny, tmp_path):
    originals = {n: lin.weight.detach().clone() for n, lin in decoder_linears(tiny.model).items()}
    out = _svd({"rank": 8}, tiny, tmp_path)
    assert out.lineage[-1].report["ranks"] == dict.fromkeys(originals, 8)
    for name, w in originals.items():
        pair = out.model.get_submodule(name)
        assert isinstance(pair, nn.Sequential) and pair[0].weight.shape == (8, w.shape[1])
        assert pair[1].weight.shape == (w.shape[0], 8)
        s = torch.linalg.svdvals(w)
        error = torch.linalg.norm(_product(pair) - w)
        assert float(error) == pytest.approx(float(s[8:].square().sum().sqrt()), rel=1e-3)  # Eckart-Young
    assert out.num_parameters() < tiny.num_parameters()
    assert isinstance(tiny.model.get_submodule("model.layers.0.mlp.up_proj"), nn.Linear)  # input untouched


def test_energy_picks_the_smallest_rank_reaching_it(tiny, tmp_path):
    out = _svd({"energy": 0.5, "targets": ["mlp"]}, tiny, tmp_path)
    ranks = out.lineage[-1].report["ranks"]
    assert ranks and all(".mlp." in n for n in ranks)
    for name, rank in ranks.items():
        s2 = torch.linalg.svdvals(decoder_linears(tiny.model)[name].weight.detach()).square()
        share = s2.cumsum(0) / s2.sum()
        assert share[rank - 1] >= 0.5 > share[rank - 2]


def test_only_if_smaller_keeps_layers_where_factorizing_would_grow_them(tiny, tmp_path):
    out = _svd({"rank": 60}, tiny, tmp_path)  # 60 x (64 + 64) > 64 x 64
    assert "model.layers.0.self_attn.q_proj" not in out.lineage[-1].report["ranks"]
    full = _svd({"energy": 1.0, "only_if_smaller": False}, tiny, tmp_path)
    ids = torch.tensor([[1, 42, 7, 99, 5]])
    with torch.no_grad():
        assert torch.allclose(full.model(ids).logits, tiny.model(ids).logits, atol=1e-3)


def test_activation_aware_svd_is_the_best_input_weighted_rank_r_pair(tiny, tmp_path):
    from adapters.techniques._training import calibration_batches, input_norms

    ctx = TechniqueContext(workdir=tmp_path)
    layers = decoder_linears(tiny.model, ["mlp.down_proj"])
    norms = input_norms(tiny.model, layers, calibration_batches(tiny, ctx, None, 16, 128))
    asvd = _svd({"rank": 8, "targets": ["mlp.down_proj"], "activation_aware": 1.0}, tiny, tmp_path)
    plain = _svd({"rank": 8, "targets": ["mlp.down_proj"]}, tiny, tmp_path)
    for name, lin in layers.items():
        w, s = lin.weight.detach(), norms[name]
        weighted = torch.linalg.svdvals(w * s[None, :])
        err_asvd = torch.linalg.norm((_product(asvd.model.get_submodule(name)) - w) * s[None, :])
        err_plain = torch.linalg.norm((_product(plain.model.get_submodule(name)) - w) * s[None, :])
        assert float(err_asvd) == pytest.approx(float(weighted[8:].square().sum().sqrt()), rel=1e-3)
        assert err_asvd < err_plain


def test_factorized_model_saves_and_loads(tiny, tmp_path):
    out = _svd({"rank": 4}, tiny, tmp_path)
    out.save(tmp_path / "svd")
    back = ModelHandle.load(tmp_path / "svd")
    assert isinstance(back.model.get_submodule("model.layers.1.self_attn.o_proj"), nn.Sequential)
    ids = torch.tensor([[3, 14, 15, 92]])
    with torch.no_grad():
        assert torch.allclose(back.model(ids).logits, out.model(ids).logits, atol=1e-5)
    assert back.lineage[-1].technique == "factorize.svd"


@pytest.mark.parametrize("raw, fragment", [
    ({"rank": 0}, "rank must be >= 1, got 0"),
    ({"rank": 8, "energy": 0.5}, "give rank or energy, not both"),
    ({"energy": 1.5}, "energy must be in (0, 1], got 1.5"),
    ({"targets": "mlp"}, "expected a list"),
    ({"activation_aware": -1}, "activation_aware must be in [0, 2], got -1"),
])
def test_bad_params_are_usage_errors(raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique("factorize.svd"), raw)
    assert fragment in str(info.value)


@pytest.mark.slow
def test_smollm2_mlp_rank_and_energy(smollm2, benchmarks_dir, tmp_path):
    from adapters.corpus import read_texts

    out = _svd({"rank": 128, "targets": ["mlp"]}, smollm2, tmp_path)
    ranks = out.lineage[-1].report["ranks"]
    assert len(ranks) == 30 * 3 and set(ranks.values()) == {128}
    for name in ranks:
        pair = out.model.get_submodule(name)
        assert torch.linalg.matrix_rank(_product(pair)) == 128
    assert out.num_parameters() < smollm2.num_parameters() - 40_000_000
    lines = [t for t in read_texts(benchmarks_dir / "wikitext2" / "wiki.test.raw", min_chars=200)
             if not t.startswith("=")][:4]
    n = sum(len(smollm2.tokenizer(t).input_ids) for t in lines)
    ppl = [float(torch.tensor(-sum(h.loglikelihood_rolling(lines)) / n).exp()) for h in (smollm2, out)]
    asvd = _svd({"rank": 128, "targets": ["mlp"], "activation_aware": 1.0}, smollm2, tmp_path)
    ppl.append(float(torch.tensor(-sum(asvd.loglikelihood_rolling(lines)) / n).exp()))
    print(f"params {smollm2.num_parameters()} -> {out.num_parameters()}; wikitext-2 ppl {ppl[0]:.1f} -> "
          f"{ppl[1]:.1f} (plain SVD), {ppl[2]:.1f} (ASVD alpha 1)")
    assert ppl[0] < ppl[2] < ppl[1]
    energy = _svd({"energy": 0.95, "targets": ["self_attn.q_proj"]}, smollm2, tmp_path)
    for name, rank in energy.lineage[-1].report["ranks"].items():
        s2 = torch.linalg.svdvals(decoder_linears(smollm2.model)[name].weight.detach()).square()
        assert float(s2[:rank].sum() / s2.sum()) >= 0.95 > float(s2[: rank - 1].sum() / s2.sum())
