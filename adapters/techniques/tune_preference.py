"""Preference alignment through trl: DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model
is Secretly a Reward Model") as ``tune.dpo`` and KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect
Theoretic Optimization") as ``tune.kto``.

Both train the step's input model against itself as the reference: a frozen copy of it for full fine-tuning, or, with
LoRA (the default), the same model with its adapters disabled (peft's implicit reference; the adapters are merged
after training, as in ``tune.sft``). DPO reads ``{"prompt", "chosen", "rejected"}`` pairs; KTO reads unpaired
``{"prompt", "completion", "label"}`` records or the same pairs, unpaired into ``label: true`` (chosen) and ``label:
false`` (rejected) rows. Records come from a dataset of the spec, a builtin one (``truthfulqa_pairs``,
``preferences``), or by default the seeded pairs about the synthetic world (:func:`adapters.corpus.world_preferences`).

A seeded share of the prompts (``eval_fraction``) is held out from training. The report has trl's own training
metrics (reward margin and accuracy of the first and last logged step) and, on the held-out pairs, the preference of
the model itself before and after training: the mean of log p(chosen | prompt) - log p(rejected | prompt) and the share
of pairs where chosen is the more likely, scored through the handle's lm-eval interface. From the same numbers come the
held-out implicit rewards of the trained policy against its reference (the input model): the reward margin of a pair
is ``beta`` times the change of its log-likelihood margin, which is what trl's evaluation would compute (up to the EOS
token trl appends to each completion) without two more forward passes per pair.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

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
from adapters.techniques.tune import check_lengths

Record = dict[str, Any]


@dataclass(frozen=True)
class PreferenceParams(TrainerParams):
    """Params shared by ``tune.dpo`` and ``tune.kto``: the fine-tuning ones of
    :class:`~adapters.techniques.peft_lora.TrainerParams` (with LoRA the reference is the model with its adapters
    disabled; with ``peft: none`` a frozen copy of the input; ``batch_size`` counts DPO pairs or KTO rows), plus

    Attributes:
        lr: peak learning rate (lower than SFT's by default, as in trl's DPO examples).
        beta: strength of the tie to the reference (higher: less deviation).
        dataset: a dataset of the spec or a builtin one (``truthfulqa_pairs``, ``truthfulqa_pairs_heldout``,
            ``preferences``); None: the seeded preference pairs about the synthetic world.
        n_examples: records read (before the held-out split).
        eval_fraction: share of the prompts held out from training and evaluated before and after (0: none).
        eval_pairs: at most this many held-out chosen/rejected pairs are evaluated.
    """

    lr: float = 5e-5
    beta: float = 0.1
    dataset: str | None = None
    n_examples: int = 1000
    eval_fraction: float = 0.1
    eval_pairs: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("n_examples", "eval_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class DPOParams(PreferenceParams):
    """Params of ``tune.dpo``: those of :class:`PreferenceParams`, plus

    Attributes:
        loss_type: trl's DPO loss: ``sigmoid`` (the DPO paper's), ``ipo``, ``hinge`` (SLiC) or ``robust``.
    """

    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"


@dataclass(frozen=True)
class KTOParams(PreferenceParams):
    """Params of ``tune.kto``: those of :class:`PreferenceParams`, plus

    Attributes:
        loss_type: trl's KTO loss: ``kto`` (the paper's, with the KL reference point estimated from mismatched pairs
            of each batch: batch_size >= 2) or ``apo_zero_unpaired``.
        desirable_weight: weight of the desirable rows' losses; None balances them against the undesirable ones
            (the number of undesirable rows over the desirable ones, the lower bound of the paper's Eq. 8).
        undesirable_weight: weight of the undesirable rows' losses.
    """

    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    desirable_weight: float | None = None
    undesirable_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type == "kto" and self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 with loss_type 'kto' (its KL estimate pairs each prompt with "
                             f"another row's completion in the batch), got {self.batch_size}")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class PreferenceReport(TrainReport):
    """What a preference-alignment step did: :class:`~adapters.techniques._training.TrainReport`, plus

    Attributes:
        method: the trainer and loss (``dpo/sigmoid``, ``kto/kto``).
        reference: how the reference model was held.
        train_records: records trained on (DPO: pairs; KTO: unpaired rows).
        heldout_pairs: held-out chosen/rejected pairs evaluated (0: none held out).
        first_reward_margin, final_reward_margin: trl's logged mean reward margin (chosen minus rejected implicit
            reward, beta x log-ratio to the reference) of the first and last step.
        first_reward_accuracy, final_reward_accuracy: trl's logged share of pairs whose chosen reward is the higher
            (DPO only).
        final_kl: trl's logged KL estimate of the last step (KTO only).
        heldout_reward_margin, heldout_reward_accuracy: the implicit reward margin of the trained policy against
            the reference on the held-out pairs (beta x the change of each pair's log-likelihood margin), its mean and
            the share of pairs where it is positive.
        heldout_margin_before, heldout_margin_after: mean log p(chosen | prompt) - log p(rejected | prompt), in
            nats, of the input model and of the trained one on the held-out pairs.
        heldout_accuracy_before, heldout_accuracy_after: the share of held-out pairs where chosen is the more likely.
    """

    method: str = ""
    reference: str = ""
    train_records: int = 0
    heldout_pairs: int = 0
    first_reward_margin: float | None = None
    final_reward_margin: float | None = None
    first_reward_accuracy: float | None = None
    final_reward_accuracy: float | None = None
    final_kl: float | None = None
    heldout_reward_margin: float | None = None
    heldout_reward_accuracy: float | None = None
    heldout_margin_before: float | None = None
    heldout_margin_after: float | None = None
    heldout_accuracy_before: float | None = None
    heldout_accuracy_after: float | None = None


# -- records -----------------------------------------------------------------------------------------------
def preference_records(ctx: TechniqueContext, p: PreferenceParams) -> list[Any]:
    """The step's raw records: its dataset input (the harness's), a named dataset of ``ctx.datasets``, a builtin
    dataset, or by default the seeded preference pairs about the synthetic world."""
    from adapters.corpus import BUILTIN_DATASETS, builtin_records, resolve_records, world_preferences

    if "dataset" in ctx.inputs or (p.dataset is not None and p.dataset in ctx.datasets):
        return resolve_records(ctx, p.dataset, p.n_examples)
    if p.dataset is None:
        return world_preferences(p.n_examples, seed=ctx.seed)
    if p.dataset in BUILTIN_DATASETS:
        return builtin_records(p.dataset, p.n_examples, ctx.seed)
    return resolve_records(ctx, p.dataset, p.n_examples)  # raises, naming the datasets there are


def _is_pair(r: Any) -> bool:
    return isinstance(r, dict) and all(k in r for k in ("prompt", "chosen", "rejected"))


def _is_unpaired(r: Any) -> bool:
    return isinstance(r, dict) and all(k in r for k in ("prompt", "completion", "label"))


def _shape_error(name: str, dataset: str | None, i: int, record: Any, allowed: str) -> UsageError:
    keys = sorted(record) if isinstance(record, dict) else f"a {type(record).__name__}"
    hint = ""
    if name == "tune.dpo" and _is_unpaired(record):
        hint = " (these are KTO's unpaired records: use tune.kto)"
    return UsageError(f"{name}: dataset {dataset or 'input'!r} record {i} has keys {keys}; allowed: {allowed}{hint}")


def dpo_pairs(records: list[Any], name: str = "tune.dpo", dataset: str | None = None) -> list[Record]:
    """``records`` as ``{"prompt", "chosen", "rejected"}`` pairs (text or chat messages), extra keys dropped.

    Raises:
        UsageError: a record is not a pair (naming the record, its keys and the shape allowed), or there are none.
    """
    pairs = []
    for i, r in enumerate(records):
        if not _is_pair(r):
            raise _shape_error(name, dataset, i, r, "{prompt, chosen, rejected} preference pairs")
        pairs.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
    if not pairs:
        raise UsageError(f"{name}: dataset {dataset or 'input'!r} has no records to train on")
    return pairs


def kto_rows(records: list[Any], name: str = "tune.kto", dataset: str | None = None) -> list[Record]:
    """``records`` as KTO's unpaired ``{"prompt", "completion", "label"}`` rows: a pair becomes its chosen row
    (``label`` True) then its rejected row (False); a label 0/1 becomes a boolean.

    Raises:
        UsageError: a record is neither shape, or a label is not a boolean (naming the record).
    """
    rows: list[Record] = []
    for i, r in enumerate(records):
        if _is_pair(r):
            rows += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                     {"prompt": r["prompt"], "completion": r["rejected"], "label": False}]
        elif _is_unpaired(r):
            if r["label"] not in (True, False):  # 0/1 compare equal to False/True
                raise UsageError(f"{name}: dataset {dataset or 'input'!r} record {i}: label {r['label']!r} is not "
                                 "allowed (true for a desirable completion, false for an undesirable one)")
            rows.append({"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"])})
        else:
            raise _shape_error(name, dataset, i, r, "{prompt, completion, label} rows or {prompt, chosen, rejected} pairs")
    if not rows:
        raise UsageError(f"{name}: dataset {dataset or 'input'!r} has no records to train on")
    return rows


def pairs_from_rows(rows: list[Record]) -> list[Record]:
    """Chosen/rejected pairs among unpaired rows of the same prompt: each undesirable completion against a
    desirable one (cycling through them)."""
    groups: dict[str, tuple[list[Any], list[Any], Any]] = {}
    for r in rows:
        good, bad, _ = groups.setdefault(_key(r["prompt"]), ([], [], r["prompt"]))
        (good if r["label"] else bad).append(r["completion"])
    return [{"prompt": prompt, "chosen": good[j % len(good)], "rejected": b}
            for good, bad, prompt in groups.values() if good for j, b in enumerate(bad)]


def _key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


class Split(NamedTuple):
    """Records split by prompt: those to train on and those held out."""

    train: list[Any]
    heldout: list[Any]


def split_by_prompt(records: list[Any], fraction: float, seed: int) -> Split:
    """A seeded share ``fraction`` of the distinct prompts (at least one, never all) held out with all their records;
    nothing is held out with ``fraction`` 0 or a single prompt."""
    keys = list(dict.fromkeys(_key(r["prompt"]) for r in records))
    if fraction == 0 or len(keys) < 2:
        return Split(list(records), [])
    random.Random(seed).shuffle(keys)
    held = set(keys[: min(len(keys) - 1, max(1, round(fraction * len(keys))))])
    return Split([r for r in records if _key(r["prompt"]) not in held], [r for r in records if _key(r["prompt"]) in held])


# -- the reference-free evaluation -------------------------------------------------------------------------
class MarginStats(NamedTuple):
    """A model's own preference on chosen/rejected pairs.

    Attributes:
        n: pairs evaluated.
        accuracy: share of pairs where log p(chosen | prompt) > log p(rejected | prompt).
        mean_margin: mean of log p(chosen | prompt) - log p(rejected | prompt), in nats.
        margins: that margin of each pair.
    """

    n: int
    accuracy: float
    mean_margin: float
    margins: tuple[float, ...] = ()


def _texts(tokenizer: Any, prompt: Any, completion: Any) -> tuple[str, str]:
    """(context, continuation) as text: a chat rendered with the chat template, split after the generation prompt."""
    if isinstance(prompt, str):
        return prompt, str(completion)
    context = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    return context, whole[len(context):] if whole.startswith(context) else str(completion[-1]["content"])


def preference_margins(handle: ModelHandle, pairs: list[Record]) -> MarginStats:
    """The handle's log-likelihood margin of chosen over rejected on ``pairs`` (scored through its lm-eval
    interface, as the quality suite scores multiple choice)."""
    requests = []
    for r in pairs:
        requests += [_texts(handle.tokenizer, r["prompt"], r["chosen"]), _texts(handle.tokenizer, r["prompt"], r["rejected"])]
    lls = [x.logprob for x in handle.loglikelihood(requests)]
    margins = [c - r for c, r in zip(lls[::2], lls[1::2], strict=True)]
    n = len(margins)
    if not n:
        return MarginStats(0, math.nan, math.nan)
    return MarginStats(n, sum(m > 0 for m in margins) / n, sum(margins) / n, tuple(margins))


# -- the techniques ----------------------------------------------------------------------------------------
class _PreferenceTraining(_WeightTraining):
    """Shared by ``tune.dpo`` and ``tune.kto``: records, the held-out split, the trainer and the report."""

    requires: ClassVar[tuple[str, ...]] = ("trl", "peft", "torch", "transformers", "datasets")
    method: ClassVar[str] = ""

    def training_records(self, raw: list[Any], seed: int) -> tuple[list[Record], list[Record]]:
        """(records to train on, held-out chosen/rejected pairs), split with ``seed``."""
        raise NotImplementedError

    def make_trainer(self, model: Any, ref: Any, tokenizer: Any, train: list[Record], ctx: TechniqueContext,
                     steps: int) -> Any:
        raise NotImplementedError

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        handle.activate()
        train, heldout = self.training_records(preference_records(ctx, p), ctx.seed)
        check_lengths(handle.tokenizer, [{"prompt": r["prompt"]} for r in train], p.max_length, self.name)
        model = copied_model(handle)
        masks = zero_masks(model) if p.keep_sparsity else {}
        ref = None if p.peft == "lora" else copied_model(handle).eval().requires_grad_(False)
        steps = step_budget(p.max_steps, ctx, 50)
        before = preference_margins(handle, heldout) if heldout else None
        with seeded(ctx.seed):
            trainer = self.make_trainer(model, ref, copy.deepcopy(handle.tokenizer), train, ctx, steps)
            trainable, total = trainable_counts(trainer.model)
            if steps > 0:
                trainer.train()
        trained = trainer.model.merge_and_unload() if p.peft == "lora" else trainer.model
        without_trainer_patches(trained)
        reapply_masks(trained, masks)
        trained.eval()
        out = handle.derive(model=trained)
        after = preference_margins(out, heldout) if heldout else None
        report = self._report(trainer, steps, trainable, total, bool(masks), len(train), before, after)
        return Applied(out, report)

    def config_kwargs(self, ctx: TechniqueContext, steps: int) -> dict[str, Any]:
        """The trl config fields both trainers share."""
        import torch

        p = self.params
        cuda_bf16 = ctx.device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return dict(
            output_dir=str(ctx.workdir / self.name.replace(".", "_")), max_steps=max(steps, 1),
            per_device_train_batch_size=p.batch_size, learning_rate=p.lr,
            lr_scheduler_type="cosine", warmup_steps=min(10, steps // 10), seed=ctx.seed, data_seed=ctx.seed,
            use_cpu=ctx.device == "cpu", bf16=cuda_bf16, gradient_checkpointing=False, report_to="none",
            save_strategy="no", logging_steps=1, max_length=p.max_length, disable_tqdm=True, dataloader_num_workers=0,
            beta=p.beta,
        )

    def _report(self, trainer: Any, steps: int, trainable: int, total: int, kept: bool, n_train: int,
                before: MarginStats | None, after: MarginStats | None) -> PreferenceReport:
        logs = [h for h in trainer.state.log_history if "loss" in h] if steps > 0 else []  # one per step

        def logged(i: int, key: str) -> float | None:
            """The value of the first (0) or last (-1) step that logged ``key`` (a KTO step whose batch holds no
            undesirable row logs no margin)."""
            values = [h[key] for h in logs if key in h]
            return finite(values[i]) if values else None

        p = self.params
        reference = ("the input model, LoRA adapters disabled (peft)" if p.peft == "lora"
                     else "a frozen copy of the input model")
        rewards = [p.beta * (a - b) for a, b in zip(after.margins, before.margins, strict=True)] if before and after else []
        return PreferenceReport(
            steps, logged(0, "loss"), logged(-1, "loss"), trainable, total, kept,
            method=f"{self.method}/{p.loss_type}", reference=reference, train_records=n_train,
            heldout_pairs=before.n if before else 0,
            first_reward_margin=logged(0, "rewards/margins"), final_reward_margin=logged(-1, "rewards/margins"),
            first_reward_accuracy=logged(0, "rewards/accuracies"), final_reward_accuracy=logged(-1, "rewards/accuracies"),
            final_kl=logged(-1, "kl"),
            heldout_reward_margin=sum(rewards) / len(rewards) if rewards else None,
            heldout_reward_accuracy=sum(r > 0 for r in rewards) / len(rewards) if rewards else None,
            heldout_margin_before=finite(before.mean_margin) if before else None,
            heldout_margin_after=finite(after.mean_margin) if after else None,
            heldout_accuracy_before=finite(before.accuracy) if before else None,
            heldout_accuracy_after=finite(after.accuracy) if after else None,
        )


@technique("tune.dpo")
class DirectPreferenceOptimization(_PreferenceTraining):
    """Direct Preference Optimization with trl's DPOTrainer (Rafailov et al., 2023), LoRA (merged) or full."""

    Params = DPOParams
    method = "dpo"

    def training_records(self, raw: list[Any], seed: int) -> tuple[list[Record], list[Record]]:
        p = self.params
        train, held = split_by_prompt(dpo_pairs(raw, self.name, p.dataset), p.eval_fraction, seed)
        return train, held[: p.eval_pairs]

    def make_trainer(self, model: Any, ref: Any, tokenizer: Any, train: list[Record], ctx: TechniqueContext,
                     steps: int) -> Any:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        p = self.params
        config = DPOConfig(**self.config_kwargs(ctx, steps), loss_type=[p.loss_type])
        trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=Dataset.from_list(train),
                             processing_class=tokenizer, peft_config=self.params.lora_config(model))
        return quiet_trainer(trainer)


@technique("tune.kto")
class KahnemanTverskyOptimization(_PreferenceTraining):
    """Kahneman-Tversky Optimization with trl's KTOTrainer (Ethayarajh et al., 2024), LoRA (merged) or full."""

    Params = KTOParams
    method = "kto"

    def training_records(self, raw: list[Any], seed: int) -> tuple[list[Record], list[Record]]:
        p = self.params
        if raw and all(_is_pair(r) for r in raw):  # pairs: held out as pairs, unpaired for training
            train_pairs, held = split_by_prompt(dpo_pairs(raw, self.name, p.dataset), p.eval_fraction, seed)
            train = kto_rows(train_pairs, self.name, p.dataset)
        else:
            train, held_rows = split_by_prompt(kto_rows(raw, self.name, p.dataset), p.eval_fraction, seed)
            held = pairs_from_rows(held_rows)
        random.Random(seed).shuffle(train)  # trl reads KTO data in order (its KL pairs neighbours in a batch)
        return train, held[: p.eval_pairs]

    def make_trainer(self, model: Any, ref: Any, tokenizer: Any, train: list[Record], ctx: TechniqueContext,
                     steps: int) -> Any:
        from datasets import Dataset
        from trl import KTOConfig, KTOTrainer

        p = self.params
        desirable = sum(r["label"] for r in train)
        weight = p.desirable_weight
        if weight is None:  # balance: n_undesirable / n_desirable (trl warns outside the paper's Eq. 8 range)
            weight = max(len(train) - desirable, 1) / max(desirable, 1)
        config = KTOConfig(**self.config_kwargs(ctx, steps), loss_type=p.loss_type, desirable_weight=weight,
                           undesirable_weight=p.undesirable_weight)
        trainer = KTOTrainer(model=model, ref_model=ref, args=config, train_dataset=Dataset.from_list(train),
                             processing_class=tokenizer, peft_config=self.params.lora_config(model))
        return quiet_trainer(trainer)
