"""tune.dpo on the embedded SmolLM2 (slow): a tiny DPO budget on TruthfulQA's true-vs-false answers raises the model's
own preference for the true answers it trained on."""

from __future__ import annotations

import pytest

from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques.tune_preference import preference_margins


@pytest.mark.slow
def test_smollm2_dpo_raises_the_margin_of_true_over_false_answers(smollm2, benchmarks_dir, tmp_path):
    from adapters.truthfulqa import truthfulqa_pairs

    pairs = truthfulqa_pairs("train", n=8, seed=0, data_dir=benchmarks_dir)
    cls = TECHNIQUES.get("tune.dpo")
    params = build_params(cls, {"dataset": "tqa", "max_steps": 12, "batch_size": 2, "lr": 5e-4, "max_length": 96,
                                "eval_fraction": 0})
    before = preference_margins(smollm2, pairs)
    out = cls(params).run(smollm2, TechniqueContext(seed=0, workdir=tmp_path, datasets={"tqa": pairs})).handle
    after = preference_margins(out, pairs)
    rec = out.lineage[-1].report
    print(f"TruthfulQA training pairs: margin {before.mean_margin:.3f} -> {after.mean_margin:.3f} nats, accuracy "
          f"{before.accuracy:.2f} -> {after.accuracy:.2f}; trl reward margin {rec['first_reward_margin']:.4f} -> "
          f"{rec['final_reward_margin']:.4f}, loss {rec['first_loss']:.4f} -> {rec['final_loss']:.4f}")
    assert after.mean_margin > before.mean_margin + 0.5
    assert after.accuracy >= before.accuracy
    assert rec["first_reward_margin"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert rec["final_reward_margin"] > 0  # three epochs: the last batch's pairs were trained on twice before
