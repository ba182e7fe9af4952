"""prune.layers: the blocks that change the hidden state least are found and really removed (config, KV-cache
slots), and the smaller model reloads from its artifact."""

from __future__ import annotations

import copy

import pytest
import torch

from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params


def drop(handle, tmp_path, **params):
    cls = TECHNIQUES.get("prune.layers")
    ctx = TechniqueContext(seed=0, workdir=tmp_path)
    return cls(build_params(cls, {"n_calibration": 2, "seq_len": 16, **params})).run(handle, ctx)


def with_identity_block(handle, index):
    """A copy whose block ``index`` adds nothing to the residual stream (its output projections are zero)."""
    model = copy.deepcopy(handle.model)
    block = model.model.layers[index]
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    return ModelHandle(model, handle.tokenizer, source="identity-block")


@pytest.mark.parametrize("method", ["block_influence", "angular"])
def test_an_identity_block_is_the_one_removed_and_the_model_really_shrinks(method, tiny_handle, tmp_path):
    n = tiny_handle.model.config.num_hidden_layers
    assert n >= 2
    handle = with_identity_block(tiny_handle, 1)
    applied = drop(handle, tmp_path / method, method=method)
    out, report = applied.handle, applied.report
    assert report.removed == [1] and report.layers_after == n - 1
    assert report.scores[1] == pytest.approx(0.0, abs=1e-3) and min(report.scores) == report.scores[1]
    assert out.model.config.num_hidden_layers == n - 1 == len(out.model.model.layers)
    assert [b.self_attn.layer_idx for b in out.model.model.layers] == list(range(n - 1))
    assert report.params_after < report.params_before == sum(p.numel() for p in handle.model.parameters())
    pair = [("The river", " flows")]
    assert out.loglikelihood(pair)[0].logprob == pytest.approx(handle.loglikelihood(pair)[0].logprob, abs=1e-4)
    assert out.generate(["1 2 3"], max_new_tokens=4) == handle.generate(["1 2 3"], max_new_tokens=4)
    back = ModelHandle.load(out.save(tmp_path / f"saved-{method}"))
    assert back.model.config.num_hidden_layers == n - 1
    assert back.loglikelihood(pair) == out.loglikelihood(pair)


def test_removing_every_block_is_refused(tiny_handle, tmp_path):
    from adapters.errors import UsageError

    n = tiny_handle.model.config.num_hidden_layers
    with pytest.raises(UsageError, match=f"n_layers {n} would leave no block"):
        drop(tiny_handle, tmp_path, n_layers=n)
