"""tune.dpo and tune.kto on the pico model (trl's DPOTrainer / KTOTrainer, a few steps), the TruthfulQA preference
pairs and their held-out split, and tune.sft on chats (loss on the assistant turns only)."""

from __future__ import annotations

import copy

import pytest
import torch

from adapters.errors import SpecError, UsageError
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques.tune_preference import (
    dpo_pairs,
    kto_rows,
    pairs_from_rows,
    preference_margins,
    split_by_prompt,
)

NAMES = ["Ada", "Bram", "Cora", "Dain", "Elin", "Faro", "Greta", "Hugo", "Ines", "Joren", "Kira", "Lio"]
TOWNS = ["Ashford", "Bellmere", "Corrin", "Dunmoor", "Elmstead", "Fernhill"]
# short prompts: on CPU trl scores every position of a sequence through the 49k-word head, so length is time
PAIRS = [{"prompt": f"{n} lives in {TOWNS[i % 6]}. Where does {n} live?\nA:", "chosen": f" In {TOWNS[i % 6]}.",
          "rejected": f" In {TOWNS[(i + 3) % 6]}."} for i, n in enumerate(NAMES)]


def run(name, params, handle, tmp_path, **ctx):
    cls = TECHNIQUES.get(name)
    ctx.setdefault("datasets", {"pairs": PAIRS})
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=tmp_path, **ctx)).handle


def state(handle):
    return {k: v.clone() for k, v in handle.model.state_dict().items()}


def test_dpo_lora_raises_the_margin_on_its_training_pairs_and_reports_heldout(tiny_handle, tmp_path):
    train, held = split_by_prompt(PAIRS, 0.25, seed=0)
    assert len(held) == 3 and not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    before = preference_margins(tiny_handle, train)
    out = run("tune.dpo", {"dataset": "pairs", "max_steps": 8, "lr": 5e-3, "batch_size": 3, "max_length": 64,
                           "eval_fraction": 0.25}, tiny_handle, tmp_path)
    after = preference_margins(out, train)
    rec = out.lineage[-1].report
    print(f"train margin {before.mean_margin:.3f} -> {after.mean_margin:.3f}, accuracy {before.accuracy:.2f} -> "
          f"{after.accuracy:.2f}; report {rec}")
    assert after.mean_margin > before.mean_margin + 0.1 and after.accuracy >= before.accuracy
    assert rec["method"] == "dpo/sigmoid" and "LoRA adapters disabled" in rec["reference"]
    assert rec["steps"] == 8 and rec["train_records"] == 9 and rec["heldout_pairs"] == 3
    assert rec["first_reward_margin"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert rec["final_reward_margin"] > 0 and rec["final_reward_accuracy"] > 0.5
    assert 0 < rec["trainable_params"] < rec["total_params"] / 5
    # the held-out numbers are the models' own on the held-out pairs, before and after
    assert rec["heldout_margin_before"] == pytest.approx(preference_margins(tiny_handle, held).mean_margin, abs=1e-4)
    assert rec["heldout_margin_after"] == pytest.approx(preference_margins(out, held).mean_margin, abs=1e-4)
    # the implicit reward against the reference (the input): beta x the change of the log-likelihood margin
    assert rec["heldout_reward_margin"] == pytest.approx(0.1 * (rec["heldout_margin_after"] - rec["heldout_margin_before"]))
    assert rec["heldout_reward_accuracy"] in (0, 1 / 3, 2 / 3, 1)
    assert not any("lora" in n for n, _ in out.model.named_parameters())
    # trl's fused-head patch is gone: a copy of the result runs its own weights
    assert "forward" not in out.model.__dict__
    clone = copy.deepcopy(out.model)
    with torch.no_grad():
        clone.lm_head.weight.zero_()
        ids = torch.tensor([[1, 2, 3]])
        assert clone(input_ids=ids).logits.abs().max() == 0


def test_dpo_full_trains_every_weight_against_a_frozen_copy(tiny_handle, tmp_path):
    pruned = run("prune.magnitude", {"sparsity": 0.5}, tiny_handle, tmp_path / "p")
    original = state(pruned)
    before = preference_margins(pruned, PAIRS)
    out = run("tune.dpo", {"dataset": "pairs", "peft": "none", "max_steps": 6, "lr": 1e-3, "batch_size": 4,
                           "max_length": 64, "eval_fraction": 0}, pruned, tmp_path / "d")
    rec = out.lineage[-1].report
    after = preference_margins(out, PAIRS)
    assert after.mean_margin > before.mean_margin + 0.1
    assert rec["reference"] == "a frozen copy of the input model" and rec["heldout_pairs"] == 0
    assert rec["trainable_params"] == rec["total_params"]
    now = state(pruned)
    assert all(torch.equal(v, now[k]) for k, v in original.items())  # the input was not touched
    w0, w1 = pruned.model.model.layers[0].mlp.up_proj.weight, out.model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w0, w1) and torch.equal(w0 == 0, w1 == 0)  # pruned zeros kept
    assert out.format == "torch-sparse"


def test_kto_on_pairs_and_on_unpaired_rows_runs_and_reports(tiny_handle, tmp_path):
    out = run("tune.kto", {"dataset": "pairs", "max_steps": 4, "lr": 5e-3, "batch_size": 4, "max_length": 64,
                           "eval_fraction": 0.25}, tiny_handle, tmp_path / "a")
    rec = out.lineage[-1].report
    assert rec["method"] == "kto/kto" and rec["steps"] == 4 and rec["train_records"] == 18  # 9 pairs, unpaired
    assert rec["final_kl"] is not None and rec["first_loss"] is not None and rec["final_reward_margin"] is not None
    assert rec["heldout_pairs"] == 3 and rec["heldout_reward_margin"] is not None
    assert rec["first_reward_accuracy"] is None  # trl's KTO logs no accuracy
    assert rec["heldout_margin_after"] != rec["heldout_margin_before"]
    rows = kto_rows(PAIRS)[::-1]  # KTO's own shape: {prompt, completion, label}
    out = run("tune.kto", {"dataset": "rows", "peft": "none", "max_steps": 2, "lr": 1e-3, "batch_size": 4,
                           "max_length": 64, "eval_fraction": 0.25}, tiny_handle, tmp_path / "b",
              datasets={"rows": rows})
    rec = out.lineage[-1].report
    assert rec["train_records"] == 18 and rec["heldout_pairs"] == 3
    assert rec["reference"] == "a frozen copy of the input model"


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["tune.dpo", "tune.kto"])
def test_preference_training_runs_on_cuda(name, tiny_handle, tmp_path):
    out = run(name, {"dataset": "pairs", "max_steps": 2, "lr": 5e-3, "batch_size": 4, "max_length": 64,
                     "eval_fraction": 0.25}, tiny_handle, tmp_path, hardware={"device": "cuda:0"})
    rec = out.lineage[-1].report
    assert out.lineage[-1].device == "cuda:0" and next(out.model.parameters()).is_cuda
    assert rec["steps"] == 2 and rec["heldout_pairs"] == 3 and rec["heldout_margin_after"] is not None


def test_unpairing_and_pairing_back():
    rows = kto_rows(PAIRS[:2] + [{"prompt": "P", "completion": " c", "label": 1}])
    assert [r["label"] for r in rows] == [True, False, True, False, True]
    assert pairs_from_rows(rows) == dpo_pairs(PAIRS[:2])  # "P" has no undesirable completion: no pair
    assert split_by_prompt(PAIRS, 0.25, seed=0) == split_by_prompt(PAIRS, 0.25, seed=0)
    assert split_by_prompt(PAIRS, 0.25, seed=0) != split_by_prompt(PAIRS, 0.25, seed=1)


@pytest.mark.parametrize(("name", "records", "message"), [
    ("tune.dpo", [{"prompt": "a", "completion": " b"}], r"record 0 has keys \['completion', 'prompt'\]; allowed: "
                                                         r"\{prompt, chosen, rejected\}"),
    ("tune.dpo", [{"prompt": "a", "completion": " b", "label": True}], "use tune.kto"),
    ("tune.dpo", ["a plain text"], "record 0 has keys a str"),
    ("tune.kto", [{"prompt": "a", "completion": " b"}], r"allowed: \{prompt, completion, label\} rows or"),
    ("tune.kto", [{"prompt": "a", "completion": " b", "label": "yes"}], "label 'yes' is not allowed"),
])
def test_bad_dataset_shape_fails_clearly_before_training(tiny_handle, tmp_path, name, records, message):
    with pytest.raises(UsageError, match=message):
        run(name, {"dataset": "bad", "max_steps": 1}, tiny_handle, tmp_path, datasets={"bad": records})


def test_preference_jsonl_files_keep_their_fields(tmp_path):
    import json

    from adapters.corpus import read_records, record_text

    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "Q", "chosen": " yes", "rejected": " no", "source": "x"},
            {"prompt": "Q", "completion": " no", "label": False}, {"text": "plain", "label": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_records(path) == [{"prompt": "Q", "chosen": " yes", "rejected": " no"},
                                  {"prompt": "Q", "completion": " no", "label": False}, {"text": "plain", "label": 3}]
    assert record_text(rows[0]) == "Q yes"  # as a text, a pair is its prompt and chosen answer


def test_bad_params_fail_at_build_time():
    with pytest.raises(UsageError, match="batch_size must be >= 2 with loss_type 'kto'"):
        build_params(TECHNIQUES.get("tune.kto"), {"batch_size": 1})
    build_params(TECHNIQUES.get("tune.kto"), {"batch_size": 1, "loss_type": "apo_zero_unpaired"})
    with pytest.raises(UsageError, match=r"loss_type: 'kto' is not allowed \(allowed: 'sigmoid', 'ipo'"):
        build_params(TECHNIQUES.get("tune.dpo"), {"loss_type": "kto"})
    with pytest.raises(UsageError, match=r"eval_fraction must be in \[0, 1\), got 1.0"):
        build_params(TECHNIQUES.get("tune.dpo"), {"eval_fraction": 1.0})


def test_formats_are_those_of_tune_sft():
    sft, dpo, kto = (TECHNIQUES.get(n) for n in ("tune.sft", "tune.dpo", "tune.kto"))
    assert dpo.accepts == kto.accepts == sft.accepts and dpo.dequantizes == sft.dequantizes
    for fmt in sft.accepts:
        assert dpo.output_format(fmt, dpo.Params()) == sft.output_format(fmt, sft.Params())
    assert dpo.runs_on_device and kto.runs_on_device and dpo.uses_step_budget


# -- the TruthfulQA preference pairs ------------------------------------------------------------------------
def test_truthfulqa_split_is_disjoint_by_question_and_deterministic(benchmarks_dir):
    from adapters.corpus import builtin_records
    from adapters.truthfulqa import heldout_question_ids, truthfulqa_pairs, truthfulqa_questions
    from suites.tasks.data import load_docs

    questions = truthfulqa_questions(benchmarks_dir)
    train = truthfulqa_pairs("train", data_dir=benchmarks_dir)
    held = truthfulqa_pairs("heldout", data_dir=benchmarks_dir)
    train_ids, held_ids = {r["question_id"] for r in train}, {r["question_id"] for r in held}
    assert not train_ids & held_ids
    assert train_ids | held_ids == {q.id for q in questions if q.false and q.true}
    assert held_ids == heldout_question_ids(benchmarks_dir) and len(held_ids) == round(0.2 * len(questions))
    assert len(train) + len(held) == sum(len(q.false) for q in questions)
    assert truthfulqa_pairs("train", data_dir=benchmarks_dir) == train  # deterministic
    assert truthfulqa_pairs("train", seed=1, data_dir=benchmarks_dir) != train  # the order is seeded, not the split
    assert {r["question_id"] for r in truthfulqa_pairs("train", seed=1, data_dir=benchmarks_dir)} == train_ids
    q = questions[train[0]["question_id"]]
    assert train[0]["prompt"] == f"Q: {q.question}\nA:" and train[0]["chosen"][1:] in q.true
    assert train[0]["rejected"][1:] in q.false
    assert builtin_records("truthfulqa_pairs_heldout", 5, 0, benchmarks_dir) == held[:5]
    # the quality suite's held-out tasks read exactly the held-out questions
    docs = load_docs("truthfulqa_mc1_heldout", benchmarks_dir)
    assert [d["question"] for d in docs] == [q.question for q in questions if q.id in held_ids]
    assert load_docs("truthfulqa_mc2_heldout", benchmarks_dir) == docs


def test_truthfulqa_pairs_without_data_fail_clearly(tmp_path, monkeypatch):
    from adapters.corpus import builtin_records

    monkeypatch.delenv("SLM_DATA_DIR", raising=False)
    with pytest.raises(UsageError, match="set SLM_DATA_DIR"):
        builtin_records("truthfulqa_pairs", 5)
    with pytest.raises(UsageError, match="truthfulqa/mc_task.json"):
        builtin_records("truthfulqa_pairs", 5, data_dir=tmp_path)


def test_spec_names_truthfulqa_pairs_and_the_plan_reads_the_file(benchmarks_dir, tmp_path):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    text = ("name: align\nbase: tiny-llama\ndatasets:\n  tqa: {builtin: truthfulqa_pairs, n: 40}\n"
            "paths:\n  - [{tune.dpo: {dataset: tqa, max_steps: 1}}]\n")
    plan = make_plan(parse_spec(text, file="align.yaml"), data_dir=str(benchmarks_dir))
    node = next(n for n in plan.nodes.values() if n.kind == "dataset")
    assert node.params["builtin"] == "truthfulqa_pairs" and node.params["data_dir"] == str(benchmarks_dir)
    with pytest.raises(SpecError, match=r"datasets\.tqa\.builtin.*truthfulqa/mc_task.json"):
        make_plan(parse_spec(text, file="align.yaml"), data_dir=str(tmp_path))
    with pytest.raises(SpecError, match="allowed: synthetic, instructions, preferences, truthfulqa_pairs"):
        parse_spec(text.replace("builtin: truthfulqa_pairs", "builtin: nope"), file="align.yaml")


def test_dpo_on_builtin_truthfulqa_pairs_by_name(tiny_handle, tmp_path, benchmarks_dir, monkeypatch):
    monkeypatch.setenv("SLM_DATA_DIR", str(benchmarks_dir))
    out = run("tune.dpo", {"dataset": "truthfulqa_pairs", "n_examples": 6, "max_steps": 1, "batch_size": 2,
                           "max_length": 96, "eval_pairs": 2}, tiny_handle, tmp_path, datasets={})
    rec = out.lineage[-1].report
    assert rec["steps"] == 1 and rec["train_records"] + rec["heldout_pairs"] <= 6 and rec["heldout_pairs"] >= 1


# -- tune.sft on chats ---------------------------------------------------------------------------------------
CHAT = [{"role": "user", "content": "Where does Ada live?"}, {"role": "assistant", "content": "In Ashford."},
        {"role": "user", "content": "And Bram?"}, {"role": "assistant", "content": "In Bellmere."}]


def test_chat_sft_trains_on_the_assistant_turns_only(tiny_handle, tmp_path):
    from adapters.techniques.tune import SupervisedFineTune, sft_records

    params = build_params(SupervisedFineTune, {"dataset": "chats", "max_steps": 1, "batch_size": 1})
    ctx = TechniqueContext(seed=0, workdir=tmp_path, datasets={"chats": [{"messages": CHAT}]})
    records = sft_records(ctx, params)
    assert records == [{"prompt": CHAT[:1], "completion": CHAT[1:2]}, {"prompt": CHAT[:3], "completion": CHAT[3:]}]
    tok = tiny_handle.tokenizer
    trainer = SupervisedFineTune(params).trainer(copy.deepcopy(tiny_handle.model), tok, records, ctx, 1)
    for example, turn in zip(trainer.train_dataset, ("In Ashford.", "In Bellmere."), strict=True):
        ids, labels = example["input_ids"], example["labels"]
        trained = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
        assert tok.decode(trained) == f"{turn}<|im_end|>\n"  # the turn and its end-of-turn token, nothing else
        assert all(lab in (-100, i) for i, lab in zip(ids, labels, strict=True))
        assert trained == ids[len(ids) - len(trained):]  # the masked part is the whole conversation before the turn
        assert "Where does Ada live?" in tok.decode(ids[: len(ids) - len(trained)])
    out = run("tune.sft", {"dataset": "chats", "max_steps": 2, "batch_size": 2, "lr": 1e-2}, tiny_handle,
              tmp_path / "t", datasets={"chats": [{"messages": CHAT}] * 2})
    assert out.lineage[-1].report["steps"] == 2 and "forward" not in out.model.__dict__


def test_chat_sft_bad_chats_fail_clearly(tiny_handle, tmp_path):
    for chats, message in [([{"messages": [{"role": "user", "content": "hi"}]}], "no assistant turn"),
                           ([{"messages": "hello"}], "messages must be a list of"),
                           ([{"messages": CHAT}, {"prompt": "a", "completion": " b"}], "mixes record shapes")]:
        with pytest.raises(UsageError, match=message):
            run("tune.sft", {"dataset": "chats", "max_steps": 1}, tiny_handle, tmp_path, datasets={"chats": chats})
