"""Structured pruning that really shrinks the model: MLP channels and attention heads, through torch-pruning.

``prune.structured`` removes the same fraction of MLP intermediate channels and of query heads from every decoder
block (LLM-Pruner's block-wise width pruning, Ma et al., 2023, on Torch-Pruning's dependency graph, Fang et al.,
2023). The hidden size, the vocabulary and the head width stay, so the result is an ordinary transformers model
whose config says the new widths (``intermediate_size``, ``num_attention_heads``, ``head_dim``) and which reloads
from its own config.

* **MLP channels.** For every block, torch-pruning's :class:`~torch_pruning.DependencyGraph` of the block's MLP
  gives the coupled group of channel ``c``: row ``c`` of ``gate_proj`` and ``up_proj`` and column ``c`` of
  ``down_proj``; the group's importance ranks the channels and the lowest are pruned through the group.
* **Attention heads, grouped-query aware.** A query head's channels couple row block ``h`` of ``q_proj`` with
  column block ``h`` of ``o_proj`` (and, in multi-head attention, the same rows of ``k_proj`` and ``v_proj``).
  The dependency graph of exactly that coupling is built on the block's own projections (torch-pruning 1.6's
  trace of a whole transformers 5 model does not terminate on the rotary/attention ops, so the whole-model
  :class:`~torch_pruning.pruner.BasePruner` is not used); head importance is the mean of its channels'. With GQA
  the same number of query heads is removed from every key/value group (the query-to-KV mapping stays
  contiguous), the key/value heads stay; with MHA whole heads (q, k, v, o) are removed.
* **Importance** (torch-pruning's estimators on each group): ``magnitude`` (L2 norm of the group's weights),
  ``taylor`` (|W * dL/dW|, the first-order loss change, LLM-Pruner's element-wise criterion, gradients of the
  causal-LM loss on the calibration texts) and ``activation`` (the summed |input| of ``down_proj`` / ``o_proj``
  per channel over the calibration tokens).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adapters import formats as F
from adapters.errors import MissingDependencyError, UsageError
from adapters.technique import Applied, Technique, technique
from adapters.techniques._training import (
    calibration_batches,
    causal_lm_loss,
    copied_model,
    decoder_blocks,
    seeded,
)

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@dataclass(frozen=True)
class StructuredParams:
    """Params of ``prune.structured``.

    Attributes:
        mlp_ratio: fraction of each block's MLP intermediate channels removed.
        head_ratio: fraction of query heads removed (rounded to whole heads per key/value group with GQA).
        importance: ``magnitude``, ``taylor`` or ``activation`` (see the module docstring).
        round_to: keep a multiple of this many MLP channels (hardware-friendly widths; 1 = exact).
        dataset: calibration texts for ``taylor`` / ``activation``: a named dataset of the spec, or None for the
            synthetic corpus.
        n_calibration: calibration sequences.
        seq_len: tokens per calibration sequence.
    """

    mlp_ratio: float = 0.25
    head_ratio: float = 0.0
    importance: Literal["magnitude", "taylor", "activation"] = "magnitude"
    round_to: int = 1
    dataset: str | None = None
    n_calibration: int = 8
    seq_len: int = 128

    def __post_init__(self) -> None:
        for name in ("mlp_ratio", "head_ratio"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.mlp_ratio == 0 and self.head_ratio == 0:
            raise ValueError("mlp_ratio and head_ratio are both 0: nothing would be pruned")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")
        if self.n_calibration < 1 or self.seq_len < 2:
            raise ValueError(f"n_calibration must be >= 1 and seq_len >= 2, got {self.n_calibration}, {self.seq_len}")


@dataclass(frozen=True)
class StructuredReport:
    """What structured pruning removed (the same widths in every block).

    Attributes:
        intermediate_before: MLP intermediate channels per block before.
        intermediate_after: after.
        heads_before: query heads per block before.
        heads_after: after.
        kv_heads_before: key/value heads per block before.
        kv_heads_after: after (unchanged with GQA).
        head_dim: the width of a head (unchanged).
        params_before: parameters before (tied tensors once).
        params_after: parameters after.
        importance: the criterion used.
        removed_heads: per block, the indices (in the input model) of the removed query heads.
        torch_pruning: torch-pruning's version.
    """

    intermediate_before: int
    intermediate_after: int
    heads_before: int
    heads_after: int
    kv_heads_before: int
    kv_heads_after: int
    head_dim: int
    params_before: int
    params_after: int
    importance: str
    removed_heads: list[list[int]]
    torch_pruning: str


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError as exc:
        raise MissingDependencyError("torch-pruning", "prune.structured", "pip install -e '.[prune]'") from exc
    return torch_pruning


def _params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _check_architecture(model: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head width) of a Llama-family model, or a UsageError naming what is missing."""
    for i, block in enumerate(decoder_blocks(model)):
        attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
        missing = [f"self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj") if not hasattr(attn, n)]
        missing += [f"mlp.{n}" for n in ("gate_proj", "up_proj", "down_proj") if not hasattr(mlp, n)]
        if missing:
            raise UsageError(f"prune.structured needs Llama-style blocks; block {i} of {type(model).__name__} has no "
                             + ", ".join(missing))
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def _importance(tp: Any, kind: str) -> Any:
    est = tp.importance
    if kind == "magnitude":
        return est.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    if kind == "taylor":
        return est.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    return est.ActivationImportance(p=1, group_reduction="mean", normalizer=None)


class _HeadCoupling:
    """The modules whose channels a query head couples, wired so torch-pruning's graph sees exactly that coupling:
    ``o_proj(q_proj(x))``, plus ``k_proj(x) + v_proj(x)`` on the same channels in multi-head attention."""

    def __init__(self, attn: Any, with_kv: bool):
        from torch import nn

        class Coupled(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.q_proj, self.o_proj = attn.q_proj, attn.o_proj
                if with_kv:
                    self.k_proj, self.v_proj = attn.k_proj, attn.v_proj

            def forward(self, x: Any) -> Any:
                h = self.q_proj(x)
                if with_kv:
                    h = h + self.k_proj(x) + self.v_proj(x)
                return self.o_proj(h)

        self.module = Coupled()
        self.root = attn.q_proj


def _graph(tp: Any, module: Any, width: int) -> Any:
    import torch

    params = list(module.parameters())
    example = torch.zeros(1, 2, width, dtype=params[0].dtype, device=params[0].device)
    frozen = [p for p in params if not p.requires_grad]  # e.g. a reloaded quantized checkpoint's float copy
    for p in frozen:
        p.requires_grad_(True)  # the graph is traced from the autograd graph of one forward pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(module, example_inputs=example)
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _channel_scores(tp: Any, imp: Any, graph: Any, root: Any, n: int) -> Any:
    import torch

    group = graph.get_pruning_group(root, tp.prune_linear_out_channels, idxs=list(range(n)))
    with torch.no_grad():
        scores = imp(group)
    if scores is None:
        raise UsageError(f"prune.structured: torch-pruning found no importance for {type(root).__name__} channels")
    return scores.float().cpu()


def _prune(tp: Any, graph: Any, root: Any, idxs: list[int]) -> None:
    if idxs:
        graph.get_pruning_group(root, tp.prune_linear_out_channels, idxs=idxs).prune()


class _Activations:
    """Summed |input| per channel of ``down_proj`` and ``o_proj`` over the calibration tokens, stored where
    torch-pruning's :class:`ActivationImportance` reads it (``module._importance``)."""

    def __init__(self, model: Any, batches: list[Any]):
        import torch

        self.layers = [m for b in decoder_blocks(model) for m in (b.mlp.down_proj, b.self_attn.o_proj)]
        for layer in self.layers:
            layer._importance = torch.zeros(layer.in_features, dtype=torch.float64, device=layer.weight.device)

        def record(mod: Any, args: tuple[Any, ...], _out: Any) -> None:
            mod._importance += args[0].detach().reshape(-1, args[0].shape[-1]).abs().double().sum(dim=0)

        hooks = [layer.register_forward_hook(record) for layer in self.layers]
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for ids in batches:
                    model(input_ids=ids.to(device))
        finally:
            for h in hooks:
                h.remove()

    def clear(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "_importance"):
                del layer._importance


def _accumulate_gradients(model: Any, batches: list[Any]) -> None:
    """dL/dW of the causal-LM loss summed over the calibration batches (Taylor importance reads ``weight.grad``)."""
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    device = next(model.parameters()).device
    model.train(False)
    for ids in batches:
        causal_lm_loss(model, ids.to(device)).backward()


def _kept_count(total: int, ratio: float, round_to: int) -> int:
    keep = total - int(round(total * ratio))
    if round_to > 1:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return max(1, min(total, keep))


@technique("prune.structured")
class StructuredPrune(Technique):
    """Structured width pruning on torch-pruning's dependency graph: MLP channels and (GQA-aware) attention heads
    removed from every block by magnitude, Taylor or activation importance; the config and every shape shrink."""

    Params = StructuredParams
    requires = ("torch", "transformers", "torch-pruning")
    accepts: ClassVar[tuple[str, ...]] = (F.TORCH, F.TORCH_SPARSE) + F.QUANTIZED_TORCH
    dequantizes: ClassVar[tuple[str, ...]] = F.QUANTIZED_TORCH
    hints: ClassVar[dict[str, str]] = {
        F.TORCH_LOWRANK: "prune.structured before factorize.svd (it prunes dense nn.Linear channels)",
        F.ONNX: "prune before deploy.onnxruntime",
    }
    runs_on_device = True

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        super().output_format(input_format, params)
        return F.TORCH_SPARSE if input_format == F.TORCH_SPARSE else F.TORCH

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        tp, p = _tp(), self.params
        handle.activate()
        model = copied_model(handle)
        heads, kv_heads, head_dim = _check_architecture(model)
        per_group = heads // kv_heads
        gqa = kv_heads < heads
        remove_per_group = int(round(per_group * p.head_ratio)) if gqa else int(round(heads * p.head_ratio))
        unit = per_group if gqa else heads
        if p.head_ratio > 0 and not 0 < remove_per_group < unit:
            what = f"{per_group} query heads per key/value group" if gqa else f"{heads} heads"
            raise UsageError(f"prune.structured: head_ratio {p.head_ratio} removes {remove_per_group} of {what}; "
                             f"allowed: a ratio that removes at least one head and leaves one (multiples of 1/{unit})")
        blocks = decoder_blocks(model)
        intermediate = blocks[0].mlp.gate_proj.out_features
        keep_channels = _kept_count(intermediate, p.mlp_ratio, p.round_to) if p.mlp_ratio > 0 else intermediate
        before = _params(model)
        imp = _importance(tp, p.importance)
        activations = None
        if p.importance != "magnitude":
            with seeded(ctx.seed):
                batches = calibration_batches(handle, ctx, p.dataset, p.n_calibration, p.seq_len)
            if p.importance == "taylor":
                _accumulate_gradients(model, batches)
            else:
                activations = _Activations(model, batches)
        removed_heads: list[list[int]] = []
        hidden = model.config.hidden_size
        try:
            for block in blocks:
                mlp, attn = block.mlp, block.self_attn
                if keep_channels < intermediate:
                    graph = _graph(tp, mlp, hidden)
                    scores = _channel_scores(tp, imp, graph, mlp.gate_proj, intermediate)
                    drop = torch.topk(scores, intermediate - keep_channels, largest=False).indices
                    _prune(tp, graph, mlp.gate_proj, sorted(drop.tolist()))
                if remove_per_group:
                    coupling = _HeadCoupling(attn, with_kv=not gqa)
                    graph = _graph(tp, coupling.module, hidden)
                    scores = _channel_scores(tp, imp, graph, coupling.root, heads * head_dim)
                    head_scores = scores.view(heads, head_dim).mean(dim=1)
                    drop_heads: list[int] = []
                    for g in range(kv_heads if gqa else 1):
                        first = g * unit
                        local = torch.topk(head_scores[first:first + unit], remove_per_group, largest=False).indices
                        drop_heads += sorted(first + int(i) for i in local)
                    removed_heads.append(drop_heads)
                    _prune(tp, graph, coupling.root, [h * head_dim + d for h in drop_heads for d in range(head_dim)])
        finally:
            if activations is not None:
                activations.clear()
            model.zero_grad(set_to_none=True)
        new_heads = heads - (remove_per_group * kv_heads if gqa else remove_per_group)
        new_kv = kv_heads if gqa else new_heads
        config = model.config
        config.intermediate_size = keep_channels
        config.num_attention_heads = new_heads
        config.num_key_value_heads = new_kv
        config.head_dim = head_dim
        for block in blocks:
            block.self_attn.num_key_value_groups = new_heads // new_kv
            if hasattr(block.self_attn, "num_heads"):
                block.self_attn.num_heads = new_heads
        model.eval()
        report = StructuredReport(intermediate, keep_channels, heads, new_heads, kv_heads, new_kv, head_dim, before,
                                  _params(model), p.importance, removed_heads, _version())
        return Applied(handle.derive(model=model), report)


def _version() -> str:
    from importlib.metadata import version

    return version("torch-pruning")
