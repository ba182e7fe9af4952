"""GPTQ weight-only quantization through llmcompressor (Frantar et al., 2023, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers").

Layer by layer, GPTQ accumulates the Hessian ``H = 2 X Xᵀ`` of each linear's calibration inputs and quantizes the
weight matrix one column at a time (in blocks of ``block_size``), spreading each column's rounding error over the
columns not yet quantized with the inverse Hessian (dampened by ``dampening_frac`` of its mean diagonal), so the
layer's *outputs* on the calibration data are preserved rather than its weights. With ``actorder: weight`` the
columns go in order of decreasing Hessian diagonal (the most activated first); the group scales are still those of
the original column order, so the checkpoint is an ordinary group-wise one. Round-to-nearest is GPTQ without the
error feedback: the gap between them is what the calibration buys, and it widens as the bits drop (W4 -> W3 -> W2).

This is llmcompressor's ``GPTQModifier`` via ``oneshot`` (:func:`adapters.techniques.quant_llmc.calibrated_oneshot`,
with its CPU workarounds), every Linear but ``lm_head`` quantized to ``bits``-bit integers, one scale (and zero
point, when asymmetric) per group of ``group_size`` input columns, activations left in float (``W<bits>A16``). The
checkpoint is compressed-tensors ``pack-quantized``: 2, 3, 4 and 8-bit values packed into int32 words (3-bit values
straddle word boundaries: 64 columns take 6 words), reloaded as dequantized fp32 linears (quality effect real, no
speed gain on this backend).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from adapters import formats as F
from adapters.technique import technique
from adapters.techniques.quant import QUANTIZER_HINTS
from adapters.techniques.quant_llmc import (
    CalibratedWeightParams,
    CalibratedWeightQuantizer,
    Quantized,
    WeightQuantReport,
    group_weights,
)


@dataclass(frozen=True)
class GPTQParams(CalibratedWeightParams):
    """Params of ``quant.gptq`` (bits 2, 3, 4 or 8 and the calibration fields of
    :class:`~adapters.techniques.quant_llmc.CalibratedWeightParams`).

    Attributes:
        symmetric: symmetric quantization (no zero point; llmcompressor's W4A16 preset). Asymmetric by default: on
            SmolLM2 symmetric int4 wastes range on skewed groups (WikiText-2 perplexity 58.2 vs 46.5 asymmetric).
        dampening_frac: added to the Hessian's diagonal, as a fraction of its mean, before inverting it.
        actorder: ``weight``: quantize columns in order of decreasing Hessian diagonal (llmcompressor's default);
            ``none``: in their stored order.
        block_size: columns quantized together before the error is propagated to the rest (lazy batch updates).
    """

    BITS: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)

    symmetric: bool = False
    dampening_frac: float = 0.01
    actorder: Literal["weight", "none"] = "weight"
    block_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.dampening_frac < 1:
            raise ValueError(f"dampening_frac must be in [0, 1), got {self.dampening_frac}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")


@dataclass(frozen=True)
class GPTQReport(WeightQuantReport):
    """What GPTQ did (the fields of :class:`~adapters.techniques.quant_llmc.WeightQuantReport`, and:)

    Attributes:
        actorder: the column order (``weight`` or ``none``).
    """

    actorder: str = "weight"


@technique("quant.gptq")
class GPTQQuant(CalibratedWeightQuantizer):
    """GPTQ W2/W3/W4/W8-A16 weights with Hessian error feedback (llmcompressor GPTQModifier; Frantar et al., 2023)."""

    Params = GPTQParams
    hints = {**QUANTIZER_HINTS, F.TORCH_LOWRANK: "GPTQ quantizes the original linears: put quant.gptq before "
                                                 "factorize.svd, or use quant.rtn/quant.int8 after it"}

    def recipe(self) -> list[Any]:
        """A ``GPTQModifier`` quantizing every Linear but ``lm_head`` with group-wise int weights."""
        from llmcompressor.modifiers.gptq import GPTQModifier

        p = self.params
        return [GPTQModifier(ignore=["lm_head"], dampening_frac=p.dampening_frac, block_size=p.block_size,
                             actorder=None if p.actorder == "none" else p.actorder,
                             config_groups={"group_0": group_weights(p)})]

    def report(self, done: Quantized) -> GPTQReport:
        return GPTQReport(**dataclasses.asdict(super().report(done)), actorder=self.params.actorder)
