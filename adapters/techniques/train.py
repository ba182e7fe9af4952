"""Continual pretraining: keep training an existing model with the causal-LM loss on a new corpus (a domain), all
weights or the ones named, through transformers' ``Trainer`` (AdamW, warm-up, a learning-rate schedule; CPU or
the profile's CUDA device). The last ``eval_fraction`` of the corpus's token blocks is held out: the step reports
the domain perplexity on it before and after, so "did it learn the domain" is part of the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from adapters.errors import UsageError
from adapters.technique import Applied, technique
from adapters.techniques._training import (
    copied_model,
    finite,
    quiet_trainer,
    seeded,
    step_budget,
    token_blocks,
    trainable_counts,
)
from adapters.techniques.peft_lora import _WeightTraining, reapply_masks, zero_masks

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@dataclass(frozen=True)
class ContinualParams:
    """Params of ``train.continual``.

    Attributes:
        dataset: the domain corpus: a named dataset of the spec (None: the upstream ``data.*`` output or the
            synthetic corpus).
        n_texts: texts read from it.
        seq_len: tokens per training block.
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 100.
        lr: peak learning rate.
        warmup_steps: linear warm-up steps.
        lr_scheduler: transformers' scheduler name after warm-up.
        batch_size: blocks per step.
        weight_decay: AdamW weight decay.
        train_only: substrings of parameter names to train (e.g. ``["mlp"]``); None trains every weight.
        eval_fraction: share of the blocks held out for the before/after perplexity (at least one block).
        keep_sparsity: weights that are exactly zero in the input stay zero after every step.
    """

    dataset: str | None = None
    n_texts: int = 1000
    seq_len: int = 128
    max_steps: int | None = None
    lr: float = 5e-5
    warmup_steps: int = 10
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    batch_size: int = 4
    weight_decay: float = 0.0
    train_only: tuple[str, ...] | None = None
    eval_fraction: float = 0.1
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        for name in ("n_texts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2 or self.warmup_steps < 0 or (self.max_steps is not None and self.max_steps < 0):
            raise ValueError("seq_len must be >= 2, warmup_steps and max_steps >= 0")


@dataclass(frozen=True)
class ContinualReport:
    """What continual pretraining did.

    Attributes:
        steps: optimizer steps taken.
        first_loss: training loss of the first logged step.
        final_loss: training loss of the last logged step.
        perplexity_before: perplexity on the held-out blocks before training.
        perplexity_after: the same after training.
        held_out_blocks: blocks held out (``seq_len`` tokens each).
        train_blocks: blocks trained on.
        trainable_params: parameters that received gradients.
        total_params: parameters of the model.
        sparsity_kept: whether zeros of the input were kept.
    """

    steps: int
    first_loss: float | None
    final_loss: float | None
    perplexity_before: float | None
    perplexity_after: float | None
    held_out_blocks: int
    train_blocks: int
    trainable_params: int
    total_params: int
    sparsity_kept: bool


def perplexity(model: Any, blocks: list[list[int]]) -> float:
    """exp of the mean next-token loss over ``blocks`` (each block weighted by its predicted tokens)."""
    import torch

    device = next(model.parameters()).device
    total = tokens = 0.0
    with torch.no_grad():
        for block in blocks:
            ids = torch.tensor([block], device=device)
            total += float(model(input_ids=ids, labels=ids).loss) * (len(block) - 1)
            tokens += len(block) - 1
    return math.exp(total / tokens)


@technique("train.continual")
class ContinualPretraining(_WeightTraining):
    """Continual pretraining on a domain corpus with the causal-LM loss through transformers' Trainer, all or
    selected weights; reports held-out domain perplexity before and after."""

    Params = ContinualParams
    requires = ("torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        from adapters.corpus import resolve_texts

        p = self.params
        handle.activate()
        model = copied_model(handle)
        masks = zero_masks(model) if p.keep_sparsity else {}
        blocks = token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)
        if len(blocks) < 2:
            raise UsageError("train.continual: the corpus makes fewer than two blocks of seq_len tokens (one is held "
                             "out): give more texts or a shorter seq_len")
        held = max(1, int(len(blocks) * p.eval_fraction))
        train_blocks, eval_blocks = blocks[:-held], blocks[-held:]
        if p.train_only:
            for name, param in model.named_parameters():
                param.requires_grad_(any(t in name for t in p.train_only))
        trainable, total = trainable_counts(model)
        if trainable == 0:
            raise UsageError(f"train.continual.train_only: {list(p.train_only or [])} matches no parameter")
        before = perplexity(model, eval_blocks)
        steps = step_budget(p.max_steps, ctx, 100)

        class KeepZeros(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                reapply_masks(model, masks)

        args = TrainingArguments(
            output_dir=str(ctx.workdir / "continual"), max_steps=max(steps, 1), per_device_train_batch_size=p.batch_size,
            learning_rate=p.lr, lr_scheduler_type=p.lr_scheduler, warmup_steps=min(p.warmup_steps, steps),
            weight_decay=p.weight_decay, seed=ctx.seed, data_seed=ctx.seed, use_cpu=ctx.device == "cpu",
            report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        )
        data = [{"input_ids": b, "labels": b} for b in train_blocks]
        with seeded(ctx.seed):
            trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=_collate,
                              callbacks=[KeepZeros()] if masks else [])
            quiet_trainer(trainer)
            if steps > 0:
                trainer.train()
        trained = trainer.model
        for param in trained.parameters():
            param.requires_grad_(True)
        reapply_masks(trained, masks)
        trained.eval()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        report = ContinualReport(steps, finite(losses[0]) if losses else None, finite(losses[-1]) if losses else None,
                                 finite(before), finite(perplexity(trained, eval_blocks)), len(eval_blocks),
                                 len(train_blocks), trainable, total, bool(masks))
        return Applied(handle.derive(model=trained), report)


def _collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
    """Equal-length blocks (a short corpus makes one shorter block: rows are cut to the shortest)."""
    import torch

    n = min(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"][:n] for r in rows])
    return {"input_ids": ids, "labels": ids.clone()}
