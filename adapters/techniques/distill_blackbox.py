"""Black-box knowledge distillation: the teacher answers a set of prompts, and the student is fine-tuned on the
answers (sequence-level KD, Kim & Rush, 2016, "Sequence-Level Knowledge Distillation"; the recipe of
instruction-following students trained on a stronger model's outputs, e.g. Taori et al., 2023, Alpaca).

Only the teacher's generated text crosses over, so teacher and student may have different tokenizers and
architectures: the teacher generates with its own tokenizer (and its own chat template with ``chat: true``), the
student trains on the text with its own.

* ``data.generate``: a dataset technique; the reference model (the teacher) answers every prompt of its input
  dataset, with its own decoding settings unless the step sets them, and the records become
  ``{"prompt", "completion"}`` pairs (chat messages with ``chat: true``).
* ``distill.blackbox``: ``teacher:`` answers the named ``prompts:`` dataset through ``data.generate`` and the student
  is fine-tuned on the pairs through trl's ``SFTTrainer`` (``tune.sft``'s machinery: loss on the response tokens,
  LoRA merged or full). The planner makes the generated pairs a dataset node of their own
  (:meth:`~adapters.technique.Technique.dataset_request`): cached, listed by ``slm plan``, viewable with
  ``slm cache show``, and shared by every student distilled from the same teacher on the same prompts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from adapters import formats as F
from adapters.corpus import BUILTIN_DATASETS, builtin_records
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import (
    Applied,
    DatasetRequest,
    DataTechnique,
    Selected,
    TechniqueContext,
    report_dict,
    technique,
)
from adapters.techniques._training import TrainReport, seeded
from adapters.techniques.peft_lora import TrainerParams, _WeightTraining
from adapters.techniques.tune import SFTParams, SupervisedFineTune

#: tokens generated per prompt when neither the step nor the teacher's generation config sets it
DEFAULT_MAX_NEW_TOKENS = 64
#: the decoding settings taken from the step, else the teacher (its ``infer.*`` settings, then its generation config)
DECODING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens")
_SAMPLING_KEYS = ("temperature", "top_p", "top_k")
#: prompts per generation call when decoding greedily (the progress is reported after each)
_GREEDY_CHUNK = 8


@dataclass(frozen=True)
class GenerateParams:
    """Params of ``data.generate`` (and the generation part of ``distill.blackbox``).

    Attributes:
        n_prompts: the first ``n_prompts`` prompts of the dataset are answered.
        max_new_tokens: most tokens per response; None: the teacher's generation config, else 64.
        do_sample: sample (True) or decode greedily (False); None: the teacher's own setting (an ``infer.decoding``
            step on its path, else its generation config), else greedy.
        temperature: sampling temperature; None: the teacher's, else 1.0.
        top_p: nucleus sampling mass; None: the teacher's (else off).
        top_k: top-k filter; None: the teacher's (else transformers' default).
        seed: sampling seed (prompt i is sampled with ``seed + i``); None: the teacher's ``infer.decoding`` seed, else
            the spec's seed.
        chat: wrap each prompt in the teacher's chat template (the pairs are then chat messages, which the student
            trains on through its own chat template); False: plain text, the response continuing the prompt.
    """

    n_prompts: int = 32
    max_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    chat: bool = False

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


class Decoding(NamedTuple):
    """How the teacher decodes: the settings with where each came from.

    Attributes:
        settings: the effective values of :data:`DECODING_KEYS` (the sampling ones only when sampling), plus the
            teacher's own ``num_beams`` / ``repetition_penalty`` where its ``infer.decoding`` step set them.
        origins: setting -> ``params``, ``teacher generation_kwargs`` (its ``infer.*`` steps), ``teacher
            generation_config`` or ``default``.
    """

    settings: dict[str, Any]
    origins: dict[str, str]

    @property
    def sampling(self) -> bool:
        return bool(self.settings["do_sample"])

    def generate_kwargs(self) -> dict[str, Any]:
        """What :meth:`ModelHandle.generate` is given besides ``max_new_tokens`` (the teacher's own
        ``generation_kwargs`` are merged under these by the handle)."""
        return {k: v for k, v in self.settings.items() if k in ("do_sample", *_SAMPLING_KEYS)}


def decoding(teacher: ModelHandle, p: GenerateParams) -> Decoding:
    """The teacher's decoding settings: each of :data:`DECODING_KEYS` from the step's parameters, else the
    teacher's ``generation_kwargs`` (set by ``infer.decoding``), else the teacher model's ``generation_config`` where
    it sets it, else greedy with :data:`DEFAULT_MAX_NEW_TOKENS` tokens."""
    own = teacher.generation_kwargs
    config = getattr(teacher.model, "generation_config", None)
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key in DECODING_KEYS:
        for origin, value in (("params", getattr(p, key)), ("teacher generation_kwargs", own.get(key)),
                              ("teacher generation_config", getattr(config, key, None))):
            if value is not None:
                settings[key], origins[key] = value, origin
                break
    for key, default in (("do_sample", False), ("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)):
        if key not in settings:
            settings[key], origins[key] = default, "default"
    if settings["do_sample"]:
        if "temperature" not in settings:  # lm-eval takes a missing temperature as 0, i.e. greedy
            settings["temperature"], origins["temperature"] = 1.0, "default"
    else:
        for key in _SAMPLING_KEYS:
            settings.pop(key, None)
            origins.pop(key, None)
    for key in ("num_beams", "repetition_penalty"):
        if own.get(key) is not None:
            settings[key], origins[key] = own[key], "teacher generation_kwargs"
    return Decoding(settings, origins)


def prompt_of(record: Any) -> str:
    """The prompt of a record: a text itself; a record's ``prompt`` (of a chat prompt, its last user message); a chat's
    last user message; else the record's first string field."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return str(record)
    value = record.get("prompt", record.get("messages"))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return next((v for v in record.values() if isinstance(v, str)), "")


def _chat_prompt(tokenizer: Any, prompt: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("data.generate: chat: true needs a teacher whose tokenizer has a chat template "
                         "(this one has none): set chat: false")
    return str(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True))


@dataclass(frozen=True)
class GenerateReport:
    """What the teacher generated.

    Attributes:
        prompts: prompts answered.
        empty_responses: responses with no text (the teacher ended at once).
        mean_response_chars: mean length of the responses in characters.
        decoding: the effective decoding settings (see :class:`Decoding`).
        decoding_from: where each setting came from.
        seed: the sampling seed of the first prompt (prompt i: ``seed + i``); None when decoding greedily.
        chat: whether the prompts went through the teacher's chat template.
        teacher: the teacher's source.
    """

    prompts: int
    empty_responses: int
    mean_response_chars: float
    decoding: dict[str, Any]
    decoding_from: dict[str, str]
    seed: int | None
    chat: bool
    teacher: str


def teacher_pairs(teacher: ModelHandle, records: list[Any], p: GenerateParams, ctx: TechniqueContext) -> Selected:
    """The teacher's responses to the first ``p.n_prompts`` non-empty prompts of ``records``, as prompt/completion
    pairs (chat messages with ``p.chat``), and a :class:`GenerateReport`.

    Greedy decoding answers the prompts in batches; sampling answers prompt i alone with seed ``seed + i``, so a
    response does not depend on which other prompts are answered. The caller's RNG state is left as it was.
    """
    prompts = [q for q in (prompt_of(r) for r in records) if q.strip()][: p.n_prompts]
    if not prompts:
        raise UsageError("data.generate got no non-empty prompts to answer")
    dec = decoding(teacher, p)
    kwargs, max_new = dec.generate_kwargs(), int(dec.settings["max_new_tokens"])
    inputs = [_chat_prompt(teacher.tokenizer, q) for q in prompts] if p.chat else prompts
    seed = None
    if dec.sampling:
        own = teacher.generation_kwargs.get("seed")
        seed = p.seed if p.seed is not None else int(own) if own is not None else ctx.seed
    responses: list[str] = []
    chunk = 1 if dec.sampling else _GREEDY_CHUNK
    with seeded(seed if seed is not None else ctx.seed):
        for start in range(0, len(inputs), chunk):
            batch = inputs[start : start + chunk]
            extra: dict[str, Any] = {"seed": seed + start} if seed is not None else {}
            responses.extend(teacher.generate(batch, max_new_tokens=max_new, **kwargs, **extra))
            ctx.progress.update(len(responses), len(inputs), "prompts answered by the teacher")
    if p.chat:
        responses = [r.strip() for r in responses]
        pairs: list[Any] = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": r}]}
                            for q, r in zip(prompts, responses, strict=True)]
    else:
        pairs = [{"prompt": q, "completion": r} for q, r in zip(prompts, responses, strict=True)]
    report = GenerateReport(len(pairs), sum(not r.strip() for r in responses),
                            sum(len(r) for r in responses) / len(responses), dec.settings, dec.origins, seed, p.chat,
                            teacher.source)
    return Selected(pairs, report)


@technique("data.generate")
class Generate(DataTechnique):
    """Teacher-generated responses: the reference model (the teacher) answers every prompt, greedy or sampled with
    its own decoding settings unless the step sets them, and the pairs become a dataset (black-box distillation data,
    Kim & Rush, 2016).

    The model is ``ctx.inputs["reference"]`` (in ``datasets:`` the step's ``reference:``, the path's base by default).
    The records are ``{"prompt", "completion"}`` (chat messages with ``chat: true``), which ``tune.sft`` trains on
    with the loss on the completion; the report has the effective decoding settings and where each came from.
    """

    Params = GenerateParams
    requires = ("torch", "transformers", "lm-eval")
    selects: ClassVar[bool] = False

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        # the teacher's own settings (unknown here) may sample, unless the step says greedy or fixes the seed
        return params.do_sample is not False and params.seed is None

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        teacher = ctx.inputs.get("reference")
        if not isinstance(teacher, ModelHandle):
            raise UsageError("data.generate needs a model to answer the prompts as input `reference:`")
        return teacher_pairs(teacher, texts, self.params, ctx)


@dataclass(frozen=True)
class BlackboxParams(GenerateParams, TrainerParams):
    """Params of ``distill.blackbox``: those of ``data.generate`` (how the teacher answers) and the fine-tuning ones of
    :class:`~adapters.techniques.peft_lora.TrainerParams`, as in ``tune.sft`` (max_steps None: the spec's
    ``max_steps``, else 50), plus

    Attributes:
        prompts: the prompts the teacher answers: a dataset of the spec (texts, or records whose ``prompt`` is used),
            or a builtin one: ``instructions`` (the seeded offline instruction prompts) or ``synthetic``.
    """

    prompts: str = "instructions"

    def __post_init__(self) -> None:
        GenerateParams.__post_init__(self)
        TrainerParams.__post_init__(self)

    def generation(self) -> GenerateParams:
        """The ``data.generate`` parameters of this step."""
        return GenerateParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GenerateParams)})

    def sft(self, n_examples: int) -> SFTParams:
        """The ``tune.sft`` parameters of this step, for ``n_examples`` pairs."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(SFTParams) if hasattr(self, f.name)}
        return SFTParams(**shared, n_examples=n_examples)


@dataclass(frozen=True)
class BlackboxReport(TrainReport):
    """What black-box distillation did: :class:`~adapters.techniques._training.TrainReport` of the fine-tuning, plus

    Attributes:
        pairs: teacher responses trained on.
        mean_response_chars: their mean length in characters.
        generation: the :class:`GenerateReport` when the step generated the pairs itself; None when the harness
            gave them (the report is then the generated dataset node's).
    """

    pairs: int = 0
    mean_response_chars: float = 0.0
    generation: dict[str, Any] | None = None


def prompt_records(ctx: TechniqueContext, p: BlackboxParams) -> list[Any]:
    """The prompts to answer without the harness: ``ctx.datasets[p.prompts]``, else a builtin dataset."""
    if p.prompts in ctx.datasets:
        return list(ctx.datasets[p.prompts])
    if p.prompts in BUILTIN_DATASETS:
        return builtin_records(p.prompts, p.n_prompts, ctx.seed)
    raise UsageError(f"distill.blackbox: prompts {p.prompts!r} names no dataset (given: "
                     f"{', '.join(sorted(ctx.datasets)) or 'none'}; builtin: {', '.join(BUILTIN_DATASETS)})")


def _check_pairs(tokenizer: Any, pairs: list[Any]) -> None:
    if not pairs or not all(isinstance(r, dict) and "prompt" in r and "completion" in r for r in pairs):
        raise UsageError("distill.blackbox trains on prompt/completion pairs made by data.generate; got "
                         f"{type(pairs[0]).__name__ if pairs else 'no records'}")
    if isinstance(pairs[0]["prompt"], list) and not getattr(tokenizer, "chat_template", None):
        raise UsageError("distill.blackbox: the pairs are chat messages (chat: true), and the student's tokenizer has "
                         "no chat template to train on them: set chat: false")


@technique("distill.blackbox")
class BlackboxDistill(_WeightTraining):
    """Black-box knowledge distillation: the teacher answers the named prompts (greedy or sampled, its own decoding
    settings honoured) and the student is fine-tuned on its answers through trl (sequence-level KD, Kim & Rush, 2016).

    Only text crosses over, so the teacher may have another tokenizer or architecture, or be an ONNX model. In a spec
    the answers are a ``data.generate`` dataset node of their own, cached and shared by every student of the same
    teacher on the same prompts; applied directly, the step generates them itself from ``ctx.inputs["teacher"]``.
    """

    Params = BlackboxParams
    inputs = ("teacher",)
    role_formats = {"teacher": F.TORCH_BACKEND + (F.ONNX,)}
    requires = ("trl", "peft", "torch", "transformers", "lm-eval")

    @classmethod
    def dataset_request(cls, params: Any) -> DatasetRequest:
        return DatasetRequest("data.generate", dataclasses.asdict(params.generation()), params.prompts,
                              params.n_prompts, role="teacher", field="prompts")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        generation = None
        if "dataset" in ctx.inputs:  # the harness's data.generate node
            pairs = list(ctx.inputs["dataset"])
        else:
            teacher = ctx.inputs.get("teacher")
            if not isinstance(teacher, ModelHandle):
                raise UsageError(f"{self.name} needs a teacher model as input `teacher:`")
            made = teacher_pairs(teacher, prompt_records(ctx, p), p.generation(), ctx)
            pairs, generation = list(made.texts), report_dict(made.report)
        _check_pairs(handle.tokenizer, pairs)
        tuned = SupervisedFineTune(p.sft(len(pairs))).apply(handle, dataclasses.replace(ctx, inputs={"dataset": pairs}))
        responses = [r["completion"] if isinstance(r["completion"], str) else r["completion"][-1]["content"]
                     for r in pairs]
        report = BlackboxReport(**dataclasses.asdict(tuned.report), pairs=len(pairs),
                                mean_response_chars=sum(len(r) for r in responses) / len(responses),
                                generation=generation)
        return Applied(tuned.handle, report)
