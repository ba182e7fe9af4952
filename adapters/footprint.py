"""Weight footprint: bytes of stored tensors by dtype, honest about quantized tensor subclasses."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def _leaf_tensors(t: Any) -> list[Any]:
    """The plain tensors that actually hold a (possibly quantized, wrapped) tensor's data."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Tensor", "Parameter"):
        names, _ = t.__tensor_flatten__()
        out = []
        for name in names:
            out.extend(_leaf_tensors(getattr(t, name)))
        return out
    data = getattr(t, "data", t)
    if data is not t and getattr(type(data), "__tensor_flatten__", None) is not None and type(data).__name__ != "Tensor":
        return _leaf_tensors(data)
    return [t]


def weight_footprint(model: Any) -> dict[str, int]:
    """``{dtype: bytes}`` over parameters and buffers; shared storage is counted once."""
    seen: set[tuple[int, int]] = set()
    totals: dict[str, int] = defaultdict(int)
    tensors = list(model.state_dict(keep_vars=True).values())
    for tensor in tensors:
        for leaf in _leaf_tensors(tensor):
            try:
                key = (leaf.untyped_storage().data_ptr(), leaf.data_ptr())
            except (RuntimeError, NotImplementedError, AttributeError):
                key = (id(leaf), 0)
            if key in seen:
                continue
            seen.add(key)
            totals[str(leaf.dtype).replace("torch.", "")] += leaf.numel() * leaf.element_size()
    return dict(totals)
