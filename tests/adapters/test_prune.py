"""prune.magnitude and prune.wanda: the sparsity asked for is the sparsity stored, in the right weights."""

from __future__ import annotations

import pytest
import torch

from adapters.errors import UsageError
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques._training import decoder_linears, token_blocks
from adapters.techniques.prune import input_norms


def _prune(name, params, handle, tmp_path, seed=0):
    cls = get_technique(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=seed, workdir=tmp_path)).handle


def _sparsity(w):
    return float((w == 0).float().mean())


def test_magnitude_per_layer_prunes_the_smallest_weights_of_each_layer(tiny, tmp_path):
    before = {n: lin.weight.detach().clone() for n, lin in decoder_linears(tiny.model).items()}
    out = _prune("prune.magnitude", {"sparsity": 0.3}, tiny, tmp_path)
    layers = decoder_linears(out.model)
    assert set(layers) == set(before) and len(layers) == 14  # 7 linears x 2 blocks, no embeddings/lm_head
    for name, lin in layers.items():
        w, orig = lin.weight.detach(), before[name]
        assert _sparsity(w) == pytest.approx(0.3, abs=1 / w.numel() + 1e-9)
        kept, pruned = orig.abs()[w != 0], orig.abs()[w == 0]
        assert kept.min() >= pruned.max()
        assert torch.equal(w[w != 0], orig[w != 0])
    assert out.lineage[-1].report["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert torch.equal(out.model.model.embed_tokens.weight, tiny.model.model.embed_tokens.weight)
    assert _sparsity(decoder_linears(tiny.model)["model.layers.0.mlp.up_proj"].weight) == 0  # input untouched


def test_magnitude_global_uses_one_threshold(tiny, tmp_path):
    out = _prune("prune.magnitude", {"sparsity": 0.5, "scope": "global"}, tiny, tmp_path)
    layers = decoder_linears(out.model)
    origs = decoder_linears(tiny.model)
    zeros = sum(int((lin.weight == 0).sum()) for lin in layers.values())
    total = sum(lin.weight.numel() for lin in layers.values())
    assert zeros / total == pytest.approx(0.5, abs=0.01)
    kept = torch.cat([origs[n].weight.abs()[lin.weight != 0] for n, lin in layers.items()])
    pruned = torch.cat([origs[n].weight.abs()[lin.weight == 0] for n, lin in layers.items()])
    assert kept.min() >= pruned.max()


@pytest.mark.parametrize("name", ["prune.magnitude", "prune.wanda"])
def test_two_four_leaves_two_nonzeros_in_every_group_of_four(name, tiny, tmp_path):
    out = _prune(name, {"pattern": "2:4"}, tiny, tmp_path)
    for lin in decoder_linears(out.model).values():
        groups = (lin.weight.detach() != 0).reshape(-1, 4).sum(dim=1)
        assert int(groups.max()) == 2
    assert out.lineage[-1].report["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_wanda_prunes_lowest_weight_times_input_norm_per_row(tiny, tmp_path):
    out = _prune("prune.wanda", {"sparsity": 0.5, "n_calibration": 4, "seq_len": 32}, tiny, tmp_path)
    from adapters.corpus import synthetic_corpus

    layers = decoder_linears(tiny.model)
    blocks = token_blocks(tiny.tokenizer, synthetic_corpus(64), 32)[:4]
    norms = input_norms(tiny.model, layers, [torch.tensor([b]) for b in blocks])
    differs = 0
    for name, lin in decoder_linears(out.model).items():
        w = lin.weight.detach()
        score = layers[name].weight.detach().abs() * norms[name][None, :]
        for row in range(w.shape[0]):
            keep = w[row] != 0
            assert int(keep.sum()) == w.shape[1] // 2
            assert score[row][keep].min() >= score[row][~keep].max()
        magnitude_keep = layers[name].weight.abs() >= layers[name].weight.abs().median(dim=1, keepdim=True).values
        differs += int((magnitude_keep != (w != 0)).sum())
    assert differs > 0, "wanda chose exactly magnitude's weights: the activation norms were not used"


def test_sequential_wanda_measures_later_blocks_on_the_pruned_model(tiny, tmp_path):
    params = {"n_calibration": 4, "seq_len": 32}
    seq = decoder_linears(_prune("prune.wanda", {**params, "sequential": True}, tiny, tmp_path).model)
    one = decoder_linears(_prune("prune.wanda", params, tiny, tmp_path).model)
    first = [n for n in seq if n.startswith("model.layers.0.")]
    later = [n for n in seq if n.startswith("model.layers.1.")]
    assert all(torch.equal(seq[n].weight, one[n].weight) for n in first)  # same dense inputs to block 0
    assert any(not torch.equal(seq[n].weight, one[n].weight) for n in later)


def test_wanda_is_deterministic(tiny, tmp_path):
    a = _prune("prune.wanda", {"n_calibration": 4, "seq_len": 32}, tiny, tmp_path)
    b = _prune("prune.wanda", {"n_calibration": 4, "seq_len": 32}, tiny, tmp_path)
    for (na, la), (_, lb) in zip(decoder_linears(a.model).items(), decoder_linears(b.model).items(), strict=True):
        assert torch.equal(la.weight, lb.weight), na


@pytest.mark.parametrize("name", ["prune.magnitude", "prune.wanda"])
@pytest.mark.parametrize("raw, fragment", [
    ({"sparsity": 1.5}, "sparsity must be in [0, 1), got 1.5"),
    ({"pattern": "2:4", "sparsity": 0.3}, "pattern 2:4 fixes sparsity at 0.5, got 0.3"),
    ({"pattern": "3:4"}, "'3:4' is not allowed"),
])
def test_bad_params_are_usage_errors(name, raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique(name), raw)
    assert fragment in str(info.value)


# -- on SmolLM2 ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_magnitude_half_and_wanda_two_four(smollm2, benchmarks_dir, tmp_path, wikitext):
    lines = wikitext.lines()
    base = wikitext.ppl(smollm2, lines)
    mag = _prune("prune.magnitude", {"sparsity": 0.5}, smollm2, tmp_path)
    for name, lin in decoder_linears(mag.model).items():
        assert _sparsity(lin.weight) == pytest.approx(0.5, abs=0.01), name
    wanda = _prune("prune.wanda", {"pattern": "2:4", "n_calibration": 16}, smollm2, tmp_path)
    mag24 = _prune("prune.magnitude", {"pattern": "2:4"}, smollm2, tmp_path)
    assert wanda.lineage[-1].report["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert len(decoder_linears(wanda.model)) == 30 * 7
    ppl = {"base": base, "magnitude50": wikitext.ppl(mag, lines), "wanda24": wikitext.ppl(wanda, lines),
           "magnitude24": wikitext.ppl(mag24, lines)}
    print("wikitext-2 perplexity:", {k: round(v, 1) for k, v in ppl.items()})
    assert ppl["base"] < ppl["wanda24"] < ppl["magnitude24"]  # Wanda beats magnitude at the same pattern
