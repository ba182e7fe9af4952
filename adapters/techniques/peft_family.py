"""Parameter-efficient fine-tuning besides LoRA: DoRA, IA3, BitFit, QLoRA and prompt tuning, each trained for a step
budget on a corpus with next-token cross-entropy (:func:`adapters.techniques.peft_lora.fine_tune`, the loop
``peft.lora`` uses). DoRA and IA3 are merged into the weights afterwards, so the result is a plain model every later
step and suite can use, or kept unmerged with ``merge: false`` (a ``peft-adapter`` artifact: the base and peft's
adapter files); a soft prompt is always kept unmerged.

* ``peft.dora``: DoRA (Liu et al., 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): each targeted weight is
  split into a magnitude vector and a direction; the direction gets a LoRA update and the magnitude trains too (peft
  ``LoraConfig(use_dora=True)``).
* ``peft.ia3``: (IA)3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
  Learning"): learned vectors rescale the outputs of the key and value projections and the input of the MLP's down
  projection (peft ``IA3Config``); merging multiplies them into the weights.
* ``peft.bitfit``: BitFit (Ben Zaken et al., 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
  Transformer-based Masked Language-models") trains only the bias terms. Llama-family models have no biases, so the
  bias-like parameters that exist train instead: every normalization layer's weight (RMSNorm's gain; a LayerNorm's
  bias too) and any linear bias. No adapter, nothing to merge.
* ``peft.qlora``: QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): the base's decoder
  linears are quantized and frozen, LoRA adapters train over them, and the result is the dequantized base plus the
  update as a float model. The paper's NF4 needs bitsandbytes, which needs CUDA; here the base is torchao's int8
  weight-only quantization (``Int8WeightOnlyConfig``: symmetric int8 per output channel), the one CPU quantization
  peft's LoRA layers support (``peft.tuners.lora.torchao``; peft 0.21 has no optimum-quanto LoRA layer). The merged
  model carries the int8 base's rounding, which the adapters were trained to compensate.

* ``peft.prompt_tuning``: prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt
  Tuning"): ``num_virtual_tokens`` learned embeddings are prepended to every input of the frozen model (peft
  ``PromptTuningConfig``), started from a text's token embeddings. peft returns logits for those positions too; every
  scorer drops them (:func:`adapters.formats.virtual_tokens`).

On a low-rank input (``torch-lowrank``) every technique keeps the pairs: DoRA and QLoRA adapt both factors as
``peft.lora`` does, IA3 scales the output factor of an output-scaled pair and the input factor of an input-scaled one
(the same function as scaling the pair), BitFit leaves linears alone. A quantized input is dequantized first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters import formats as F
from adapters.errors import MissingDependencyError, UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, TechniqueContext, technique
from adapters.techniques._training import TrainReport, decoder_linears, finite
from adapters.techniques.peft_lora import (
    FineTuned,
    LoraParams,
    _WeightTraining,
    fine_tune,
    finisher,
    lora_model,
    lora_targets,
)

IA3_TARGETS = ("k_proj", "v_proj", "down_proj")
#: peft's names of the adapter parameters, and the kind each report names
ADAPTER_KINDS = {"lora_A": "lora_A", "lora_B": "lora_B", "lora_magnitude_vector": "dora_magnitude",
                 "ia3_l": "ia3_scaling"}
QLORA_BASE = "int8 weight-only, symmetric per output channel (torchao Int8WeightOnlyConfig)"


@dataclass(frozen=True)
class CorpusTraining:
    """The training parameters every technique of this module shares.

    Attributes:
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak AdamW learning rate.
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
        n_texts: texts read from the dataset.
        keep_sparsity: after merging, set weights that were exactly zero in the input back to zero (a pruned model
            stays pruned).
    """

    max_steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 4
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 1000
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        for name in ("batch_size", "seq_len", "n_texts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class IA3Params(CorpusTraining):
    """Params of ``peft.ia3`` (and those of :class:`CorpusTraining`; ``lr`` defaults to the paper's 3e-3).

    Attributes:
        target_modules: linear module names that get a learned scaling vector.
        feedforward_modules: those of ``target_modules`` whose input is scaled (the paper's feed-forward rule);
            the others' output is.
        merge: multiply the vectors into the weights (default); false keeps them unmerged (``peft-adapter``).
    """

    lr: float = 3e-3
    target_modules: tuple[str, ...] = IA3_TARGETS
    feedforward_modules: tuple[str, ...] = ("down_proj",)
    merge: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        stray = [m for m in self.feedforward_modules if m not in self.target_modules]
        if stray:
            raise ValueError(f"feedforward_modules {stray} are not in target_modules {list(self.target_modules)}")


@dataclass(frozen=True)
class BitFitParams(CorpusTraining):
    """Params of ``peft.bitfit``: those of :class:`CorpusTraining` (``lr`` 1e-3: gains and biases need a larger step
    than LoRA's 2e-4)."""


@dataclass(frozen=True)
class PeftReport(TrainReport):
    """What a parameter-efficient fine-tuning step did (the fields of ``TrainReport``, and:)

    Attributes:
        trained: parameters trained by kind (``lora_A``, ``lora_B``, ``dora_magnitude``, ``ia3_scaling``,
            ``norm_weight``, ``norm_bias``, ``linear_bias``).
        targets: the modules trained or adapted, as given to peft (a low-rank pair's factor as ``k_proj.1``).
    """

    trained: dict[str, int] = field(default_factory=dict)
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class QLoraParams(LoraParams):
    """Params of ``peft.qlora``: those of ``peft.lora``; ``merge`` must stay true (the adapters trained over an int8
    base, and the result is that base dequantized plus the update; an unmerged artifact would need the int8 base)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.merge:
            raise ValueError("merge must be true for peft.qlora (its result is the dequantized int8 base plus the "
                             "update); use peft.lora with merge: false for unmerged adapters")


@dataclass(frozen=True)
class QLoraReport(PeftReport):
    """What ``peft.qlora`` did (the fields of ``PeftReport``, and:)

    Attributes:
        base_quantization: how the frozen base's linears were quantized while the adapters trained.
        quantized_layers: decoder linears quantized.
    """

    base_quantization: str = QLORA_BASE
    quantized_layers: int = 0


def peft_report(run: FineTuned, targets: list[str] | tuple[str, ...], cls: type[PeftReport] = PeftReport,
                **extra: Any) -> PeftReport:
    """The report of a peft-adapted run: its trained parameters counted by adapter kind."""
    kinds: dict[str, int] = {}
    for name, n in run.trained.items():
        kind = next((k for part, k in ADAPTER_KINDS.items() if f".{part}." in f".{name}."), "other")
        kinds[kind] = kinds.get(kind, 0) + n
    return cls(run.result.steps, finite(run.result.first_loss), finite(run.result.final_loss), run.trainable_params,
               run.total_params, run.sparsity_kept, kinds, tuple(targets), **extra)


def merged(peft_model: Any) -> Any:
    """The peft model's adapters merged into its base weights (``merge_and_unload``)."""
    return peft_model.merge_and_unload()


@technique("peft.dora")
class Dora(_WeightTraining):
    """DoRA (Liu et al., 2024) through peft: LoRA on each weight's direction plus a trained magnitude, merged.

    Same parameters as ``peft.lora``; the update is merged into the weights after training."""

    Params = LoraParams
    requires = ("peft", "torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        targets: list[str] = []

        def prepare(model: Any) -> Any:
            targets.extend(lora_targets(model, p.target_modules))
            return lora_model(model, p, use_dora=True)

        run = fine_tune(handle, ctx, p, prepare, finisher(p, merged))
        return Applied(handle.derive(model=run.model), peft_report(run, targets))


def ia3_model(model: Any, p: IA3Params) -> tuple[Any, list[str]]:
    """``model`` wrapped with peft IA3 vectors (base weights frozen), and the peft target names. A low-rank pair is
    scaled through one factor: the output factor (``.1``) for an output-scaled name, the input factor (``.0``) for a
    feed-forward one."""
    from peft import IA3Config, get_peft_model

    factors: dict[str, tuple[int, ...]] = {t: (0,) if t in p.feedforward_modules else (1,) for t in p.target_modules}
    targets = lora_targets(model, p.target_modules, factors)
    config = IA3Config(target_modules=targets, feedforward_modules=lora_targets(model, p.feedforward_modules, factors),
                       task_type="CAUSAL_LM")
    return get_peft_model(model, config), targets


@technique("peft.ia3")
class Ia3(_WeightTraining):
    """(IA)3 (Liu et al., 2022) through peft: learned vectors rescale key, value and down-projection activations.

    The vectors are multiplied into the weights after training (rows of k/v, columns of down_proj)."""

    Params = IA3Params
    requires = ("peft", "torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        targets: list[str] = []

        def prepare(model: Any) -> Any:
            peft_model, names = ia3_model(model, p)
            targets.extend(names)
            return peft_model

        run = fine_tune(handle, ctx, p, prepare, finisher(p, merged))
        return Applied(handle.derive(model=run.model), peft_report(run, targets))


def bias_like(model: Any) -> dict[str, str]:
    """``{parameter name: kind}`` of the parameters BitFit trains in ``model``: normalization weights and biases
    (``norm_weight``, ``norm_bias``) and linear biases (``linear_bias``)."""
    from torch import nn

    out: dict[str, str] = {}
    for mod_name, mod in model.named_modules():
        is_norm = isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("Norm")
        for p_name, _ in mod.named_parameters(recurse=False):
            if is_norm and p_name in ("weight", "bias"):
                kind = f"norm_{p_name}"
            elif isinstance(mod, nn.Linear) and p_name == "bias":
                kind = "linear_bias"
            else:
                continue
            out[f"{mod_name}.{p_name}" if mod_name else p_name] = kind
    return out


@technique("peft.bitfit")
class BitFit(_WeightTraining):
    """BitFit (Ben Zaken et al., 2022) for bias-free models: only normalization weights and any biases train."""

    Params = BitFitParams
    requires = ("torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        kinds: dict[str, str] = {}

        def prepare(model: Any) -> Any:
            kinds.update(bias_like(model))
            if not kinds:
                raise UsageError(f"{type(model).__name__} has no normalization weights or biases for BitFit to train")
            for name, w in model.named_parameters():
                w.requires_grad_(name in kinds)
            return model

        run = fine_tune(handle, ctx, self.params, prepare, lambda model: model)
        counts: dict[str, int] = {}
        for name, n in run.trained.items():
            counts[kinds[name]] = counts.get(kinds[name], 0) + n
        modules = sorted({name.rsplit(".", 2)[-2] for name in run.trained if "." in name})
        report = PeftReport(run.result.steps, finite(run.result.first_loss), finite(run.result.final_loss),
                            run.trainable_params, run.total_params, run.sparsity_kept, counts, tuple(modules))
        return Applied(handle.derive(model=run.model), report)


def plain_linear(lin: Any) -> Any:
    """A plain ``nn.Linear`` holding ``lin``'s weight and bias (a dequantized compressed-tensors model's linears keep
    their parameters in offload caches that torchao cannot assign a quantized weight to)."""
    from torch import nn

    plain = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
    plain.weight = nn.Parameter(lin.weight.detach())
    if lin.bias is not None:
        plain.bias = nn.Parameter(lin.bias.detach())
    return plain


def quantize_base(model: Any) -> int:
    """Quantize every decoder linear of ``model`` in place to torchao int8 weight-only (frozen); the number of them."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise MissingDependencyError("torchao", "peft.qlora's quantized base", "pip install -e '.[quant]'") from exc
    from adapters.lowrank import replace_module

    linears = decoder_linears(model)
    for name, lin in linears.items():
        replace_module(model, name, plain_linear(lin))
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda _mod, fqn: fqn in linears)
    for w in model.parameters():
        w.requires_grad_(False)
    return len(linears)


def dequantized_merge(peft_model: Any) -> Any:
    """The plain float model under ``peft_model``: every quantized linear dequantized, plus its LoRA update where it
    has one (peft's own torchao merge would quantize the sum again)."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from torchao.utils import TorchAOBaseTensor

    with torch.no_grad():
        updates = {id(layer.get_base_layer()): sum(layer.get_delta_weight(a) for a in layer.active_adapters)
                   for layer in peft_model.modules() if isinstance(layer, LoraLinear)}
        model = peft_model.unload()
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and isinstance(mod.weight, TorchAOBaseTensor):
                w = mod.weight.dequantize() + updates.get(id(mod), 0)
                mod.weight = torch.nn.Parameter(w, requires_grad=False)
    return model


@technique("peft.qlora")
class QLora(_WeightTraining):
    """QLoRA (Dettmers et al., 2023): LoRA over a frozen torchao int8 base (peft), merged into the dequantized base.

    The result is a float model, no quantized layer left: the int8 base dequantized plus the trained update."""

    Params = QLoraParams
    requires = ("peft", "torch", "torchao", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        targets: list[str] = []
        quantized: list[int] = []

        def prepare(model: Any) -> Any:
            targets.extend(lora_targets(model, p.target_modules))
            quantized.append(quantize_base(model))
            with warnings.catch_warnings():  # peft warns that it cannot re-quantize on merge: dequantized_merge does not
                warnings.filterwarnings("ignore", message=".*get_apply_tensor_subclass.*")
                return lora_model(model, p)

        run = fine_tune(handle, ctx, p, prepare, dequantized_merge)
        report = peft_report(run, targets, QLoraReport, quantized_layers=quantized[0])
        return Applied(handle.derive(model=run.model), report)


@dataclass(frozen=True)
class PromptTuningParams(CorpusTraining):
    """Params of ``peft.prompt_tuning`` (and those of :class:`CorpusTraining`; ``lr`` 3e-2, peft's prompt-tuning
    examples' AdamW rate: a soft prompt needs a far larger step than LoRA).

    Attributes:
        num_virtual_tokens: length of the soft prompt (virtual tokens prepended to every input).
        init_text: the soft prompt starts as the embeddings of this text's tokens, repeated or cut to
            ``num_virtual_tokens`` (Lester et al. find a vocabulary initialisation better than a random one); empty:
            random (peft's ``RANDOM`` init, seeded).
    """

    #: a soft prompt is never merged into weights: the result is always a ``peft-adapter`` artifact
    merge: ClassVar[bool] = False
    lr: float = 3e-2
    num_virtual_tokens: int = 16
    init_text: str = "Continue the following text in the same style:"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")


@dataclass(frozen=True)
class PromptTuningReport(PeftReport):
    """What ``peft.prompt_tuning`` did (the fields of ``PeftReport``, and:)

    Attributes:
        virtual_tokens: soft-prompt positions prepended to every input.
        init: ``text`` (from ``init_text``'s token embeddings) or ``random``.
    """

    virtual_tokens: int = 0
    init: str = "text"


def prompt_tuning_model(model: Any, tokenizer: Any, p: PromptTuningParams) -> Any:
    """``model`` (frozen) wrapped by peft with a trainable soft prompt of ``p.num_virtual_tokens`` embeddings, started
    from ``p.init_text``'s token embeddings as peft's ``PromptTuningInit.TEXT`` does (done here from the handle's own
    tokenizer: peft would load one by name, which an in-process model does not have)."""
    import math

    import torch
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p.num_virtual_tokens,
                                prompt_tuning_init=PromptTuningInit.RANDOM)
    peft_model = get_peft_model(model, config)
    if p.init_text:
        ids = tokenizer(p.init_text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        ids = (ids * math.ceil(p.num_virtual_tokens / len(ids)))[: p.num_virtual_tokens]
        embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding
        with torch.no_grad():
            words = model.get_input_embeddings()(torch.tensor(ids, device=embedding.weight.device))
            embedding.weight.copy_(words.to(embedding.weight.dtype))
    return peft_model


@technique("peft.prompt_tuning")
class PromptTuning(_WeightTraining):
    """Prompt tuning (Lester et al., 2021) through peft: a soft prompt of learned embeddings before every input.

    Nothing can be merged into the weights: the result is a ``peft-adapter`` artifact (the base and peft's adapter
    files), which inference-time steps and every suite take; scoring drops the soft prompt's positions."""

    Params = PromptTuningParams
    requires = ("peft", "torch", "transformers")
    produces = F.PEFT_ADAPTER

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        run = fine_tune(handle, ctx, p, lambda model: prompt_tuning_model(model, handle.tokenizer, p),
                        lambda model: model)
        report = PromptTuningReport(run.result.steps, finite(run.result.first_loss), finite(run.result.final_loss),
                                    run.trainable_params, run.total_params, False,
                                    {"soft_prompt": sum(run.trained.values())}, ("word_embeddings",),
                                    virtual_tokens=p.num_virtual_tokens, init="text" if p.init_text else "random")
        return Applied(handle.derive(model=run.model), report)
