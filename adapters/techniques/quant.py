"""Quantization: int8 weights with int8 compute, and round-to-nearest weight-only int8/int4.

``quant.int8`` is PyTorch's dynamic quantization (Jacob et al., 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference"): every decoder linear's weights are
stored as int8 (symmetric, per output channel by default) and each matmul runs as an int8 GEMM (fbgemm
on x86) on activations quantized per batch at run time. On this CPU it decodes ~1.7x faster than fp32.

``quant.rtn`` is round-to-nearest weight-only quantization with a group size (as in the GPTQ/AWQ
papers' RTN baseline), through optimum-quanto: weights int8 or int4 in groups of ``group_size`` input
columns, dequantized on the fly (a memory saving and a quality effect; no speed gain on CPU).

Neither module type survives ``save_pretrained``, so both write their integer weights and scales as
safetensors themselves (``save_artifact``) and rebuild the modules when loading (``load_artifact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters.errors import MissingDependencyError, ModelLoadError
from adapters.handle import ModelHandle
from adapters.technique import Technique, TechniqueContext, technique
from adapters.techniques._training import copied_model, decoder_linears, lineage_step

QWEIGHTS = "quantized.safetensors"


@dataclass(frozen=True)
class Int8Params:
    """Params of ``quant.int8``.

    Attributes:
        granularity: weight scales ``per-channel`` (one per output row; default, more accurate) or
            ``per-tensor``.
        targets: decoder linear names to quantize (suffixes such as ``mlp``); None: all of them. The
            embeddings and ``lm_head`` stay fp32.
    """

    granularity: Literal["per-channel", "per-tensor"] = "per-channel"
    targets: tuple[str, ...] | None = None


def _dynamic_qconfig(granularity: str) -> Any:
    import torch.ao.quantization as tq

    return tq.per_channel_dynamic_qconfig if granularity == "per-channel" else tq.default_dynamic_qconfig


def _quantize_int8(model: Any, names: list[str], granularity: str) -> Any:
    import torch
    import torch.ao.quantization as tq

    spec = dict.fromkeys(names, _dynamic_qconfig(granularity))
    return tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


@technique("quant.int8")
class Int8Dynamic(Technique):
    """Int8 weights with int8 GEMMs (PyTorch dynamic quantization, fbgemm; Jacob et al., 2018)."""

    Params = Int8Params
    requires = ("torch",)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        import torch

        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "qnnpack" not in torch.backends.quantized.supported_engines:
            raise MissingDependencyError("torch (with fbgemm/qnnpack)", "quant.int8")
        handle.activate()
        model = copied_model(handle)
        names = list(decoder_linears(model, self.params.targets))
        _quantize_int8(model, names, self.params.granularity)
        meta = {**handle.meta, "loader": self.name, "int8_layers": names,
                "int8_granularity": self.params.granularity}
        return handle.derive(lineage_step(self), model=model, meta=meta)

    @classmethod
    def save_artifact(cls, handle: ModelHandle, path: Path) -> None:
        """int8 weights, scales and zero points of every quantized linear, plus the fp32 rest."""
        from safetensors.torch import save_file

        tensors: dict[str, Any] = {}
        for name in handle.meta["int8_layers"]:
            w = handle.model.get_submodule(name).weight()
            tensors[f"{name}.int8"] = w.int_repr().contiguous()
            if w.qscheme() in _per_channel_schemes():
                tensors[f"{name}.scales"] = w.q_per_channel_scales().contiguous()
                tensors[f"{name}.zero_points"] = w.q_per_channel_zero_points().contiguous()
            else:
                import torch

                tensors[f"{name}.scales"] = torch.tensor([w.q_scale()], dtype=torch.float64)
                tensors[f"{name}.zero_points"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
            bias = handle.model.get_submodule(name).bias()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
        save_file(tensors, str(path / QWEIGHTS))
        _save_rest(handle, path, set(handle.meta["int8_layers"]))

    @classmethod
    def load_artifact(cls, path: Path, info: dict[str, Any], lineage: list[Any]) -> ModelHandle:
        import torch
        from safetensors.torch import load_file

        meta = info.get("meta", {})
        model, tokenizer = _load_rest(path)
        names = meta["int8_layers"]
        _quantize_int8(model, names, meta.get("int8_granularity", "per-channel"))
        q = load_file(str(Path(path) / QWEIGHTS))
        for name in names:
            ints, scales, zps = q[f"{name}.int8"], q[f"{name}.scales"], q[f"{name}.zero_points"]
            if scales.numel() == ints.shape[0] and ints.shape[0] > 1:
                w = torch._make_per_channel_quantized_tensor(ints, scales, zps, 0)
            else:
                w = torch._make_per_tensor_quantized_tensor(ints, float(scales[0]), int(zps[0]))
            model.get_submodule(name).set_weight_bias(w, q.get(f"{name}.bias"))
        return ModelHandle(model, tokenizer, lineage=lineage, **info)


def _per_channel_schemes() -> tuple[Any, ...]:
    import torch

    return (torch.per_channel_affine, torch.per_channel_symmetric)


def _save_rest(handle: ModelHandle, path: Path, skip: set[str]) -> None:
    """The non-quantized parameters (embeddings, norms, lm_head) and the config."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in handle.model.state_dict().items()
             if hasattr(v, "is_quantized") and not v.is_quantized and not any(k.startswith(s + ".") for s in skip)}
    if getattr(handle.model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(path / "rest.safetensors"))
    handle.model.config.save_pretrained(path)


def _load_rest(path: Path) -> tuple[Any, Any]:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
    missing, unexpected = model.load_state_dict(load_file(str(Path(path) / "rest.safetensors")), strict=False)
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights {unexpected[:3]}")
    model.tie_weights()
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


@dataclass(frozen=True)
class RTNParams:
    """Params of ``quant.rtn``.

    Attributes:
        bits: 8 (one scale per output channel) or 4 (one scale per group of input columns);
            weights only, activations stay fp32.
        group_size: int4: input columns sharing one scale (64 divides SmolLM2's 576 and 1536).
        targets: decoder linear names to quantize; None: all of them.
    """

    bits: Literal[8, 4] = 4
    group_size: int = 64
    targets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


@technique("quant.rtn")
class RoundToNearest(Technique):
    """Round-to-nearest weight-only int8/int4 quantization with group-wise scales (optimum-quanto)."""

    Params = RTNParams
    requires = ("optimum-quanto", "torch")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        quanto = _quanto()
        handle.activate()
        model = copied_model(handle)
        names = list(decoder_linears(model, self.params.targets))
        for name in names if self.params.bits == 4 else ():
            lin = model.get_submodule(name)
            if lin.in_features % self.params.group_size:
                raise ValueError(f"quant.rtn: group_size {self.params.group_size} does not divide the "
                                 f"{lin.in_features} input columns of {name}")
        _quanto_quantize(quanto, model, names, self.params.bits, self.params.group_size)
        meta = {**handle.meta, "loader": self.name, "rtn_layers": names, "rtn_bits": self.params.bits,
                "rtn_group_size": self.params.group_size}
        return handle.derive(lineage_step(self), model=model, meta=meta)

    @classmethod
    def save_artifact(cls, handle: ModelHandle, path: Path) -> None:
        """quanto's state dict (integer weights and scales) as safetensors, plus its quantization map."""
        import json

        from safetensors.torch import save_file

        quanto = _quanto()
        state = {k: v.contiguous() for k, v in handle.model.state_dict().items()}
        if getattr(handle.model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(path / QWEIGHTS))
        (path / "quantization_map.json").write_text(json.dumps(quanto.quantization_map(handle.model)))
        handle.model.config.save_pretrained(path)

    @classmethod
    def load_artifact(cls, path: Path, info: dict[str, Any], lineage: list[Any]) -> ModelHandle:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        meta = info.get("meta", {})
        config = AutoConfig.from_pretrained(path)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
        # Rebuild the same QLinears (same bits and group size: quanto's requantize would pick its own
        # group size), then load the stored integer weights and scales into them.
        _quanto_quantize(_quanto(), model, meta["rtn_layers"], meta["rtn_bits"], meta["rtn_group_size"])
        _, unexpected = model.load_state_dict(load_file(str(Path(path) / QWEIGHTS)), strict=False)
        if unexpected:
            raise ModelLoadError(f"{path}: unexpected quantized weights {unexpected[:3]}")
        model.tie_weights()
        model.eval()
        return ModelHandle(model, AutoTokenizer.from_pretrained(path), lineage=lineage, **info)


def _quanto() -> Any:
    try:
        import optimum.quanto as quanto
    except ImportError as exc:
        raise MissingDependencyError("optimum-quanto", "quant.rtn", "pip install -e '.[quant]'") from exc
    return quanto


def _quanto_quantize(quanto: Any, model: Any, names: list[str], bits: int, group_size: int) -> None:
    """Replace each named linear by a frozen quanto ``QLinear`` (int8: per output channel; int4: groups)."""
    weights = quanto.qint8 if bits == 8 else quanto.qint4
    for name in names:
        qlin = quanto.QLinear.from_module(model.get_submodule(name), weights=weights)
        if bits == 4:
            qlin.weight_group_size = group_size  # quanto would pick 128 -> 96 for 576 columns by itself
        qlin.freeze()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, qlin)
