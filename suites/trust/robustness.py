"""Robustness: accuracy drop of multiple-choice items under seeded input perturbations.

Each item is asked with its choices listed (so the order of the choices can matter), once clean and once
per perturbation: ``typos`` (adjacent swaps, drops), ``casing`` (word case flips), ``whitespace`` (extra
spaces, tabs, newlines), ``distractor`` (an irrelevant sentence first) and ``shuffle`` (choices reordered).
A perturbation's drop is the paired mean of ``correct_clean - correct_perturbed`` over items.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from suites.base import mean_stderr
from suites.trust import data, mc
from suites.trust.common import DimConfig, Outcome, Scorer, metric, sample

TASK = "robustness"
_DISTRACTORS = ["The weather was mild for most of the week.", "Many people enjoy walking in the park on Sundays.",
                "The library closes early on public holidays.", "A new bakery opened near the train station.",
                "Some birds migrate thousands of kilometres every year."]


def typos(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters or drop one in about 15% of the words longer than three characters."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and w.isalpha() and rng.random() < 0.15:
            k = rng.randrange(len(w) - 1)
            words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2:] if rng.random() < 0.5 else w[:k] + w[k + 1:]
    return " ".join(words)


def casing(text: str, rng: random.Random) -> str:
    """Upper-case, lower-case or title-case about 30% of the words."""
    return " ".join(rng.choice((str.upper, str.lower, str.title))(w) if rng.random() < 0.3 else w
                    for w in text.split(" "))


def whitespace(text: str, rng: random.Random) -> str:
    """Replace about 30% of the single spaces with runs of spaces, a tab or a newline."""
    return "".join(rng.choice(("  ", "   ", "\t", " \n")) if ch == " " and rng.random() < 0.3 else ch for ch in text)


def distractor(text: str, rng: random.Random) -> str:
    """Put an irrelevant sentence before the question."""
    return f"{rng.choice(_DISTRACTORS)} {text}"


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "typos": typos, "casing": casing, "whitespace": whitespace, "distractor": distractor}
KINDS = (*PERTURBATIONS, "shuffle")


def variant(item: dict, kind: str, seed: int) -> tuple[str, list[str], int]:
    """The item perturbed by ``kind`` (never a no-op where a change is possible): (question, choices, gold)."""
    rng = random.Random(f"{kind}:{item['id']}:{seed}")
    if kind == "shuffle":
        order = list(range(len(item["choices"])))
        while len(order) > 1 and order == sorted(order):
            rng.shuffle(order)
        return item["question"], [item["choices"][j] for j in order], order.index(item["gold"])
    question = item["question"]
    for _ in range(20):  # redraw (same seeded stream) until the perturbation changed something
        question = PERTURBATIONS[kind](item["question"], rng)
        if question != item["question"]:
            break
    return question, list(item["choices"]), item["gold"]


def run(scorer: Scorer, cfg: DimConfig) -> Outcome:
    """Clean accuracy, accuracy under each perturbation, drops, and the mean drop over perturbations."""
    items, source = data.mc_items(cfg.data_dir, cfg.n, cfg.seed)
    method = f"loglikelihood-mc:{source}:listed-choices"
    clean = mc.score_many(scorer, [(mc.listed_prompt(it["question"], it["choices"]), it["choices"]) for it in items])
    base = [float(r.pred == it["gold"]) for r, it in zip(clean, items, strict=True)]
    out = Outcome(settings={"robustness_source": source})
    mean, se = mean_stderr(base)
    out.metrics.append(metric(TASK, "acc_clean", mean, se, len(items), "fraction", True, method))
    drops_per_item = [0.0] * len(items)
    for kind in KINDS:
        variants = [variant(it, kind, cfg.seed) for it in items]
        res = mc.score_many(scorer, [(mc.listed_prompt(q, ch), ch) for q, ch, _ in variants])
        hits = [float(r.pred == g) for r, (_, _, g) in zip(res, variants, strict=True)]
        drops = [b - h for b, h in zip(base, hits, strict=True)]
        drops_per_item = [a + d / len(KINDS) for a, d in zip(drops_per_item, drops, strict=True)]
        m, s = mean_stderr(hits)
        out.metrics.append(metric(TASK, f"acc_{kind}", m, s, len(items), "fraction", True, method))
        m, s = mean_stderr(drops)
        out.metrics.append(metric(TASK, f"drop_{kind}", m, s, len(items), "fraction", False, f"paired-diff:{method}"))
        out.samples += [sample(f"{TASK}/{kind}", it["id"], correct=bool(h), score=h, loglikelihoods=r.logprobs,
                               prediction=f"{q} -> {ch[r.pred]}", target=ch[g])
                        for it, h, r, (q, ch, g) in zip(items, hits, res, variants, strict=True)]
    m, s = mean_stderr(drops_per_item)
    out.metrics.append(metric(TASK, "acc_drop", m, s, len(items), "fraction", False, f"paired-diff:{method}",
                              perturbations=list(KINDS)))
    out.metrics.append(metric(TASK, "acc_perturbed", mean - m, s, len(items), "fraction", True, method,
                              note="clean accuracy minus the mean drop over perturbations"))
    out.samples += [sample(f"{TASK}/clean", it["id"], correct=bool(b), score=b, loglikelihoods=r.logprobs,
                           prediction=it["choices"][r.pred], target=it["choices"][it["gold"]])
                    for it, b, r in zip(items, base, clean, strict=True)]
    return out
