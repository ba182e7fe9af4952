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


def _tensors(values: Any) -> list[Any]:
    """Tensors in state-dict values; torch's dynamic-quantized linears store (weight, bias) tuples and
    a dtype entry, and their int8 weights count with their per-channel scales and zero points."""
    import torch

    out: list[Any] = []
    for v in values:
        if isinstance(v, tuple | list):
            out.extend(_tensors(v))
        elif isinstance(v, torch.Tensor) and v.is_quantized:
            out.append(v.int_repr())
            if v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                out.extend([v.q_per_channel_scales(), v.q_per_channel_zero_points()])
        elif isinstance(v, torch.Tensor):
            out.append(v)
    return out


def unique_state_dict(model: Any, keep_vars: bool = False) -> dict[str, Any]:
    """``model.state_dict()`` with the entries of each module under its first name only.

    A module reachable under several names (the parts of decoder blocks that share weights) would otherwise
    appear once per name: as tensors sharing memory, which safetensors refuses, and, for a dynamic int8
    linear, as fresh scale and zero-point tensors under every later name, which would make the loader see
    the later blocks as unshared. The first name is the one ``named_modules()`` yields (the first block that
    runs the part, where :func:`adapters.sources.restore_block_sharing` looks). A model without shared
    modules gets its whole state dict, unchanged.
    """
    first: dict[int, str] = {}
    aliases = tuple(f"{name}." for name, mod in model.named_modules(remove_duplicate=False)
                    if first.setdefault(id(mod), name) != name)
    state = model.state_dict(keep_vars=keep_vars)
    return {k: v for k, v in state.items() if not k.startswith(aliases)} if aliases else state


def weight_footprint(model: Any) -> dict[str, int]:
    """``{dtype: bytes}`` over parameters and buffers; shared storage is counted once."""
    seen: set[tuple[int, int]] = set()
    totals: dict[str, int] = defaultdict(int)
    for tensor in _tensors(unique_state_dict(model, keep_vars=True).values()):
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
