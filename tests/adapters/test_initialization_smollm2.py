"""Real-model effects of the derive-from-a-model techniques on SmolLM2-135M (slow): layer dropping removes the
blocks asked for, a merge of the model with itself is the model, continual pretraining lowers in-domain perplexity,
SparseGPT at 50% keeps WikiText-2 perplexity below magnitude pruning's."""

from __future__ import annotations

import pytest
import torch

from adapters.technique import TECHNIQUES, TechniqueContext, build_params

pytestmark = pytest.mark.slow


def run(name, handle, tmp_path, inputs=None, datasets=None, **params):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=0, workdir=tmp_path / name, inputs=inputs or {}, datasets=datasets or {})
    return cls(build_params(cls, params)).run(handle, ctx)


def test_smollm2_drops_four_blocks_and_their_parameters(smollm2, tmp_path, wikitext):
    applied = run("prune.layers", smollm2, tmp_path, n_layers=4, n_calibration=8, seq_len=64)
    r, model = applied.report, applied.handle.model
    block = sum(p.numel() for p in smollm2.model.model.layers[0].parameters())
    assert (r.layers_before, r.layers_after) == (30, 26) == (30, model.config.num_hidden_layers)
    assert r.params_before - r.params_after == 4 * block and len(r.removed) == 4
    lines = wikitext.lines()
    base, dropped = wikitext.ppl(smollm2, lines), wikitext.ppl(applied.handle, lines)
    print(f"removed blocks {r.removed}; WikiText-2 perplexity {base:.1f} -> {dropped:.1f}")
    assert base < dropped < 50 * base


def test_smollm2_merged_with_itself_is_itself(smollm2, tmp_path):
    out = run("merge.linear", smollm2, tmp_path, inputs={"models": [smollm2]}, weights=[0.5, 0.5]).handle
    mine, theirs = out.model.state_dict(), smollm2.model.state_dict()
    for k, v in theirs.items():
        torch.testing.assert_close(mine[k], v, atol=1e-6, rtol=1e-6, msg=k)


def test_smollm2_continual_pretraining_lowers_in_domain_perplexity(smollm2, tmp_path, wikitext):
    domain = wikitext.lines(120)
    r = run("train.continual", smollm2, tmp_path, datasets={"wiki": domain}, dataset="wiki", n_texts=120, seq_len=128,
            batch_size=2, max_steps=12, lr=1e-4, warmup_steps=2, eval_fraction=0.15).report
    print(f"held-out WikiText perplexity {r.perplexity_before:.2f} -> {r.perplexity_after:.2f} "
          f"({r.held_out_blocks} blocks; loss {r.first_loss:.3f} -> {r.final_loss:.3f})")
    assert r.perplexity_after < r.perplexity_before


def test_smollm2_sparsegpt_half_beats_magnitude(smollm2, tmp_path, wikitext):
    lines = wikitext.lines()
    sgpt = run("prune.sparsegpt", smollm2, tmp_path, sparsity=0.5, n_samples=16, seq_len=128)
    mag = run("prune.magnitude", smollm2, tmp_path, sparsity=0.5)
    ppl = {"base": wikitext.ppl(smollm2, lines), "sparsegpt50": wikitext.ppl(sgpt.handle, lines),
           "magnitude50": wikitext.ppl(mag.handle, lines)}
    print("WikiText-2 perplexity:", {k: round(v, 1) for k, v in ppl.items()}, "sparsity", sgpt.report.sparsity)
    assert sgpt.report.sparsity == pytest.approx(0.5, abs=0.01)
    assert ppl["base"] < ppl["sparsegpt50"] < ppl["magnitude50"]


def test_smollm2_structured_pruning_shrinks_every_shape_and_feature_kd_recovers(smollm2, tmp_path, wikitext):
    """25% of the MLP channels and one query head per key/value group (9 -> 6 heads, 3 KV heads kept), then
    feature distillation from the unpruned model lowers the student-teacher KL on held-out text."""
    pytest.importorskip("torch_pruning")
    cfg = smollm2.model.config
    pruned = run("prune.structured", smollm2, tmp_path, mlp_ratio=0.25, head_ratio=1 / 3, importance="taylor",
                 n_calibration=4, seq_len=128)
    r, model = pruned.report, pruned.handle.model
    head_dim, hidden, n = cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size, cfg.num_hidden_layers
    assert (r.intermediate_before, r.intermediate_after) == (1536, 1152) == (1536, model.config.intermediate_size)
    assert (r.heads_before, r.heads_after, r.kv_heads_after) == (9, 6, 3)
    removed = n * (3 * hidden * (1536 - 1152) + 2 * hidden * 3 * head_dim)  # gate/up rows + down columns; q rows + o columns
    assert r.params_before - r.params_after == removed == smollm2.num_parameters() - pruned.handle.num_parameters()
    back = pruned.handle.save(tmp_path / "pruned")
    from adapters.handle import ModelHandle

    lines = wikitext.lines()
    base, after = wikitext.ppl(smollm2, lines), wikitext.ppl(ModelHandle.load(back), lines)
    kd = run("distill.feature", pruned.handle, tmp_path, inputs={"teacher": smollm2},
             datasets={"wiki": wikitext.lines(200)[8:]}, dataset="wiki", max_steps=8, batch_size=2, seq_len=128,
             lr=1e-4, eval_blocks=4)
    k = kd.report
    print(f"params {r.params_before} -> {r.params_after}; WikiText-2 perplexity {base:.1f} -> {after:.1f}; "
          f"feature KD: KL {k.kl_before:.3f} -> {k.kl_after:.3f}, feature MSE {k.feature_mse_before:.4f} -> "
          f"{k.feature_mse_after:.4f}")
    assert base < after < 100 * base
    assert k.kl_after < k.kl_before
