"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot")
through llmcompressor's ``SparseGPTModifier``: layer by layer, on calibration activations, choose the weights to
zero (unstructured or N:M) and update the remaining ones of each row with the inverse Hessian of the layer's
inputs, so the layer's outputs are reconstructed as well as the mask allows. No retraining. The result is a dense
float model with zeros (``torch-sparse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from adapters import formats as F
from adapters.technique import Applied, Technique, technique
from adapters.techniques._training import decoder_linears
from adapters.techniques.prune import PruneReport, _check_sparsity, apply_masks
from adapters.techniques.quant_llmc import calibrated_oneshot, plain_model, require_llmcompressor

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@dataclass(frozen=True)
class SparseGPTParams:
    """Params of ``prune.sparsegpt``.

    Attributes:
        sparsity: fraction of each linear layer's weights set to zero (0.5 for N:M patterns).
        pattern: ``unstructured`` or N:M semi-structured (``2:4``, ``4:8``).
        dataset: calibration texts: a named dataset of the spec, or None for the synthetic corpus.
        n_samples: calibration sequences.
        seq_len: tokens per calibration sequence.
        block_size: columns updated together (the reference algorithm's lazy batch).
        dampening_frac: dampening added to the Hessian's diagonal, as a fraction of its mean.
    """

    sparsity: float = 0.5
    pattern: Literal["unstructured", "2:4", "4:8"] = "unstructured"
    dataset: str | None = None
    n_samples: int = 32
    seq_len: int = 128
    block_size: int = 128
    dampening_frac: float = 0.01

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, self.pattern)
        if self.n_samples < 1 or self.seq_len < 2 or self.block_size < 1:
            raise ValueError("n_samples and block_size must be >= 1 and seq_len >= 2")
        if not 0 <= self.dampening_frac < 1:
            raise ValueError(f"dampening_frac must be in [0, 1), got {self.dampening_frac}")


@technique("prune.sparsegpt")
class SparseGPTPrune(Technique):
    """SparseGPT one-shot pruning with inverse-Hessian weight updates (Frantar & Alistarh, 2023), unstructured or
    N:M, on llmcompressor's SparseGPTModifier."""

    Params = SparseGPTParams
    requires = ("llmcompressor", "torch", "transformers")
    accepts: ClassVar[tuple[str, ...]] = (F.TORCH, F.TORCH_SPARSE) + F.QUANTIZED_TORCH
    dequantizes: ClassVar[tuple[str, ...]] = F.QUANTIZED_TORCH
    produces = F.TORCH_SPARSE
    runs_on_device = True
    hints: ClassVar[dict[str, str]] = {
        F.ONNX: "prune before deploy.onnxruntime",
        F.TORCH_LOWRANK: "SparseGPT prunes the original linears: put prune.sparsegpt before factorize.svd"}

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        require_llmcompressor(self.name)
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        p = self.params
        structure = "0:0" if p.pattern == "unstructured" else p.pattern
        recipe = SparseGPTModifier(sparsity=p.sparsity, mask_structure=structure, block_size=p.block_size,
                                   dampening_frac=p.dampening_frac, targets=["Linear"], ignore=["re:.*lm_head"])
        # oneshot leaves its offloading wrappers and save hook: a plain model again, saved by transformers
        model = plain_model(calibrated_oneshot(handle, ctx, _Calibration(p.dataset, p.n_samples, p.seq_len),
                                               [recipe], "sparsegpt").model)
        layers = decoder_linears(model)
        found = apply_masks(layers, {name: lin.weight != 0 for name, lin in layers.items()})
        report = PruneReport(found["sparsity"], int(found["pruned_weights"]), len(layers), p.pattern)
        return Applied(handle.derive(model=model), report)


@dataclass(frozen=True)
class _Calibration:
    dataset: str | None
    n_samples: int
    seq_len: int

