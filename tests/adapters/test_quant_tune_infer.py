"""quant.int8, quant.rtn, peft.lora, tune.sft and infer.decoding on the pico model: the weights (or the
generation) really change, the artifact round-trips, bad parameters fail clearly."""

from __future__ import annotations

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

PAIR = [("The river near the old mill", " flows east"), ("She sold", " apples at the market")]


def apply(name, params, handle, tmp_path, **ctx):
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=tmp_path, **ctx)).handle


def lls(handle):
    return [x.logprob for x in handle.loglikelihood(PAIR)]


def test_int8_uses_int8_modules_and_round_trips(tiny_handle, tmp_path):
    out = apply("quant.int8", {}, tiny_handle, tmp_path)
    qtype = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(out.model.model.layers[0].mlp.up_proj, qtype)
    assert not isinstance(out.model.lm_head, qtype)  # the output layer stays fp32
    foot = out.weight_footprint()
    assert foot["int8"] == sum(m.in_features * m.out_features for m in tiny_handle.model.modules()
                               if isinstance(m, torch.nn.Linear)) - tiny_handle.model.lm_head.weight.numel()
    assert lls(out) == pytest.approx(lls(tiny_handle), abs=0.05)
    assert lls(out) != lls(tiny_handle)  # quantization error is real
    back = ModelHandle.load(out.save(tmp_path / "a"))
    assert lls(back) == lls(out)


@pytest.mark.parametrize("bits,key", [(4, "uint8"), (8, "int8")])
def test_rtn_stores_low_bit_weights_and_round_trips(tiny_handle, tmp_path, bits, key):
    out = apply("quant.rtn", {"bits": bits, "group_size": 32}, tiny_handle, tmp_path)
    linear_params = sum(m.weight.numel() for n, m in tiny_handle.model.named_modules()
                        if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert out.weight_footprint()[key] == linear_params * bits // 8
    back = ModelHandle.load(out.save(tmp_path / "a"))
    assert lls(back) == pytest.approx(lls(out), abs=1e-5)


def test_rtn_group_size_must_divide_columns(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="group_size 48 does not divide"):
        apply("quant.rtn", {"bits": 4, "group_size": 48}, tiny_handle, tmp_path)


def test_lora_trains_merges_and_keeps_sparsity(tiny_handle, tmp_path):
    pruned = apply("prune.magnitude", {"sparsity": 0.5}, tiny_handle, tmp_path)
    out = apply("peft.lora", {"max_steps": 15, "lr": 0.01, "r": 4, "n_texts": 64, "seq_len": 32}, pruned, tmp_path)
    rec = out.lineage[-1].report
    assert rec["final_loss"] < rec["first_loss"] and rec["steps"] == 15
    assert 0 < rec["trainable_params"] < rec["total_params"] / 5
    w0 = pruned.model.model.layers[0].mlp.up_proj.weight
    w1 = out.model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w0, w1)
    assert torch.equal(w0 == 0, w1 == 0)  # the merged update did not fill the pruned zeros
    assert not any("lora" in n for n, _ in out.model.named_parameters())


def test_lora_bad_target_is_clear(tiny_handle, tmp_path):
    with pytest.raises(ValueError, match="not modules of this model"):
        apply("peft.lora", {"max_steps": 1, "target_modules": ["nope_proj"]}, tiny_handle, tmp_path)
    with pytest.raises(UsageError, match="r"):
        build_params(TECHNIQUES.get("peft.lora"), {"r": 0})


def test_sft_with_lora_changes_weights(tiny_handle, tmp_path):
    out = apply("tune.sft", {"max_steps": 3, "lr": 0.01, "n_examples": 24, "batch_size": 4}, tiny_handle, tmp_path)
    assert out.lineage[-1].report["steps"] == 3 and out.lineage[-1].report["first_loss"] is not None
    assert lls(out) != lls(tiny_handle)
    assert not any("lora" in n for n, _ in out.model.named_parameters())


def test_sft_after_pruning_keeps_the_zeros_unless_told(tiny_handle, tmp_path):
    pruned = apply("prune.magnitude", {"sparsity": 0.5}, tiny_handle, tmp_path)
    fast = {"max_steps": 2, "lr": 0.01, "n_examples": 8, "batch_size": 4, "peft": "none"}
    kept = apply("tune.sft", fast, pruned, tmp_path / "kept")
    filled = apply("tune.sft", {**fast, "keep_sparsity": False}, pruned, tmp_path / "filled")
    w0 = pruned.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w0 == 0, kept.model.model.layers[0].mlp.up_proj.weight == 0)
    assert int((filled.model.model.layers[0].mlp.up_proj.weight == 0).sum()) < int((w0 == 0).sum())
    assert kept.format == "torch-sparse" and filled.format == "torch" and kept.lineage[-1].report["sparsity_kept"]


def test_sft_on_a_prompt_completion_file_trains_on_both_halves(tmp_path):
    import json

    from adapters.corpus import read_records
    from adapters.techniques.tune import SFTParams, sft_records

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: where?", "completion": f" A{i}: here.", "id": i}) + "\n"
                            for i in range(3)))
    records = read_records(data)
    assert records[0] == {"prompt": "Q0: where?", "completion": " A0: here."}
    ctx = TechniqueContext(seed=0, workdir=tmp_path, inputs={"dataset": records})
    assert sft_records(ctx, SFTParams(dataset="pairs"))[2] == {"prompt": "Q2: where?", "completion": " A2: here."}


def test_sft_max_length_shorter_than_every_prompt_is_a_usage_error(tiny_handle, tmp_path):
    # the built-in instruction prompts are 76-96 tokens: 32 would cut off every completion
    with pytest.raises(UsageError, match="max_length 32 is shorter than every prompt"):
        apply("tune.sft", {"max_steps": 1, "batch_size": 1, "max_length": 32, "n_examples": 4}, tiny_handle, tmp_path)


def test_decoding_changes_generation_not_scores(tiny_handle, tmp_path):
    greedy = apply("infer.decoding", {}, tiny_handle, tmp_path)
    sample = apply("infer.decoding", {"strategy": "sample", "temperature": 1.5, "top_k": 50, "seed": 3},
                   tiny_handle, tmp_path)
    assert sample.model is tiny_handle.model  # weights shared, untouched
    assert lls(sample) == lls(tiny_handle)
    prompts = ["The river", "She sold"]
    g = greedy.generate(prompts, max_new_tokens=12)
    s1, s2 = sample.generate(prompts, max_new_tokens=12), sample.generate(prompts, max_new_tokens=12)
    assert s1 == s2  # seeded
    assert s1 != g
    assert g == tiny_handle.generate(prompts, max_new_tokens=12)
    events = list(sample.stream("The river", max_new_tokens=5))
    assert len(events) == 5
