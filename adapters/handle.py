"""The uniform model interface every technique returns and every suite measures.

A :class:`ModelHandle` is a model plus tokenizer on a backend, with the lineage of steps that
produced it and the thread count and batch size it runs with. Scoring goes through an lm-eval
``LM`` (:meth:`ModelHandle.lm`), so any lm-eval task runs on any handle and a score here equals
lm-eval's own on the same checkpoint, batch size and thread count.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from adapters.architecture import Architecture, EmbeddingFacts

HANDLE_FILE = "handle.json"
#: where :meth:`ModelHandle.save` writes the state of the handle's prompt hooks (one folder per hook, in order)
PROMPT_HOOKS_DIR = "prompt_hooks"


class PromptHook(Protocol):
    """Rewrites every text prompt a handle generates from (set by inference-time techniques such as ``infer.rag``).

    Attributes:
        technique: the registry name of the technique that made it; its class restores a saved hook with
            ``load_prompt_hook(directory, description)``.
    """

    technique: str

    def __call__(self, prompt: str) -> str:
        """The prompt the model receives instead of ``prompt``."""
        ...

    def describe(self) -> dict[str, Any]:
        """The hook's settings as JSON-able data (recorded in ``handle.json``)."""
        ...

    def save(self, directory: Path) -> None:
        """Write what the hook needs to be restored (e.g. its retrieval index) into ``directory``."""
        ...


@dataclass(frozen=True)
class LineageStep:
    """One technique applied to produce a model.

    Attributes:
        technique: registry name, e.g. ``prune.wanda``.
        version: the technique's version (part of the cache key).
        params: every parameter, defaults included.
        library_versions: versions of the libraries that did the work.
        input_format: the artifact format of the model the step received.
        output_format: the artifact format of the model it produced.
        conversion: what the step did to take its input, when it converted it (e.g. dequantized it).
        report: what the technique measured about its own work (its typed report, as plain data).
        device: where the step ran (``cpu``, ``cuda``, ``cuda:1``): the hardware profile's device for a technique
            that runs on it (``Technique.runs_on_device``), else ``cpu``.
    """

    technique: str
    version: str = "1"
    params: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    input_format: str | None = None
    output_format: str | None = None
    conversion: str | None = None
    report: dict[str, Any] | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class TokenEvent:
    """One generated token in a stream.

    Attributes:
        index: 0 for the first generated token.
        token_id: the token id.
        text: the token decoded on its own.
        time_s: ``time.perf_counter()`` seconds since the stream call started, taken when the
            token left the model (before it reached the consumer).
    """

    index: int
    token_id: int
    text: str
    time_s: float


class LogLikelihood(NamedTuple):
    """Log-probability of a continuation and whether greedy decoding would produce it."""

    logprob: float
    is_greedy: bool


class ModelHandle:
    """A loaded model, its tokenizer and how it runs.

    Args:
        model: the model object (a ``transformers`` ``PreTrainedModel`` for the torch backend).
        tokenizer: a ``transformers`` tokenizer.
        source: where the base model came from (e.g. ``builtin:smollm2-135m-instruct``).
        backend: ``torch`` or the name of another runtime (``onnxruntime``, ...).
        lineage: the steps applied since the source, oldest first.
        threads: intra-op threads used when this handle runs (applied by :meth:`activate`).
        batch_size: batch size for scoring and generation.
        generation_kwargs: defaults merged into every generation call (set by ``infer.*``).
        meta: free-form provenance for people (never read to save or load: see ``format``).
        format: the artifact format of the model (:mod:`adapters.formats`), which picks its saver and loader.
        format_state: what the format's saver needs besides the model object (e.g. the ONNX file); kept by
            :meth:`derive` only while the model object is kept.
        prompt_hooks: rewrite every text prompt before generation, in order (:class:`PromptHook`, set by ``infer.*``
            techniques such as ``infer.rag``); log-likelihood scoring and token-id prompts are not rewritten. Saved
            with the handle and restored by :meth:`load`.
        inference_hooks: change how evaluation poses tasks to the model and wrap its generation
            (:class:`adapters.inference.InferenceHook`, set by ``infer.cot``, ``infer.self_consistency``,
            ``infer.best_of_n``); saved in ``handle.json`` and restored by :meth:`load`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        source: str,
        backend: str = "torch",
        lineage: Sequence[LineageStep] = (),
        threads: int = 1,
        batch_size: int = 1,
        generation_kwargs: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        format: str = "torch",
        format_state: dict[str, Any] | None = None,
        prompt_hooks: Sequence[PromptHook] = (),
        inference_hooks: Sequence[Any] = (),
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.backend = backend
        self.lineage: tuple[LineageStep, ...] = tuple(lineage)
        self.threads = threads
        self.batch_size = batch_size
        self.generation_kwargs: dict[str, Any] = dict(generation_kwargs or {})
        self.meta: dict[str, Any] = dict(meta or {})
        self.format = format
        self.format_state: dict[str, Any] = dict(format_state or {})
        self.prompt_hooks: tuple[PromptHook, ...] = tuple(prompt_hooks)
        self.inference_hooks: tuple[Any, ...] = tuple(inference_hooks)
        self._lm: Any = None

    def __repr__(self) -> str:
        steps = " -> ".join(s.technique for s in self.lineage) or "base"
        return f"ModelHandle({self.source}, {steps}, format={self.format}, threads={self.threads})"

    # -- derivation ---------------------------------------------------------------------------
    def derive(self, step: LineageStep | None = None, model: Any = None, **changes: Any) -> ModelHandle:
        """A new handle with ``step`` (if given) appended to the lineage; other attributes copied unless given.

        A new ``model`` drops the format state (it described the old model object); the format is copied
        until the technique's declared output format is stamped on by :meth:`Technique.run`.
        """
        kwargs: dict[str, Any] = dict(
            source=self.source,
            backend=self.backend,
            threads=self.threads,
            batch_size=self.batch_size,
            generation_kwargs=dict(self.generation_kwargs),
            meta=dict(self.meta),
            format=self.format,
            format_state=dict(self.format_state) if model is None else {},
            prompt_hooks=self.prompt_hooks,
            inference_hooks=self.inference_hooks,
        )
        kwargs.update(changes)
        tokenizer = kwargs.pop("tokenizer", self.tokenizer)
        new_model = self.model if model is None else model
        lineage = (*self.lineage, step) if step is not None else self.lineage
        return type(self)(new_model, tokenizer, lineage=lineage, **kwargs)

    def prompt(self, text: str) -> str:
        """The prompt the model receives for ``text``: ``text`` rewritten by each of :attr:`prompt_hooks`, in order."""
        for hook in self.prompt_hooks:
            text = hook(text)
        return text

    def activate(self) -> None:
        """Apply this handle's runtime settings (thread count) to the process."""
        from adapters.runtime import set_threads

        set_threads(self.threads)

    @property
    def settings(self) -> dict[str, Any]:
        """The runtime settings to record with every measurement."""
        out = {
            "backend": self.backend,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "dtype": str(getattr(self.model, "dtype", "")).replace("torch.", ""),
            "generation_kwargs": self.generation_kwargs,
        }
        if self.inference_hooks:
            out["inference_hooks"] = [h.to_dict() for h in self.inference_hooks]
        if self.prompt_hooks:
            out["prompt_hooks"] = [{"technique": h.technique, **h.describe()} for h in self.prompt_hooks]
        return out

    # -- scoring (through lm-eval) -------------------------------------------------------------
    def lm(self, max_length: int | None = None) -> Any:
        """This handle as an lm-eval ``LM`` (cached), with lm-eval's ``max_length`` (tokens per window; default
        the model config's). Subclasses for other backends override it."""
        if self._lm is None or (max_length is not None and self._lm.max_length != max_length):
            from adapters.lm import HandleHFLM

            self.activate()
            self._lm = HandleHFLM(self, max_length=max_length)
        return self._lm

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]:
        """``log P(continuation | context)`` for each ``(context, continuation)`` pair."""
        from lm_eval.api.instance import Instance

        insts = [
            Instance("loglikelihood", doc={}, arguments=(ctx, cont), idx=i) for i, (ctx, cont) in enumerate(requests)
        ]
        return [LogLikelihood(float(lp), bool(g)) for lp, g in self.lm().loglikelihood(insts, disable_tqdm=True)]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each whole text, with lm-eval's rolling windows."""
        from lm_eval.api.instance import Instance

        insts = [Instance("loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)]
        return [float(x) for x in self.lm().loglikelihood_rolling(insts, disable_tqdm=True)]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, stop: Sequence[str] = (), **kwargs: Any) -> list[str]:
        """Generated continuations (prompt excluded), with the handle's generation defaults."""
        from lm_eval.api.instance import Instance

        gen = {**self.generation_kwargs, **kwargs, "until": list(stop), "max_gen_toks": max_new_tokens}
        insts = [Instance("generate_until", doc={}, arguments=(p, dict(gen)), idx=i) for i, p in enumerate(prompts)]
        return list(self.lm().generate_until(insts, disable_tqdm=True))

    # -- streaming -----------------------------------------------------------------------------
    def stream(self, prompt: str | Sequence[int], max_new_tokens: int = 32, **kwargs: Any) -> Iterator[TokenEvent]:
        """Generate and yield each new token with the time it was produced.

        Generation runs in a worker thread; each token is timestamped inside the generation loop,
        so consumer speed does not affect the times. ``min_new_tokens`` defaults to
        ``max_new_tokens`` so latency runs produce a fixed number of tokens. A text prompt goes through the
        handle's :attr:`prompt_hooks` (:meth:`prompt`); token ids are used as given.
        """
        import torch
        from transformers.generation.streamers import BaseStreamer

        self.activate()
        input_ids = self._ids(self.tokenizer(self.prompt(prompt), return_tensors="pt").input_ids
                              if isinstance(prompt, str) else [list(prompt)])
        events: queue.Queue[Any] = queue.Queue()
        start = time.perf_counter()
        tok = self.tokenizer

        class _Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.seen_prompt = False
                self.n = 0

            def put(self, value: Any) -> None:
                now = time.perf_counter() - start
                if not self.seen_prompt:  # generate() first hands over the prompt
                    self.seen_prompt = True
                    return
                for tid in value.reshape(-1).tolist():
                    events.put(TokenEvent(self.n, int(tid), tok.decode([tid]), now))
                    self.n += 1

            def end(self) -> None:
                events.put(None)

        from adapters.inference import runtime_kwargs

        gen = {**self.generation_kwargs, **runtime_kwargs(self), **kwargs}
        seed = gen.pop("seed", None)
        if seed is not None:
            torch.manual_seed(int(seed))
        gen.setdefault("min_new_tokens", max_new_tokens)
        gen.setdefault("do_sample", False)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        max_new_tokens=max_new_tokens,
                        streamer=_Streamer(),
                        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                        **gen,
                    )
            except BaseException as exc:  # re-raised in the consumer's thread
                errors.append(exc)
                events.put(None)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while (event := events.get()) is not None:
            yield event
        worker.join()
        if errors:
            raise errors[0]

    # -- runtime: architecture, forward passes, generation, placement ---------------------------
    def architecture(self) -> Architecture:
        """The model's shape as its config declares it.

        Returns:
            An :class:`~adapters.architecture.Architecture` (vocabulary, hidden size, layers, query and
            key/value heads, head width, declared embedding tie), read from the model's ``config``.
        """
        from adapters.architecture import Architecture

        return Architecture.from_config(self.model.config)

    def activation_bytes(self) -> int:
        """Bytes of one activation value, which is also one KV-cache value.

        Returns:
            The item size of the model's float dtype (4 for float32, 2 for bfloat16/float16); 4 when the
            model reports no float dtype (integer-weight models compute in float32).
        """
        from adapters.architecture import activation_bytes

        return activation_bytes(self.model)

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token adds to one sequence, from the architecture.

        Returns:
            ``2 x num_layers x num_kv_heads x head_dim x activation_bytes()`` (keys and values).
        """
        return self.architecture().kv_bytes_per_token(self.activation_bytes())

    def embedding_facts(self) -> EmbeddingFacts:
        """How the input embedding table is stored, for the bytes a forward pass reads.

        Returns:
            An :class:`~adapters.architecture.EmbeddingFacts`: bytes of the input table stored apart from the
            output head (0 when they share storage), bytes of one of its rows, and whether they share storage.
            Read from the model's embedding modules (their own footprint, so quantized tables count as
            stored); a model without them is described from :meth:`architecture` at the weights' mean bytes
            per parameter.
        """
        from adapters.architecture import config_embedding_facts, module_embedding_facts

        facts = module_embedding_facts(self.model)
        if facts is not None:
            return facts
        return config_embedding_facts(self.architecture(), sum(self.weight_footprint().values()),
                                      self.num_parameters())

    def forward(self, input_ids: Any) -> Any:
        """One forward pass over whole prompts (a prefill), without gradients.

        Runs the model as it is configured (with its KV cache when the config enables one, which is then
        discarded); the caller applies the thread count (:meth:`activate`) beforehand.

        Args:
            input_ids: token ids, shape ``(batch, length)``: a ``torch.LongTensor`` or nested lists of ints
                (all rows the same length; no padding, no attention mask).

        Returns:
            The logits, a float tensor of shape ``(batch, length, vocab_size)``.
        """
        import torch

        from adapters.formats import virtual_tokens

        with torch.no_grad():
            logits = self.model(input_ids=self._ids(input_ids)).logits
        skip = virtual_tokens(self.model)  # a soft prompt's positions are not the prompt's
        return logits[:, skip:] if skip else logits

    def measured_kv_bytes(self, input_ids: Any) -> float | None:
        """KV-cache bytes per token actually held after a prefill with the cache on.

        The prefill runs into the cache the handle's inference hooks make for generation (a quantized or a windowed
        cache, :meth:`adapters.inference.InferenceHook.generate_kwargs`), else the model's default cache.

        Args:
            input_ids: token ids, shape ``(1, length)`` (a tensor or nested lists).

        Returns:
            The bytes of the storage the returned ``past_key_values`` holds per layer (keys and values, a quantized
            cache's packed data, scales and zero points, a static cache's whole allocation) divided by ``length``;
            None when the model returns no cache to measure.
        """
        import torch

        from adapters.inference import runtime_kwargs

        ids = self._ids(input_ids)
        given = runtime_kwargs(self).get("past_key_values")
        with torch.no_grad():
            cache = self.model(input_ids=ids, use_cache=True,
                               **({"past_key_values": given} if given is not None else {})).past_key_values
        held = sum(_held_bytes(vars(layer).values()) for layer in getattr(cache, "layers", []))
        if not held and hasattr(cache, "to_legacy_cache"):
            held = sum(t.numel() * t.element_size() for kv in cache.to_legacy_cache() for t in kv)
        return held / ids.shape[1] if held else None

    def can_generate(self) -> bool:
        """Whether :meth:`generate_ids` can run (batched generation from token ids).

        Returns:
            True when the model has a ``generate``; a backend without it is timed through :meth:`stream`
            (one prompt at a time).
        """
        return hasattr(self.model, "generate")

    def decoding_kwargs(self) -> dict[str, Any]:
        """The handle's decoding settings as :meth:`generate_ids` applies them.

        Returns:
            ``generation_kwargs`` without ``seed`` (see :meth:`seed_sampling`), greedy (``do_sample=False``)
            and one beam (``num_beams=1``) unless they say otherwise.
        """
        gen = {k: v for k, v in self.generation_kwargs.items() if k != "seed"}
        gen.setdefault("do_sample", False)
        gen.setdefault("num_beams", 1)
        return gen

    def seed_sampling(self, seed: int | None = None) -> None:
        """Seed the sampler so that a sampled generation draws the same tokens on every call.

        Args:
            seed: the seed; None takes ``generation_kwargs["seed"]``, and does nothing when that is unset.
        """
        if seed is None:
            seed = self.generation_kwargs.get("seed")
        if seed is not None:
            import torch

            torch.manual_seed(int(seed))

    def generate_ids(self, input_ids: Any, max_new_tokens: int, **kwargs: Any) -> Any:
        """Generate from token ids with the handle's decoding settings, without gradients.

        Does not seed (call :meth:`seed_sampling` first for seeded sampling) and pads with the tokenizer's
        pad token (its EOS when it has none); every row attends to all of its prompt.

        Args:
            input_ids: prompts of equal length, shape ``(batch, length)``: a ``torch.LongTensor`` (on the
                model's device) or nested lists of ints.
            max_new_tokens: most tokens generated per sequence.
            **kwargs: ``transformers`` ``generate`` arguments that override :meth:`decoding_kwargs` and the
                inference hooks' runtime arguments (e.g. ``min_new_tokens``, ``logits_processor``).

        Returns:
            The token ids, prompt included, shape ``(batch, length + generated)``, as ``generate`` returns them.
        """
        import torch

        from adapters.inference import runtime_kwargs

        ids = self._ids(input_ids)
        tok = self.tokenizer
        gen = {"pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
               **self.decoding_kwargs(), **runtime_kwargs(self), **kwargs}
        with torch.no_grad():
            return self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=max_new_tokens, **gen)

    @property
    def device(self) -> str:
        """Where the model's weights are (``cpu``, ``cuda:0``, ...): the device of its first parameter or buffer;
        ``cpu`` for a model without tensors or a backend that is not torch."""
        if self.backend != "torch":
            return "cpu"
        first = next(iter(self.model.parameters()), None)
        if first is None:
            first = next(iter(self.model.buffers()), None)
        return str(first.device) if first is not None else "cpu"

    def _ids(self, input_ids: Any) -> Any:
        """Token ids as a long tensor on the model's device (a tensor already there is returned as is)."""
        import torch

        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor(input_ids, dtype=torch.long)
        device = self.device
        return ids if str(ids.device) == device else ids.to(device)

    def place(self, device: str = "cpu", dtype: str | None = "float32") -> ModelHandle:
        """This handle with its float torch weights on ``device`` in ``dtype`` (:func:`adapters.runtime.place`).

        Args:
            device: ``cpu``, ``cuda`` or ``cuda:N``.
            dtype: ``float32``, ``bfloat16`` or ``float16``.

        Returns:
            A handle on a cast copy of the model when its weights differ (format and lineage kept, no step
            recorded); this handle itself when they already match, and for quantized torch formats and
            other backends (their weights keep their own dtype).
        """
        from adapters.runtime import place

        return place(self, device, dtype)

    def move(self, device: str | None = None, dtype: str | None = None) -> dict[str, str | None]:
        """Cast and move this handle's own model in place, with no second copy of the weights (for a
        process that owns the handle, e.g. the memory suite's child).

        Args:
            device: move a torch-backend model (any torch format) to it; None or empty: stay.
            dtype: cast float torch weights (formats ``torch``, ``torch-sparse``, ``torch-lowrank``,
                ``compressed-tensors``) to it; None or empty, quantized formats and other backends: keep.

        Returns:
            ``{"device": ..., "dtype": ...}``: what was applied, None for what was not.
        """
        from adapters import formats as F

        applied: dict[str, str | None] = {"device": None, "dtype": None}
        if self.backend != "torch":
            return applied
        import torch

        if dtype and self.format in F.FLOAT_TORCH + (F.COMPRESSED,):
            self.model.to(dtype=getattr(torch, dtype))
            applied["dtype"] = dtype
        if device:
            self.model.to(device)
            applied["device"] = device
        return applied

    # -- footprint -----------------------------------------------------------------------------
    def weight_footprint(self) -> dict[str, int]:
        """Bytes of stored weights by dtype (tied tensors counted once; quantized tensor
        subclasses counted by their inner storage), over what ``state_dict`` persists."""
        from adapters.footprint import weight_footprint

        return weight_footprint(self.model)

    def num_parameters(self) -> int:
        """Parameters of the model (tied counted once)."""
        seen, total = set(), 0
        for p in self.model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    # -- persistence ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able data (written as ``handle.json``)."""
        return {
            "source": self.source,
            "backend": self.backend,
            "format": self.format,
            "lineage": [dataclasses.asdict(s) for s in self.lineage],
            "threads": self.threads,
            "batch_size": self.batch_size,
            "generation_kwargs": self.generation_kwargs,
            "meta": self.meta,
            "prompt_hooks": [{"technique": h.technique, **h.describe()} for h in self.prompt_hooks],
            "inference_hooks": [h.to_dict() for h in self.inference_hooks],
        }

    def save(self, path: str | Path) -> Path:
        """Write the model with its format's saver (safetensors or the format's own files, never pickle),
        the tokenizer and ``handle.json`` (which records the format that reloads it)."""
        from adapters.formats import get_format

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        get_format(self.format).save(self, path)
        self.tokenizer.save_pretrained(path)
        info = self.describe()
        for i, (hook, described) in enumerate(zip(self.prompt_hooks, info["prompt_hooks"], strict=True)):
            described["dir"] = f"{PROMPT_HOOKS_DIR}/{i}"
            hook.save(path / PROMPT_HOOKS_DIR / str(i))
        (path / HANDLE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> ModelHandle:
        """Load a handle written by :meth:`save` with the loader of its recorded format (``overrides``
        replace threads, batch_size...)."""
        from adapters.errors import ModelLoadError
        from adapters.formats import get_format

        path = Path(path)
        info = json.loads((path / HANDLE_FILE).read_text())
        info.update(overrides)
        info["lineage"] = [LineageStep(**s) for s in info.pop("lineage", [])]
        hooks = info.pop("prompt_hooks", [])
        inference = info.pop("inference_hooks", [])
        if "format" not in info:
            if info.get("meta", {}).get("loader"):
                raise ModelLoadError(f"{path} was written by an older version (no recorded format): recompute it")
            info["format"] = "torch"
        handle = get_format(info["format"]).load(path, info)
        handle.prompt_hooks = tuple(_load_prompt_hook(path, described) for described in hooks)
        if inference:
            from adapters.inference import restore_hook

            handle.inference_hooks = tuple(restore_hook(data) for data in inference)
        return handle


def _held_bytes(values: Any) -> int:
    """Bytes of the storage held by a cache layer's attributes: plain tensors, the inner tensors of quantized tensor
    subclasses, and tensors inside tuples, lists and dicts, each storage once and whole (a view holds its base);
    counters (0-d tensors) left out."""
    import torch

    from adapters.footprint import _leaf_tensors

    seen: set[int] = set()
    total = 0
    stack = list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, tuple | list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, torch.Tensor) and v.dim() > 0:
            for leaf in _leaf_tensors(v):
                storage = leaf.untyped_storage()
                if storage.nbytes() and storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


def _load_prompt_hook(path: Path, described: dict[str, Any]) -> PromptHook:
    """A prompt hook saved by :meth:`ModelHandle.save`, restored by the class of the technique that made it."""
    from adapters.errors import ModelLoadError
    from adapters.technique import get_technique

    cls = get_technique(str(described["technique"]))
    if not hasattr(cls, "load_prompt_hook") or "dir" not in described:
        raise ModelLoadError(f"{path}: {described['technique']} cannot restore the prompt hook recorded in {HANDLE_FILE}")
    hook: PromptHook = cls.load_prompt_hook(path / described["dir"], described)
    return hook
