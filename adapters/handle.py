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
from typing import Any, NamedTuple

HANDLE_FILE = "handle.json"


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
    """

    technique: str
    version: str = "1"
    params: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    input_format: str | None = None
    output_format: str | None = None
    conversion: str | None = None
    report: dict[str, Any] | None = None


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
        )
        kwargs.update(changes)
        tokenizer = kwargs.pop("tokenizer", self.tokenizer)
        new_model = self.model if model is None else model
        lineage = (*self.lineage, step) if step is not None else self.lineage
        return type(self)(new_model, tokenizer, lineage=lineage, **kwargs)

    def activate(self) -> None:
        """Apply this handle's runtime settings (thread count) to the process."""
        from adapters.runtime import set_threads

        set_threads(self.threads)

    @property
    def settings(self) -> dict[str, Any]:
        """The runtime settings to record with every measurement."""
        return {
            "backend": self.backend,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "dtype": str(getattr(self.model, "dtype", "")).replace("torch.", ""),
            "generation_kwargs": self.generation_kwargs,
        }

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
        ``max_new_tokens`` so latency runs produce a fixed number of tokens.
        """
        import torch
        from transformers.generation.streamers import BaseStreamer

        self.activate()
        if isinstance(prompt, str):
            input_ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        else:
            input_ids = torch.tensor([list(prompt)])
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

        gen = {**self.generation_kwargs, **kwargs}
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
        }

    def save(self, path: str | Path) -> Path:
        """Write the model with its format's saver (safetensors or the format's own files, never pickle),
        the tokenizer and ``handle.json`` (which records the format that reloads it)."""
        from adapters.formats import get_format

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        get_format(self.format).save(self, path)
        self.tokenizer.save_pretrained(path)
        (path / HANDLE_FILE).write_text(json.dumps(self.describe(), indent=2, sort_keys=True, default=str))
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
        if "format" not in info:
            if info.get("meta", {}).get("loader"):
                raise ModelLoadError(f"{path} was written by an older version (no recorded format): recompute it")
            info["format"] = "torch"
        return get_format(info["format"]).load(path, info)
