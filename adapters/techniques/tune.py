"""Supervised fine-tuning through trl's ``SFTTrainer`` (instruction tuning as in Ouyang et al., 2022,
stage 1; Wei et al., 2022, "Finetuned Language Models Are Zero-Shot Learners").

Trains on prompt/completion pairs with the loss on the completion tokens only (trl's default for that
format), full-parameter or with LoRA adapters (``peft: lora``, merged after training). Pairs come from
a named dataset of the spec (JSONL records with ``prompt``/``completion``, or plain texts) or from the
project's seeded offline instruction pairs about a synthetic world.

Instruction tuning on chats: records with ``messages`` (``{"role", "content"}`` dicts) go through the tokenizer's
chat template with the loss on the assistant turns only. Each assistant turn becomes one conversational
prompt/completion record (the messages before it, then the turn), which trl renders with the chat template and masks
up to the turn (its completion-only loss). trl's ``assistant_only_loss`` would need ``{% generation %}`` markers in
the template, which SmolLM2's has not and trl cannot patch in; splitting at the turns works with any template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    without_trainer_patches,
)
from adapters.techniques.peft_lora import TrainerParams, _WeightTraining, reapply_masks, zero_masks


@dataclass(frozen=True)
class SFTParams(TrainerParams):
    """Params of ``tune.sft``: the fine-tuning ones of :class:`~adapters.techniques.peft_lora.TrainerParams`, plus

    Attributes:
        dataset: a named dataset of the spec (JSONL records with ``prompt``/``completion`` keep both; chats
            (``messages``) train on their assistant turns through the chat template; plain texts train on the whole
            text); None: the offline instruction pairs.
        n_examples: examples read.
    """

    dataset: str | None = None
    n_examples: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples}")


def sft_records(ctx: TechniqueContext, p: SFTParams) -> list[dict[str, Any]]:
    """Prompt/completion records (``text`` records for plain corpora; a chat's assistant turns as conversational
    prompt/completion records, :func:`chat_turns`; of preference data, the chosen or desirable completions).

    Raises:
        UsageError: a chat is malformed or has no assistant turn, or the records mix shapes.
    """
    from adapters.corpus import instruction_pairs, resolve_records

    if p.dataset is None and "dataset" not in ctx.inputs:
        return list(instruction_pairs(p.n_examples, seed=ctx.seed))
    records: list[dict[str, Any]] = []
    for i, r in enumerate(resolve_records(ctx, p.dataset, p.n_examples)):
        if isinstance(r, dict) and "messages" in r:
            records.extend(chat_turns(r["messages"], i))
        elif isinstance(r, dict) and "chosen" in r and "completion" not in r:  # preference pairs: SFT on the chosen
            records.append({"prompt": r.get("prompt", ""), "completion": r["chosen"]})
        elif isinstance(r, dict) and r.get("label") is False:  # an undesirable completion (KTO data) is no target
            continue
        else:
            records.append(r if isinstance(r, dict) else {"text": str(r)})
    shapes = sorted({_shape(r) for r in records})
    if len(shapes) > 1:
        raise UsageError(f"tune.sft: dataset {p.dataset!r} mixes record shapes ({', '.join(shapes)}); allowed: one of "
                         "{prompt, completion} texts, chats {messages}, plain texts")
    return records


def _shape(record: dict[str, Any]) -> str:
    if "prompt" in record:
        return "chat turns" if isinstance(record["prompt"], list) else "prompt/completion"
    return "texts"


def chat_turns(messages: Any, index: int = 0) -> list[dict[str, Any]]:
    """One conversational ``{"prompt": [messages before], "completion": [turn]}`` record per assistant turn of a chat
    (a turn that opens the chat has no prompt and is skipped).

    Raises:
        UsageError: ``messages`` is not a list of ``{"role", "content"}`` dicts, or has no assistant turn to train on.
    """
    ok = isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
    if not ok:
        raise UsageError(f"tune.sft: record {index}: messages must be a list of {{role, content}} strings, got "
                         f"{str(messages)[:80]!r}")
    turns = [{"prompt": messages[:i], "completion": [m]} for i, m in enumerate(messages)
             if m["role"] == "assistant" and i > 0]
    if not turns:
        raise UsageError(f"tune.sft: record {index}: the chat has no assistant turn after a prompt to train on "
                         f"(roles: {[m['role'] for m in messages]})")
    return turns


def prompt_length(tokenizer: Any, prompt: Any) -> int:
    """Tokens of a prompt: a text, or a chat rendered with the generation prompt."""
    if isinstance(prompt, list):
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
                   ["input_ids"])
    return len(tokenizer(prompt).input_ids)


def check_lengths(tokenizer: Any, records: list[dict[str, Any]], max_length: int, name: str = "tune.sft") -> None:
    """Refuse a ``max_length`` that cuts off every completion (trl would be left with no example to train on), and chat
    records for a tokenizer without a chat template."""
    chats = any(isinstance(r.get("prompt"), list) for r in records)
    if chats and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"{name}: the dataset holds chats (messages), but this model's tokenizer has no chat template "
                         "to render them: use prompt/completion records")
    prompts = [prompt_length(tokenizer, r["prompt"]) for r in records if isinstance(r.get("prompt"), str | list)]
    if prompts and len(prompts) == len(records) and min(prompts) >= max_length:
        raise UsageError(f"{name}: max_length {max_length} is shorter than every prompt (the shortest has "
                         f"{min(prompts)} tokens), so no completion would be trained on: raise max_length")


@technique("tune.sft")
class SupervisedFineTune(_WeightTraining):
    """Supervised fine-tuning with trl's SFTTrainer, full or LoRA (merged), on CPU or CUDA."""

    Params = SFTParams
    requires = ("trl", "peft", "torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        handle.activate()
        model = copied_model(handle)
        masks = zero_masks(model) if p.keep_sparsity else {}
        steps = step_budget(p.max_steps, ctx, 50)
        records = sft_records(ctx, p)
        check_lengths(handle.tokenizer, records, p.max_length)
        with seeded(ctx.seed):
            trainer = self.trainer(model, handle.tokenizer, records, ctx, steps)
            trainable, total = trainable_counts(trainer.model)
            if steps > 0:
                trainer.train()
        trained = trainer.model
        if p.peft == "lora":
            trained = trained.merge_and_unload()
        without_trainer_patches(trained)
        reapply_masks(trained, masks)
        trained.eval()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        report = TrainReport(steps, finite(losses[0]) if losses else None, finite(losses[-1]) if losses else None,
                             trainable, total, bool(masks))
        return Applied(handle.derive(model=trained), report)

    def trainer(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], ctx: TechniqueContext,
                steps: int) -> Any:
        """trl's ``SFTTrainer`` for ``model`` on ``records`` (its ``train_dataset`` holds the tokenized examples with
        their ``labels``: -100 outside the completions)."""
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        p = self.params
        config = SFTConfig(
            output_dir=str(ctx.workdir / "sft"), max_steps=max(steps, 1), per_device_train_batch_size=p.batch_size,
            learning_rate=p.lr, lr_scheduler_type="cosine", warmup_steps=min(10, steps // 10), seed=ctx.seed,
            data_seed=ctx.seed, use_cpu=ctx.device == "cpu", report_to="none", save_strategy="no",
            logging_steps=1, max_length=p.max_length, disable_tqdm=True, dataloader_num_workers=0,
        )
        peft_config = p.lora_config(model)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(records),
                             processing_class=tokenizer, peft_config=peft_config)
        return quiet_trainer(trainer)
