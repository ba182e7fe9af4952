"""The ``parity`` suite: the same artifact on two backends, compared item by item.

A path whose model runs on another runtime than PyTorch (``deploy.onnxruntime``, ``deploy.llamacpp``) is measured
against the same weights in eager PyTorch: the harness hands the suite the nearest model of the path's lineage that
runs on torch (the deploy step's input; :func:`harness.executors.torch_reference`) as ``SuiteContext.reference``.
Both backends score the same fixed, seeded set of (context, continuation) pairs of local multiple-choice tasks
(the built-in ``slm_*`` probes, or ARC-Easy / ARC-Challenge / PIQA from the data directory) and greedily decode the
same token-id prompts. Metrics, per task:

- ``max_abs_delta_ll`` (nats, n = pairs): the largest ``|log P_backend - log P_torch|`` over every pair;
- ``mean_abs_delta_ll`` (nats, n = items): the mean over items of each item's mean ``|Δ|`` over its choices, with the
  standard error over items (the choices of an item share a context, so items, not pairs, are the independent units);
- ``choice_agreement`` (fraction, n = items): items whose highest-log-likelihood choice is the same on both backends,
  with a 95% Wilson interval in ``details`` (and Wald's stderr, as lm-eval reports accuracies);

and for the ``greedy`` task: ``identical_tokens`` (fraction of prompts whose ``new_tokens`` greedy tokens are all the
same, with a Wilson interval) and ``matching_prefix`` (mean fraction of tokens generated before the first divergence).

A model that already runs on torch has nothing to compare: the suite run is recorded with no metrics and
``settings.skipped`` saying so (as is an artifact whose lineage holds no torch model, e.g. a GGUF source).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from adapters.errors import UsageError
from suites import probes
from suites.base import Metric, SampleRecord, Suite, SuiteContext, SuiteResult, mean_stderr, suite
from suites.tasks.data import load_docs, resolve_data_dir

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"n": 50, "prompts": 8, "new_tokens": 16},
    "standard": {"n": 200, "prompts": 32, "new_tokens": 32},
    "full": {"n": None, "prompts": 64, "new_tokens": 64},
}
DEFAULT_TASKS = ("slm_world_facts", "slm_arithmetic")
LOCAL_TASKS = ("arc_easy", "arc_challenge", "piqa")
TASKS = (*probes.PROBES, *LOCAL_TASKS)
AGAINST = ("torch",)
METHOD = "measured:paired-backends"
Z95 = 1.959963984540054


class Item(NamedTuple):
    """One multiple-choice item: its id, the context, the continuations (target delimiter included), the gold index."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int


class Settings(NamedTuple):
    """The suite's validated settings."""

    tasks: list[str]
    n: int | None
    prompts: int
    new_tokens: int
    against: str


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _task_list(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    bad = [t for t in items if t not in TASKS]
    return None if items and not bad else f"unknown task(s) {bad or items}; parity reads {', '.join(TASKS)}"


def read_settings(ctx: SuiteContext) -> Settings:
    """The profile's settings overridden by the spec's options (UsageError naming the option on a bad value)."""
    if ctx.profile not in PROFILES:
        raise UsageError(f"parity.profile: {ctx.profile!r} is not allowed (one of {', '.join(PROFILES)})")
    problem = ParitySuite.check_options(ctx.options)
    if problem:
        raise UsageError(f"parity.{problem[0]}: {problem[1]}")
    d, o = PROFILES[ctx.profile], ctx.options
    tasks = o.get("tasks") or list(DEFAULT_TASKS)
    tasks = [tasks] if isinstance(tasks, str) else list(dict.fromkeys(tasks))
    return Settings(tasks, o.get("n", d["n"]), o.get("prompts", d["prompts"]), o.get("new_tokens", d["new_tokens"]),
                    o.get("against", AGAINST[0]))


def task_items(task: str, data_dir: Any, seed: int, n: int | None) -> list[Item]:
    """A fixed, seeded subsample of ``n`` items of ``task`` (all of them when n is None), in document order.

    The prompts are those of the task's lm-eval YAML (``suites/tasks``): the probe's query, ``Question: ...\\nAnswer:``
    for ARC and PIQA; every continuation starts with lm-eval's target delimiter, a space.
    """
    if task in probes.PROBES:
        items = [Item(d["id"], d["query"], tuple(f" {c}" for c in d["choices"]), int(d["gold"]))
                 for d in probes.items(task)]
    elif task == "piqa":
        items = [Item(f"piqa-{i}", f"Question: {d['goal']}\nAnswer:", (f" {d['sol1']}", f" {d['sol2']}"), d["label"])
                 for i, d in enumerate(load_docs(task, data_dir))]
    else:
        items = [Item(str(d["id"]), f"Question: {d['question']}\nAnswer:", tuple(f" {c}" for c in d["choices"]["text"]),
                      d["choices"]["label"].index(d["answerKey"])) for d in load_docs(task, data_dir)]
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(f"parity:{task}:{seed}").sample(range(len(items)), n))
    return [items[i] for i in keep]


def greedy_tokens(handle: ModelHandle, prompt: list[int], new_tokens: int) -> list[int]:
    """Exactly ``new_tokens`` greedy tokens after ``prompt`` (EOS does not stop it), on the handle's backend."""
    out = handle.generate_ids([prompt], new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1)
    return [int(t) for t in out[0][len(prompt):].tolist()][:new_tokens]


def loglikelihood_metrics(task: str, items: Sequence[Item], ours: Sequence[float], torch_lls: Sequence[float],
                          details: dict[str, Any]) -> tuple[list[Metric], list[SampleRecord]]:
    """|Δ log-likelihood| and choice agreement of one task from the two backends' scores (pairs in item order)."""
    per_item, agree, samples = [], [], []
    worst, worst_item, k = -1.0, "", 0
    for item in items:
        a, b = ours[k: k + len(item.choices)], torch_lls[k: k + len(item.choices)]
        k += len(item.choices)
        deltas = [abs(x - y) for x, y in zip(a, b, strict=True)]
        if max(deltas) > worst:
            worst, worst_item = max(deltas), item.id
        per_item.append(sum(deltas) / len(deltas))
        pick, ref_pick = _argmax(a), _argmax(b)
        agree.append(pick == ref_pick)
        samples.append(SampleRecord("parity", task, item.id, correct=pick == ref_pick, score=per_item[-1],
                                    loglikelihoods=tuple(a), prediction=str(pick), target=str(ref_pick)))
    mean, se = mean_stderr(per_item)
    metrics = [Metric("parity", task, "max_abs_delta_ll", worst, None, k, "nats", False, METHOD,
                      {**details, "worst_item": worst_item, "pairs": k}),
               Metric("parity", task, "mean_abs_delta_ll", mean, se, len(items), "nats", False, METHOD,
                      {**details, "pairs": k, "per": "item (mean over its choices)"}),
               proportion_metric(task, "choice_agreement", agree, details,
                                 {"disagreeing": [i.id for i, a in zip(items, agree, strict=True) if not a][:20]})]
    return metrics, samples


def proportion_metric(task: str, name: str, outcomes: Sequence[bool], details: dict[str, Any],
                      extra: dict[str, Any] | None = None) -> Metric:
    """A fraction with Wald's stderr and a 95% Wilson interval in ``details``."""
    n, hits = len(outcomes), sum(bool(x) for x in outcomes)
    p = hits / n if n else math.nan
    low, high = wilson(hits, n)
    se = math.sqrt(p * (1 - p) / n) if n else None
    return Metric("parity", task, name, p, se, n, "fraction", True, METHOD,
                  {**details, **(extra or {}), "successes": hits, "ci_low": low, "ci_high": high,
                   "interval": "wilson-95"})


def greedy_metrics(handle: ModelHandle, reference: ModelHandle, prompts: Sequence[list[int]], new_tokens: int,
                   details: dict[str, Any]) -> list[Metric]:
    """Identical greedy continuations and the matching prefix, over ``prompts`` (token ids, the same on both)."""
    identical, prefix, first = [], [], []
    for ids in prompts:
        ours, theirs = greedy_tokens(handle, ids, new_tokens), greedy_tokens(reference, ids, new_tokens)
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), new_tokens)
        identical.append(same == new_tokens and len(ours) == len(theirs))
        prefix.append(same / new_tokens)
        first.append(None if same == new_tokens else same)
    mean, se = mean_stderr(prefix)
    info = {**details, "new_tokens": new_tokens, "first_divergence": first}
    return [proportion_metric("greedy", "identical_tokens", identical, info),
            Metric("parity", "greedy", "matching_prefix", mean, se, len(prefix), "fraction", True, METHOD, info)]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


@suite("parity")
class ParitySuite(Suite):
    """Parity: the path's model against the same weights on eager PyTorch (|Δ log-likelihood|, agreement)."""

    options = ("tasks", "n", "prompts", "new_tokens", "against", "data_dir")
    needs_reference = True

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> tuple[str, str] | None:
        for name, check in (("tasks", _task_list), ("prompts", _at_least_one), ("against", _against)):
            if name in options and (problem := check(options[name])):
                return name, f"{options[name]!r} is not allowed: {problem}"
        return super().check_options({k: v for k, v in options.items() if k not in ("tasks", "prompts", "against")})

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        conf = read_settings(ctx)
        settings: dict[str, Any] = {"parity": conf._asdict(), "backend": handle.backend}
        reference = ctx.reference
        if handle.backend == conf.against:
            return SuiteResult(settings={**settings, "skipped": f"same backend ({handle.backend}): nothing to compare"})
        if reference is None:
            return SuiteResult(settings={**settings, "skipped": f"no {conf.against} model in this artifact's lineage "
                                                                f"to compare its {handle.backend} form with"})
        details = {"against": conf.against, "backend": handle.backend, "reference": repr(reference),
                   "reference_dtype": reference.settings.get("dtype")}
        data_dir = resolve_data_dir(ctx.options.get("data_dir"), ctx.data_dir)
        result = SuiteResult(settings={**settings, "reference": details["reference"],
                                       "reference_settings": reference.settings, "subsample_seed": ctx.seed})
        contexts: list[list[str]] = []
        for task in conf.tasks:
            items = task_items(task, data_dir, ctx.seed, conf.n)
            pairs = [(item.context, c) for item in items for c in item.choices]
            handle.activate()
            ours = [x.logprob for x in handle.loglikelihood(pairs)]
            reference.activate()
            theirs = [x.logprob for x in reference.loglikelihood(pairs)]
            metrics, samples = loglikelihood_metrics(task, items, ours, theirs, details)
            result.metrics += metrics
            result.samples += samples
            contexts.append([item.context for item in items])
        prompts = [handle.tokenizer(text).input_ids for text in _round_robin(contexts)[:conf.prompts]]
        result.metrics += greedy_metrics(handle, reference, prompts, conf.new_tokens, details)
        handle.activate()
        return result


def _round_robin(lists: Sequence[Sequence[str]]) -> list[str]:
    """One from each list in turn: the greedy prompts cover every task."""
    out: list[str] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def _at_least_one(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else "expected an integer >= 1"


def _against(value: Any) -> str | None:
    return None if value in AGAINST else f"expected one of {', '.join(AGAINST)}"
