"""Initialization: start from a pretrained model (``init.pretrained``) or design and train a small
efficient model from scratch (``init.scratch``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from adapters import formats as F
from adapters.errors import ModelLoadError, UsageError
from adapters.handle import ModelHandle
from adapters.sources import ModelSource
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import (
    TrainReport,
    batches,
    causal_lm_loss,
    copied_model,
    finite,
    seeded,
    step_budget,
    token_blocks,
    train,
    trainable_counts,
)

ALL_MODEL_FORMATS = F.TORCH_BACKEND + (F.ONNX,)

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PretrainedParams:
    """Params of ``init.pretrained``.

    Attributes:
        source: a model source (builtin name, local HF directory, ``.gguf`` file, hub id); None keeps
            the path's base model (the step then records provenance only).
        dtype: cast the weights to this dtype; ``auto`` keeps the stored dtype.
    """

    source: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self) -> None:
        if self.source is not None:
            try:
                ModelSource.parse(self.source)
            except (UsageError, ModelLoadError) as exc:
                raise ValueError(f"source: {exc}") from None


@technique("init.pretrained")
class Pretrained(Technique):
    """Load a pretrained model (transfer from a pretrained checkpoint; Howard & Ruder, 2018, ULMFiT).

    With ``source`` the model is loaded from that source and replaces the path's model; without it the
    path's model is kept unchanged, so a path can name its starting point explicitly. ``dtype`` casts a
    copy of the weights.
    """

    Params = PretrainedParams
    requires = ("torch", "transformers")
    uses_seed = False
    hints = {f: "a quantized or exported model cannot be cast: cast before quantizing (init.pretrained(dtype) first)"
             for f in (F.TORCH_INT8, F.QUANTO, F.ONNX)}

    @classmethod
    def accepted_formats(cls, params: Any) -> tuple[str, ...]:
        if params.source is not None or params.dtype == "auto":
            return ALL_MODEL_FORMATS  # the input is replaced, or kept as it is
        return F.FLOAT_TORCH + (F.COMPRESSED,)

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        super().output_format(input_format, params)
        if params.source is not None:
            return F.TORCH
        if params.dtype != "auto" and input_format == F.COMPRESSED:
            return F.TORCH  # the cast copy is no longer the packed checkpoint
        return input_format

    @classmethod
    def conversion(cls, input_format: str, params: Any) -> str | None:
        if params.source is None and params.dtype != "auto" and input_format == F.COMPRESSED:
            return "cast the dequantized compressed-tensors weights (the packed checkpoint is not kept)"
        return None

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.sources import load_source

        p = self.params
        if p.source is not None:
            loaded = load_source(p.source, threads=handle.threads, batch_size=handle.batch_size, seed=ctx.seed)
            handle = replaced(handle, loaded.model, loaded.tokenizer, loaded.source)
        if p.dtype == "auto":
            return Applied(handle.derive())
        import torch

        return Applied(handle.derive(model=copied_model(handle).to(getattr(torch, p.dtype))))


def replaced(handle: ModelHandle, model: Any, tokenizer: Any, source: str) -> ModelHandle:
    """A torch handle of a new model that keeps the incoming handle's lineage and runtime settings (the
    incoming handle may be on another backend)."""
    return ModelHandle(model, tokenizer, source=source, lineage=handle.lineage, threads=handle.threads,
                       batch_size=handle.batch_size, generation_kwargs=dict(handle.generation_kwargs),
                       prompt_hooks=handle.prompt_hooks, inference_hooks=handle.inference_hooks)


@dataclass(frozen=True)
class ScratchParams:
    """Params of ``init.scratch``: the architecture and its training budget.

    Attributes:
        hidden: model width.
        layers: unique decoder blocks (each with its own weights); the model runs ``layers x share_repeat`` of
            them with ``layer_sharing: immediate``.
        heads: query heads (``hidden`` must be divisible by it).
        kv_heads: key/value heads shared by groups of query heads: grouped-query attention (GQA; Ainslie et al.
            2023); 1 is multi-query attention (MQA; Shazeer 2019), ``heads`` is plain multi-head attention.
        layer_sharing: ``none``, or ``immediate``: MobileLLM's immediate block-wise weight sharing (Liu et al.
            2024): each unique block is computed ``share_repeat`` times in a row (block i runs at depths 2i and
            2i+1 for 2), deepening the model without adding parameters; each depth keeps its own KV-cache slot.
        share_repeat: with ``layer_sharing: immediate``, how many times in a row each block runs (>= 2).
        intermediate: SwiGLU hidden width; None uses 8/3 x hidden rounded up to a multiple of 64.
        max_steps: training steps; None uses the spec's ``max_steps``, else 200.
        lr: peak AdamW learning rate (warmup then cosine decay).
        batch_size: sequences per step.
        seq_len: tokens per sequence (also the context length of the model).
        dataset: a named dataset of the spec, or None for the upstream dataset / the synthetic corpus.
        n_texts: how many texts to read from the dataset.
    """

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    layer_sharing: Literal["none", "immediate"] = "none"
    share_repeat: int = 2
    intermediate: int | None = None
    max_steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 8
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 2000

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "kv_heads", "batch_size", "seq_len", "n_texts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.share_repeat < 2:
            raise ValueError(f"share_repeat must be >= 2 (the times each shared block runs), got {self.share_repeat}")
        if self.layer_sharing == "none" and self.share_repeat != 2:
            raise ValueError(f"share_repeat ({self.share_repeat}) needs layer_sharing: immediate")
        if self.intermediate is not None and self.intermediate < 1:
            raise ValueError(f"intermediate must be >= 1, got {self.intermediate}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")

    @property
    def depth(self) -> int:
        """Decoder blocks run per token (``layers``, times ``share_repeat`` with layer sharing)."""
        return self.layers * (self.share_repeat if self.layer_sharing == "immediate" else 1)

    def config(self) -> dict[str, Any]:
        """The LlamaConfig fields of this design (``num_hidden_layers`` is the depth run; with layer sharing
        ``layer_sharing`` and ``share_repeat`` are recorded too, and rebuild the sharing on load)."""
        inter = self.intermediate or -(-(8 * self.hidden // 3) // 64) * 64
        sharing = {} if self.layer_sharing == "none" else {"layer_sharing": self.layer_sharing,
                                                           "share_repeat": self.share_repeat}
        return dict(
            hidden_size=self.hidden,
            intermediate_size=inter,
            num_hidden_layers=self.depth,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            hidden_act="silu",  # Llama's gated MLP with SiLU is SwiGLU (Shazeer, 2020)
            rms_norm_eps=1e-5,
            max_position_embeddings=max(2048, self.seq_len),
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
            **sharing,
        )


@technique("init.scratch")
class Scratch(Technique):
    """A small efficient Llama-family model designed and pretrained from scratch (MobileLLM, Liu et al.
    2024; SmolLM2, Allal et al. 2025): grouped-query attention (Ainslie et al. 2023; ``kv_heads: 1`` is
    multi-query attention), SwiGLU MLP (Shazeer 2020), RMSNorm (Zhang & Sennrich 2019), tied input/output
    embeddings and optionally MobileLLM's immediate block-wise layer sharing, with the SmolLM2 tokenizer,
    trained with AdamW on next-token prediction for a step budget.

    With layer sharing the repeated depths are their own decoder blocks (own KV-cache slot) whose attention,
    MLP and norms are the same modules as the first block of their run (:func:`adapters.sources.share_blocks`):
    parameters are counted once, a shared tensor is saved once, and the artifact reloads shared. Techniques
    that walk the decoder's modules see a shared part once (pruning prunes it once, a replacement such as a
    low-rank pair or LoRA applies at every depth that runs it); the quantized formats (``quant.int8``,
    ``quant.rtn``) cannot save a shared model yet. The path's incoming model is replaced (its lineage is kept).
    """

    Params = ScratchParams
    requires = ("torch", "transformers")
    runs_on_device = True
    accepts = ALL_MODEL_FORMATS  # the incoming model is replaced
    produces = F.TORCH
    uses_step_budget = True

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.corpus import resolve_texts
        from adapters.sources import block_counts, build_scratch

        p = self.params
        config = p.config()
        model, tokenizer = build_scratch(config, seed=ctx.seed)
        model.to(ctx.device)
        handle.activate()
        steps = step_budget(p.max_steps, ctx, 200)
        blocks = token_blocks(tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)
        with seeded(ctx.seed):
            result = train(model, batches(blocks, p.batch_size, ctx.seed), steps, causal_lm_loss, lr=p.lr,
                           weight_decay=0.1, warmup=min(20, steps // 10), progress=ctx.progress)
        model.eval()
        trainable, total = trainable_counts(model)
        unique, depth = block_counts(model)
        report = ScratchReport(result.steps, finite(result.first_loss), finite(result.final_loss), trainable, total,
                               False, config, result.steps * p.batch_size * p.seq_len, unique, depth)
        return Applied(replaced(handle, model, tokenizer, ModelSource("scratch", "scratch", config).id), report)


@dataclass(frozen=True)
class ScratchReport(TrainReport):
    """What pretraining from scratch did: a :class:`TrainReport` plus the architecture and the tokens seen
    (``total_params`` counts shared blocks once).

    Attributes:
        config: the LlamaConfig fields of the design.
        train_tokens: tokens trained on (steps x batch x sequence length).
        unique_blocks: decoder blocks with their own weights.
        depth: decoder blocks run per token (unique blocks x share_repeat with layer sharing).
    """

    config: dict[str, Any] | None = None
    train_tokens: int = 0
    unique_blocks: int | None = None
    depth: int | None = None
