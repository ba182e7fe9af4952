"""Robustness: accuracy drop of multiple-choice items under seeded input perturbations.

Each item is asked once clean and once per perturbation: ``typos`` (adjacent swaps, drops), ``casing``
(word case flips), ``whitespace`` (extra spaces, tabs, newlines), ``distractor`` (an irrelevant sentence
first) and ``shuffle`` (choices reordered, listed in the prompt so that their order can matter).
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


def _scored(scorer: Scorer, items: list[dict], variants: list[tuple[str, list[str], int]], listed: bool) -> list:
    prompts = [(mc.listed_prompt(q, ch) if listed else mc.plain_prompt(q), ch) for q, ch, _ in variants]
    res = mc.score_many(scorer, prompts)
    return [(float(r.pred == g), r, q, ch, g) for r, (q, ch, g) in zip(res, variants, strict=True)]


def run(scorer: Scorer, cfg: DimConfig) -> Outcome:
    """Clean accuracy, accuracy under each perturbation, paired drops, and the mean drop over perturbations.

    Text perturbations use lm-eval's ARC prompt (choices not listed); ``shuffle`` lists the choices in the
    prompt and is paired with the same listed prompt in the original order.
    """
    items, source = data.mc_items(cfg.data_dir, cfg.n, cfg.seed)
    method = f"loglikelihood-mc:{source}"
    clean = [(it["question"], list(it["choices"]), it["gold"]) for it in items]
    base = {listed: _scored(scorer, items, clean, listed) for listed in (False, True)}
    out = Outcome(settings={"robustness_source": source})
    hits0 = [h for h, *_ in base[False]]
    mean, se = mean_stderr(hits0)
    out.metrics.append(metric(TASK, "acc_clean", mean, se, len(items), "fraction", True, method))
    mean_drop = [0.0] * len(items)
    for kind in KINDS:
        listed = kind == "shuffle"
        scored = _scored(scorer, items, [variant(it, kind, cfg.seed) for it in items], listed)
        hits = [h for h, *_ in scored]
        drops = [b - h for (b, *_), h in zip(base[listed], hits, strict=True)]
        mean_drop = [a + d / len(KINDS) for a, d in zip(mean_drop, drops, strict=True)]
        how = f"{method}:{'listed-choices' if listed else 'arc-prompt'}"
        m, s = mean_stderr(hits)
        out.metrics.append(metric(TASK, f"acc_{kind}", m, s, len(items), "fraction", True, how))
        m, s = mean_stderr(drops)
        out.metrics.append(metric(TASK, f"drop_{kind}", m, s, len(items), "fraction", False, f"paired-diff:{how}",
                                  clean_acc=mean_stderr([b for b, *_ in base[listed]])[0]))
        out.samples += [sample(f"{TASK}/{kind}", it["id"], correct=bool(h), score=h, loglikelihoods=r.logprobs,
                               prediction=f"{q} -> {ch[r.pred]}", target=ch[g])
                        for it, (h, r, q, ch, g) in zip(items, scored, strict=True)]
    m, s = mean_stderr(mean_drop)
    out.metrics.append(metric(TASK, "acc_drop", m, s, len(items), "fraction", False, f"paired-diff:{method}",
                              perturbations=list(KINDS)))
    out.metrics.append(metric(TASK, "acc_perturbed", mean - m, s, len(items), "fraction", True, method,
                              note="clean accuracy minus the mean drop over perturbations"))
    out.samples += [sample(f"{TASK}/clean", it["id"], correct=bool(h), score=h, loglikelihoods=r.logprobs,
                           prediction=ch[r.pred], target=ch[g]) for it, (h, r, _, ch, g) in zip(items, base[False],
                                                                                                strict=True)]
    return out
