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
