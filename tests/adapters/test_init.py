"""init.pretrained and init.scratch on the pico model."""

from __future__ import annotations

import math

import pytest
import torch

from adapters.errors import UsageError
from adapters.technique import TechniqueContext, build_params, get_technique

SMALL = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128, "seq_len": 32, "batch_size": 4,
         "n_texts": 200, "lr": 3e-3}


def _apply(name, params, handle, tmp_path, **ctx):
    cls = get_technique(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(workdir=tmp_path, **ctx)).handle


def test_pretrained_without_source_keeps_the_model_and_records_the_step(tiny, tmp_path):
    out = _apply("init.pretrained", {}, tiny, tmp_path)
    assert out.model is tiny.model and out.source == tiny.source
    assert out.lineage[-1].technique == "init.pretrained"
    assert out.lineage[-1].params == {"source": None, "dtype": "auto"}
    assert "torch" in out.lineage[-1].library_versions


def test_pretrained_loads_a_source_and_casts_a_copy(tiny, tmp_path):
    out = _apply("init.pretrained", {"source": "tiny-llama", "dtype": "bfloat16"}, tiny, tmp_path)
    assert out.source == "builtin:tiny-llama" and out.model is not tiny.model
    assert out.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert tiny.model.model.embed_tokens.weight.dtype == torch.float32


@pytest.mark.parametrize("raw, fragment", [
    ({"source": "no-such-model"}, "unknown model 'no-such-model'"),
    ({"dtype": "int3"}, "'int3' is not allowed"),
])
def test_pretrained_rejects_bad_params(raw, fragment):
    with pytest.raises(UsageError, match=fragment):
        build_params(get_technique("init.pretrained"), raw)


def test_scratch_builds_the_efficient_design(tiny, tmp_path):
    out = _apply("init.scratch", {**SMALL, "max_steps": 1}, tiny, tmp_path)
    cfg = out.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 2, 4, 2)
    assert cfg.hidden_act == "silu" and type(out.model.model.norm).__name__.endswith("RMSNorm")
    assert out.model.lm_head.weight is out.model.model.embed_tokens.weight
    attn = out.model.model.layers[0].self_attn
    assert attn.k_proj.out_features == attn.q_proj.out_features // 2  # GQA: 2 kv heads for 4 query heads
    assert out.source.startswith("scratch:") and out.lineage[-1].technique == "init.scratch"
    assert len(out.tokenizer) == cfg.vocab_size


def test_scratch_default_intermediate_is_swiglu_sized():
    params = build_params(get_technique("init.scratch"), {"hidden": 96})
    assert params.config()["intermediate_size"] == 256  # 8/3 x 96 = 256, a multiple of 64


def test_scratch_training_lowers_the_loss_and_is_seeded(tiny, tmp_path):
    a = _apply("init.scratch", {**SMALL, "max_steps": 40}, tiny, tmp_path, seed=3)
    rec = a.lineage[-1].report
    assert rec["steps"] == 40 and rec["first_loss"] > math.log(len(a.tokenizer)) - 1
    assert rec["final_loss"] < rec["first_loss"] - 3, rec
    b = _apply("init.scratch", {**SMALL, "max_steps": 40}, tiny, tmp_path, seed=3)
    c = _apply("init.scratch", {**SMALL, "max_steps": 40}, tiny, tmp_path, seed=4)
    wa, wb, wc = (h.model.model.layers[0].mlp.up_proj.weight for h in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_scratch_uses_the_spec_budget(tiny, tmp_path):
    out = _apply("init.scratch", SMALL, tiny, tmp_path, max_steps=3)
    assert out.lineage[-1].report["steps"] == 3


@pytest.mark.parametrize("raw, fragment", [
    ({"hidden": 100, "heads": 3}, "hidden (100) must be divisible by heads (3)"),
    ({"heads": 4, "kv_heads": 3}, "heads (4) must be divisible by kv_heads (3)"),
    ({"layers": 0}, "layers must be >= 1"),
    ({"lr": 2.0}, "lr must be in (0, 1)"),
])
def test_scratch_rejects_bad_params(raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique("init.scratch"), raw)
    assert fragment in str(info.value)


def test_scratch_training_generalizes_to_unseen_documents(tiny, tmp_path):
    from adapters.corpus import synthetic_corpus

    unseen = synthetic_corpus(6, seed=99)
    n = sum(len(tiny.tokenizer(t, add_special_tokens=False).input_ids) for t in unseen)
    untrained = _apply("init.scratch", {**SMALL, "max_steps": 0}, tiny, tmp_path)
    trained = _apply("init.scratch", {**SMALL, "max_steps": 40}, tiny, tmp_path)
    ppl = [math.exp(-sum(h.loglikelihood_rolling(unseen)) / n) for h in (untrained, trained)]
    assert ppl[1] < ppl[0] / 100, ppl  # about 50,900 -> 265 when written
