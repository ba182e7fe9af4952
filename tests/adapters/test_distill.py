"""distill.logit: the student's KL to its teacher goes down; pruned students stay pruned."""

from __future__ import annotations

import copy

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques._training import decoder_linears

FAST = {"lr": 1e-2, "seq_len": 32, "batch_size": 4, "n_texts": 200, "eval_blocks": 4}


def _apply(name, params, handle, tmp_path, teacher, seed=0):
    cls = get_technique(name)
    ctx = TechniqueContext(seed=seed, workdir=tmp_path, inputs={"teacher": teacher} if teacher else {})
    return cls(build_params(cls, params)).run(handle, ctx).handle


@pytest.fixture()
def pruned_student(tiny, tmp_path):
    return _apply("prune.magnitude", {"sparsity": 0.5}, tiny, tmp_path, None)


@pytest.fixture()
def sharp_teacher(tiny_handle):
    """The pico model with its final norm scaled up: far-from-uniform predictions worth distilling."""
    model = copy.deepcopy(tiny_handle.model)
    with torch.no_grad():
        model.model.norm.weight.mul_(30)
    return ModelHandle(model, tiny_handle.tokenizer, source="sharp-teacher")


def test_distillation_lowers_the_kl_to_the_teacher(pruned_student, sharp_teacher, tmp_path):
    out = _apply("distill.logit", {**FAST, "max_steps": 30}, pruned_student, tmp_path, sharp_teacher)
    rec = out.lineage[-1].report
    assert rec["steps"] == 30 and rec["kl_after"] < 0.7 * rec["kl_before"], rec
    assert out.lineage[-1].technique == "distill.logit" and out.lineage[-2].report["sparsity"]  # earlier report kept


def test_pruned_student_stays_pruned_unless_asked(pruned_student, tiny_handle, tmp_path):
    kept = _apply("distill.logit", {**FAST, "max_steps": 5}, pruned_student, tmp_path, tiny_handle)
    free = _apply("distill.logit", {**FAST, "max_steps": 5, "keep_sparsity": False}, pruned_student, tmp_path, tiny_handle)
    for name, lin in decoder_linears(kept.model).items():
        zero_before = decoder_linears(pruned_student.model)[name].weight == 0
        assert bool((lin.weight[zero_before] == 0).all()), name
        assert not bool((decoder_linears(free.model)[name].weight[zero_before] == 0).all()), name


def test_distillation_is_seeded_and_leaves_its_input_alone(pruned_student, tiny_handle, tmp_path):
    before = copy.deepcopy(pruned_student.model.state_dict())
    a = _apply("distill.logit", {**FAST, "max_steps": 4}, pruned_student, tmp_path, tiny_handle, seed=1)
    b = _apply("distill.logit", {**FAST, "max_steps": 4}, pruned_student, tmp_path, tiny_handle, seed=1)
    c = _apply("distill.logit", {**FAST, "max_steps": 4}, pruned_student, tmp_path, tiny_handle, seed=2)
    wa, wb, wc = (h.model.model.layers[1].mlp.down_proj.weight for h in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    for key, value in pruned_student.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_ce_mix_runs_and_records_the_loss(tiny, tiny_handle, tmp_path):
    out = _apply("distill.logit", {**FAST, "max_steps": 3, "alpha": 0.5}, tiny, tmp_path, tiny_handle)
    assert out.lineage[-1].report["final_loss"] > 0


def test_a_teacher_is_required_and_must_share_the_tokenizer(tiny, tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="needs a torch teacher"):
        _apply("distill.logit", FAST, tiny, tmp_path, None)
    tok = copy.deepcopy(tiny_handle.tokenizer)
    tok.add_tokens(["<extra_token>"])
    other = ModelHandle(tiny_handle.model, tok, source="other")
    with pytest.raises(UsageError, match="vocabularies differ"):
        _apply("distill.logit", FAST, tiny, tmp_path, other)


@pytest.mark.parametrize("raw, fragment", [
    ({"temperature": 0}, "temperature must be > 0, got 0"),
    ({"alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
    ({"max_steps": -1}, "max_steps must be >= 0"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
])
def test_bad_params_are_usage_errors(raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique("distill.logit"), raw)
    assert fragment in str(info.value)


@pytest.mark.slow
def test_smollm2_pruned_student_recovers_towards_its_teacher(smollm2, tmp_path):
    student = _apply("prune.magnitude", {"sparsity": 0.5}, smollm2, tmp_path, None)
    params = {"max_steps": 24, "lr": 1e-4, "batch_size": 2, "seq_len": 64, "n_texts": 300, "eval_blocks": 4}
    out = _apply("distill.logit", params, student, tmp_path, smollm2)
    rec = out.lineage[-1].report
    print("SmolLM2 magnitude-50% student, KL to teacher:", {k: round(v, 3) for k, v in rec.items() if isinstance(v, float)})
    assert rec["kl_after"] < 0.8 * rec["kl_before"], rec
    assert out.lineage[-2].report["sparsity"] == pytest.approx(0.5, abs=0.01)
    for lin in decoder_linears(out.model).values():
        assert float((lin.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
