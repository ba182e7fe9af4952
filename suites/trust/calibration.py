"""Calibration of multiple-choice answers: expected calibration error (15 equal-width bins) and Brier score.

The answer's probability is the softmax over the choices' summed log-likelihoods (lm-eval's ARC prompt,
``Question: {q}\\nAnswer:``); its confidence is the largest of these probabilities.
"""

from __future__ import annotations

from suites.base import mean_stderr
from suites.trust import data, mc, metrics
from suites.trust.common import DimConfig, Outcome, Scorer, metric, sample

TASK = "calibration"
BINS = 15


def run(scorer: Scorer, cfg: DimConfig) -> Outcome:
    """ECE (stderr by seeded bootstrap; mean confidence in its details), Brier score and accuracy."""
    items, source = data.mc_items(cfg.data_dir, cfg.n, cfg.seed)
    results = mc.score_many(scorer, [(mc.plain_prompt(it["question"]), it["choices"]) for it in items])
    probs = [metrics.softmax(r.logprobs) for r in results]
    conf = [max(p) for p in probs]
    correct = [r.pred == it["gold"] for r, it in zip(results, items, strict=True)]
    pairs = list(zip(conf, correct, strict=True))
    ece = metrics.ece(conf, correct, BINS)
    ece_se = metrics.bootstrap_stderr(pairs, lambda xs: metrics.ece([c for c, _ in xs], [k for _, k in xs], BINS),
                                      seed=cfg.seed)
    method = f"softmax-over-choices:{source}"
    n = len(items)
    out = Outcome(settings={"calibration_source": source})
    out.metrics.append(metric(TASK, "ece", ece, ece_se, n, "probability", False, method, bins=BINS,
                              stderr_method="bootstrap-200", mean_confidence=sum(conf) / max(1, n)))
    briers = metrics.brier(probs, [it["gold"] for it in items])
    mean, se = mean_stderr(briers)
    out.metrics.append(metric(TASK, "brier", mean, se, n, "score", False, method, range=[0, 2]))
    mean, se = mean_stderr([float(c) for c in correct])
    out.metrics.append(metric(TASK, "acc", mean, se, n, "fraction", True, method))
    out.samples += [sample(TASK, it["id"], correct=k, score=c, loglikelihoods=r.logprobs,
                           prediction=it["choices"][r.pred], target=it["choices"][it["gold"]])
                    for it, k, c, r in zip(items, correct, conf, results, strict=True)]
    return out
