"""train.continual: continual pretraining on a domain lowers that domain's held-out perplexity (measured before and
after by the step itself), trains only what it is told to, keeps a pruned model's zeros and reloads."""

from __future__ import annotations

import pytest
import torch

from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

DOMAIN = [f"The reactor {i} coolant loop reads {i % 7} bar and the valve stays open." for i in range(200)]


def continual(handle, tmp_path, **params):
    cls = TECHNIQUES.get("train.continual")
    ctx = TechniqueContext(seed=0, workdir=tmp_path, datasets={"domain": DOMAIN})
    base = {"dataset": "domain", "seq_len": 32, "batch_size": 4, "max_steps": 30, "lr": 3e-3, "warmup_steps": 3}
    return cls(build_params(cls, {**base, **params})).run(handle, ctx)


def test_continual_pretraining_lowers_held_out_domain_perplexity(tiny_handle, tmp_path):
    applied = continual(tiny_handle, tmp_path / "all")
    r = applied.report
    assert r.steps == 30 and r.held_out_blocks >= 1 and r.train_blocks > r.held_out_blocks
    assert r.perplexity_after < 0.5 * r.perplexity_before, (r.perplexity_before, r.perplexity_after)
    assert r.final_loss < r.first_loss and r.trainable_params == r.total_params
    back = ModelHandle.load(applied.handle.save(tmp_path / "saved"))
    pair = [("The reactor 3 coolant loop reads", " 3 bar")]
    assert back.loglikelihood(pair) == applied.handle.loglikelihood(pair)


def test_train_only_and_kept_zeros(tiny_handle, tmp_path):
    prune = TECHNIQUES.get("prune.magnitude")
    sparse = prune(build_params(prune, {"sparsity": 0.5})).run(tiny_handle, TechniqueContext(workdir=tmp_path)).handle
    applied = continual(sparse, tmp_path / "mlp", train_only=["mlp"], max_steps=5)
    out = applied.handle
    assert out.format == "torch-sparse" and applied.report.sparsity_kept
    assert 0 < applied.report.trainable_params < applied.report.total_params
    before, after = dict(sparse.model.named_parameters()), dict(out.model.named_parameters())
    for name, w in after.items():
        if "mlp" in name:
            assert torch.equal(w == 0, before[name] == 0) or (before[name] != 0).all(), name
        else:
            assert torch.equal(w, before[name]), f"{name} changed although only mlp weights train"
    assert any(not torch.equal(after[n], before[n]) for n in after if "mlp" in n)
    with pytest.raises(Exception, match="matches no parameter"):
        continual(tiny_handle, tmp_path / "none", train_only=["no_such_module"])
