"""The low-rank pair a factorized linear becomes: ``LowRankLinear = Sequential(A: in -> r, B: r -> out)``.

A named class (not a bare ``nn.Sequential``) so that the ``torch-lowrank`` format can find every pair in a
model, also after its factors were quantized, and record the ranks next to the weights. The state-dict
keys stay those of a Sequential (``<name>.0.weight``, ``<name>.1.weight``).
"""

from __future__ import annotations

from typing import Any

from torch import nn


class LowRankLinear(nn.Sequential):
    """Two linears in sequence: ``A`` (in_features -> rank, no bias) then ``B`` (rank -> out_features)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False, dtype: Any = None):
        super().__init__(nn.Linear(in_features, rank, bias=False, dtype=dtype),
                         nn.Linear(rank, out_features, bias=bias, dtype=dtype))

    @property
    def rank(self) -> int:
        """The inner width (the A factor's outputs), also when the factors are quantized modules."""
        first: Any = self[0]
        return int(first.out_features)


def replace_module(model: Any, name: str, new: Any) -> None:
    """Set the submodule at qualified ``name`` to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
