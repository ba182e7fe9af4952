"""Low-rank factorization: replace linear layers by products of two thinner ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters import formats as F
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import (
    calibration_batches,
    copied_model,
    decoder_linears,
    input_norms,
    seeded,
)


@dataclass(frozen=True)
class SVDParams:
    """Params of ``factorize.svd``. Give exactly one of ``rank`` and ``energy``.

    Attributes:
        rank: the rank kept in every factorized layer.
        energy: keep the fewest singular values whose squares reach this fraction of the squared
            spectrum (a per-layer rank); 0.9 when neither is given.
        targets: factorize only layers whose qualified name contains one of these substrings
            (e.g. ``["mlp"]``); None factorizes every linear layer of the decoder blocks.
        only_if_smaller: leave a layer dense when its factorized form would not have fewer parameters.
        activation_aware: ASVD exponent alpha: factorize W diag(s^alpha), s the L2 norm of each input
            channel over calibration tokens, and fold diag(s^-alpha) back into A; 0 is plain SVD.
        dataset: calibration texts (when ``activation_aware > 0``): a named dataset of the spec, or None
            for the upstream dataset / the synthetic corpus.
        n_calibration: calibration sequences.
        seq_len: tokens per calibration sequence.
    """

    rank: int | None = None
    energy: float | None = None
    targets: list[str] | None = None
    only_if_smaller: bool = True
    activation_aware: float = 0.0
    dataset: str | None = None
    n_calibration: int = 16
    seq_len: int = 128

    def __post_init__(self) -> None:
        if self.rank is not None and self.energy is not None:
            raise ValueError(f"give rank or energy, not both (rank={self.rank}, energy={self.energy})")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if not 0 <= self.activation_aware <= 2:
            raise ValueError(f"activation_aware must be in [0, 2], got {self.activation_aware}")
        if self.n_calibration < 1 or self.seq_len < 2:
            raise ValueError(f"n_calibration must be >= 1 and seq_len >= 2, got {self.n_calibration}, {self.seq_len}")


def rank_for_energy(singular: Any, energy: float) -> int:
    """The fewest leading singular values whose squares reach ``energy`` of the total."""
    import torch

    sq = singular.double() ** 2
    cum = torch.cumsum(sq, 0) / sq.sum()
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype, device=cum.device) - 1e-12)) + 1


def low_rank_pair(in_features: int, out_features: int, rank: int, bias: bool, dtype: Any = None) -> Any:
    """``LowRankLinear(A: in -> rank, B: rank -> out)``, the module a factorized layer becomes."""
    from adapters.lowrank import LowRankLinear  # torch at import: only when a model is factorized

    return LowRankLinear(in_features, out_features, rank, bias=bias, dtype=dtype)


def factorized(linear: Any, rank: int, scale: Any = None) -> Any:
    """The truncated SVD of ``linear`` as two linears: W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

    With ``scale`` (a positive per-input-channel vector) the SVD is of W diag(scale) and A is
    multiplied by diag(1/scale) afterwards, so the truncation error is weighted by the inputs (ASVD).
    """
    import torch

    weight = scaled_weight(linear, scale)
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]
    if scale is not None:
        a = a / scale[None, :]
    pair = low_rank_pair(linear.in_features, linear.out_features, rank, linear.bias is not None, linear.weight.dtype)
    pair = pair.to(linear.weight.device)
    with torch.no_grad():
        pair[0].weight.copy_(a)
        pair[1].weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            pair[1].bias.copy_(linear.bias)
    return pair


def scaled_weight(linear: Any, scale: Any = None) -> Any:
    """The layer's weight in float32, times ``diag(scale)`` on the input side when given."""
    weight = linear.weight.detach().float()
    return weight if scale is None else weight * scale[None, :]


def chosen_rank(linear: Any, p: SVDParams, scale: Any = None) -> int | None:
    """The rank this layer is factorized to, or None when it stays dense (``only_if_smaller``)."""
    import torch

    if p.rank is not None:
        rank = min(p.rank, linear.in_features, linear.out_features)
    else:
        spectrum = torch.linalg.svdvals(scaled_weight(linear, scale))
        rank = rank_for_energy(spectrum, 0.9 if p.energy is None else p.energy)
    smaller = rank * (linear.in_features + linear.out_features) < linear.in_features * linear.out_features
    return rank if smaller or not p.only_if_smaller else None


def activation_scales(handle: ModelHandle, ctx: TechniqueContext, model: Any, layers: dict[str, Any],
                      p: SVDParams) -> dict[str, Any]:
    """Per-layer ASVD input scalings s^alpha (empty for plain SVD)."""
    if p.activation_aware == 0:
        return {}
    with seeded(ctx.seed):
        batches = calibration_batches(handle, ctx, p.dataset, p.n_calibration, p.seq_len)
        norms = input_norms(model, layers, batches)
    return {name: norm.clamp_min(1e-6) ** p.activation_aware for name, norm in norms.items()}


@technique("factorize.svd")
class SVDFactorize(Technique):
    """Truncated-SVD low-rank factorization of linear layers (Denton et al., 2014; Eckart-Young: the best
    rank-r approximation in Frobenius norm). Each chosen ``nn.Linear`` W (out x in) becomes two linears,
    A = sqrt(S_r) V_r^T (in -> r) and B = U_r sqrt(S_r) (r -> out), to a fixed rank or to the rank
    keeping an ``energy`` fraction of the squared spectrum. The ranks are recorded in ``meta``.

    ``activation_aware > 0`` is ASVD (Yuan et al., 2023): the SVD of W diag(s^alpha), with s the input
    channels' activation norms on calibration texts, so channels that carry large activations are kept
    more faithfully. Plain SVD is harsh on small models: on SmolLM2-135M's MLPs at rank 384 WikiText-2
    perplexity went 39 -> 67,000 plain and -> 723 with alpha = 1 (pair it with ``distill.*``).
    """

    Params = SVDParams
    requires = ("torch", "transformers")
    accepts = (F.TORCH, F.TORCH_SPARSE) + F.QUANTIZED_TORCH
    produces = F.TORCH_LOWRANK
    dequantizes = F.QUANTIZED_TORCH
    runs_on_device = True
    hints = {F.TORCH_LOWRANK: "the model is already factorized: factorize once (one step with all targets)",
             F.ONNX: "factorize before deploy.onnxruntime"}

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return bool(params.activation_aware)  # plain SVD is deterministic; ASVD calibrates on seeded texts

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.lowrank import replace_module

        p = self.params
        handle.activate()
        model = copied_model(handle)
        layers = decoder_linears(model, p.targets)
        scales = activation_scales(handle, ctx, model, layers, p)
        ranks: dict[str, int] = {}
        before = sum(lin.weight.numel() for lin in layers.values())
        for name, lin in layers.items():
            rank = chosen_rank(lin, p, scales.get(name))
            if rank is not None:
                replace_module(model, name, factorized(lin, rank, scales.get(name)))
                ranks[name] = rank
        after = sum(lin.weight.numel() for name, lin in decoder_linears(model, p.targets).items())
        return Applied(handle.derive(model=model), FactorizeReport(ranks, len(layers), before, after))


@dataclass(frozen=True)
class FactorizeReport:
    """What a factorization did.

    Attributes:
        ranks: rank of every factorized layer (layers left dense are absent).
        considered_layers: layers that matched the targets.
        weights_before: weights in the considered layers before.
        weights_after: weights in those layers (and their factors) after.
    """

    ranks: dict[str, int]
    considered_layers: int
    weights_before: int
    weights_after: int
