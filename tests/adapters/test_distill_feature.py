"""distill.feature: hidden-state matching at the same relative depth lowers the feature MSE to the teacher, for a
shallower student (layer-dropped) and for a narrower one (through a learned projection, dropped afterwards)."""

from __future__ import annotations

import pytest

from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques.distill import layer_map

CHEAP = {"max_steps": 25, "batch_size": 2, "seq_len": 32, "n_texts": 64, "eval_blocks": 2, "lr": 3e-3}


def distill(student, teacher, tmp_path, **params):
    cls = TECHNIQUES.get("distill.feature")
    ctx = TechniqueContext(seed=0, workdir=tmp_path, inputs={"teacher": teacher})
    return cls(build_params(cls, {**CHEAP, **params})).run(student, ctx)


def test_layer_map_spreads_student_blocks_over_the_teacher_depth():
    assert layer_map(2, 4) == {1: 2, 2: 4} and layer_map(4, 4) == {1: 1, 2: 2, 3: 3, 4: 4}
    assert layer_map(26, 30)[26] == 30


def test_a_layer_dropped_student_learns_the_teachers_features(tiny_handle, tmp_path):
    drop = TECHNIQUES.get("prune.layers")
    shallow = drop(build_params(drop, {"n_calibration": 2, "seq_len": 16})).run(
        tiny_handle, TechniqueContext(workdir=tmp_path / "drop")).handle
    r = distill(shallow, tiny_handle, tmp_path / "kd").report
    assert r.feature_mse_after < 0.9 * r.feature_mse_before, (r.feature_mse_before, r.feature_mse_after)
    assert r.kl_after < r.kl_before
    assert not r.projection and len(r.layer_map) == shallow.model.config.num_hidden_layers


def test_a_narrower_student_is_matched_through_a_projection_that_is_not_kept(tiny_handle, tmp_path):
    from transformers import LlamaForCausalLM

    config = tiny_handle.model.config.to_dict()
    config.update(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    narrow = ModelHandle(LlamaForCausalLM(type(tiny_handle.model.config)(**config)).eval(), tiny_handle.tokenizer,
                         source="narrow")
    applied = distill(narrow, tiny_handle, tmp_path / "kd", alpha=0.0)
    r, out = applied.report, applied.handle
    assert r.projection and r.feature_mse_after < r.feature_mse_before
    assert not any("_feature_projection" in n for n, _ in out.model.named_parameters())
    back = ModelHandle.load(out.save(tmp_path / "saved"))
    pair = [("The river", " flows")]
    assert back.loglikelihood(pair) == out.loglikelihood(pair)


def test_a_teacher_with_another_vocabulary_is_refused(tiny_handle, tmp_path):
    from adapters.errors import UsageError

    class Other:
        def get_vocab(self):
            return {"a": 0}

    other = ModelHandle(tiny_handle.model, Other(), source="other")
    with pytest.raises(UsageError, match="vocabularies differ"):
        distill(tiny_handle, other, tmp_path)
