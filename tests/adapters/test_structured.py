"""prune.structured: MLP channels and GQA-aware attention heads really removed through torch-pruning's dependency
graph; the pruned model computes exactly what the input computes with those channels/heads masked, and it reloads
from its own config."""

from __future__ import annotations

import copy

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

pytest.importorskip("torch_pruning")


def prune(handle, tmp_path, **params):
    cls = TECHNIQUES.get("prune.structured")
    ctx = TechniqueContext(seed=0, workdir=tmp_path)
    return cls(build_params(cls, {"n_calibration": 2, "seq_len": 16, **params})).run(handle, ctx)


def masked(handle, kept_channels, removed_heads, head_dim):
    """The input model with the pruned MLP channels and query heads zeroed instead of removed."""
    model = copy.deepcopy(handle.model)
    with torch.no_grad():
        for block, kept, heads in zip(model.model.layers, kept_channels, removed_heads, strict=True):
            drop = [c for c in range(block.mlp.down_proj.in_features) if c not in set(kept)]
            block.mlp.down_proj.weight[:, drop] = 0
            for h in heads:
                block.self_attn.o_proj.weight[:, h * head_dim:(h + 1) * head_dim] = 0
    return model


def kept_rows(before, after):
    """Which rows of ``before`` survive in ``after`` (matched exactly; pruning copies rows)."""
    rows = []
    for r in after:
        hits = [i for i, b in enumerate(before) if torch.equal(b, r)]
        assert len(hits) == 1
        rows.append(hits[0])
    return rows


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "activation"])
def test_the_pruned_model_equals_the_masked_input_and_every_shape_shrinks(importance, tiny_handle, tmp_path):
    config = tiny_handle.model.config
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    assert kv < heads, "the pico model has grouped-query attention"
    applied = prune(tiny_handle, tmp_path, mlp_ratio=0.25, head_ratio=0.5, importance=importance)
    out, report = applied.handle, applied.report
    new = out.model.config
    assert new.intermediate_size == report.intermediate_after == config.intermediate_size * 3 // 4
    assert new.num_attention_heads == report.heads_after == heads - kv * (heads // kv // 2)
    assert new.num_key_value_heads == kv and new.head_dim == head_dim
    per_group = heads // kv
    for removed in report.removed_heads:  # the same number of query heads from every key/value group
        assert [sum(1 for h in removed if h // per_group == g) for g in range(kv)] == [per_group // 2] * kv
    for block in out.model.model.layers:
        assert block.mlp.gate_proj.out_features == block.mlp.up_proj.out_features == new.intermediate_size
        assert block.mlp.down_proj.in_features == new.intermediate_size
        assert block.self_attn.q_proj.out_features == block.self_attn.o_proj.in_features == new.num_attention_heads * head_dim
        assert block.self_attn.k_proj.out_features == kv * head_dim
    assert report.params_after < report.params_before
    assert report.params_after == sum(p.numel() for p in {id(p): p for p in out.model.parameters()}.values())

    kept = [kept_rows(a.mlp.gate_proj.weight, b.mlp.gate_proj.weight)
            for a, b in zip(tiny_handle.model.model.layers, out.model.model.layers, strict=True)]
    reference = masked(tiny_handle, kept, report.removed_heads, head_dim)
    ids = torch.tensor([[5, 17, 301, 42, 7, 99, 1000, 3]])
    with torch.no_grad():
        torch.testing.assert_close(out.model(input_ids=ids).logits, reference(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)
    assert out.generate(["1 2 3"], max_new_tokens=4) == ModelHandle(reference, tiny_handle.tokenizer, source="masked").generate(
        ["1 2 3"], max_new_tokens=4)  # the KV cache follows the new head count

    back = ModelHandle.load(out.save(tmp_path / "saved"))
    assert back.model.config.intermediate_size == new.intermediate_size
    pair = [("The river", " flows")]
    assert back.loglikelihood(pair) == out.loglikelihood(pair)


def test_importance_decides_what_goes(tiny_handle, tmp_path):
    """A channel whose weights are scaled up survives magnitude pruning; one never activated goes first."""
    model = copy.deepcopy(tiny_handle.model)
    with torch.no_grad():
        for block in model.model.layers:
            block.mlp.gate_proj.weight[3] *= 100
            block.mlp.up_proj.weight[3] *= 100
            block.mlp.down_proj.weight[:, 3] *= 100
            block.mlp.gate_proj.weight[5] = 0  # channel 5: silu(0) * up = 0, never active
    handle = ModelHandle(model, tiny_handle.tokenizer, source="edited")
    for importance in ("magnitude", "activation", "taylor"):
        applied = prune(handle, tmp_path / importance, mlp_ratio=0.5, importance=importance)
        for before, after in zip(model.model.layers, applied.handle.model.model.layers, strict=True):
            rows = kept_rows(before.mlp.up_proj.weight, after.mlp.up_proj.weight)
            assert 3 in rows, importance
            if importance != "magnitude":
                assert 5 not in rows, importance


def test_round_to_and_mlp_only(tiny_handle, tmp_path):
    applied = prune(tiny_handle, tmp_path, mlp_ratio=0.3, round_to=16)
    report = applied.report
    assert report.intermediate_after % 16 == 0 and report.heads_after == report.heads_before
    assert report.removed_heads == []


def test_multi_head_attention_removes_whole_heads(tmp_path):
    from adapters.sources import build_scratch

    model, tokenizer = build_scratch({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 4}, seed=0)
    handle = ModelHandle(model, tokenizer, source="mha")
    applied = prune(handle, tmp_path, mlp_ratio=0.0, head_ratio=0.25)
    cfg = applied.handle.model.config
    assert cfg.num_attention_heads == cfg.num_key_value_heads == 3
    attn = applied.handle.model.model.layers[0].self_attn
    assert attn.k_proj.out_features == attn.v_proj.out_features == 3 * cfg.head_dim
    assert applied.handle.generate(["1 2"], max_new_tokens=3)  # cached decoding runs with the new shapes


def test_bad_ratios_are_refused(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="nothing would be pruned"):
        prune(tiny_handle, tmp_path, mlp_ratio=0.0, head_ratio=0.0)
    with pytest.raises(UsageError, match=r"mlp_ratio must be in \[0, 1\)"):
        prune(tiny_handle, tmp_path, mlp_ratio=1.0)
    # two query heads per key/value group: 0.2 rounds to no head, 0.9 to every head of a group
    for ratio in (0.2, 0.9):
        with pytest.raises(UsageError, match="multiples of 1/2"):
            prune(tiny_handle, tmp_path, mlp_ratio=0.0, head_ratio=ratio)
