"""Architecture facts of a causal LM that the runtime interface reports (:meth:`ModelHandle.architecture`):
sizes from the model config, bytes per activation value, KV-cache bytes per token and how the input
embedding is stored. Plain functions over a config or a torch module, so every backend computes them the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer, as its config declares it.

    Attributes:
        vocab_size: rows of the input embedding and of the output head.
        hidden_size: width of the residual stream (columns of the embedding and of the output head).
        num_layers: decoder layers (``num_hidden_layers``).
        num_heads: query heads per layer (``num_attention_heads``).
        num_kv_heads: key/value heads per layer (``num_key_value_heads``; ``num_heads`` when the config has none).
        head_dim: width of one head (the config's ``head_dim``, else ``hidden_size // num_heads``).
        tied_embeddings: whether the config declares the output head tied to the input embedding
            (``tie_word_embeddings``). Whether the weights share storage now is
            :attr:`EmbeddingFacts.tied` (a technique may have re-stored the head).
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        """The facts of a ``transformers`` ``PretrainedConfig`` (or any object with its attribute names)."""
        heads = config.num_attention_heads
        return cls(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                   num_layers=config.num_hidden_layers, num_heads=heads,
                   num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                   tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def attn_dim(self) -> int:
        """Width of the attention's query projection: ``num_heads x head_dim``."""
        return self.num_heads * self.head_dim

    @property
    def head_params(self) -> int:
        """Parameters of the output head (and of the input embedding): ``vocab_size x hidden_size``."""
        return self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, bytes_per_value: int) -> int:
        """Bytes of K and V cache per token per sequence: ``2 x num_layers x num_kv_heads x head_dim x bytes_per_value``."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_value


@dataclass(frozen=True)
class EmbeddingFacts:
    """How the input embedding table is stored, for the bytes a forward pass reads.

    Attributes:
        input_table_bytes: bytes of the input embedding table stored apart from the output head (0 when tied).
        row_bytes: bytes of one row of the input table (read once per token).
        tied: whether the input table and the output head share storage.
    """

    input_table_bytes: int
    row_bytes: int
    tied: bool


def activation_bytes(model: Any) -> int:
    """Bytes per activation (and KV-cache) value: the model's float dtype, fp32 for integer-weight models."""
    dtype: Any = getattr(model, "dtype", None)
    return int(dtype.itemsize) if getattr(dtype, "is_floating_point", False) else 4


def kv_bytes_per_token(config: Any, bytes_per_value: int) -> int:
    """Bytes of K and V cache per token per sequence: 2 x layers x kv heads x head dim x bytes per value."""
    return Architecture.from_config(config).kv_bytes_per_token(bytes_per_value)


def _weight_of(module: Any) -> Any:
    w = getattr(module, "weight", None)
    return w() if callable(w) and not hasattr(w, "shape") else w  # torch's dynamic-quantized Linear: a method


def _same_storage(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a.data_ptr() == b.data_ptr() and a.data_ptr() != 0)
    except Exception:  # quantized tensor subclasses without a plain storage
        return False


def module_embedding_facts(model: Any) -> EmbeddingFacts | None:
    """The facts read from a torch model's ``get_input_embeddings``/``get_output_embeddings`` (bytes from the
    table's own footprint, so quantized tables count as stored); None when it exposes no input table.

    Tied means the input table and the output head share storage: the footprint holds it once and the head
    reads it whole, so nothing is stored apart (0). Untied (or a tie broken by a technique that re-stored the
    head, e.g. quantized it), the input table is stored apart but a step reads only the rows of its tokens.
    """
    from adapters.footprint import weight_footprint

    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    emb = get_in() if callable(get_in) else None
    table_w = _weight_of(emb) if emb is not None else None
    if table_w is None:
        return None
    table = sum(weight_footprint(emb).values())
    rows = int(getattr(emb, "num_embeddings", 0) or table_w.shape[0])
    head = get_out() if callable(get_out) else None
    head_w = _weight_of(head) if head is not None else None
    tied = head_w is not None and _same_storage(table_w, head_w)
    return EmbeddingFacts(0 if tied else table, table // max(1, rows), tied)


def config_embedding_facts(arch: Architecture, weight_bytes: int, params: int) -> EmbeddingFacts:
    """The facts for a model with no torch embedding module (e.g. an ONNX graph): tied as the config declares,
    the table ``vocab_size x hidden_size`` at the weights' mean bytes per parameter (4 when there are none)."""
    per_param = weight_bytes / params if params else 4.0
    table = int(arch.vocab_size * arch.hidden_size * per_param)
    return EmbeddingFacts(0 if arch.tied_embeddings else table, table // arch.vocab_size, arch.tied_embeddings)
