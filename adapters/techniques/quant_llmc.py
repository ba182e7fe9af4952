"""What every llmcompressor technique shares: ``oneshot`` on a copy of the model with calibration data and the CPU
workarounds, the group-wise integer weight scheme, and the ``compressed-tensors`` artifact format.

``quant.awq``, ``quant.gptq``, ``quant.smoothquant`` and ``prune.sparsegpt`` run a recipe of llmcompressor modifiers
through :func:`calibrated_oneshot`: it copies the model, hands oneshot ``n_samples`` token blocks of ``seq_len`` from
the step's dataset (or the seeded synthetic corpus), and works around two things of CPU-only torch:
``IntermediatesCache.pin_memory`` needs an accelerator (made a no-op while the call runs), and oneshot re-reads the
config from ``name_or_path`` to refuse already-quantized checkpoints (a copy of the config is written for it). The
library's progress bars and warnings are kept off the console while it runs.

A weight quantizer's result is written as a compressed-tensors checkpoint (:func:`compressed_handle`): integer weights
of 1 to 8 bits packed into int32 (``pack-quantized``: 8 int4, or 32/3 int3, or 16 int2 values a word, a value may
straddle two words) with a scale (and zero point, asymmetric) per group, or int8 weights as they are (``int-quantized``,
W8A8). transformers reloads it *dequantized to fp32 linears*: the quality effect is real, there is no speed or
in-memory gain on this backend (activation quantization, where the scheme has one, is not simulated on reload).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from adapters import formats as F
from adapters.errors import MissingDependencyError, UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique
from adapters.techniques._training import copied_model, decoder_linears, seeded

if TYPE_CHECKING:
    from adapters.technique import TechniqueContext

#: how a reloaded compressed-tensors model runs here
DEQUANTIZED_RUNTIME = "dequantized fp32 linears (compressed-tensors checkpoint on disk)"


class Calibration(Protocol):
    """The calibration fields of a technique's params."""

    dataset: str | None
    n_samples: int
    seq_len: int


@dataclass(frozen=True)
class CalibratedWeightParams:
    """Params every calibrated weight quantizer shares (``quant.awq``, ``quant.gptq``).

    Attributes:
        bits: weight bits (the allowed widths are the technique's ``BITS``).
        group_size: input columns sharing one scale (and zero point); must divide every quantized linear's input
            columns (64 for SmolLM2's 576; 128 does not).
        symmetric: symmetric quantization (no zero point).
        n_samples: calibration sequences.
        seq_len: tokens per calibration sequence.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
    """

    BITS: ClassVar[tuple[int, ...]] = (4, 8)

    bits: int = 4
    group_size: int = 64
    symmetric: bool = False
    n_samples: int = 16
    seq_len: int = 256
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.bits not in self.BITS:
            raise ValueError(f"bits must be one of {', '.join(map(str, self.BITS))}, got {self.bits}")
        for name in ("group_size", "n_samples", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def require_llmcompressor(technique: str) -> Any:
    """The llmcompressor package, or MissingDependencyError naming the install command."""
    try:
        import llmcompressor
    except ImportError as exc:
        raise MissingDependencyError("llmcompressor", technique, "pip install -e '.[quant]'") from exc
    return llmcompressor


@contextlib.contextmanager
def cpu_intermediates() -> Iterator[None]:
    """Make ``IntermediatesCache.pin_memory`` a no-op while llmcompressor runs (CPU-only torch)."""
    import torch
    from llmcompressor.pipelines import cache

    original = cache.IntermediatesCache.__dict__.get("pin_memory")
    if torch.cuda.is_available() or original is None:
        yield
        return
    cache.IntermediatesCache.pin_memory = lambda *args, **kwargs: None
    try:
        yield
    finally:
        cache.IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """Keep llmcompressor's and compressed-tensors' progress bars (tqdm, shown unconditionally) and their advisory
    warnings off the console; an exception still propagates with its own message."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=r"Attempting to save a model with offloaded modules")
        warnings.filterwarnings("ignore", message=r"You passed `quantization_config`")
        yield


def calibration_dataset(handle: ModelHandle, ctx: TechniqueContext, p: Calibration) -> Any:
    """``n_samples`` token blocks of ``seq_len`` as a ``datasets.Dataset`` (input_ids, attention_mask)."""
    from datasets import Dataset

    from adapters.corpus import resolve_texts
    from adapters.techniques._training import token_blocks

    texts = resolve_texts(ctx, p.dataset, max(64, p.n_samples * max(4, p.seq_len // 16)))  # ~16+ tokens a text
    blocks = token_blocks(handle.tokenizer, texts, p.seq_len)[: p.n_samples]
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})


def check_group_size(model: Any, group_size: int, technique: str) -> None:
    """Refuse a group size that does not divide some decoder linear's input columns."""
    for name, lin in decoder_linears(model).items():
        if lin.in_features % group_size:
            raise UsageError(f"{technique}: group_size {group_size} does not divide the {lin.in_features} input "
                             f"columns of {name} (choose a divisor, e.g. 64 for SmolLM2)")


def group_weights(p: CalibratedWeightParams, **extra: Any) -> Any:
    """The ``QuantizationScheme`` of every Linear: ``bits``-bit integer weights, one scale per ``group_size``
    input columns, activations untouched (``W<bits>A16``)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=p.bits, type="int", symmetric=p.symmetric, strategy="group",
                               group_size=p.group_size, **extra)
    return QuantizationScheme(targets=["Linear"], weights=weights)


class Calibrated(NamedTuple):
    """What :func:`calibrated_oneshot` gave: the modified model (a copy) and the calibration sequences it used (a
    ``datasets.Dataset`` of ``input_ids``)."""

    model: Any
    data: Any


def calibrated_oneshot(handle: ModelHandle, ctx: TechniqueContext, p: Calibration, recipe: list[Any],
                       tag: str) -> Calibrated:
    """Run llmcompressor's ``oneshot`` with ``recipe`` on a float copy of the handle's model, calibrated on
    ``p.n_samples`` blocks of ``p.seq_len`` tokens; ``tag`` names the scratch files under ``ctx.workdir``.

    The returned model carries llmcompressor's quantization state (save it with :func:`compressed_handle`), or, after
    :func:`plain_model`, is an ordinary transformers model again."""
    from llmcompressor import oneshot

    handle.activate()
    model = copied_model(handle)
    model.config.save_pretrained(ctx.workdir / f"{tag}_input")  # oneshot re-reads it from name_or_path
    model.config._name_or_path = str(ctx.workdir / f"{tag}_input")
    data = calibration_dataset(handle, ctx, p)
    with seeded(ctx.seed), cpu_intermediates(), quiet_library():
        oneshot(model=model, processor=handle.tokenizer, dataset=data, recipe=recipe, max_seq_length=p.seq_len,
                num_calibration_samples=len(data), shuffle_calibration_samples=False, output_dir=None)
    return Calibrated(model, data)


def plain_model(model: Any) -> Any:
    """The model without oneshot's offloading wrappers and its instance ``save_pretrained``/``forward`` hooks: saved by
    transformers' own ``save_pretrained``, copied safely by the next step."""
    from compressed_tensors.offload.dispatch import remove_dispatch

    remove_dispatch(model, onload_tensors=True)
    model.__dict__.pop("save_pretrained", None)
    model.__dict__.pop("forward", None)
    model.eval()
    return model


def compressed_handle(handle: ModelHandle, model: Any, out: Path) -> ModelHandle:
    """Write the quantized ``model`` as a compressed-tensors checkpoint in ``out`` and return the derived handle on
    its dequantized reload (the format's saver copies that checkpoint)."""
    with quiet_library():
        model.save_pretrained(out, save_compressed=True)
    handle.tokenizer.save_pretrained(out)
    return handle.derive(model=load_dequantized(out), format_state={"checkpoint": str(out)})


class Quantized(NamedTuple):
    """What :func:`quantize_weights` gave: the handle on the reloaded checkpoint and what to report about it."""

    handle: ModelHandle
    n_samples: int
    packed_bytes: int


def quantize_weights(handle: ModelHandle, ctx: TechniqueContext, p: CalibratedWeightParams, recipe: list[Any],
                     technique: str) -> Quantized:
    """A calibrated weight quantizer end to end: check the group size, run ``recipe`` through
    :func:`calibrated_oneshot`, write the checkpoint under ``ctx.workdir/<family variant>`` and reload it."""
    require_llmcompressor(technique)
    check_group_size(handle.model, p.group_size, technique)
    tag = technique.rpartition(".")[2]
    done = calibrated_oneshot(handle, ctx, p, recipe, tag)
    out = ctx.workdir / tag
    return Quantized(compressed_handle(handle, done.model, out), len(done.data), packed_bytes(out))


@dataclass(frozen=True)
class WeightQuantReport:
    """What a calibrated weight quantizer did.

    Attributes:
        scheme: the quantization scheme (``W4A16``, ``W3A16``, ...).
        group_size: input columns per scale.
        n_samples: calibration sequences used.
        packed_bytes: size of the packed checkpoint's weights on disk.
        runtime: how the reloaded model runs here.
    """

    scheme: str
    group_size: int
    n_samples: int
    packed_bytes: int
    runtime: str


class CalibratedWeightQuantizer(Technique):
    """Base of the llmcompressor weight quantizers (``quant.awq``, ``quant.gptq``): a float torch model in, every
    Linear but ``lm_head`` quantized by :meth:`recipe`'s modifiers on calibration data, a compressed-tensors
    checkpoint out. Subclasses set ``Params`` (a :class:`CalibratedWeightParams`) and implement :meth:`recipe`."""

    requires = ("llmcompressor", "compressed-tensors", "torch", "transformers")
    runs_on_device = True
    accepts = (F.TORCH, F.TORCH_SPARSE)
    produces = F.COMPRESSED

    def recipe(self) -> list[Any]:
        """The llmcompressor modifiers to run."""
        raise NotImplementedError

    def report(self, done: Quantized) -> WeightQuantReport:
        p = self.params
        return WeightQuantReport(f"W{p.bits}A16", p.group_size, done.n_samples, done.packed_bytes,
                                 DEQUANTIZED_RUNTIME)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        done = quantize_weights(handle, ctx, self.params, self.recipe(), self.name)
        return Applied(done.handle, self.report(done))


def packed_bytes(directory: Path) -> int:
    """Size of a checkpoint's weights on disk."""
    return sum(f.stat().st_size for f in Path(directory).glob("*.safetensors"))


# -- the compressed-tensors artifact format ---------------------------------------------------------------------
def save_compressed(handle: ModelHandle, path: Path) -> None:
    """The compressed-tensors checkpoint as llmcompressor wrote it (packed integer weights)."""
    checkpoint = handle.format_state.get("checkpoint")
    if not checkpoint:
        raise UsageError("a compressed-tensors handle without its checkpoint cannot be saved")
    for item in Path(checkpoint).iterdir():
        if item.is_file() and not (path / item.name).exists():
            shutil.copyfile(item, path / item.name)


def load_compressed(path: Path, info: dict[str, Any]) -> ModelHandle:
    return ModelHandle(load_dequantized(Path(path)), F.tokenizer_of(path), format_state={"checkpoint": str(path)},
                       **info)


def dequantize_compressed(model: Any) -> Any:
    """The in-memory model already holds dequantized float linears: a plain copy."""
    import copy

    return copy.deepcopy(model)


def load_dequantized(path: Path) -> Any:
    """A compressed-tensors checkpoint as a plain fp32 model (quantization parameters dropped)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    with quiet_library():
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=CompressedTensorsConfig(dequantize=True))
    for module in model.modules():
        for name in ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "input_scale",
                     "input_zero_point"):
            if name in module._parameters:
                del module._parameters[name]
        if hasattr(module, "quantization_scheme"):
            del module.quantization_scheme
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.eval()
    return model


F.register_format(F.ArtifactFormat(F.COMPRESSED, "llmcompressor compressed-tensors checkpoint (packed int2-int8 "
                                   "weights), dequantized to float linears in memory", "torch", save_compressed,
                                   load_compressed, dequantize_compressed))
