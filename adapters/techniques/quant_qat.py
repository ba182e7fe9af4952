"""Quantization-aware training (QAT): fine-tune the model with its weights quantized in the loop, then convert.

The three steps of the QAT flow (as in torchao's ``QATConfig(step="prepare")`` ... ``step="convert"`` and LLM-QAT,
Liu et al., 2023, "LLM-QAT: Data-Free Quantization Aware Training for Large Language Models"):

1. **prepare**: every targeted decoder linear becomes an optimum-quanto ``QLinear`` that is not frozen: its float
   weights are quantized to int4 (or int8) in groups on every forward pass, with a straight-through gradient;
2. **train** for a step budget (AdamW): by default by self-distillation from the unquantized model (the input of the
   step: T^2 KL of the next-token distributions, LLM-QAT's choice), or with the causal-LM loss on the data;
3. **convert**: ``freeze()`` stores the integer weights and scales the model was trained against.

Why quanto's fake quantization rather than torchao's: the converted model is then exactly ``quant.rtn``'s artifact
(the ``quanto`` format: the same bits, groups, min-max scales and kernels), so "QAT vs post-training quantization at the
same bit width" compares two models that differ only in their weights. The fake-quantized forward pass equals the
frozen model's bit for bit (tested), so nothing is lost at conversion. torchao's convert step targets its own int4
layouts (tinygemm on CUDA, 8-bit dynamic activations x int4 weights) that no other step here reads.

The step reports, on held-out blocks of its data: perplexity of the float input, of the model quantized before
training (= ``quant.rtn`` with the same settings: the PTQ baseline) and after QAT, and the KL to the float model of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from adapters import formats as F
from adapters.errors import UsageError
from adapters.technique import Applied, Technique, technique
from adapters.techniques._training import (
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
from adapters.techniques.distill import kd_loss, mean_kl, sparsity_keeper
from adapters.techniques.quant import (
    QUANTIZER_ACCEPTS,
    QUANTIZER_HINTS,
    RTNParams,
    _quanto,
    _quanto_quantize,
    quanto_layers,
    quanto_targets,
)
from adapters.techniques.train import perplexity

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@dataclass(frozen=True)
class QATParams(RTNParams):
    """Params of ``quant.qat``: those of ``quant.rtn`` (``bits``, ``group_size``, ``targets``: the quantization the
    model is trained for and converted to), plus

    Attributes:
        loss: ``kd``: T^2 KL(float model || quantized model) of the next-token distributions (self-distillation from
            the step's input, LLM-QAT); ``lm``: next-token cross-entropy on the data.
        temperature: the KD temperature T.
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 100. 0 converts without training (the
            PTQ model, for a baseline in the same run).
        lr: peak AdamW learning rate (linear warm-up, cosine decay to 10%).
        batch_size: blocks per step.
        seq_len: tokens per block.
        dataset: the training text: a named dataset of the spec (None: the upstream ``data.*`` output or the synthetic
            corpus).
        n_texts: texts read from it.
        eval_blocks: held-out blocks (the first ones; not trained on) for the report's perplexities and KLs.
        keep_sparsity: float weights that are exactly zero in the input are kept at zero after every step.
    """

    loss: Literal["kd", "lm"] = "kd"
    temperature: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-5
    batch_size: int = 4
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 1000
    eval_blocks: int = 8
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        for name in ("batch_size", "n_texts", "eval_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class QATReport:
    """What quantization-aware training did.

    Attributes:
        layers: linears quantized.
        bits: weight bits.
        group_size: input columns per scale (None: one scale per output channel).
        granularity: how scales are chosen (quanto: min-max per group / channel, recomputed on every step).
        loss: the training objective.
        steps: optimizer steps taken.
        first_loss: the first step's training loss.
        final_loss: the last step's training loss.
        perplexity_float: perplexity of the float input model on the held-out blocks.
        perplexity_ptq: the same, quantized before training (round-to-nearest: ``quant.rtn``'s model).
        perplexity_qat: the same after quantization-aware training.
        kl_ptq: mean per-token KL(float || quantized) on the held-out blocks before training.
        kl_qat: the same after training.
        held_out_blocks: held-out blocks (``seq_len`` tokens each).
        train_blocks: blocks trained on.
        trainable_params: parameters that received gradients.
        sparsity_kept: whether zeros of the input's float weights were kept.
    """

    layers: int
    bits: int
    group_size: int | None
    granularity: str
    loss: str
    steps: int
    first_loss: float | None
    final_loss: float | None
    perplexity_float: float | None
    perplexity_ptq: float | None
    perplexity_qat: float | None
    kl_ptq: float | None
    kl_qat: float | None
    held_out_blocks: int
    train_blocks: int
    trainable_params: int
    sparsity_kept: bool


@technique("quant.qat")
class QuantizationAwareTraining(Technique):
    """Quantization-aware training to int4/int8 weights (fake-quantized fine-tuning, then convert; LLM-QAT KD).

    Self-distillation from the float input by default (Liu et al., 2023) for a step budget, then conversion to the
    ``quant.rtn`` format (optimum-quanto) it trained for."""

    Params = QATParams
    requires = ("optimum-quanto", "torch", "transformers")
    accepts = QUANTIZER_ACCEPTS
    produces = F.QUANTO
    hints = QUANTIZER_HINTS
    uses_step_budget = True
    runs_on_device = True

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        from adapters.corpus import resolve_texts

        p = self.params
        quanto = _quanto()
        handle.activate()
        teacher = handle.model
        teacher.eval()
        student = copied_model(handle)
        names = quanto_targets(student, p, self.name)
        _quanto_quantize(quanto, student, names, p.bits, p.group_size, freeze=False)  # prepare: fake quantization
        keep_zeros = sparsity_keeper(student) if p.keep_sparsity else None  # QLinears are nn.Linears: found too
        for param in student.parameters():
            param.requires_grad_(True)

        blocks = token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len)
        if len(blocks) < 2:
            raise UsageError(f"{self.name}: the training text makes fewer than two blocks of seq_len tokens (the first "
                             "eval_blocks are held out): give more texts or a shorter seq_len")
        held = min(p.eval_blocks, len(blocks) // 2)
        held_out, train_ids = blocks[:held], blocks[held:]
        device = next(student.parameters()).device
        held_tensors = [torch.tensor([b], device=device) for b in held_out]

        def loss_fn(model: Any, ids: Any) -> Any:
            if p.loss == "lm":
                return causal_lm_loss(model, ids)
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits
            return kd_loss(model(input_ids=ids).logits, t_logits, p.temperature)

        student.eval()
        ppl_float, ppl_ptq = perplexity(teacher, held_out), perplexity(student, held_out)
        kl_ptq = mean_kl(student, teacher, held_tensors)
        steps = step_budget(p.max_steps, ctx, 100)
        trainable, _ = trainable_counts(student)
        with seeded(ctx.seed):
            result = train(student, batches(train_ids, p.batch_size, ctx.seed), steps, loss_fn, lr=p.lr,
                           warmup=min(10, steps // 10), after_step=keep_zeros, progress=ctx.progress)
        ppl_qat, kl_qat = perplexity(student, held_out), mean_kl(student, teacher, held_tensors)
        for qlin in quanto_layers(student).values():  # convert: the integer weights trained against
            qlin.freeze()
        student.eval()
        group = p.group_size if p.bits == 4 else None
        report = QATReport(len(names), p.bits, group, "per-group" if group else "per-channel", p.loss, result.steps,
                           finite(result.first_loss), finite(result.final_loss), finite(ppl_float), finite(ppl_ptq),
                           finite(ppl_qat), finite(kl_ptq), finite(kl_qat), len(held_out), len(train_ids), trainable,
                           keep_zeros is not None)
        return Applied(handle.derive(model=student), report)
