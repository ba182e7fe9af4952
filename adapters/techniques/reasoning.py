"""Reasoning at inference time, weights frozen: chain-of-thought prompting, self-consistency and best-of-n.

Each technique puts an :class:`~adapters.inference.InferenceHook` on the handle; the harness re-applies the step
instead of storing weights (as for ``infer.decoding``).

- ``infer.cot`` (Wei et al., 2022, few-shot rationales; Kojima et al., 2022, zero-shot "Let's think step by step.")
  changes how generation tasks are prompted and parsed. A task for which lm-eval ships a chain-of-thought config
  (GSM8K: ``gsm8k-cot-zeroshot.yaml``, ``gsm8k-cot.yaml``) takes that config's prompt, exemplars, stop sequences,
  answer-extraction filters and metric, read from the installed lm-eval, over the task's own documents. Another
  generation task keeps its prompt with the trigger appended (or the exemplars before it) and gains a ``cot-answer``
  filter (lm-eval's regex filter with ``answer_pattern``). Log-likelihood tasks are left as they are.
- ``infer.self_consistency`` (Wang et al., 2023) samples k reasoning paths per question through lm-eval's
  ``repeats`` and adds, for every answer filter of the task, a ``<filter>-maj@k`` filter that votes with lm-eval's
  ``majority_vote`` before ``take_first`` (as lm-eval's ``gsm8k-cot-self-consistency.yaml``); the original filters
  then score the first sample. With ``infer.cot`` in the path it votes over chain-of-thought answers.
- ``infer.best_of_n`` samples n candidates for every generation request and returns the one a scorer model finds
  most likely (mean token log-probability of the candidate given the prompt, or the sum): the path's own model by
  default, or a ``scorer:`` base or path.

Self-consistency and best-of-n sample (seeded): with the sampling settings of an earlier ``infer.decoding`` step
with ``strategy: sample``, else their own (T=0.7, top-k 40, the settings of Wang et al. for PaLM/GPT-3); a path
that also decodes greedily or by beam search is refused at plan time.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from adapters import formats as F
from adapters.errors import ModelLoadError
from adapters.handle import ModelHandle
from adapters.inference import Generate, InferenceHook, TaskChange
from adapters.technique import (
    Applied,
    PathStep,
    Technique,
    TechniqueContext,
    role_before_weight_change,
    technique,
)

DEFAULT_TRIGGER = "Let's think step by step."
#: lm-eval's strict-match answer regex of its GSM8K chain-of-thought configs
LM_EVAL_ANSWER = r"The answer is (\-?[0-9\.\,]+)."
#: tasks for which lm-eval ships a chain-of-thought config: task -> (zero-shot YAML, few-shot YAML) in lm_eval/tasks
COT_CONFIGS: dict[str, tuple[str, str]] = {"gsm8k": ("gsm8k/gsm8k-cot-zeroshot.yaml", "gsm8k/gsm8k-cot.yaml")}
#: the worked exemplars of lm-eval's gsm8k-cot.yaml (the 8 of Wei et al., 2022), the default few-shot rationales
LM_EVAL_EXEMPLARS = 8
#: the fields of a task config that say how it is prompted, generated and parsed (a CoT config replaces them all)
PROMPT_FIELDS = ("doc_to_text", "doc_to_target", "target_delimiter", "fewshot_delimiter", "fewshot_config",
                 "num_fewshot", "generation_kwargs", "filter_list", "metric_list", "description")
#: how an exemplar is shown before a task that has no chain-of-thought config of its own (lm-eval's gsm8k-cot form)
EXEMPLAR_TEXT = "Q: {{question}}\nA:"
#: lm-eval's filter when a task declares none (its metric's key is ``<metric>,none``)
DEFAULT_FILTER = {"name": "none", "filter": [{"function": "take_first"}]}
SAMPLING_DEFAULTS = {"temperature": 0.7, "top_k": 40, "top_p": 1.0}
ACCEPTS = F.EVALUABLE


@cache
def _lm_eval_yaml(relative: str) -> dict[str, Any]:
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / relative, resolve_func=True)


def lm_eval_config(relative: str) -> dict[str, Any]:
    """A copy of the installed lm-eval task YAML ``relative`` (e.g. ``gsm8k/gsm8k-cot.yaml``), includes resolved."""
    return copy.deepcopy(_lm_eval_yaml(relative))


def load_rationales(path: str | Path) -> list[dict[str, str]]:
    """Few-shot exemplars from a JSONL file: one ``{"question": ..., "target": ...}`` per line, the target a worked
    rationale ending in its answer ("... The answer is 6."), the layout of lm-eval's gsm8k-cot exemplars.

    Raises:
        ValueError: the file is missing, empty, or a line is not such a record (naming the line).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"rationales: {str(p)!r} is not a file (a JSONL file of {{question, target}} records)")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"rationales: {p}:{i} is not JSON ({exc.msg})") from None
        if not (isinstance(rec, dict) and isinstance(rec.get("question"), str) and isinstance(rec.get("target"), str)):
            raise ValueError(f"rationales: {p}:{i} needs string fields `question` and `target`")
        out.append({"question": rec["question"], "target": rec["target"]})
    if not out:
        raise ValueError(f"rationales: {p} holds no records")
    return out


def _tags(config: dict[str, Any]) -> list[str]:
    tag = config.get("tag") or []
    return [tag] if isinstance(tag, str) else list(tag)


def _not_generation(config: dict[str, Any]) -> TaskChange | None:
    kind = config.get("output_type", "generate_until")
    if kind != "generate_until":
        return TaskChange(None, f"not applied: a {kind} task is scored by log-likelihood, it generates nothing")
    return None


# -- chain of thought ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoTParams:
    """Params of ``infer.cot``.

    Attributes:
        mode: ``zeroshot`` (the trigger after the question) or ``fewshot`` (worked exemplars before it).
        trigger: the zero-shot reasoning trigger (Kojima et al., 2022).
        rationales: a local JSONL file of few-shot exemplars (``question``, ``target``: the worked rationale ending
            "The answer is N."); None uses lm-eval's gsm8k-cot exemplars (the 8 of Wei et al., 2022).
        num_fewshot: exemplars shown (None: all of them).
        answer_pattern: the regex (one group: the answer) that extracts the answer of a task without a chain-of-thought
            config of its own (lm-eval's strict-match regex by default).
    """

    mode: Literal["zeroshot", "fewshot"] = "zeroshot"
    trigger: str = DEFAULT_TRIGGER
    rationales: str | None = None
    num_fewshot: int | None = None
    answer_pattern: str = LM_EVAL_ANSWER

    def __post_init__(self) -> None:
        if self.mode == "zeroshot" and not self.trigger.strip():
            raise ValueError("trigger must not be empty for mode zeroshot")
        if self.mode == "zeroshot" and (self.rationales is not None or self.num_fewshot is not None):
            raise ValueError("rationales and num_fewshot are few-shot exemplars: set mode: fewshot")
        try:
            groups = re.compile(self.answer_pattern).groups
        except re.error as exc:
            raise ValueError(f"answer_pattern {self.answer_pattern!r} is not a regular expression ({exc})") from None
        if groups < 1:
            raise ValueError(f"answer_pattern {self.answer_pattern!r} needs a group (the answer), "
                             f"e.g. {LM_EVAL_ANSWER!r}")
        available = len(load_rationales(self.rationales)) if self.rationales is not None else LM_EVAL_EXEMPLARS
        if self.num_fewshot is not None and not 1 <= self.num_fewshot <= available:
            raise ValueError(f"num_fewshot must be in [1, {available}] (the exemplars available), "
                             f"got {self.num_fewshot}")


@dataclass(frozen=True)
class CoTHook(InferenceHook):
    """Chain-of-thought form of generation tasks (see :class:`CoTParams` for the fields)."""

    technique: ClassVar[str] = "infer.cot"
    phase: ClassVar[int] = 0
    mode: str = "zeroshot"
    trigger: str = DEFAULT_TRIGGER
    exemplars: list[dict[str, str]] | None = None
    num_fewshot: int | None = None
    answer_pattern: str = LM_EVAL_ANSWER

    def adapt_task(self, name: str, config: dict[str, Any]) -> TaskChange:
        skip = _not_generation(config)
        if skip is not None:
            return skip
        if "chain_of_thought" in _tags(config):
            return TaskChange(None, "not applied: already a chain-of-thought task")
        if name in COT_CONFIGS:
            return self._lm_eval_form(config, COT_CONFIGS[name][self.mode == "fewshot"])
        if not isinstance(config.get("doc_to_text"), str):
            return TaskChange(None, "not applied: the task's prompt is not a template string")
        return self._generic_form(config)

    def _exemplars(self, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
        shots = list(self.exemplars) if self.exemplars is not None else default
        return shots[: self.num_fewshot] if self.num_fewshot is not None else shots

    def _lm_eval_form(self, config: dict[str, Any], relative: str) -> TaskChange:
        cot = lm_eval_config(relative)
        new = {k: v for k, v in config.items() if k not in PROMPT_FIELDS}
        new.update({k: cot[k] for k in PROMPT_FIELDS if k in cot})
        if self.mode == "zeroshot":
            new["doc_to_text"] = str(cot["doc_to_text"]).replace(DEFAULT_TRIGGER, self.trigger)
            return TaskChange(new, f"lm-eval's {relative} (prompt, stop sequences, answer filters, metric), 0-shot, "
                                   f"trigger {self.trigger!r}")
        shots = self._exemplars(cot["fewshot_config"]["samples"])
        new["fewshot_config"] = {**cot["fewshot_config"], "samples": shots}
        new["num_fewshot"] = len(shots)
        origin = "exemplars of the rationales file" if self.exemplars is not None else "its exemplars"
        return TaskChange(new, f"lm-eval's {relative} (prompt, stop sequences, answer filters, metric), "
                               f"{len(shots)}-shot with {origin}")

    def _generic_form(self, config: dict[str, Any]) -> TaskChange:
        new = dict(config)  # every field changed below gets a new object: the caller's config stays as it was
        gen = dict(new.get("generation_kwargs") or {})
        until = gen.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        # a reasoning chain spans lines: a one-line stop would cut it after its first step
        gen["until"] = [s for s in until if s.strip()] + (["\n\n"] if any(not s.strip() for s in until) else [])
        new["generation_kwargs"] = gen
        extract = [{"function": "regex", "regex_pattern": self.answer_pattern}, {"function": "take_first"}]
        new["filter_list"] = [*(new.get("filter_list") or [DEFAULT_FILTER]), {"name": "cot-answer", "filter": extract}]
        if self.mode == "zeroshot":
            new["doc_to_text"] = f"{str(new['doc_to_text']).rstrip()} {self.trigger}"
            return TaskChange(new, f"trigger {self.trigger!r} after the task's prompt; filter cot-answer "
                                   f"({self.answer_pattern!r})")
        shots = self._exemplars(lm_eval_config(COT_CONFIGS["gsm8k"][1])["fewshot_config"]["samples"])
        new["fewshot_config"] = {"sampler": "first_n", "samples": shots, "doc_to_text": EXEMPLAR_TEXT,
                                 "doc_to_target": "{{target}}"}
        new["num_fewshot"] = len(shots)
        return TaskChange(new, f"{len(shots)} worked exemplars before the task's prompt; filter cot-answer "
                               f"({self.answer_pattern!r})")


@dataclass(frozen=True)
class CoTReport:
    """What ``infer.cot`` set up.

    Attributes:
        mode: ``zeroshot`` or ``fewshot``.
        exemplars: the few-shot exemplars (0 for zero-shot).
        exemplar_source: the rationales file, or lm-eval's config they come from.
        trigger: the zero-shot trigger (None for few-shot).
    """

    mode: str
    exemplars: int
    exemplar_source: str | None
    trigger: str | None


@technique("infer.cot")
class ChainOfThought(Technique):
    """Chain-of-thought prompting (Wei et al., 2022; zero-shot Kojima et al., 2022) with answer extraction.

    Generation tasks are posed as lm-eval's own chain-of-thought configs where they exist (GSM8K)."""

    Params = CoTParams
    Hook = CoTHook
    requires = ("lm_eval",)
    inference_time = True
    uses_seed = False
    accepts = ACCEPTS

    @classmethod
    def local_data(cls, params: Any, datasets: Sequence[str]) -> tuple[Path, ...]:
        return (Path(params.rationales).expanduser(),) if params.rationales else ()

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return _once(cls.name, steps, index)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        exemplars = load_rationales(p.rationales) if p.rationales else None
        hook = CoTHook(p.mode, p.trigger, exemplars, p.num_fewshot, p.answer_pattern)
        few = p.mode == "fewshot"
        count = (p.num_fewshot or (len(exemplars) if exemplars else LM_EVAL_EXEMPLARS)) if few else 0
        source = (p.rationales or f"lm-eval {COT_CONFIGS['gsm8k'][1]}") if few else None
        report = CoTReport(p.mode, count, source, None if few else p.trigger)
        return Applied(handle.derive(inference_hooks=(*handle.inference_hooks, hook)), report)


# -- sampling shared by self-consistency and best-of-n ------------------------------------------------------------
@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; each None takes the path's ``infer.decoding`` sampling setting, else the default.

    Attributes:
        temperature: softmax temperature (> 0; default 0.7).
        top_k: keep the k most likely tokens (0: off; default 40).
        top_p: nucleus mass (in (0, 1]; default 1.0).
        seed: sampling seed (default: the path's sampling seed, else the spec's seed).
    """

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sampling_settings(p: SamplingParams, handle: ModelHandle, seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The generation arguments that sample the candidates, and where each setting came from (``params``,
    ``infer.decoding`` when the handle already samples, or ``default``)."""
    own = handle.generation_kwargs if handle.generation_kwargs.get("do_sample") else {}
    out: dict[str, Any] = {"do_sample": True}
    origins = {}
    for key, fallback in (*SAMPLING_DEFAULTS.items(), ("seed", seed)):
        value = getattr(p, key)
        origin = "params" if value is not None else "infer.decoding" if key in own else "default"
        out[key] = value if value is not None else own.get(key, fallback)
        origins[key] = origin
    return out, origins


def _sampling_conflict(what: str, steps: Sequence[PathStep]) -> str | None:
    for i, s in enumerate(steps):
        if s.technique == "infer.decoding" and getattr(s.params, "strategy", "sample") != "sample":
            return (f"it samples {what}, and step {i + 1} infer.decoding decodes by {s.params.strategy}: drop that "
                    f"step or set its strategy: sample")
    return None


def _once(name: str, steps: Sequence[PathStep], index: int) -> str | None:
    others = [i + 1 for i, s in enumerate(steps) if s.technique == name and i != index]
    return f"it appears more than once in the path (steps {index + 1} and {others[0]}): keep one" if others else None


# -- self-consistency ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelfConsistencyParams(SamplingParams):
    """Params of ``infer.self_consistency``: the sampling settings of :class:`SamplingParams`, plus

    Attributes:
        k: reasoning paths sampled per question (>= 2).
    """

    k: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 2:
            raise ValueError(f"k must be >= 2 (one sampled path has nothing to vote with), got {self.k}")


def voting_filters(filters: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """For every filter ending in ``take_first``, the same filter voting over the k samples first (lm-eval's
    ``majority_vote``), named ``<name>-maj@k`` (``maj@k`` for the default filter)."""
    out = []
    for f in filters:
        steps = list(f["filter"])
        if not steps or steps[-1].get("function") != "take_first":
            continue
        name = f"maj@{k}" if f["name"] == "none" else f"{f['name']}-maj@{k}"
        out.append({"name": name, "filter": [*steps[:-1], {"function": "majority_vote"}, {"function": "take_first"}]})
    return out


@dataclass(frozen=True)
class SelfConsistencyHook(InferenceHook):
    """k sampled paths per question and a majority vote over their extracted answers."""

    technique: ClassVar[str] = "infer.self_consistency"
    phase: ClassVar[int] = 1
    k: int = 8
    sampling: dict[str, Any] = field(default_factory=dict)

    def adapt_task(self, name: str, config: dict[str, Any]) -> TaskChange:
        skip = _not_generation(config)
        if skip is not None:
            return skip
        if int(config.get("repeats") or 1) > 1:
            return TaskChange(None, f"not applied: the task already samples {config['repeats']} answers")
        filters = list(config.get("filter_list") or [DEFAULT_FILTER])
        votes = voting_filters(filters, self.k)
        if not votes:
            return TaskChange(None, "not applied: no answer filter ends in take_first to vote before")
        new = dict(config)
        new["repeats"] = self.k
        new["generation_kwargs"] = {**(config.get("generation_kwargs") or {}), **self.sampling}
        new["filter_list"] = filters + votes
        settings = ", ".join(f"{k}={v}" for k, v in self.sampling.items() if k != "do_sample")
        return TaskChange(new, f"{self.k} sampled paths per question ({settings}); majority vote in filters "
                               f"{', '.join(v['name'] for v in votes)}; the other filters score the first path")


@dataclass(frozen=True)
class SamplingReport:
    """The sampling a technique set up.

    Attributes:
        samples: candidates (best-of-n) or reasoning paths (self-consistency) per request.
        sampling: the generation arguments they are sampled with.
        origins: where each setting came from: ``params``, ``infer.decoding`` (the path already samples) or
            ``default``.
        scorer: the model that picks (best-of-n only; ``self`` is the path's own model).
    """

    samples: int
    sampling: dict[str, Any]
    origins: dict[str, str]
    scorer: str | None = None


@technique("infer.self_consistency")
class SelfConsistency(Technique):
    """Self-consistency (Wang et al., 2023): k sampled reasoning paths, majority vote over their answers.

    Through lm-eval's ``repeats`` and ``majority_vote`` filter, as its gsm8k-cot-self-consistency config."""

    Params = SelfConsistencyParams
    Hook = SelfConsistencyHook
    requires = ("lm_eval",)
    inference_time = True
    accepts = ACCEPTS

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return params.seed is None

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return _once(cls.name, steps, index) or _sampling_conflict("its k reasoning paths", steps)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        sampling, origins = sampling_settings(self.params, handle, ctx.seed)
        hook = SelfConsistencyHook(self.params.k, sampling)
        return Applied(handle.derive(inference_hooks=(*handle.inference_hooks, hook)),
                       SamplingReport(self.params.k, sampling, origins))


# -- best-of-n ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BestOfNParams(SamplingParams):
    """Params of ``infer.best_of_n``: the sampling settings of :class:`SamplingParams`, plus

    Attributes:
        n: candidates sampled per request (>= 2).
        score: ``mean`` (mean token log-probability of the candidate given the prompt, length-normalized) or ``sum``.
    """

    n: int = 4
    score: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 2:
            raise ValueError(f"n must be >= 2 (one candidate leaves nothing to pick), got {self.n}")


def candidate_scores(scorer: ModelHandle, pairs: Sequence[tuple[str, str]], score: str = "mean") -> list[float]:
    """The scorer's log-likelihood of each ``(prompt, candidate)``: the sum over the candidate's tokens, or its
    mean (tokens split as lm-eval splits a continuation from its context); -inf for an empty candidate."""
    unique = list(dict.fromkeys(p for p in pairs if p[1]))
    lls = scorer.loglikelihood(unique) if unique else []
    lm = scorer.lm()
    by_pair = {}
    for pair, ll in zip(unique, lls, strict=True):
        tokens = len(lm._encode_pair(*pair)[1]) if score == "mean" else 1
        by_pair[pair] = ll.logprob / max(tokens, 1)
    return [by_pair.get(p, -math.inf) for p in pairs]


def _with_kwargs(request: Any, kwargs: dict[str, Any]) -> Any:
    out = copy.copy(request)
    out.arguments = (request.args[0], kwargs)
    return out


@dataclass(frozen=True)
class BestOfNHook(InferenceHook):
    """n sampled candidates per generation request; the scorer's most likely one is returned."""

    technique: ClassVar[str] = "infer.best_of_n"
    phase: ClassVar[int] = 2
    n: int = 4
    score: str = "mean"
    sampling: dict[str, Any] = field(default_factory=dict)
    scorer_source: str | None = None
    scorer: Any = field(default=None, compare=False, repr=False)

    def wrap_generate(self, handle: ModelHandle, generate: Generate) -> Generate:
        def best_of_n(requests: list[Any]) -> list[str]:
            n = self.n
            expanded = [_with_kwargs(r, {**r.args[1], **self.sampling}) for r in requests for _ in range(n)]
            texts = generate(expanded)
            scores = candidate_scores(self.scorer or handle, [(r.args[0], t) for r, t in zip(expanded, texts,
                                                                                              strict=True)], self.score)
            picks = []
            for i in range(len(requests)):
                best = max(range(n), key=lambda j: scores[i * n + j])  # the first of equals
                picks.append(texts[i * n + best])
            return picks

        return best_of_n

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "n": self.n, "score": self.score, "sampling": dict(self.sampling),
                "scorer_source": self.scorer_source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestOfNHook:
        if data.get("scorer_source") is not None:
            raise ModelLoadError(f"infer.best_of_n scored with another model ({data['scorer_source']}), which is not "
                                 "saved with this handle: re-apply the step")
        return cls(int(data["n"]), str(data["score"]), dict(data["sampling"]))


@technique("infer.best_of_n")
class BestOfN(Technique):
    """Best-of-n sampling: n seeded candidates per request, the one the scorer finds most likely returned.

    The scorer is the path's own model by default, or a ``scorer:`` base or path (mean token log-probability)."""

    Params = BestOfNParams
    Hook = BestOfNHook
    requires = ("transformers", "lm_eval")
    inference_time = True
    inputs = ("scorer",)
    optional_inputs = ("scorer",)
    role_formats = {"scorer": ACCEPTS}
    accepts = ACCEPTS

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return params.seed is None

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return (_once(cls.name, steps, index) or _sampling_conflict("its n candidates", steps)
                or role_before_weight_change(cls.name, "scorer", steps, index))

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.errors import UsageError

        scorer = ctx.inputs.get("scorer")
        if scorer is not None and not isinstance(scorer, ModelHandle):
            raise UsageError(f"{self.name}: `scorer:` must be a model, got {type(scorer).__name__}")
        sampling, origins = sampling_settings(self.params, handle, ctx.seed)
        source = scorer.source + "".join(f" -> {s.technique}" for s in scorer.lineage) if scorer is not None else None
        hook = BestOfNHook(self.params.n, self.params.score, sampling, source, scorer)
        return Applied(handle.derive(inference_hooks=(*handle.inference_hooks, hook)),
                       SamplingReport(self.params.n, sampling, origins, source or "self"))
