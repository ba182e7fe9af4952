"""The ``repeat`` construct: a block of steps repeated with a per-round parameter schedule (iterative prune +
distill), unrolled into ordinary nodes that are cached and measurable one by one; bad blocks fail at plan time."""

from __future__ import annotations

import textwrap

import pytest
from run_helpers import run

from adapters.errors import SpecError
from harness.plan import make_plan
from harness.spec import parse_spec

KD = "max_steps: 1, batch_size: 1, seq_len: 16, n_texts: 16, eval_blocks: 1"
SPEC = f"""
name: iterative
base: tiny-llama
evaluate: all
paths:
  - name: iterative
    steps:
      - repeat:
          times: 3
          steps:
            - prune.magnitude: {{{{sparsity: {{sched}}}}}}
            - distill.logit: {{{{teacher: base, {KD}}}}}
  - name: one-shot
    steps: [{{{{prune.magnitude: {{{{sparsity: 0.5}}}}}}}}, {{{{distill.logit: {{{{teacher: base, {KD}}}}}}}}}]
"""


def spec(sched: str = "[0.2, 0.35, 0.5]"):
    return parse_spec(textwrap.dedent(SPEC.format(sched=sched)), file="it.yaml")


def test_a_repeat_block_unrolls_into_scheduled_steps_and_shares_the_one_shot_prefix():
    s = spec()
    (it,) = [p for p in s.paths if p.name == "iterative"]
    assert [st.technique for st in it.steps] == ["prune.magnitude", "distill.logit"] * 3
    assert [st.params["sparsity"] for st in it.steps[::2]] == [0.2, 0.35, 0.5]
    assert all(st.params["teacher"] == "base" for st in it.steps[1::2])
    assert "round 2 of 3" in it.steps[2].where
    plan = make_plan(s)
    (leaf,) = [p for p in plan.paths if p.name == "iterative"]
    assert len(leaf.chain) == 7  # the base and six nodes, each measurable with evaluate: all
    (one,) = [p for p in plan.paths if p.name == "one-shot"]
    assert leaf.chain[1] != one.chain[1]  # round 1 prunes to 0.2, the one-shot path to 0.5: different nodes


@pytest.mark.parametrize("sched, message", [
    ("[0.2, 0.5]", "a schedule inside a repeat needs one value per round (3), got 2"),
])
def test_a_schedule_of_the_wrong_length_fails_at_plan_time(sched, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(sched)


@pytest.mark.parametrize("block, message", [
    ("{times: 0, steps: [quant.int8]}", "times: 0 is not allowed (an integer >= 1)"),
    ("{times: 2}", "expected {times: N, steps: [...]}"),
    ("{times: 2, steps: []}", "expected a non-empty list of steps"),
])
def test_malformed_repeat_blocks_name_the_field(block, message):
    text = f"name: r\nbase: tiny-llama\npaths: [[{{repeat: {block}}}]]\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, file="r.yaml")
    assert message in str(info.value) and "r.yaml: paths[0][0].repeat" in str(info.value)


def test_every_round_is_computed_once_and_cached(tmp_path):
    summary = run(SPEC.format(sched="[0.2, 0.35, 0.5]").replace("evaluate: all\n", ""), tmp_path)
    assert summary.status == "ok" and summary.steps_executed == 8  # 6 iterative + 2 one-shot nodes
    again = run(SPEC.format(sched="[0.2, 0.35, 0.5]").replace("evaluate: all\n", ""), tmp_path)
    assert again.steps_executed == 0 and again.steps_cached == 8
