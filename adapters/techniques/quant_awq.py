"""Activation-aware weight quantization through llmcompressor (Lin et al., 2024, "AWQ: Activation-aware
Weight Quantization for LLM Compression and Acceleration").

AWQ runs calibration texts through the model, and per decoder block searches the per-channel scales
that, applied to the weights before round-to-nearest 4-bit quantization (and folded back into the
preceding norm or linear), minimize the block's output error; the weights are then quantized W4A16
(asymmetric int4, one scale and zero point per group of ``group_size`` input columns). This is
llmcompressor's ``AWQModifier`` via ``oneshot``.

On CPU-only torch llmcompressor's ``IntermediatesCache`` calls ``pin_memory``, which needs an
accelerator: it is made a no-op for the duration of the call (and restored). The result is written as a
compressed-tensors checkpoint (packed int4 on disk) and reloaded by transformers *dequantized to fp32
linears*: the quality effect is real, there is no speed or in-memory gain on this backend (recorded in
the step's report). The artifact format is ``compressed-tensors``: its saver copies the checkpoint. The group size must divide every quantized linear's input columns (64 for
SmolLM2's 576; 128 does not).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import formats as F
from adapters.errors import MissingDependencyError, UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import copied_model, decoder_linears, seeded
from adapters.techniques.quant import QUANTIZER_HINTS

AWQ_DIR = "awq"
RUNTIME = "dequantized fp32 linears (compressed-tensors W4A16 checkpoint on disk)"


@dataclass(frozen=True)
class AWQParams:
    """Params of ``quant.awq``.

    Attributes:
        bits: weight bits (4, the W4A16 scheme; 8 for W8A16).
        group_size: input columns sharing one scale and zero point.
        symmetric: symmetric quantization (no zero point); AWQ's default is asymmetric.
        n_samples: calibration sequences.
        seq_len: tokens per calibration sequence.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
        duo_scaling: llmcompressor's option to use both activation and weight magnitudes in the scale search.
    """

    bits: int = 4
    group_size: int = 64
    symmetric: bool = False
    n_samples: int = 16
    seq_len: int = 256
    dataset: str | None = None
    duo_scaling: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        for name in ("group_size", "n_samples", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _llmcompressor() -> Any:
    try:
        import llmcompressor
    except ImportError as exc:
        raise MissingDependencyError("llmcompressor", "quant.awq", "pip install -e '.[quant]'") from exc
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


def awq_recipe(p: AWQParams) -> Any:
    """An ``AWQModifier`` quantizing every Linear but ``lm_head`` with group-wise int weights."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.awq import AWQModifier

    weights = QuantizationArgs(num_bits=p.bits, type="int", symmetric=p.symmetric, strategy="group",
                               group_size=p.group_size)
    return AWQModifier(ignore=["lm_head"], duo_scaling=p.duo_scaling,
                       config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)})


def _check_groups(model: Any, group_size: int) -> None:
    for name, lin in decoder_linears(model).items():
        if lin.in_features % group_size:
            raise UsageError(f"quant.awq: group_size {group_size} does not divide the {lin.in_features} input "
                             f"columns of {name} (choose a divisor, e.g. 64 for SmolLM2)")


def calibration_dataset(handle: ModelHandle, ctx: TechniqueContext, p: AWQParams) -> Any:
    """``n_samples`` token blocks of ``seq_len`` as a ``datasets.Dataset`` (input_ids, attention_mask)."""
    from datasets import Dataset

    from adapters.corpus import resolve_texts
    from adapters.techniques._training import token_blocks

    texts = resolve_texts(ctx, p.dataset, max(64, p.n_samples * max(4, p.seq_len // 16)))  # ~16+ tokens a text
    blocks = token_blocks(handle.tokenizer, texts, p.seq_len)[: p.n_samples]
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})


@dataclass(frozen=True)
class AWQReport:
    """What AWQ did.

    Attributes:
        scheme: the quantization scheme (``W4A16``).
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


@technique("quant.awq")
class ActivationAwareQuant(Technique):
    """AWQ W4A16 weight quantization with calibration data (llmcompressor AWQModifier; Lin et al., 2024)."""

    Params = AWQParams
    requires = ("llmcompressor", "compressed-tensors", "torch", "transformers")
    runs_on_device = True
    accepts = (F.TORCH, F.TORCH_SPARSE)
    produces = F.COMPRESSED
    hints = {**QUANTIZER_HINTS, F.TORCH_LOWRANK: "AWQ's scale search needs the original linears: put quant.awq "
                                                 "before factorize.svd, or use quant.rtn/quant.int8 after it"}

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        _llmcompressor()
        from llmcompressor import oneshot

        p = self.params
        handle.activate()
        model = copied_model(handle)
        _check_groups(model, p.group_size)
        out = ctx.workdir / AWQ_DIR
        # oneshot re-reads the config from name_or_path to refuse already-quantized checkpoints
        model.config.save_pretrained(ctx.workdir / "awq_input")
        model.config._name_or_path = str(ctx.workdir / "awq_input")
        data = calibration_dataset(handle, ctx, p)
        with seeded(ctx.seed), cpu_intermediates():
            oneshot(model=model, processor=handle.tokenizer, dataset=data, recipe=[awq_recipe(p)],
                    max_seq_length=p.seq_len, num_calibration_samples=len(data), shuffle_calibration_samples=False,
                    output_dir=None)
        model.save_pretrained(out, save_compressed=True)
        handle.tokenizer.save_pretrained(out)
        report = AWQReport(f"W{p.bits}A16", p.group_size, len(data), _bytes(out), RUNTIME)
        return Applied(handle.derive(model=load_dequantized(out), format_state={"checkpoint": str(out)}), report)


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


F.register_format(F.ArtifactFormat(F.COMPRESSED, "llmcompressor compressed-tensors checkpoint (packed int4), "
                                   "dequantized to float linears in memory", "torch", save_compressed,
                                   load_compressed, dequantize_compressed))


def load_dequantized(path: Path) -> Any:
    """A compressed-tensors checkpoint as a plain fp32 model (quantization parameters dropped)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=CompressedTensorsConfig(dequantize=True))
    for module in model.modules():
        for name in ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx"):
            if name in module._parameters:
                del module._parameters[name]
        if hasattr(module, "quantization_scheme"):
            del module.quantization_scheme
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.eval()
    return model


def _bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))
