"""Knowledge distillation: train the path's model (the student) to match a teacher's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters import formats as F
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, TechniqueContext, technique
from adapters.techniques._training import (
    batches,
    copied_model,
    decoder_linears,
    finite,
    seeded,
    step_budget,
    token_blocks,
    train,
)
from adapters.techniques.peft_lora import _WeightTraining


@dataclass(frozen=True)
class LogitKDParams:
    """Params of ``distill.logit``.

    Attributes:
        temperature: softening temperature T of both distributions in the KD term.
        alpha: weight of the KD term; ``1 - alpha`` weighs next-token cross-entropy on the data.
        max_steps: training steps; None uses the spec's ``max_steps``, else 100.
        lr: peak AdamW learning rate.
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        dataset: a named dataset of the spec, or None for the upstream dataset / the synthetic corpus.
        n_texts: how many texts to read from the dataset.
        eval_blocks: held-out sequences on which the KL to the teacher is measured before and after.
        keep_sparsity: keep weights that are exactly zero at zero (a pruned student stays pruned).
    """

    temperature: float = 2.0
    alpha: float = 1.0
    max_steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 4
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 1000
    eval_blocks: int = 8
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        for name in ("batch_size", "seq_len", "n_texts", "eval_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """T^2 x KL(p_teacher^T || p_student^T), averaged over tokens (Hinton et al., 2015)."""
    import torch.nn.functional as F

    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, vocab).float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, vocab).float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def mean_kl(student: Any, teacher: Any, blocks: list[Any]) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 over ``blocks`` of ids."""
    import torch

    total = 0.0
    with torch.no_grad():
        for ids in blocks:
            total += float(kd_loss(student(input_ids=ids).logits, teacher(input_ids=ids).logits, 1.0))
    return total / len(blocks)


def sparsity_keeper(model: Any) -> Any:
    """A callable re-zeroing the weights that are zero now, in layers that are at least 1% sparse."""
    import torch

    masks = []
    for lin in decoder_linears(model).values():
        keep = lin.weight.detach() != 0
        if (~keep).float().mean() >= 0.01:
            masks.append((lin.weight, keep.to(lin.weight.dtype)))

    def reapply() -> None:
        with torch.no_grad():
            for weight, keep in masks:
                weight.mul_(keep)

    return reapply


def _check_vocab(student: ModelHandle, teacher: ModelHandle) -> None:
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise UsageError("distillation needs a teacher with the student's tokenizer (the vocabularies differ)")


@dataclass(frozen=True)
class DistillReport:
    """What distillation did.

    Attributes:
        kl_before: mean per-token KL(teacher || student) on held-out sequences before training.
        kl_after: the same after training.
        held_out_blocks: held-out sequences the KL is measured on.
        steps: optimizer steps.
        first_loss: the first step's training loss.
        final_loss: the last step's training loss.
        teacher: the teacher's source.
        sparsity_kept: whether zeros of the student were kept at zero.
    """

    kl_before: float | None
    kl_after: float | None
    held_out_blocks: int
    steps: int
    first_loss: float | None
    final_loss: float | None
    teacher: str
    sparsity_kept: bool


@technique("distill.logit")
class LogitDistill(_WeightTraining):
    """White-box logit knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a
    Neural Network"): minimize T^2 KL(teacher || student) of the temperature-softened next-token
    distributions, optionally mixed with cross-entropy on the data, for a step budget with AdamW.

    The teacher is the input role ``teacher`` (a torch model with the same tokenizer, of any torch format).
    The KL to the teacher on held-out sequences before and after is the step's report.
    """

    Params = LogitKDParams
    inputs = ("teacher",)
    role_formats = {"teacher": F.TORCH_BACKEND}
    requires = ("torch", "transformers")

    def prepare(self, handle: ModelHandle, ctx: TechniqueContext) -> tuple[ModelHandle, Any, list[Any], list[list[int]]]:
        """The teacher (checked), a float copy of the student, held-out id tensors on the student's device and the
        training blocks."""
        import torch

        from adapters.corpus import resolve_texts

        p = self.params
        teacher = ctx.inputs.get("teacher")
        if not isinstance(teacher, ModelHandle) or teacher.backend != "torch":
            raise UsageError(f"{self.name} needs a torch teacher model as input `teacher:`")
        _check_vocab(handle, teacher)
        handle.activate()
        student = copied_model(handle)
        device = next(student.parameters()).device
        blocks = [torch.tensor([b], device=device)
                  for b in token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)]
        teacher.model.eval()
        return teacher, student, blocks[: p.eval_blocks], [b[0].tolist() for b in (blocks[p.eval_blocks :] or blocks)]

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        p = self.params
        teacher, student, held_out, train_ids = self.prepare(handle, ctx)

        def loss_fn(model: Any, ids: Any) -> Any:
            with torch.no_grad():
                t_logits = teacher.model(input_ids=ids).logits
            out = model(input_ids=ids, labels=ids if p.alpha < 1 else None)
            loss = p.alpha * kd_loss(out.logits, t_logits, p.temperature)
            return loss + (1 - p.alpha) * out.loss if p.alpha < 1 else loss

        steps = step_budget(p.max_steps, ctx, 100)
        before = mean_kl(student, teacher.model, held_out)
        with seeded(ctx.seed):
            result = train(student, batches(train_ids, p.batch_size, ctx.seed), steps, loss_fn, lr=p.lr,
                           warmup=min(10, steps // 10), after_step=sparsity_keeper(student) if p.keep_sparsity else None,
                           progress=ctx.progress)
        after = mean_kl(student, teacher.model, held_out)
        report = DistillReport(finite(before), finite(after), len(held_out), result.steps, finite(result.first_loss),
                               finite(result.final_loss), teacher.source, p.keep_sparsity)
        return Applied(handle.derive(model=student), report)


@dataclass(frozen=True)
class FeatureKDParams(LogitKDParams):
    """Params of ``distill.feature``: those of ``distill.logit``, plus

    Attributes:
        beta: weight of the feature term; ``alpha`` still weighs the logit KD term (0: features only) and
            ``1 - alpha`` cross-entropy on the data.
    """

    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@dataclass(frozen=True)
class FeatureReport(DistillReport):
    """What feature distillation did: :class:`DistillReport` plus the hidden-state match.

    Attributes:
        feature_mse_before: mean squared error between the (projected) student and teacher hidden states on the
            held-out sequences before training, averaged over the matched layers.
        feature_mse_after: the same after training.
        layer_map: student block -> teacher block whose outputs it was trained to match.
        projection: whether a learned projection mapped the student's width to the teacher's (dropped after).
    """

    feature_mse_before: float | None = None
    feature_mse_after: float | None = None
    layer_map: dict[int, int] | None = None
    projection: bool = False


def layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student block i (1-based output index) -> the teacher block at the same relative depth."""
    return {i: max(1, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)}


@technique("distill.feature")
class FeatureDistill(LogitDistill):
    """White-box feature distillation (FitNets, Romero et al., 2015; TinyBERT-style hidden-state matching): train the
    student's hidden states to match the teacher's at the same relative depth (MSE, through a learned linear
    projection when the widths differ, e.g. a structurally pruned student), optionally with the logit KD term.

    The teacher is the input role ``teacher`` (same tokenizer). The report has the KL and the feature MSE to the
    teacher on held-out sequences before and after.
    """

    Params = FeatureKDParams

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        p = self.params
        teacher, student, held_out, train_ids = self.prepare(handle, ctx)
        device = next(student.parameters()).device
        s_cfg, t_cfg = student.config, teacher.model.config
        pairs = layer_map(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
        widths = (s_cfg.hidden_size, t_cfg.hidden_size)
        proj = torch.nn.Linear(*widths, bias=False).to(device) if widths[0] != widths[1] else None
        if proj is not None:
            with torch.no_grad():  # start as a truncated identity
                proj.weight.copy_(torch.eye(widths[1], widths[0], device=device))
            student.add_module("_feature_projection", proj)  # trained with the student, removed after

        def feature_mse(s_states: Any, t_states: Any) -> Any:
            total = 0.0
            for i, j in pairs.items():
                s = s_states[i].float()
                total = total + torch.nn.functional.mse_loss(proj(s) if proj is not None else s, t_states[j].float())
            return total / len(pairs)

        def loss_fn(model: Any, ids: Any) -> Any:
            with torch.no_grad():
                t_out = teacher.model(input_ids=ids, output_hidden_states=True)
            out = model(input_ids=ids, labels=ids if p.alpha < 1 else None, output_hidden_states=True)
            loss = p.beta * feature_mse(out.hidden_states, t_out.hidden_states)
            if p.alpha > 0:
                loss = loss + p.alpha * kd_loss(out.logits, t_out.logits, p.temperature)
            return loss + (1 - p.alpha) * out.loss if p.alpha < 1 else loss

        def held_out_mse() -> float:
            with torch.no_grad():
                return sum(float(feature_mse(student(input_ids=ids, output_hidden_states=True).hidden_states,
                                             teacher.model(input_ids=ids, output_hidden_states=True).hidden_states))
                           for ids in held_out) / len(held_out)

        steps = step_budget(p.max_steps, ctx, 100)
        before, mse_before = mean_kl(student, teacher.model, held_out), held_out_mse()
        with seeded(ctx.seed):
            result = train(student, batches(train_ids, p.batch_size, ctx.seed), steps, loss_fn, lr=p.lr,
                           warmup=min(10, steps // 10), after_step=sparsity_keeper(student) if p.keep_sparsity else None,
                           progress=ctx.progress)
        after, mse_after = mean_kl(student, teacher.model, held_out), held_out_mse()
        if proj is not None:
            del student._feature_projection
        report = FeatureReport(finite(before), finite(after), len(held_out), result.steps, finite(result.first_loss),
                               finite(result.final_loss), teacher.source, p.keep_sparsity, finite(mse_before),
                               finite(mse_after), pairs, proj is not None)
        return Applied(handle.derive(model=student), report)
