"""Runtime optimizations of the torch backend, weights untouched: a compiled static-cache decoder and speculative decoding.

Neither is a storable artifact (a compiled graph lives in one process; a draft model is another node), so both are
runtime settings: an :class:`~adapters.inference.InferenceHook` whose :meth:`~adapters.inference.InferenceHook.generate_kwargs`
adds transformers ``generate`` arguments to every generation of the handle (lm-eval's, ``generate_ids`` as the latency
and memory suites time it, and ``stream``). The harness re-applies the step on load, as for ``infer.*``; a handle saved
with :meth:`~adapters.handle.ModelHandle.save` restores the hook from ``handle.json`` and compiles again on its first
generation.

- ``deploy.compile``: transformers' static KV cache (``cache_implementation="static"``) with the decoding forward
  compiled by ``torch.compile`` (``compile_config``; transformers compiles the one-token decode step, the prefill runs
  eagerly). The step compiles once on a fixed prompt and reports that cost (seconds, graphs, graph breaks); speed is
  the suites' to measure.
- ``deploy.speculative``: with a ``draft:`` model (a path or a base), assisted decoding (Leviathan et al., 2023; Chen
  et al., 2023): the draft proposes ``num_tokens`` tokens, the target verifies them in one forward pass and keeps the
  longest agreeing prefix plus its own next token, so greedy outputs equal the target's own. A draft with another
  tokenizer runs as transformers' universal assisted decoding (text re-tokenized between the two). Without a draft,
  prompt-lookup decoding (Saxena, 2023): candidates are copied from the prompt where its last n-gram occurred before.
  The step reports the acceptance rate (accepted draft tokens / proposed) of each probe generation, counted at
  transformers' ``update_candidate_strategy``, which sees every verification round.

These settings own the KV cache and the decoding loop, so a path takes at most one of them (or one ``kv.*`` cache);
beam search is refused with speculative decoding (transformers verifies one sequence), and so is a later step whose
model the setting does not accept (the hook is carried onto it), e.g. ``deploy.onnxruntime``, whose runtime has its
own loop. ``deploy.compile`` takes float torch and quanto models: torch's dynamic int8 linears and compressed-tensors'
wrapped linears break dynamo's graph at every linear, so it refuses them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from adapters import formats as F
from adapters.errors import ModelLoadError, UsageError
from adapters.handle import ModelHandle
from adapters.inference import InferenceHook
from adapters.technique import (
    Applied,
    PathStep,
    Technique,
    TechniqueContext,
    get_technique,
    role_before_weight_change,
    technique,
)

#: the runtime settings that own the KV cache or the decoding loop: a path takes at most one
CACHE_OWNERS = ("deploy.compile", "deploy.speculative", "kv.quantized", "kv.window")
NON_TORCH_HINT = ("{name} changes how the torch model generates; apply it to the torch model and measure that, "
                  "or use the runtime's own settings")


def non_torch_hints(name: str) -> dict[str, str]:
    """The refusal hint of a runtime setting for each format that does not run on torch."""
    return {fmt: NON_TORCH_HINT.format(name=name) for fmt in (F.ONNX, "gguf")}


def runtime_conflict(cls: type[Technique], params: Any, steps: Sequence[PathStep], index: int, *,
                     beams: bool = True) -> str | None:
    """What is wrong with the cache-owning runtime setting ``cls`` at ``steps[index]``: another one in the path, beam
    search in the path (when ``beams``), or a later step whose model it does not accept (its hook would be carried
    onto that model, e.g. one that leaves torch); None when it fits."""
    name = cls.name
    for j, s in enumerate(steps):
        if j != index and s.technique in CACHE_OWNERS:
            return (f"step {j + 1} {s.technique} also sets the KV cache or the decoding loop, which {name} owns: "
                    "keep one of them")
        if beams and s.technique == "infer.decoding" and getattr(s.params, "strategy", "greedy") == "beam":
            return f"step {j + 1} infer.decoding searches with beams, which {name} does not support: drop one"
    accepted = cls.accepted_formats(params)
    for j in range(index + 1, len(steps)):
        produces = get_technique(steps[j].technique).produces
        if produces is not None and produces not in accepted:
            return (f"step {j + 1} {steps[j].technique} makes a {produces} model, which {name} does not accept "
                    f"(it accepts: {', '.join(accepted)}): put {name} after that step, or drop it")
    return None


def probe_prompts(handle: ModelHandle, n: int, length: int = 24) -> list[list[int]]:
    """``n`` fixed prompts of ``length`` tokens from the builtin synthetic corpus (the same for every model with
    this tokenizer), for the steps' own probe generations."""
    from adapters.corpus import synthetic_corpus

    texts = synthetic_corpus(max(n, 1) * 4, seed=0)
    out = []
    for i in range(n):
        ids = handle.tokenizer(" ".join(texts[4 * i: 4 * i + 4]), add_special_tokens=False).input_ids
        out.append(ids[:length])
    return out


# -- deploy.compile ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompileParams:
    """Params of ``deploy.compile``.

    Attributes:
        backend: ``torch.compile`` backend: ``inductor`` (generated C++/OpenMP kernels), ``aot_eager`` or ``eager``
            (tracing only: cheap, no speed-up; for tests).
        mode: ``default``, ``reduce-overhead`` or ``max-autotune-no-cudagraphs`` (inductor's modes).
        fullgraph: require one graph per forward (a graph break is then an error).
        max_cache_len: tokens the static cache holds (prompt + generated), allocated once so later calls up to this
            length reuse the compiled graph; None sizes the cache by each call (it only ever grows), which may recompile.
        warmup_tokens: tokens generated by the warm-up compile on a fixed 24-token prompt (>= 2: the first token is
            the prefill's, the decode step is what compiles).
    """

    backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    fullgraph: bool = False
    max_cache_len: int | None = None
    warmup_tokens: int = 4

    def __post_init__(self) -> None:
        if self.max_cache_len is not None and self.max_cache_len < 32:
            raise ValueError(f"max_cache_len must be >= 32 tokens or null (sized per call), got {self.max_cache_len}")
        if self.warmup_tokens < 2:
            raise ValueError(f"warmup_tokens must be >= 2 (the decode step is what compiles), got {self.warmup_tokens}")


@dataclass(frozen=True)
class CompileHook(InferenceHook):
    """Static KV cache + ``torch.compile``d decoding forward on every generation (see :class:`CompileParams`)."""

    technique: ClassVar[str] = "deploy.compile"
    phase: ClassVar[int] = 3
    backend: str = "inductor"
    mode: str = "default"
    fullgraph: bool = False
    max_cache_len: int | None = None

    def compile_config(self) -> Any:
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=self.fullgraph, backend=self.backend, mode=self.mode)
        config._compile_all_devices = True  # transformers compiles on CUDA/XPU only unless told to (CPU here)
        return config

    def generate_kwargs(self, handle: ModelHandle) -> dict[str, Any]:
        kwargs = {"cache_implementation": "static", "compile_config": self.compile_config()}
        if self.max_cache_len is not None:
            kwargs["max_cache_len"] = self.max_cache_len
        return kwargs


@dataclass(frozen=True)
class CompileReport:
    """What the warm-up compile cost.

    Attributes:
        warmup_s: seconds of the first generation (prefill + compile of the decode step + decoding).
        warmup_tokens: tokens it generated.
        graphs: graphs dynamo captured (recompilations included; 0 when the model was already compiled alike).
        graph_breaks: graph breaks dynamo reported.
        frames: frames dynamo compiled (a recompilation counts again).
        backend: the compile backend.
        mode: the compile mode.
    """

    warmup_s: float
    warmup_tokens: int
    graphs: int
    graph_breaks: int
    frames: int
    backend: str
    mode: str


def dynamo_counts() -> dict[str, int]:
    """Dynamo's process-wide counters that say how much it compiled: graphs, graph breaks, frames."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "frames": int(counters["frames"].get("total", 0))}


@technique("deploy.compile")
class TorchCompile(Technique):
    """torch.compile of the decoding step over transformers' static KV cache (compiled once, re-applied on load)."""

    Params = CompileParams
    Hook = CompileHook
    requires = ("torch", "transformers")
    inference_time = True
    uses_seed = False
    accepts = (*F.FLOAT_TORCH, F.QUANTO)
    hints = {**non_torch_hints("deploy.compile"),
             F.TORCH_INT8: "torch's dynamic int8 linears are opaque to torch.compile (a graph break at every linear: "
                           "13 per forward of the pico model), so the forward would run eagerly between breaks; "
                           "quantize with quant.rtn (quanto) instead",
             F.COMPRESSED: "compressed-tensors wraps every linear's forward, which torch.compile cannot trace (36 graph "
                           "breaks per forward of the pico model); compile the float model"}

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return runtime_conflict(cls, params, steps, index, beams=False)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        hook = CompileHook(p.backend, p.mode, p.fullgraph, p.max_cache_len)
        out = handle.derive(inference_hooks=(*handle.inference_hooks, hook))
        before = dynamo_counts()
        t0 = time.perf_counter()
        out.generate_ids(probe_prompts(out, 1), p.warmup_tokens, min_new_tokens=p.warmup_tokens)
        seconds = time.perf_counter() - t0
        after = dynamo_counts()
        report = CompileReport(round(seconds, 3), p.warmup_tokens, after["graphs"] - before["graphs"],
                               after["graph_breaks"] - before["graph_breaks"], after["frames"] - before["frames"],
                               p.backend, p.mode)
        return Applied(out, report)


# -- deploy.speculative --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeculativeParams:
    """Params of ``deploy.speculative``.

    Attributes:
        num_tokens: tokens proposed per verification step: the draft's ``num_assistant_tokens``, or prompt lookup's
            ``prompt_lookup_num_tokens``.
        schedule: with a draft, ``constant`` (always ``num_tokens``) or ``heuristic`` (transformers: +2 after a round
            with every token accepted, -1 otherwise, reset at each generation).
        confidence_threshold: with a draft, it stops proposing when its own probability of the next token falls below
            this (transformers' ``assistant_confidence_threshold``; 0: always ``num_tokens``).
        max_matching_ngram: prompt lookup: longest n-gram matched in the prompt.
        probe_prompts: fixed prompts generated from once to measure the acceptance rate for the report (0: none).
        probe_tokens: tokens generated per probe prompt.
    """

    num_tokens: int = 5
    schedule: Literal["constant", "heuristic"] = "constant"
    confidence_threshold: float = 0.0
    max_matching_ngram: int = 2
    probe_prompts: int = 4
    probe_tokens: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.num_tokens <= 64:
            raise ValueError(f"num_tokens must be in [1, 64], got {self.num_tokens}")
        if not 0 <= self.confidence_threshold < 1:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {self.confidence_threshold}")
        if self.max_matching_ngram < 1:
            raise ValueError(f"max_matching_ngram must be >= 1, got {self.max_matching_ngram}")
        if self.probe_prompts < 0 or self.probe_tokens < 2:
            raise ValueError(f"probe_prompts must be >= 0 and probe_tokens >= 2, got {self.probe_prompts} and "
                             f"{self.probe_tokens}")


def _draft_view(draft: Any, p: SpeculativeParams) -> Any:
    """The draft model object with its own generation config: transformers reads ``num_assistant_tokens`` and its
    schedule from the assistant's config (and the heuristic schedule writes it back), so the draft's node, which other
    paths share, must not be the one configured. Weights and modules are shared, not copied."""
    view = copy.copy(draft)
    config = copy.deepcopy(draft.generation_config)
    config.num_assistant_tokens = p.num_tokens
    config.num_assistant_tokens_schedule = "constant" if p.schedule == "constant" else "heuristic_transient"
    config.assistant_confidence_threshold = p.confidence_threshold
    view.generation_config = config
    return view


@dataclass(frozen=True)
class SpeculativeHook(InferenceHook):
    """Assisted decoding with a draft model, or prompt lookup without one (see :class:`SpeculativeParams`)."""

    technique: ClassVar[str] = "deploy.speculative"
    phase: ClassVar[int] = 3
    drafts_tokens: ClassVar[bool] = True
    method: str = "prompt_lookup"
    num_tokens: int = 5
    max_matching_ngram: int = 2
    draft_source: str | None = None
    same_tokenizer: bool = True
    draft: Any = field(default=None, compare=False, repr=False)
    draft_tokenizer: Any = field(default=None, compare=False, repr=False)

    def generate_kwargs(self, handle: ModelHandle) -> dict[str, Any]:
        if self.method == "prompt_lookup":
            return {"prompt_lookup_num_tokens": self.num_tokens, "max_matching_ngram_size": self.max_matching_ngram}
        kwargs: dict[str, Any] = {"assistant_model": self.draft}
        if not self.same_tokenizer:  # universal assisted decoding: text is re-tokenized between the two models
            kwargs.update(tokenizer=handle.tokenizer, assistant_tokenizer=self.draft_tokenizer)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "method": self.method, "num_tokens": self.num_tokens,
                "max_matching_ngram": self.max_matching_ngram, "draft_source": self.draft_source,
                "same_tokenizer": self.same_tokenizer}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeculativeHook:
        if data.get("method") != "prompt_lookup":
            raise ModelLoadError(f"deploy.speculative drafted with another model ({data.get('draft_source')}), which "
                                 "is not saved with this handle: re-apply the step")
        return cls("prompt_lookup", int(data["num_tokens"]), int(data["max_matching_ngram"]))


@dataclass
class DraftCount:
    """Draft tokens proposed and accepted over the verification rounds of one or more generations."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


@contextmanager
def counting_drafts(model: Any) -> Iterator[DraftCount]:
    """Count, while the block runs, the draft tokens ``model`` verifies in assisted or prompt-lookup generation.

    Wraps the candidate generator transformers makes for each call: its ``update_candidate_strategy(input_ids,
    scores, num_matches)`` is called once per verification round with the target's scores of the ``candidates + 1``
    positions and the number of candidates accepted (after the length budget is applied)."""
    count = DraftCount()
    make = model._get_candidate_generator

    def counted(*args: Any, **kwargs: Any) -> Any:
        generator = make(*args, **kwargs)
        update = generator.update_candidate_strategy

        def tally(input_ids: Any, scores: Any, num_matches: Any) -> Any:
            count.rounds += 1
            count.proposed += int(scores.shape[1]) - 1
            count.accepted += int(num_matches)
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = tally
        return generator

    model._get_candidate_generator = counted  # this instance only, for the block
    try:
        yield count
    finally:
        del model._get_candidate_generator


@dataclass(frozen=True)
class SpeculativeReport:
    """Acceptance of the drafts on the step's probe generations (greedy, fixed prompts).

    Attributes:
        method: ``assisted`` (a draft model) or ``prompt_lookup``.
        draft: the draft's source and steps (None for prompt lookup).
        same_tokenizer: whether the draft shares the target's vocabulary (False: universal assisted decoding).
        num_tokens: tokens proposed per round.
        generations: per probe generation: ``rounds``, ``proposed``, ``accepted``, ``new_tokens``, ``acceptance_rate``.
        acceptance_rate: accepted / proposed over all probe generations (None when nothing was proposed).
        tokens_per_round: new tokens per target forward pass over all probe generations (1.0 = plain decoding).
    """

    method: str
    draft: str | None
    same_tokenizer: bool
    num_tokens: int
    generations: list[dict[str, Any]]
    acceptance_rate: float | None
    tokens_per_round: float | None


def probe_acceptance(handle: ModelHandle, prompts: Sequence[Sequence[int]], new_tokens: int) -> list[dict[str, Any]]:
    """Greedy generation from each prompt with the handle's settings; the draft count of each."""
    out = []
    for prompt in prompts:
        with counting_drafts(handle.model) as count:
            ids = handle.generate_ids([list(prompt)], new_tokens, do_sample=False)
        generated = int(ids.shape[1]) - len(prompt)
        out.append({"rounds": count.rounds, "proposed": count.proposed, "accepted": count.accepted,
                    "new_tokens": generated, "acceptance_rate": count.acceptance_rate})
    return out


@technique("deploy.speculative")
class SpeculativeDecoding(Technique):
    """Speculative decoding: assisted by a `draft:` model (path or base), or prompt lookup without one.

    Greedy outputs equal the target's own; the report gives the acceptance rate on probe generations."""

    Params = SpeculativeParams
    Hook = SpeculativeHook
    requires = ("torch", "transformers")
    inference_time = True
    uses_seed = False
    inputs = ("draft",)
    optional_inputs = ("draft",)
    role_formats = {"draft": F.TORCH_BACKEND}
    accepts = F.TORCH_BACKEND
    hints = non_torch_hints("deploy.speculative")

    @classmethod
    def check_roles(cls, params: Any, counts: dict[str, int]) -> str | None:
        if counts.get("draft", 0) > 1:
            return f"`draft:` takes one model, got {counts['draft']}"
        return None

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return (runtime_conflict(cls, params, steps, index)
                or role_before_weight_change(cls.name, "draft", steps, index))

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        draft = ctx.inputs.get("draft")
        if draft is not None and not isinstance(draft, ModelHandle):
            raise UsageError(f"{self.name}: `draft:` must be a model, got {type(draft).__name__}")
        if draft is not None and draft.backend != "torch":
            raise UsageError(f"{self.name}: the draft runs on {draft.backend}; assisted decoding needs a torch model")
        if draft is None:
            hook = SpeculativeHook("prompt_lookup", p.num_tokens, p.max_matching_ngram)
            source = None
        else:
            same = draft.tokenizer.get_vocab() == handle.tokenizer.get_vocab()
            source = draft.source + "".join(f" -> {s.technique}" for s in draft.lineage)
            hook = SpeculativeHook("assisted", p.num_tokens, p.max_matching_ngram, source, same,
                                   _draft_view(draft.model, p), draft.tokenizer)
        out = handle.derive(inference_hooks=(*handle.inference_hooks, hook))
        generations = probe_acceptance(out, probe_prompts(out, p.probe_prompts), p.probe_tokens)
        proposed = sum(g["proposed"] for g in generations)
        rounds = sum(g["rounds"] for g in generations)
        report = SpeculativeReport(hook.method, source, hook.same_tokenizer, p.num_tokens, generations,
                                   sum(g["accepted"] for g in generations) / proposed if proposed else None,
                                   sum(g["new_tokens"] for g in generations) / rounds if rounds else None)
        return Applied(out, report)
