"""Layer dropping: remove whole decoder blocks that change the hidden state least.

Two published criteria, both measured on calibration texts with the model's own hidden states:

* ``block_influence`` (ShortGPT, Men et al., 2024, "ShortGPT: Layers in Large Language Models are More
  Redundant Than You Expect"): BI_i = 1 - mean over tokens of cos(h_i, h_{i+1}), the input and output of block
  i; the ``n_layers`` blocks with the lowest BI are removed (anywhere in the stack).
* ``angular`` (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"): for every run of
  ``n_layers`` consecutive blocks starting at l, d(l) = mean arccos(cos(h_l, h_{l+n})) / pi; the run with the
  smallest d is removed.

The blocks are really removed: ``model.model.layers`` shrinks, ``config.num_hidden_layers`` (and
``config.layer_types`` where present) follow, and each remaining attention's ``layer_idx`` is renumbered so the
KV cache has one slot per remaining block. The artifact reloads from its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adapters import formats as F
from adapters.errors import UsageError
from adapters.technique import Applied, Technique, technique
from adapters.techniques._training import calibration_batches, copied_model, decoder_blocks, seeded

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@dataclass(frozen=True)
class LayerDropParams:
    """Params of ``prune.layers``.

    Attributes:
        n_layers: decoder blocks to remove.
        method: ``block_influence`` (ShortGPT) or ``angular`` (a run of consecutive blocks, Gromov et al.).
        dataset: calibration texts: a named dataset of the spec, or None for the synthetic corpus.
        n_calibration: calibration sequences.
        seq_len: tokens per calibration sequence.
    """

    n_layers: int = 1
    method: Literal["block_influence", "angular"] = "block_influence"
    dataset: str | None = None
    n_calibration: int = 16
    seq_len: int = 128

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.n_calibration < 1 or self.seq_len < 2:
            raise ValueError(f"n_calibration must be >= 1 and seq_len >= 2, got {self.n_calibration}, {self.seq_len}")


@dataclass(frozen=True)
class LayerDropReport:
    """What a layer-dropping step removed.

    Attributes:
        removed: indices (in the input model) of the removed blocks, ascending.
        scores: the criterion per block (block influence) or per starting block of a run (angular distance).
        layers_before: decoder blocks before.
        layers_after: decoder blocks after.
        params_before: parameters before (tied tensors once).
        params_after: parameters after.
        method: the criterion used.
    """

    removed: list[int]
    scores: list[float]
    layers_before: int
    layers_after: int
    params_before: int
    params_after: int
    method: str


def hidden_states(model: Any, batches: list[Any]) -> list[Any]:
    """Per calibration batch, the hidden states entering every block and leaving the last one (before the final
    norm): a list of ``num_layers + 1`` tensors of shape ``(tokens, hidden)``."""
    import torch

    blocks = decoder_blocks(model)
    last: list[Any] = []
    hook = blocks[-1].register_forward_hook(lambda _m, _a, out: last.append(out[0] if isinstance(out, tuple) else out))
    device = next(model.parameters()).device
    per_batch = []
    try:
        with torch.no_grad():
            for ids in batches:
                last.clear()
                out = model(input_ids=ids.to(device), output_hidden_states=True)
                states = list(out.hidden_states[: len(blocks)]) + [last[-1]]
                per_batch.append([s.reshape(-1, s.shape[-1]).float() for s in states])
    finally:
        hook.remove()
    return per_batch


def _mean_cos(per_batch: list[list[Any]], i: int, j: int) -> float:
    import torch

    cos = torch.cat([torch.nn.functional.cosine_similarity(b[i], b[j], dim=-1) for b in per_batch])
    return float(cos.clamp(-1, 1).mean())


def block_influence(per_batch: list[list[Any]]) -> list[float]:
    """ShortGPT's BI of every block: 1 - mean cos(input, output)."""
    n = len(per_batch[0]) - 1
    return [1.0 - _mean_cos(per_batch, i, i + 1) for i in range(n)]


def angular_distances(per_batch: list[list[Any]], run: int) -> list[float]:
    """Gromov et al.'s d(l, l + run) for every start l: mean arccos(cos) / pi over tokens."""
    import torch

    n = len(per_batch[0]) - 1
    out = []
    for start in range(n - run + 1):
        cos = torch.cat([torch.nn.functional.cosine_similarity(b[start], b[start + run], dim=-1) for b in per_batch])
        out.append(float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean()))
    return out


def drop_blocks(model: Any, remove: list[int]) -> None:
    """Remove the blocks at ``remove`` from ``model`` in place and renumber what stays."""
    from torch import nn

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    kept = [b for i, b in enumerate(decoder.layers) if i not in set(remove)]
    decoder.layers = nn.ModuleList(kept)
    for i, block in enumerate(kept):
        attn = getattr(block, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = i
        if hasattr(block, "layer_idx"):
            block.layer_idx = i
    config = model.config
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in set(remove)]
    config.num_hidden_layers = len(kept)


def _params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@technique("prune.layers")
class LayerDrop(Technique):
    """Layer dropping: remove the decoder blocks that change the hidden state least, by ShortGPT's block influence
    (Men et al., 2024) or by the angular distance of a run of consecutive blocks (Gromov et al., 2024)."""

    Params = LayerDropParams
    requires = ("torch", "transformers")
    accepts: ClassVar[tuple[str, ...]] = F.FLOAT_TORCH + F.QUANTIZED_TORCH
    dequantizes: ClassVar[tuple[str, ...]] = F.QUANTIZED_TORCH
    hints: ClassVar[dict[str, str]] = {F.ONNX: "drop layers before deploy.onnxruntime"}
    runs_on_device = True

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        super().output_format(input_format, params)
        return input_format if input_format in F.FLOAT_TORCH else F.TORCH

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        handle.activate()
        model = copied_model(handle)
        n = len(decoder_blocks(model))
        if p.n_layers >= n:
            raise UsageError(f"prune.layers: n_layers {p.n_layers} would leave no block (the model has {n})")
        before = _params(model)
        with seeded(ctx.seed):
            batches = calibration_batches(handle, ctx, p.dataset, p.n_calibration, p.seq_len)
            states = hidden_states(model, batches)
        if p.method == "block_influence":
            scores = block_influence(states)
            remove = sorted(sorted(range(n), key=lambda i: scores[i])[: p.n_layers])
        else:
            scores = angular_distances(states, p.n_layers)
            start = min(range(len(scores)), key=lambda i: scores[i])
            remove = list(range(start, start + p.n_layers))
        drop_blocks(model, remove)
        report = LayerDropReport(remove, scores, n, n - len(remove), before, _params(model), p.method)
        return Applied(handle.derive(model=model), report)
