"""Quantization: int8 weights with int8 compute, and round-to-nearest weight-only int8/int4.

``quant.int8`` is PyTorch's dynamic quantization (Jacob et al., 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference"): every decoder linear's weights are
stored as int8 (symmetric, per output channel by default) and each matmul runs as an int8 GEMM (fbgemm
on x86) on activations quantized per batch at run time. On this CPU it decodes ~1.7x faster than fp32.

``quant.rtn`` is round-to-nearest weight-only quantization with a group size (as in the GPTQ/AWQ
papers' RTN baseline), through optimum-quanto: weights int8 or int4 in groups of ``group_size`` input
columns, dequantized on the fly (a memory saving and a quality effect; no speed gain on CPU).

Neither module type survives ``save_pretrained``, so each has its own artifact format
(``torch-int8-dynamic``, ``quanto``) whose saver writes the integer weights and scales as safetensors and
whose loader rebuilds the modules (low-rank pairs included: the structure is saved with them).
Decoder blocks that share weights (``init.scratch`` layer sharing) are quantized once and saved once: a
shared module's tensors are stored under its first name only (:func:`adapters.footprint.unique_state_dict`), and the loader
re-shares the blocks from the stored keys before loading (:func:`adapters.sources.restore_block_sharing`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters import formats as F
from adapters.errors import MissingDependencyError, ModelLoadError, UsageError
from adapters.footprint import unique_state_dict
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import copied_model, decoder_linears

QWEIGHTS = "quantized.safetensors"
INT8_FILE = "int8.json"
QUANTO_FILE = "quanto.json"
#: what a quantizer accepts: float models (quantize once; a quantized model is not quantized again)
QUANTIZER_ACCEPTS = F.FLOAT_TORCH
QUANTIZER_HINTS = {**{f: "the model is already quantized: quantize once (put this step instead of the earlier "
                         "quantizer, or before it)" for f in F.QUANTIZED_TORCH},
                   F.ONNX: "quantize before deploy.onnxruntime, or use deploy.onnxruntime(quantize: int8)"}


@dataclass(frozen=True)
class QuantReport:
    """What a quantization step did.

    Attributes:
        layers: linears quantized.
        bits: weight bits.
        group_size: input columns per scale (None: one scale per output channel).
        granularity: how scales were chosen.
    """

    layers: int
    bits: int
    group_size: int | None
    granularity: str


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
    uses_seed = False
    accepts = QUANTIZER_ACCEPTS
    produces = F.TORCH_INT8
    hints = QUANTIZER_HINTS

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "qnnpack" not in torch.backends.quantized.supported_engines:
            raise MissingDependencyError("torch (with fbgemm/qnnpack)", "quant.int8")
        handle.activate()
        model = copied_model(handle)
        names = list(decoder_linears(model, self.params.targets))
        _quantize_int8(model, names, self.params.granularity)
        return Applied(handle.derive(model=model), QuantReport(len(names), 8, None, self.params.granularity))


def int8_layers(model: Any) -> dict[str, Any]:
    """Every dynamic int8 linear of the model by qualified name."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {name: mod for name, mod in model.named_modules() if isinstance(mod, DynamicLinear)}


def save_int8(handle: ModelHandle, path: Path) -> None:
    """int8 weights, scales and zero points of every dynamic int8 linear, the float rest and the structure."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    layers = int8_layers(handle.model)
    for name, mod in layers.items():
        w = mod.weight()
        tensors[f"{name}.int8"] = w.int_repr().contiguous()
        if w.qscheme() in _per_channel_schemes():
            tensors[f"{name}.scales"] = w.q_per_channel_scales().contiguous()
            tensors[f"{name}.zero_points"] = w.q_per_channel_zero_points().contiguous()
        else:
            tensors[f"{name}.scales"] = torch.tensor([w.q_scale()], dtype=torch.float64)
            tensors[f"{name}.zero_points"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        if mod.bias() is not None:
            tensors[f"{name}.bias"] = mod.bias().detach().contiguous()
    save_file(tensors, str(path / QWEIGHTS))
    (path / INT8_FILE).write_text(json.dumps({"layers": sorted(layers)}))
    _save_rest(handle, path, set(layers))
    F.write_structure(handle.model, path)


def load_int8(path: Path, info: dict[str, Any]) -> ModelHandle:
    import torch
    from safetensors.torch import load_file

    model, tokenizer = _load_rest(path)
    names = json.loads((Path(path) / INT8_FILE).read_text())["layers"]
    _quantize_int8(model, names, "per-channel")  # the module type; weights and scales are set next
    q = load_file(str(Path(path) / QWEIGHTS))
    for name in names:
        ints, scales, zps = q[f"{name}.int8"], q[f"{name}.scales"], q[f"{name}.zero_points"]
        if scales.numel() == ints.shape[0] and ints.shape[0] > 1:
            w = torch._make_per_channel_quantized_tensor(ints, scales, zps, 0)
        else:
            w = torch._make_per_tensor_quantized_tensor(ints, float(scales[0]), int(zps[0]))
        model.get_submodule(name).set_weight_bias(w, q.get(f"{name}.bias"))
    return ModelHandle(model, tokenizer, **info)


def dequantize_int8(model: Any) -> Any:
    """A float copy: every dynamic int8 linear becomes an ``nn.Linear`` holding its dequantized weights."""
    import torch
    from torch import nn

    from adapters.lowrank import replace_module

    out = copy.deepcopy(model)
    for name, mod in int8_layers(out).items():
        w = mod.weight().dequantize()
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias() is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if mod.bias() is not None:
                lin.bias.copy_(mod.bias())
        replace_module(out, name, lin)
    return out


F.register_format(F.ArtifactFormat(F.TORCH_INT8, "PyTorch dynamic int8 linears (int8 weights + scales, int8 GEMMs)",
                                   "torch", save_int8, load_int8, dequantize_int8))


def _per_channel_schemes() -> tuple[Any, ...]:
    import torch

    return (torch.per_channel_affine, torch.per_channel_symmetric)


def _save_rest(handle: ModelHandle, path: Path, skip: set[str]) -> None:
    """The non-quantized parameters (embeddings, norms, lm_head) and the config."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in unique_state_dict(handle.model).items()
             if hasattr(v, "is_quantized") and not v.is_quantized and not any(k.startswith(s + ".") for s in skip)}
    if getattr(handle.model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(path / "rest.safetensors"))
    handle.model.config.save_pretrained(path)


def _load_rest(path: Path) -> tuple[Any, Any]:
    from safetensors.torch import load_file

    model = F.empty_model(path)
    _, unexpected = model.load_state_dict(load_file(str(Path(path) / "rest.safetensors")), strict=False)
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights {unexpected[:3]}")
    model.tie_weights()
    model.eval()
    return model, F.tokenizer_of(path)


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
    uses_seed = False
    accepts = QUANTIZER_ACCEPTS
    produces = F.QUANTO
    hints = QUANTIZER_HINTS

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        quanto = _quanto()
        handle.activate()
        model = copied_model(handle)
        names = quanto_targets(model, self.params, self.name)
        _quanto_quantize(quanto, model, names, self.params.bits, self.params.group_size)
        group = self.params.group_size if self.params.bits == 4 else None
        granularity = "per-group" if group else "per-channel"
        return Applied(handle.derive(model=model), QuantReport(len(names), self.params.bits, group, granularity))


def quanto_targets(model: Any, params: RTNParams, technique_name: str) -> list[str]:
    """The decoder linears ``params.targets`` names, checked: an int4 group size must divide their input widths."""
    names = list(decoder_linears(model, params.targets))
    for name in names if params.bits == 4 else ():
        lin = model.get_submodule(name)
        if lin.in_features % params.group_size:
            raise UsageError(f"{technique_name}: group_size {params.group_size} does not divide the "
                             f"{lin.in_features} input columns of {name}")
    return names


def quanto_layers(model: Any) -> dict[str, Any]:
    """Every quanto ``QLinear`` of the model by qualified name."""
    from optimum.quanto import QLinear

    return {name: mod for name, mod in model.named_modules() if isinstance(mod, QLinear)}


def save_quanto(handle: ModelHandle, path: Path) -> None:
    """quanto's state dict (integer weights and scales) as safetensors, each QLinear's bits and group size,
    the config and the structure."""
    from safetensors.torch import save_file

    _quanto()
    state = {k: v.contiguous() for k, v in unique_state_dict(handle.model).items()}
    if getattr(handle.model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(path / QWEIGHTS))
    layers = {name: {"bits": 4 if "4" in str(mod.weight_qtype) else 8, "group_size": mod.weight_group_size}
              for name, mod in quanto_layers(handle.model).items()}
    (path / QUANTO_FILE).write_text(json.dumps(layers, indent=1, sort_keys=True))
    handle.model.config.save_pretrained(path)
    F.write_structure(handle.model, path)


def load_quanto(path: Path, info: dict[str, Any]) -> ModelHandle:
    from safetensors.torch import load_file

    quanto = _quanto()
    model = F.empty_model(path)
    # Rebuild the same QLinears (same bits and group size: quanto's requantize would pick its own
    # group size), then load the stored integer weights and scales into them.
    for name, spec in json.loads((Path(path) / QUANTO_FILE).read_text()).items():
        _quanto_quantize(quanto, model, [name], spec["bits"], spec["group_size"] or 64)
    _, unexpected = model.load_state_dict(load_file(str(Path(path) / QWEIGHTS)), strict=False)
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected quantized weights {unexpected[:3]}")
    model.tie_weights()
    model.eval()
    return ModelHandle(model, F.tokenizer_of(path), **info)


def dequantize_quanto(model: Any) -> Any:
    """A float copy: every quanto QLinear becomes an ``nn.Linear`` holding its dequantized weights (the
    quantized tensors refuse ``deepcopy``, so the copy is rebuilt module by module)."""
    import torch
    from torch import nn

    from adapters.lowrank import replace_module

    layers = quanto_layers(model)
    floats = {}
    for name, mod in layers.items():
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(mod.qweight.dequantize())
            if mod.bias is not None:
                lin.bias.copy_(mod.bias.detach())
        floats[name] = lin
    originals = {name: model.get_submodule(name) for name in layers}
    for name, lin in floats.items():  # swap in float linears, copy, swap the originals back
        replace_module(model, name, lin)
    try:
        out = copy.deepcopy(model)
    finally:
        for name, mod in originals.items():
            replace_module(model, name, mod)
    return out


F.register_format(F.ArtifactFormat(F.QUANTO, "optimum-quanto weight-only int8/int4 linears (bits and group per layer)",
                                   "torch", save_quanto, load_quanto, dequantize_quanto))


def _quanto() -> Any:
    try:
        import optimum.quanto as quanto
    except ImportError as exc:
        raise MissingDependencyError("optimum-quanto", "quant.rtn", "pip install -e '.[quant]'") from exc
    return quanto


def _quanto_quantize(quanto: Any, model: Any, names: list[str], bits: int, group_size: int, freeze: bool = True) -> None:
    """Replace each named linear by a quanto ``QLinear`` (int8: per output channel; int4: groups): frozen (integer
    weights), or not (float weights quantized on the fly in every forward, with a straight-through gradient:
    quanto's quantization-aware training, which ``freeze()`` ends with exactly the weights it trained against)."""
    weights = quanto.qint8 if bits == 8 else quanto.qint4
    for name in names:
        qlin = quanto.QLinear.from_module(model.get_submodule(name), weights=weights)
        if bits == 4:
            qlin.weight_group_size = group_size  # quanto would pick 128 -> 96 for 576 columns by itself
        if freeze:
            qlin.freeze()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, qlin)
