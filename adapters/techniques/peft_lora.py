"""Parameter-efficient fine-tuning with LoRA through peft (Hu et al., 2021, "LoRA: Low-Rank Adaptation of
Large Language Models"): the base weights are frozen, each targeted linear W gets a trainable update
(alpha / r) B A with A (r x in) and B (out x r, zero-initialized), trained for a step budget on a corpus
with next-token cross-entropy, then merged into W (``merge_and_unload``) so the result is a plain model
every later step and suite can use (``merge: false`` keeps the adapters unmerged: a ``peft-adapter``
artifact). On a low-rank input the adapters go on both factors of each targeted pair (the result stays
low-rank); a quantized input is dequantized first (recorded in the lineage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from adapters import formats as F
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import (
    TrainReport,
    TrainResult,
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

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraParams:
    """Params of ``peft.lora``.

    Attributes:
        r: rank of the update.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the LoRA branch's input.
        target_modules: linear module names that get adapters.
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak AdamW learning rate.
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
        n_texts: texts read from the dataset.
        keep_sparsity: after merging, set weights that were exactly zero in the input back to zero (a
            pruned model stays pruned; the merged update would otherwise fill the zeros).
        merge: merge the adapters into the weights (a plain model every later step takes); false keeps them unmerged
            over the frozen base (a ``peft-adapter`` artifact: the base's weights and peft's adapter files), which
            only inference-time steps and the suites take.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 4
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 1000
    keep_sparsity: bool = True
    merge: bool = True

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


def lora_targets(model: Any, targets: tuple[str, ...] | list[str],
                 factors: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """peft ``target_modules`` for ``targets``: a name that is a low-rank pair in this model targets both of
    its factors (``up_proj.0``, ``up_proj.1``), since peft cannot wrap the pair itself.

    Args:
        model: the model the adapters go on.
        targets: module names (the last part of a qualified name).
        factors: for a name that is a pair, which factors it targets (0: the input side, 1: the output side);
            default both.
    """
    from adapters.lowrank import LowRankLinear

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"target_modules {missing} are not modules of this model")
    pairs = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    out: list[str] = []
    for t in targets:
        out.extend([f"{t}.{i}" for i in (factors or {}).get(t, (0, 1))] if t in pairs else [t])
        if t in pairs and any(n.endswith("." + t) and not isinstance(m, LowRankLinear) for n, m in model.named_modules()):
            out.append(t)  # some layers of this name stayed dense
    return out


def lora_model(model: Any, p: Any, **options: Any) -> Any:
    """Wrap ``model`` with peft LoRA adapters on ``p.target_modules`` (base weights frozen); ``options`` go to
    ``LoraConfig`` as well (e.g. ``use_dora=True``)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout,
                        target_modules=lora_targets(model, p.target_modules), bias="none", task_type="CAUSAL_LM",
                        **options)
    return get_peft_model(model, config)


@dataclass(frozen=True)
class TrainerParams:
    """The fine-tuning parameters of the techniques that train through a trl trainer (``tune.sft``, ``tune.dpo``,
    ``tune.kto``, ``distill.blackbox``).

    Attributes:
        peft: ``lora`` (adapters, merged afterwards) or ``none`` (all parameters train).
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA configuration when ``peft: lora``.
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak learning rate (cosine schedule).
        batch_size: examples per step.
        max_length: tokens per example (longer ones are truncated).
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
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        for name in ("lora_r", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def lora_config(self, model: Any) -> Any:
        """peft's ``LoraConfig`` for a trl trainer's ``peft_config`` (None unless ``peft: lora``)."""
        from peft import LoraConfig

        if self.peft != "lora":
            return None
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=lora_targets(model, self.target_modules), bias="none", task_type="CAUSAL_LM")


class _WeightTraining(Technique):
    """Shared format rules of the techniques that train the model's weights (LoRA merged, SFT, KD)."""

    accepts: ClassVar[tuple[str, ...]] = F.FLOAT_TORCH + F.QUANTIZED_TORCH
    dequantizes: ClassVar[tuple[str, ...]] = F.QUANTIZED_TORCH
    uses_step_budget: ClassVar[bool] = True
    runs_on_device: ClassVar[bool] = True
    hints: ClassVar[dict[str, str]] = {F.ONNX: "train before deploy.onnxruntime"}

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        super().output_format(input_format, params)
        if not getattr(params, "merge", True):
            return F.PEFT_ADAPTER
        if input_format == F.TORCH_LOWRANK:
            return F.TORCH_LOWRANK
        if input_format == F.TORCH_SPARSE and getattr(params, "keep_sparsity", False):
            return F.TORCH_SPARSE
        return F.TORCH


def zero_masks(model: Any) -> dict[str, Any]:
    """Where each 2-D weight is exactly zero (only for weights that have zeros)."""
    return {n: (w == 0) for n, w in model.named_parameters() if w.dim() == 2 and bool((w == 0).any())}


def reapply_masks(model: Any, masks: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(mask, 0.0)


class FineTuned(NamedTuple):
    """What :func:`fine_tune` made.

    Attributes:
        model: the trained model, finished (adapters merged).
        result: the training loop's losses and step count.
        trainable_params: parameters that received gradients.
        total_params: parameters of the model being trained (adapters included).
        trained: ``{parameter name: elements}`` of every parameter that trained (tied ones once).
        sparsity_kept: whether weights that were zero in the input were set back to zero.
    """

    model: Any
    result: TrainResult
    trainable_params: int
    total_params: int
    trained: dict[str, int]
    sparsity_kept: bool


def fine_tune(handle: ModelHandle, ctx: TechniqueContext, p: Any, prepare: Callable[[Any], Any],
              finish: Callable[[Any], Any], blocks: list[list[int]] | None = None) -> FineTuned:
    """The flow every parameter-efficient technique shares: copy the handle's model (dequantized when quantized),
    ``prepare(model)`` it for training (adapters on, the rest frozen; seeded, as adapter init draws random numbers),
    train it on ``p.dataset`` (``p.n_texts`` texts cut into ``p.seq_len`` blocks, ``p.batch_size`` per step, ``p.lr``)
    for the step budget (``p.max_steps``, else the spec's, else 50), ``finish`` it (merge) and, with
    ``p.keep_sparsity``, set the input's zero weights back to zero. ``blocks``: the token blocks to train on instead
    of ``p.dataset``'s (a caller that holds some out or mixes in others). With ``p.merge`` false (:func:`finisher`) the
    adapters stay unmerged and the base's zeros are untouched (the base is frozen)."""
    from adapters.corpus import resolve_texts

    handle.activate()
    base = copied_model(handle)
    masks = zero_masks(base) if p.keep_sparsity and getattr(p, "merge", True) else {}
    if blocks is None:
        blocks = token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)
    steps = step_budget(p.max_steps, ctx, 50)
    with seeded(ctx.seed):
        model = prepare(base)
        trainable, total = trainable_counts(model)
        trained = trained_parameters(model)
        result = train(model, batches(blocks, p.batch_size, ctx.seed), steps, causal_lm_loss, lr=p.lr,
                       warmup=min(10, steps // 10), progress=ctx.progress)
    finished = finish(model)
    reapply_masks(finished, masks)
    finished.eval()
    return FineTuned(finished, result, trainable, total, trained, bool(masks))


def finisher(p: Any, merge: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``merge`` when ``p.merge`` (the default), else keep the peft model as it is: adapters unmerged, for a
    ``peft-adapter`` artifact."""
    return merge if getattr(p, "merge", True) else (lambda model: model)


def trained_parameters(model: Any) -> dict[str, int]:
    """``{name: elements}`` of the parameters that receive gradients (``named_parameters`` names a tied one once)."""
    return {name: w.numel() for name, w in model.named_parameters() if w.requires_grad}


@technique("peft.lora")
class Lora(_WeightTraining):
    """LoRA fine-tuning through peft (Hu et al., 2021), merged into the weights after training (or kept unmerged)."""

    Params = LoraParams
    requires = ("peft", "torch", "transformers")
    version = "2"  # 2: the adapters' random init draws from the step's seed (it drew from the process's state)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        run = fine_tune(handle, ctx, p, lambda m: lora_model(m, p), finisher(p, lambda m: m.merge_and_unload()))
        report = TrainReport(run.result.steps, finite(run.result.first_loss), finite(run.result.final_loss),
                             run.trainable_params, run.total_params, run.sparsity_kept)
        return Applied(handle.derive(model=run.model), report)
