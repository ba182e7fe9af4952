"""Supervised fine-tuning through trl's ``SFTTrainer`` (instruction tuning as in Ouyang et al., 2022,
stage 1; Wei et al., 2022, "Finetuned Language Models Are Zero-Shot Learners").

Trains on prompt/completion pairs with the loss on the completion tokens only (trl's default for that
format), full-parameter or with LoRA adapters (``peft: lora``, merged after training). Pairs come from
a named dataset of the spec (JSONL records with ``prompt``/``completion``, or plain texts) or from the
project's seeded offline instruction pairs about a synthetic world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, TechniqueContext, technique
from adapters.techniques._training import (
    TrainReport,
    copied_model,
    finite,
    quiet_trainer,
    seeded,
    step_budget,
    trainable_counts,
)
from adapters.techniques.peft_lora import (
    DEFAULT_TARGETS,
    _WeightTraining,
    lora_targets,
    reapply_masks,
    zero_masks,
)


@dataclass(frozen=True)
class SFTParams:
    """Params of ``tune.sft``.

    Attributes:
        peft: ``none`` (all parameters train) or ``lora`` (adapters, merged afterwards).
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA configuration when ``peft: lora``.
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak learning rate.
        batch_size: examples per step.
        max_length: tokens per example (longer ones are truncated).
        dataset: a named dataset of the spec (JSONL records with ``prompt``/``completion`` keep both; plain
            texts train on the whole text); None: the offline instruction pairs.
        n_examples: examples read.
        keep_sparsity: after training, set weights that were exactly zero in the input back to zero (a pruned
            model stays pruned, as with ``peft.lora``).
    """

    peft: Literal["none", "lora"] = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 4
    max_length: int = 256
    dataset: str | None = None
    n_examples: int = 500
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        for name in ("lora_r", "batch_size", "max_length", "n_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def sft_records(ctx: TechniqueContext, p: SFTParams) -> list[dict[str, str]]:
    """Prompt/completion records (``text`` records for plain corpora)."""
    from adapters.corpus import instruction_pairs, resolve_records

    if p.dataset is None and "dataset" not in ctx.inputs:
        return instruction_pairs(p.n_examples, seed=ctx.seed)
    records = resolve_records(ctx, p.dataset, p.n_examples)
    return [r if isinstance(r, dict) else {"text": str(r)} for r in records]


def check_lengths(tokenizer: Any, records: list[dict[str, Any]], max_length: int) -> None:
    """Refuse a ``max_length`` that cuts off every completion (trl would be left with no example to train on)."""
    prompts = [len(tokenizer(r["prompt"]).input_ids) for r in records if isinstance(r.get("prompt"), str)]
    if prompts and len(prompts) == len(records) and min(prompts) >= max_length:
        raise UsageError(f"tune.sft: max_length {max_length} is shorter than every prompt (the shortest has "
                         f"{min(prompts)} tokens), so no completion would be trained on: raise max_length")


@technique("tune.sft")
class SupervisedFineTune(_WeightTraining):
    """Supervised fine-tuning with trl's SFTTrainer, full or LoRA (merged), on CPU or CUDA."""

    Params = SFTParams
    requires = ("trl", "peft", "torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        p = self.params
        handle.activate()
        model = copied_model(handle)
        masks = zero_masks(model) if p.keep_sparsity else {}
        steps = step_budget(p.max_steps, ctx, 50)
        config = SFTConfig(
            output_dir=str(ctx.workdir / "sft"), max_steps=max(steps, 1), per_device_train_batch_size=p.batch_size,
            learning_rate=p.lr, lr_scheduler_type="cosine", warmup_steps=min(10, steps // 10), seed=ctx.seed,
            data_seed=ctx.seed, use_cpu=ctx.device == "cpu", report_to="none", save_strategy="no",
            logging_steps=1, max_length=p.max_length, disable_tqdm=True, dataloader_num_workers=0,
        )
        peft_config = self._peft_config(model) if p.peft == "lora" else None
        records = sft_records(ctx, p)
        check_lengths(handle.tokenizer, records, p.max_length)
        with seeded(ctx.seed):
            trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(records),
                                 processing_class=handle.tokenizer, peft_config=peft_config)
            quiet_trainer(trainer)
            trainable, total = trainable_counts(trainer.model)
            if steps > 0:
                trainer.train()
        trained = trainer.model
        if p.peft == "lora":
            trained = trained.merge_and_unload()
        reapply_masks(trained, masks)
        trained.eval()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        report = TrainReport(steps, finite(losses[0]) if losses else None, finite(losses[-1]) if losses else None,
                             trainable, total, bool(masks))
        return Applied(handle.derive(model=trained), report)

    def _peft_config(self, model: Any) -> Any:
        from peft import LoraConfig

        p = self.params
        return LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                          target_modules=lora_targets(model, p.target_modules), bias="none", task_type="CAUSAL_LM")
