"""SmoothQuant (Xiao et al., 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models"): W8A8 with the activation outliers migrated into the weights.

Per-tensor int8 activations fail on LLMs because a few input channels of each linear carry values 10-100x the
others. SmoothQuant measures each channel's range ``max|X_j|`` on calibration texts and divides the activations by
``s_j = max|X_j|^α / max|W_j|^(1-α)`` (``α`` = ``smoothing_strength``), multiplying the next linears' input columns by
the same ``s_j``: the float model computes the same function (up to rounding), but its activations are now as easy
to quantize as its weights. The division is folded into the layer that produces the activations (the RMSNorms in
front of q/k/v and gate/up; with ``smooth_down_proj``, ``up_proj``'s rows in front of ``down_proj``), so nothing is
added at run time. This is llmcompressor's ``SmoothQuantModifier`` via ``oneshot``
(:func:`adapters.techniques.quant_llmc.calibrated_oneshot`).

``mode`` chooses what follows the smoothing:

* ``int8`` (default): PyTorch dynamic quantization of every decoder linear (``quant.int8``'s conversion, format
  ``torch-int8-dynamic``): int8 weights per output channel and activations quantized to 8 bits per tensor at run
  time, each matmul an fbgemm int8 GEMM on x86. Real W8A8 on this CPU.
* ``smooth_only``: the smoothed float model, in the input's format; a later int8 step quantizes it, e.g.
  ``quant.smoothquant(mode: smooth_only) > deploy.onnxruntime(quantize: int8)`` (ONNX Runtime's integer MatMuls).
* ``w8a8``: llmcompressor's ``W8A8`` scheme on the smoothed model, written as a compressed-tensors ``int-quantized``
  checkpoint (int8 weights per channel, int8 activations per token at run time), the checkpoint vLLM serves with
  int8 kernels on CUDA. Here it reloads as dequantized fp32 linears: the int8 weights' effect is real, the activations
  stay float (no int8 kernels for that scheme on this CPU).

The report gives the smoothing scales' statistics per kind of smoothed layer and the activation outlier ratio
(``max_j max|X_j| / median_j max|X_j|`` over the quantized linears' inputs, mean over layers) before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from adapters import formats as F
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import decoder_linears
from adapters.techniques.quant import QUANTIZER_HINTS, _quantize_int8
from adapters.techniques.quant_llmc import (
    DEQUANTIZED_RUNTIME,
    calibrated_oneshot,
    compressed_handle,
    packed_bytes,
    plain_model,
    require_llmcompressor,
)

#: the activation each group of linears shares, and the layer that produces it (llmcompressor's Llama mappings)
NORM_MAPPINGS = [
    [["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"],
    [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"],
]
#: down_proj's input is silu(gate) * up: scaling up_proj's output rows scales it channel by channel
DOWN_MAPPING = [["re:.*down_proj"], "re:.*up_proj"]
INT8_RUNTIME = ("torch.ao dynamic int8 linears: fbgemm int8 GEMMs, int8 weights per output channel, activations "
                "quantized per tensor at run time")
SMOOTHED_RUNTIME = "float linears (smoothed; quantize them in a later step)"


@dataclass(frozen=True)
class SmoothQuantParams:
    """Params of ``quant.smoothquant``.

    Attributes:
        smoothing_strength: α, the share of each activation channel's range moved into the weights (0 none, 1 all).
        mode: ``int8`` (torch dynamic int8, W8A8 on this CPU), ``smooth_only`` (the smoothed float model) or
            ``w8a8`` (llmcompressor's W8A8 compressed-tensors checkpoint, for vLLM on CUDA).
        smooth_down_proj: also smooth ``down_proj``'s input, folding the scales into ``up_proj``'s rows (the
            default mappings smooth only the inputs of q/k/v and gate/up).
        n_samples: calibration sequences.
        seq_len: tokens per calibration sequence.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
    """

    smoothing_strength: float = 0.8
    mode: Literal["int8", "smooth_only", "w8a8"] = "int8"
    smooth_down_proj: bool = True
    n_samples: int = 16
    seq_len: int = 256
    dataset: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.smoothing_strength < 1:
            raise ValueError(f"smoothing_strength must be in (0, 1), got {self.smoothing_strength}")
        for name in ("n_samples", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SmoothQuantReport:
    """What SmoothQuant did.

    Attributes:
        mode: what followed the smoothing (``int8``, ``smooth_only``, ``w8a8``).
        smoothing_strength: α.
        n_samples: calibration sequences used.
        smoothed: activations smoothed (one per norm or ``up_proj`` whose output was divided).
        scales: per kind of smoothing layer (``input_layernorm``, ``post_attention_layernorm``, ``up_proj``): the
            ``min``, ``median`` and ``max`` of the per-channel scales ``s_j`` over every block.
        outlier_ratio_before: activation outlier ratio of the quantized linears' inputs before smoothing.
        outlier_ratio_after: the same after smoothing (what the int8 activation quantizer sees).
        quantized_layers: linears quantized (0 for ``smooth_only``).
        packed_bytes: the compressed-tensors checkpoint's weight bytes (``w8a8``; else 0).
        runtime: what runs the matmuls of the result here.
    """

    mode: str
    smoothing_strength: float
    n_samples: int
    smoothed: int
    scales: dict[str, dict[str, float]]
    outlier_ratio_before: float
    outlier_ratio_after: float
    quantized_layers: int
    packed_bytes: int
    runtime: str


def smoothquant_recipe(p: SmoothQuantParams) -> list[Any]:
    """The ``SmoothQuantModifier`` (and, for ``w8a8``, the ``W8A8`` ``QuantizationModifier`` after it)."""
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    mappings = NORM_MAPPINGS + ([DOWN_MAPPING] if p.smooth_down_proj else [])
    recipe: list[Any] = [SmoothQuantModifier(smoothing_strength=p.smoothing_strength, mappings=mappings)]
    if p.mode == "w8a8":
        from llmcompressor.modifiers.quantization import QuantizationModifier

        recipe.append(QuantizationModifier(targets=["Linear"], scheme="W8A8", ignore=["lm_head"]))
    return recipe


def smoothing_scales(before: Any, after: Any, down_proj: bool) -> dict[str, list[Any]]:
    """The per-channel scales each smoothed activation was divided by, per kind of layer that produces it, one tensor
    per layer, read from the weights: a norm's weight was divided by ``s`` (``before / after``); ``down_proj``'s input
    columns were multiplied by it (``after / before`` by column norms: ``up_proj``'s own columns were also rescaled,
    by the norm in front of it)."""
    import torch

    found: dict[str, list[Any]] = {}
    with torch.no_grad():
        for name, mod in after.named_modules():
            kind = name.rpartition(".")[2]
            if kind.endswith("layernorm"):
                ratio = before.get_submodule(name).weight / mod.weight
            elif kind == "down_proj" and down_proj:
                ratio, kind = mod.weight.norm(dim=0) / before.get_submodule(name).weight.norm(dim=0), "up_proj"
            else:
                continue
            ratio = ratio[torch.isfinite(ratio) & (ratio > 0)]
            if ratio.numel() and not torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-3):
                found.setdefault(kind, []).append(ratio.cpu())
    return found


def outlier_ratio(model: Any, ids: Any) -> float:
    """``max_j r_j / median_j r_j`` with ``r_j = max|X_j|`` over the tokens of ``ids``, for the input ``X`` of every
    decoder linear, averaged over the linears."""
    import torch

    ratios: list[float] = []

    def record(_mod: Any, args: tuple[Any, ...], _out: Any) -> None:
        r = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0)
        ratios.append(float(r.max() / r.median().clamp_min(1e-12)))

    hooks = [lin.register_forward_hook(record) for lin in decoder_linears(model).values()]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    return sum(ratios) / len(ratios)


def _summary(per_layer: list[Any]) -> dict[str, float]:
    import torch

    values = torch.cat(per_layer)
    return {"min": round(float(values.min()), 4), "median": round(float(values.median()), 4),
            "max": round(float(values.max()), 4)}


@technique("quant.smoothquant")
class SmoothQuant(Technique):
    """SmoothQuant W8A8: activation outliers moved into the weights, then int8 GEMMs (Xiao et al., 2023).

    llmcompressor's SmoothQuantModifier, then torch's fbgemm dynamic int8 linears (or a compressed-tensors W8A8
    checkpoint, or the smoothed float model)."""

    Params = SmoothQuantParams
    requires = ("llmcompressor", "compressed-tensors", "torch", "transformers")
    runs_on_device = True
    accepts: ClassVar[tuple[str, ...]] = (F.TORCH, F.TORCH_SPARSE)
    hints = {**QUANTIZER_HINTS, F.TORCH_LOWRANK: "SmoothQuant folds its scales into the original linears: put "
                                                 "quant.smoothquant before factorize.svd"}

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        """``int8`` -> torch-int8-dynamic; ``w8a8`` -> compressed-tensors; ``smooth_only`` -> the input's format
        (smoothing rescales rows and columns: a pruned model's zeros stay zeros)."""
        super().output_format(input_format, params)
        return {"int8": F.TORCH_INT8, "w8a8": F.COMPRESSED}.get(params.mode, input_format)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        require_llmcompressor(self.name)
        import torch

        p = self.params
        done = calibrated_oneshot(handle, ctx, p, smoothquant_recipe(p), "smoothquant")
        layers, nbytes, runtime = 0, 0, SMOOTHED_RUNTIME
        if p.mode == "w8a8":
            out = ctx.workdir / "smoothquant"
            result = compressed_handle(handle, done.model, out)
            model, nbytes, runtime = result.model, packed_bytes(out), DEQUANTIZED_RUNTIME
            layers = len(decoder_linears(model))
        else:
            model = plain_model(done.model)
            result = handle.derive(model=model)
        probe = torch.tensor(done.data[:1]["input_ids"], device=next(model.parameters()).device)
        found = smoothing_scales(handle.model, model, p.smooth_down_proj)
        before, after = outlier_ratio(handle.model, probe), outlier_ratio(model, probe)
        if p.mode == "int8":  # after measuring: the int8 modules are no nn.Linear; fbgemm runs on the CPU
            model = result.model = model.cpu()
            names = list(decoder_linears(model))
            _quantize_int8(model, names, "per-channel")
            layers, runtime = len(names), INT8_RUNTIME
        report = SmoothQuantReport(p.mode, p.smoothing_strength, len(done.data), sum(map(len, found.values())),
                                   {kind: _summary(v) for kind, v in found.items()}, round(before, 2),
                                   round(after, 2), layers, nbytes, runtime)
        return Applied(result, report)
