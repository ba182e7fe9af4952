"""Consistency: does the model give the same answer when the question is paraphrased or the choices reordered?

Paraphrase agreement: the share of items whose chosen answer (as text) is the same under every prompt
template of :data:`suites.trust.mc.TEMPLATES`. Reorder agreement: the same with the choices listed in the
prompt in their original, reversed and a seeded shuffled order. Agreement says nothing about correctness: a
model that always answers the same wrong choice is perfectly consistent (accuracy is reported beside it).
"""

from __future__ import annotations

import random

from suites.base import mean_stderr
from suites.trust import data, mc
from suites.trust.common import DimConfig, Outcome, Scorer, metric, sample

TASK = "consistency"


def orders(n_choices: int, item_id: str, seed: int) -> list[list[int]]:
    """Original, reversed and a seeded shuffle of the choice indices."""
    shuffled = list(range(n_choices))
    random.Random(f"order:{item_id}:{seed}").shuffle(shuffled)
    return [list(range(n_choices)), list(reversed(range(n_choices))), shuffled]


def _paraphrase_answers(scorer: Scorer, items: list[dict]) -> list[list[str]]:
    prompts = [(mc.plain_prompt(it["question"], t), it["choices"]) for it in items for t in range(len(mc.TEMPLATES))]
    res = mc.score_many(scorer, prompts)
    k = len(mc.TEMPLATES)
    return [[it["choices"][r.pred] for r in res[i * k:(i + 1) * k]] for i, it in enumerate(items)]


def _reorder_answers(scorer: Scorer, items: list[dict], seed: int) -> list[list[str]]:
    prompts = []
    for it in items:
        for order in orders(len(it["choices"]), it["id"], seed):
            choices = [it["choices"][j] for j in order]
            prompts.append((mc.listed_prompt(it["question"], choices), choices))
    res = mc.score_many(scorer, prompts)
    k = 3
    return [[prompts[i * k + j][1][res[i * k + j].pred] for j in range(k)] for i in range(len(items))]


def run(scorer: Scorer, cfg: DimConfig) -> Outcome:
    """Paraphrase and reorder agreement (share of items answered identically under all variants)."""
    items, source = data.mc_items(cfg.data_dir, cfg.n, cfg.seed)
    out = Outcome(settings={"consistency_source": source, "consistency_templates": list(mc.TEMPLATES)})
    for name, answers in (("paraphrase_agreement", _paraphrase_answers(scorer, items)),
                          ("reorder_agreement", _reorder_answers(scorer, items, cfg.seed))):
        agree = [float(len(set(a)) == 1) for a in answers]
        acc = [sum(x == it["choices"][it["gold"]] for x in a) / len(a) for a, it in zip(answers, items, strict=True)]
        mean, se = mean_stderr(agree)
        out.metrics.append(metric(TASK, name, mean, se, len(items), "fraction", True,
                                  f"loglikelihood-mc:{source}:variants={len(answers[0]) if answers else 0}",
                                  mean_variant_acc=mean_stderr(acc)[0]))
        out.samples += [sample(f"{TASK}/{name}", it["id"], correct=bool(g), score=g, prediction=" | ".join(a),
                               target=it["choices"][it["gold"]]) for it, g, a in zip(items, agree, answers, strict=True)]
    return out
