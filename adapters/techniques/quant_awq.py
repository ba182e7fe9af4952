"""Activation-aware weight quantization through llmcompressor (Lin et al., 2024, "AWQ: Activation-aware
Weight Quantization for LLM Compression and Acceleration").

AWQ runs calibration texts through the model, and per decoder block searches the per-channel scales
that, applied to the weights before round-to-nearest 4-bit quantization (and folded back into the
preceding norm or linear), minimize the block's output error; the weights are then quantized W4A16
(asymmetric int4, one scale and zero point per group of ``group_size`` input columns). This is
llmcompressor's ``AWQModifier`` via ``oneshot`` (:class:`adapters.techniques.quant_llmc.CalibratedWeightQuantizer`,
with its CPU workarounds). The result is a ``compressed-tensors`` checkpoint (packed int4 on disk) reloaded as
dequantized fp32 linears: the quality effect is real, there is no speed or in-memory gain on this backend (recorded in
the step's report). The group size must divide every quantized linear's input columns (64 for SmolLM2's 576; 128 does
not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters import formats as F
from adapters.technique import technique
from adapters.techniques.quant import QUANTIZER_HINTS
from adapters.techniques.quant_llmc import CalibratedWeightParams, CalibratedWeightQuantizer, group_weights


@dataclass(frozen=True)
class AWQParams(CalibratedWeightParams):
    """Params of ``quant.awq`` (bits 4, the W4A16 scheme, or 8 for W8A16; the calibration fields of
    :class:`~adapters.techniques.quant_llmc.CalibratedWeightParams`).

    Attributes:
        symmetric: symmetric quantization (no zero point); AWQ's default is asymmetric.
        duo_scaling: llmcompressor's option to use both activation and weight magnitudes in the scale search.
    """

    symmetric: bool = False
    duo_scaling: bool = True


@technique("quant.awq")
class ActivationAwareQuant(CalibratedWeightQuantizer):
    """AWQ W4A16 weight quantization with calibration data (llmcompressor AWQModifier; Lin et al., 2024)."""

    Params = AWQParams
    hints = {**QUANTIZER_HINTS, F.TORCH_LOWRANK: "AWQ's scale search needs the original linears: put quant.awq "
                                                 "before factorize.svd, or use quant.rtn/quant.int8 after it"}

    def recipe(self) -> list[Any]:
        """An ``AWQModifier`` quantizing every Linear but ``lm_head`` with group-wise int weights."""
        from llmcompressor.modifiers.awq import AWQModifier

        p = self.params
        return [AWQModifier(ignore=["lm_head"], duo_scaling=p.duo_scaling, config_groups={"group_0": group_weights(p)})]
