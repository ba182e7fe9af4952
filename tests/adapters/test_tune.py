"""tune.sft with LoRA and peft.lora on SmolLM2 (slow): training really fits the data. The fast pico-model
tests of both are in ``test_quant_tune_infer.py``."""

from __future__ import annotations

import pytest

from adapters.corpus import instruction_pairs
from adapters.technique import TECHNIQUES, TechniqueContext, build_params


def apply(name, params, handle, workdir, **ctx):
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=workdir, **ctx)).handle


def completion_nll(handle, records):
    """Mean negative log-likelihood of each completion given its prompt."""
    scores = handle.loglikelihood([(r["prompt"], r["completion"]) for r in records])
    return -sum(s.logprob for s in scores) / len(scores)


@pytest.mark.slow
def test_smollm2_lora_sft_lowers_loss_on_its_data(smollm2, tmp_path):
    train = instruction_pairs(64, seed=0)  # what tune.sft reads by default (n_examples, ctx seed 0)
    unseen = instruction_pairs(96, seed=1)[-32:]
    out = apply("tune.sft", {"peft": "lora", "max_steps": 10, "lr": 1e-3, "n_examples": 64, "batch_size": 4,
                             "max_length": 128}, smollm2, tmp_path)
    before, after = completion_nll(smollm2, train[:32]), completion_nll(out, train[:32])
    held_before, held_after = completion_nll(smollm2, unseen), completion_nll(out, unseen)
    print(f"completion NLL on training pairs {before:.3f} -> {after:.3f}; unseen pairs {held_before:.3f} -> "
          f"{held_after:.3f}; logged loss {out.lineage[-1].report['first_loss']:.3f} -> {out.lineage[-1].report['final_loss']:.3f}")
    assert after < 0.8 * before
    assert held_after < held_before  # the format and the world's facts generalize to new pairs
    assert not any("lora" in n for n, _ in out.model.named_parameters())


@pytest.mark.slow
def test_smollm2_peft_lora_recovers_magnitude_pruning(smollm2, benchmarks_dir, tmp_path, wikitext):
    lines = wikitext.lines()
    texts = [t for t in wikitext.lines(n=200)[8:]]  # training text disjoint from the scored lines
    pruned = apply("prune.magnitude", {"sparsity": 0.3}, smollm2, tmp_path / "p")
    tuned = apply("peft.lora", {"max_steps": 16, "lr": 1e-3, "seq_len": 128, "batch_size": 4, "dataset": "wiki"},
                  pruned, tmp_path / "l", datasets={"wiki": texts})
    ppl = {"base": wikitext.ppl(smollm2, lines), "pruned30": wikitext.ppl(pruned, lines), "lora": wikitext.ppl(tuned, lines)}
    rec = tuned.lineage[-1].report
    print("wikitext-2 perplexity:", {k: round(v, 2) for k, v in ppl.items()}, "trainable:", rec["trainable_params"])
    assert ppl["lora"] < ppl["pruned30"]
    assert rec["final_loss"] < rec["first_loss"]
