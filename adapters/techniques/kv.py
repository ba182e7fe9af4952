"""Inference optimization: KV-cache variants for generation, weights untouched (component "Inference optimization").

- ``kv.quantized``: keys and values stored quantized, KIVI-style (Liu et al., 2024): the newest ``residual_length``
  tokens stay in full precision and are quantized together when that buffer fills. 2 and 4 bits use transformers'
  ``QuantizedCache`` on optimum-quanto (``QuantoQuantizedLayer``: asymmetric, groups of ``q_group_size`` values, a
  scale and a zero point per group, two or four values packed per byte); 8 bits, which quanto's cache does not offer,
  use :class:`Int8QuantizedLayer`: transformers' ``QuantizedLayer`` with symmetric absmax int8 over the same groups
  (quanto's grouping), in plain torch.
- ``kv.window``: StreamingLLM's attention sinks (Xiao et al., 2024): the first ``sink_tokens`` tokens and the last
  ``window`` tokens are kept, everything between is dropped, so the cache stops growing. transformers 5 removed its
  ``SinkCache``, and its ``sliding_window`` cache applies only to models whose config declares sliding-window
  layers (and keeps no sinks), so this is :class:`SinkWindowCache`, a ``Cache`` of :class:`SinkWindowLayer`
  (transformers' ``DynamicLayer`` API). Kept keys keep the positions they were rotated at (StreamingLLM re-assigns
  positions inside the cache, which matters only beyond the model's trained context); the attention mask sees the
  kept tokens as the ones just before the new ones, which is exact for causal attention over unpadded sequences.

Both are :class:`~adapters.inference.InferenceHook` runtime settings: each ``generate`` call gets a fresh cache object
(``past_key_values``), so every generation of the handle uses it (lm-eval's, the latency suite's, ``stream``), and
:meth:`~adapters.handle.ModelHandle.measured_kv_bytes` measures the bytes the cache really holds. Log-likelihood
scoring is one forward pass without a cache and is unchanged; :func:`cached_perplexity` scores text through the
cache, chunk by chunk, to measure what the cache does to quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from adapters import formats as F
from adapters.handle import ModelHandle
from adapters.inference import InferenceHook, runtime_kwargs
from adapters.technique import Applied, PathStep, Technique, TechniqueContext, technique
from adapters.techniques.runtime_opt import non_torch_hints, runtime_conflict

#: prompt tokens of the step's own KV-bytes probe (beyond the default residual length, so the quantized part shows)
PROBE_TOKENS = 256


# -- the caches ----------------------------------------------------------------------------------------------------
class Int8Groups(NamedTuple):
    """A tensor quantized to int8 by groups: the grouped int8 values, one scale per group, the original shape."""

    data: Any
    scale: Any
    shape: Any


def _int8_layer_class() -> type:
    from optimum.quanto.tensor.grouped import group, ungroup
    from transformers.cache_utils import QuantizedLayer

    class Int8QuantizedLayer(QuantizedLayer):  # type: ignore[misc]
        """transformers' ``QuantizedLayer`` (residual buffer, requantization) storing symmetric absmax int8 groups of
        ``q_group_size`` values (quanto's grouping along ``axis``)."""

        def _quantize(self, tensor: Any, axis: int) -> Int8Groups:
            import torch

            grouped = group(tensor, axis=axis, group_size=self.q_group_size)
            dim = 1 if axis == 0 else 0
            scale = grouped.abs().amax(dim=dim, keepdim=True).clamp(min=1e-8) / 127
            data = torch.round(grouped / scale).clamp(-127, 127).to(torch.int8)
            return Int8Groups(data, scale.to(tensor.dtype), tensor.shape)

        def _dequantize(self, q: Int8Groups) -> Any:
            return ungroup(q.data.to(q.scale.dtype) * q.scale, axis=self.axis_key, orig_shape=q.shape)

    return Int8QuantizedLayer


def quantized_cache(model: Any, nbits: int, residual_length: int, q_group_size: int) -> Any:
    """A fresh quantized KV cache for ``model`` (see the module docstring): groups of ``q_group_size`` consecutive values
    (quanto's axis 0) of each token's keys and values."""
    from transformers.cache_utils import Cache, QuantizedCache

    config = model.config.get_text_config(decoder=True)
    if nbits in (2, 4):
        return QuantizedCache("quanto", config, nbits=nbits, axis_key=0, axis_value=0, q_group_size=q_group_size,
                              residual_length=residual_length)
    layer = _int8_layer_class()
    return Cache(layers=[layer(nbits, 0, 0, q_group_size, residual_length)
                         for _ in range(config.num_hidden_layers)])


def _sink_window_layer_class() -> type:
    import torch
    from transformers.cache_utils import DynamicLayer

    class SinkWindowLayer(DynamicLayer):  # type: ignore[misc]
        """Keeps the first ``sink_tokens`` and the last ``window`` tokens' keys and values (StreamingLLM).

        A forward pass attends to the kept tokens and all of its own new ones; the new ones are then trimmed. The
        mask is told the kept tokens sit just before the new ones (``get_mask_sizes``), which keeps causal
        attention exact among the new tokens and lets each see every kept one."""

        is_croppable = False

        def __init__(self, sink_tokens: int, window: int):
            super().__init__()
            self.sink_tokens, self.window = sink_tokens, window
            self.cumulative_length = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.cumulative_length += key_states.shape[-2]
            keys = torch.cat([self.keys, key_states], dim=-2)
            values = torch.cat([self.values, value_states], dim=-2)
            if keys.shape[-2] > self.sink_tokens + self.window:
                s, w = self.sink_tokens, self.window
                self.keys = torch.cat([keys[..., :s, :], keys[..., -w:, :]], dim=-2)
                self.values = torch.cat([values[..., :s, :], values[..., -w:, :]], dim=-2)
            else:
                self.keys, self.values = keys, values
            return keys, values

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            held = self.keys.shape[-2] if self.is_initialized and self.keys.numel() else 0
            return held + query_length, self.cumulative_length - held

        def get_seq_length(self) -> int:
            return self.cumulative_length

        def get_max_length(self) -> int:
            return self.sink_tokens + self.window

    return SinkWindowLayer


def sink_window_cache(model: Any, sink_tokens: int, window: int) -> Any:
    """A fresh sink + window KV cache for ``model``."""
    from transformers.cache_utils import Cache

    layer = _sink_window_layer_class()
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[layer(sink_tokens, window) for _ in range(layers)])


# -- the techniques --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizedKVParams:
    """Params of ``kv.quantized``.

    Attributes:
        nbits: 2 or 4 (optimum-quanto, asymmetric with zero points) or 8 (symmetric absmax int8).
        residual_length: newest tokens kept in full precision before they are quantized (>= 1).
        q_group_size: values per quantization group (one scale, and zero point below 8 bits, per group); it must divide
            the head width; None: the head width (one group per head and token).
        axis: 0, groups of consecutive values of a token. (-1, quanto's groups of one channel across tokens, KIVI's
            keys, is refused: transformers quantizes the whole cache at once, and its token count rarely divides by
            the group, which quanto then rejects mid-generation.)
    """

    nbits: Literal[2, 4, 8] = 4
    residual_length: int = 128
    q_group_size: int | None = None
    axis: int = 0

    def __post_init__(self) -> None:
        if self.residual_length < 1:
            raise ValueError(f"residual_length must be >= 1, got {self.residual_length}")
        if self.q_group_size is not None and self.q_group_size < 2:
            raise ValueError(f"q_group_size must be >= 2 or null (the head width), got {self.q_group_size}")
        if self.axis != 0:
            raise ValueError(f"axis must be 0 (groups of consecutive values of a token), got {self.axis}: groups "
                             "across tokens need the token count to divide by the group, which a growing cache breaks")


def group_size_for(model: Any, q_group_size: int | None) -> int:
    """The quantization group of ``model``'s cache: ``q_group_size``, or the head width when None.

    Raises:
        ValueError: the group does not divide the head width (a cache of any length must split into whole groups;
            the cache is laid out heads x tokens x head width).
    """
    from adapters.architecture import Architecture

    width = Architecture.from_config(model.config).head_dim
    size = q_group_size or width
    if width % size:
        raise ValueError(f"kv.quantized: q_group_size {size} must divide the head width {width} (a cache of any length "
                         f"must split into whole groups); allowed: a divisor of {width}, or null (the head width)")
    return size


@dataclass(frozen=True)
class QuantizedKVHook(InferenceHook):
    """A fresh quantized KV cache for every generation (see :class:`QuantizedKVParams`)."""

    technique: ClassVar[str] = "kv.quantized"
    phase: ClassVar[int] = 3
    nbits: int = 4
    residual_length: int = 128
    q_group_size: int | None = None

    def generate_kwargs(self, handle: ModelHandle) -> dict[str, Any]:
        size = group_size_for(handle.model, self.q_group_size)
        return {"past_key_values": quantized_cache(handle.model, self.nbits, self.residual_length, size)}


@dataclass(frozen=True)
class WindowKVParams:
    """Params of ``kv.window``.

    Attributes:
        window: most recent tokens kept (>= 1).
        sink_tokens: first tokens always kept (StreamingLLM's attention sinks; 0: a plain sliding window).
    """

    window: int = 1024
    sink_tokens: int = 4

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 token, got {self.window}")
        if self.sink_tokens < 0:
            raise ValueError(f"sink_tokens must be >= 0, got {self.sink_tokens}")


@dataclass(frozen=True)
class WindowKVHook(InferenceHook):
    """A fresh sink + window KV cache for every generation (see :class:`WindowKVParams`)."""

    technique: ClassVar[str] = "kv.window"
    phase: ClassVar[int] = 3
    window: int = 1024
    sink_tokens: int = 4

    def generate_kwargs(self, handle: ModelHandle) -> dict[str, Any]:
        return {"past_key_values": sink_window_cache(handle.model, self.sink_tokens, self.window)}


@dataclass(frozen=True)
class KVReport:
    """The KV bytes the step's cache holds, against the model's default cache, after a fixed prompt.

    Attributes:
        cache: what the cache is.
        probe_tokens: prompt tokens of the probe (one prefill).
        kv_bytes_per_token_default: bytes per prompt token the default (dense) cache holds.
        kv_bytes_per_token: bytes per prompt token this cache holds.
        ratio: ``kv_bytes_per_token / kv_bytes_per_token_default``.
    """

    cache: str
    probe_tokens: int
    kv_bytes_per_token_default: float | None
    kv_bytes_per_token: float | None
    ratio: float | None


def _report(handle: ModelHandle, out: ModelHandle, cache: str, tokens: int) -> KVReport:
    from adapters.techniques.runtime_opt import probe_prompts

    ids = [probe_prompts(handle, 1, tokens)[0]]
    while len(ids[0]) < tokens:  # a short corpus line: repeat it
        ids = [(ids[0] * 2)[:tokens]]
    dense, held = handle.measured_kv_bytes(ids), out.measured_kv_bytes(ids)
    return KVReport(cache, len(ids[0]), dense, held, held / dense if dense and held is not None else None)


class _KVTechnique(Technique):
    requires = ("torch", "transformers")
    inference_time = True
    uses_seed = False
    accepts = F.TORCH_BACKEND

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        return runtime_conflict(cls, params, steps, index)


@technique("kv.quantized")
class QuantizedKV(_KVTechnique):
    """KV-cache quantization (KIVI-style, int2/int4 via optimum-quanto, int8 absmax) with a full-precision residual."""

    Params = QuantizedKVParams
    Hook = QuantizedKVHook
    requires = ("torch", "transformers", "optimum-quanto")
    hints = non_torch_hints("kv.quantized")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        size = group_size_for(handle.model, p.q_group_size)
        hook = QuantizedKVHook(p.nbits, p.residual_length, p.q_group_size)
        out = handle.derive(inference_hooks=(*handle.inference_hooks, hook))
        cache = (f"int{p.nbits} ({'optimum-quanto' if p.nbits < 8 else 'absmax int8'}), groups of {size} consecutive "
                 f"values per token, newest {p.residual_length} tokens in full precision")
        return Applied(out, _report(handle, out, cache, PROBE_TOKENS))


@technique("kv.window")
class WindowKV(_KVTechnique):
    """Attention-sink + sliding-window KV cache (StreamingLLM): first tokens and a recent window kept, bounded memory."""

    Params = WindowKVParams
    Hook = WindowKVHook
    hints = non_torch_hints("kv.window")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        hook = WindowKVHook(p.window, p.sink_tokens)
        out = handle.derive(inference_hooks=(*handle.inference_hooks, hook))
        tokens = max(PROBE_TOKENS, p.sink_tokens + p.window + 64)
        return Applied(out, _report(handle, out, f"{p.sink_tokens} sink tokens + last {p.window} tokens", tokens))


# -- quality through the cache ---------------------------------------------------------------------------------------
class CachedPerplexity(NamedTuple):
    """Perplexity of texts scored through a KV cache: ``exp(nll / tokens)`` over ``tokens`` predicted tokens."""

    perplexity: float
    nll: float
    tokens: int


def cached_perplexity(handle: ModelHandle, token_lists: Sequence[Sequence[int]], chunk: int = 32) -> CachedPerplexity:
    """Perplexity of each token list fed ``chunk`` tokens at a time through the cache the handle generates with (its
    hooks' ``past_key_values``, else the model's default cache), every token predicted from the cached keys and
    values of the tokens before its chunk: what a quantized or windowed cache does to quality, which one-pass
    log-likelihood scoring (no cache) does not see. ``chunk`` 1 is generation's own condition (slowest).

    Raises:
        ValueError: ``chunk`` < 1, or a token list shorter than 2.
    """
    import torch

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    handle.activate()
    nll, count = 0.0, 0
    for tokens in token_lists:
        if len(tokens) < 2:
            raise ValueError(f"a text of {len(tokens)} tokens has nothing to predict")
        ids = handle._ids([list(tokens)])
        cache = runtime_kwargs(handle).get("past_key_values")
        with torch.no_grad():
            for start in range(0, ids.shape[1] - 1, chunk):
                part = ids[:, start: start + chunk]
                out = handle.model(input_ids=part, use_cache=True,
                                   **({"past_key_values": cache} if cache is not None else {}))
                cache = out.past_key_values
                targets = ids[:, start + 1: start + 1 + part.shape[1]]
                logp = torch.log_softmax(out.logits[:, : targets.shape[1]].float(), dim=-1)
                nll -= float(logp.gather(-1, targets.unsqueeze(-1)).sum())
                count += int(targets.numel())
    return CachedPerplexity(math.exp(nll / count), nll, count)
