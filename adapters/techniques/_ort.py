"""The ONNX Runtime side of ``deploy.onnxruntime``: the export wrapper, a transformers model whose
forward runs an ``onnxruntime.InferenceSession``, and the handle that measures it.

:class:`OrtCausalLM` subclasses ``PreTrainedModel`` and ``GenerationMixin`` only for their interfaces
(config, ``generate``'s decoding strategies and cache bookkeeping); it has no torch weights. Each forward
feeds the ids, mask, positions and the cached keys/values to the session and appends the new keys/values
to the transformers ``DynamicCache`` that ``generate`` passes in (so beam search can reorder it).
Imported lazily (torch at module level); the registry skips ``_`` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from adapters.architecture import EmbeddingFacts
from adapters.handle import ModelHandle

_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "disable": "ORT_DISABLE_ALL"}


def io_names(layers: int) -> tuple[list[str], list[str]]:
    """Graph input and output names: ids, mask, positions, then one key and one value per layer."""
    kv = [f"{i}.{k}" for i in range(layers) for k in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *(f"past.{n}" for n in kv)], \
        ["logits", *(f"present.{n}" for n in kv)]


def kv_shape(config: Any, batch: int, length: int) -> tuple[int, int, int, int]:
    """(batch, kv heads, length, head dim) of one cached key or value tensor."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return batch, config.num_key_value_heads, length, head_dim


class ExportWrapper(torch.nn.Module):
    """Flat tensors in and out, as the exporter needs; the cache is rebuilt inside the trace."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, ids: Any, mask: Any, pos: Any, *past: Any) -> tuple[Any, ...]:
        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        presents = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *presents)


def execution_providers(device: str, available: Sequence[str] | None = None) -> tuple[list[Any], str | None]:
    """The ONNX Runtime execution providers for a profile's ``device``, and why it falls back when it does.

    ``cuda`` / ``cuda:N`` take ``CUDAExecutionProvider`` (device ``N``) before the CPU provider where the
    installed onnxruntime has it (``onnxruntime-gpu``); otherwise the session runs on the CPU and the reason
    is returned (the suites record it with their settings).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        available: the installed providers (default: ``onnxruntime.get_available_providers()``).
    """
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"], None
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"], ("the installed onnxruntime has no CUDAExecutionProvider (install "
                                          "onnxruntime-gpu): the session runs on the CPU")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], None


def new_session(onnx_file: Path, threads: int, optimization: str, device: str = "cpu") -> Any:
    """An ORT session with ``threads`` intra-op threads and one inter-op thread, on the execution provider
    that matches ``device`` (:func:`execution_providers`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
    providers, _ = execution_providers(device)
    return ort.InferenceSession(str(onnx_file), options, providers=providers)


class OrtCausalLM(PreTrainedModel, GenerationMixin):
    """A causal LM whose forward pass is an ONNX Runtime session over an exported graph."""

    main_input_name = "input_ids"
    _supports_cache_class = True
    _supports_sdpa = True  # the attention runs inside the ONNX graph; this only satisfies config checks

    def __init__(self, config: Any, onnx_file: Path, threads: int = 1, optimization: str = "all",
                 device: str = "cpu"):
        super().__init__(config)
        self.onnx_file = Path(onnx_file)
        self.threads, self.optimization, self.target_device = threads, optimization, device
        self.session = new_session(self.onnx_file, threads, optimization, device)
        self.input_names, self.output_names = io_names(config.num_hidden_layers)
        self.eval()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def get_input_embeddings(self) -> Any:
        return None

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None,
                past_key_values: Any = None, use_cache: bool | None = None, **_: Any) -> CausalLMOutputWithPast:
        """Logits (and the extended cache) for ``input_ids`` after what ``past_key_values`` holds."""
        batch, new = input_ids.shape
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, past_len + new, dtype=torch.long)
        if position_ids is None:  # left padding: positions count real tokens only, as transformers does
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -new:]
        feed = {"input_ids": _np(input_ids), "attention_mask": _np(attention_mask), "position_ids": _np(position_ids)}
        empty = np.zeros(kv_shape(self.config, batch, 0), dtype=np.float32)
        for i, name in enumerate(self.input_names[3:]):
            layer, kind = divmod(i, 2)
            feed[name] = empty if past_len == 0 else _np(_cached(past_key_values, layer, kind))
        outputs = self.session.run(None, feed)
        logits = torch.from_numpy(outputs[0])
        if use_cache is False:
            return CausalLMOutputWithPast(logits=logits)
        cache = past_key_values if past_key_values is not None else DynamicCache(config=self.config)
        for layer in range(self.config.num_hidden_layers):
            keys, values = (torch.from_numpy(outputs[1 + 2 * layer + k][:, :, past_len:]) for k in (0, 1))
            cache.update(keys, values, layer)
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache)


def _cached(cache: Any, layer: int, kind: int) -> Any:
    entry = cache.layers[layer]
    return entry.keys if kind == 0 else entry.values


def _np(t: Any) -> Any:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.int64 if not t.is_floating_point() else np.float32))


def onnx_footprint(onnx_file: Path) -> dict[str, int]:
    """Bytes of the graph's stored initializers (the deployed weights) by element type."""
    import onnx
    from onnx import helper

    totals: dict[str, int] = {}
    for init in onnx.load(str(onnx_file)).graph.initializer:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        nbytes = int(np.prod(init.dims, dtype=np.int64)) * dtype.itemsize
        totals[str(dtype)] = totals.get(str(dtype), 0) + nbytes
    return totals


class OrtHandle(ModelHandle):
    """A handle on the ``onnxruntime`` backend: footprint from the ONNX file, threads set on the session.

    The runtime interface is :class:`ModelHandle`'s over :class:`OrtCausalLM` (its forward runs the session;
    ``generate`` is transformers'), except where the session differs from a torch model: it computes in
    float32 and has no torch embedding modules.
    """

    def activation_bytes(self) -> int:
        """Bytes of one activation or KV-cache value: 4, the session runs the exported graph in float32."""
        return 4

    @property
    def settings(self) -> dict[str, Any]:
        """:class:`ModelHandle`'s settings plus the session's execution providers (and why it fell back to the
        CPU when the profile asked for a GPU)."""
        model = self.model
        out = {**super().settings, "execution_providers": list(model.session.get_providers())}
        reason = execution_providers(model.target_device, model.session.get_providers())[1]
        if model.target_device.startswith("cuda") and reason:
            out["execution_provider_fallback"] = reason
        return out

    def on_provider(self, device: str) -> OrtHandle:
        """This handle with a session on the execution provider for ``device`` (itself when it already has it)."""
        if device == self.model.target_device:
            return self
        m = self.model
        model = OrtCausalLM(m.config, m.onnx_file, m.threads, m.optimization, device)
        return type(self)(model, self.tokenizer, source=self.source, backend=self.backend, lineage=self.lineage,
                          threads=self.threads, batch_size=self.batch_size,
                          generation_kwargs=dict(self.generation_kwargs), meta=dict(self.meta), format=self.format,
                          format_state=dict(self.format_state), prompt_hooks=self.prompt_hooks,
                          inference_hooks=self.inference_hooks)

    def embedding_facts(self) -> EmbeddingFacts:
        """How the input embedding is stored, from the config (the graph has no embedding module): tied as
        ``tie_word_embeddings`` declares, the table at the graph initializers' mean bytes per parameter."""
        from adapters.architecture import config_embedding_facts

        return config_embedding_facts(self.architecture(), sum(self.weight_footprint().values()),
                                      self.num_parameters())

    def weight_footprint(self) -> dict[str, int]:
        return onnx_footprint(self.model.onnx_file)

    def num_parameters(self) -> int:
        import onnx

        return sum(int(np.prod(i.dims, dtype=np.int64)) for i in onnx.load(str(self.model.onnx_file)).graph.initializer)
