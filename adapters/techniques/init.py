"""Initialization: start from a pretrained model (``init.pretrained``) or design and train a small
efficient model from scratch (``init.scratch``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from adapters.errors import ModelLoadError, UsageError
from adapters.handle import ModelHandle
from adapters.sources import ModelSource
from adapters.technique import Technique, TechniqueContext, technique
from adapters.techniques._training import (
    batches,
    causal_lm_loss,
    copied_model,
    lineage_step,
    seeded,
    step_budget,
    token_blocks,
    train,
)

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

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        from adapters.sources import load_source

        p = self.params
        changes: dict[str, Any] = {}
        model = handle.model
        if p.source is not None:
            loaded = load_source(p.source, threads=handle.threads, batch_size=handle.batch_size, seed=ctx.seed)
            model = loaded.model
            changes = {"tokenizer": loaded.tokenizer, "source": loaded.source, "meta": dict(loaded.meta)}
        if p.dtype != "auto":
            import torch

            if model is handle.model:
                model = copied_model(handle)
            model = model.to(getattr(torch, p.dtype))
        return handle.derive(lineage_step(self), model=model, **changes)


@dataclass(frozen=True)
class ScratchParams:
    """Params of ``init.scratch``: the architecture and its training budget.

    Attributes:
        hidden: model width.
        layers: decoder blocks.
        heads: query heads (``hidden`` must be divisible by it).
        kv_heads: key/value heads shared by groups of query heads (GQA; 1 is multi-query attention).
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
        if self.intermediate is not None and self.intermediate < 1:
            raise ValueError(f"intermediate must be >= 1, got {self.intermediate}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")

    def config(self) -> dict[str, Any]:
        """The LlamaConfig fields of this design."""
        inter = self.intermediate or -(-(8 * self.hidden // 3) // 64) * 64
        return dict(
            hidden_size=self.hidden,
            intermediate_size=inter,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            hidden_act="silu",  # Llama's gated MLP with SiLU is SwiGLU (Shazeer, 2020)
            rms_norm_eps=1e-5,
            max_position_embeddings=max(2048, self.seq_len),
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
        )


@technique("init.scratch")
class Scratch(Technique):
    """A small efficient Llama-family model designed and pretrained from scratch (MobileLLM, Liu et al.
    2024; SmolLM2, Allal et al. 2025): grouped-query attention (Ainslie et al. 2023), SwiGLU MLP
    (Shazeer 2020), RMSNorm (Zhang & Sennrich 2019) and tied input/output embeddings, with the SmolLM2
    tokenizer, trained with AdamW on next-token prediction for a step budget.

    The path's incoming model is replaced (its lineage is kept). Layer sharing is not offered: blocks
    that share weights would also share a KV-cache slot in transformers' Llama.
    """

    Params = ScratchParams
    requires = ("torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        from adapters.corpus import resolve_texts
        from adapters.sources import build_scratch

        p = self.params
        config = p.config()
        model, tokenizer = build_scratch(config, seed=ctx.seed)
        handle.activate()
        steps = step_budget(p.max_steps, ctx, 200)
        blocks = token_blocks(tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)
        with seeded(ctx.seed):
            result = train(model, batches(blocks, p.batch_size, ctx.seed), steps, causal_lm_loss, lr=p.lr,
                           weight_decay=0.1, warmup=min(20, steps // 10), progress=ctx.progress)
        model.eval()
        meta = {**handle.meta, "scratch": {"config": config, "steps": result.steps, "first_loss": result.first_loss,
                                           "final_loss": result.final_loss, "train_tokens": result.steps * p.batch_size * p.seq_len}}
        meta.pop("loader", None)
        return handle.derive(lineage_step(self), model=model, tokenizer=tokenizer,
                             source=ModelSource("scratch", "scratch", config).id, meta=meta)
