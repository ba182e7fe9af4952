"""On-device learning: adapting a model on the device it runs on, within that device's memory.

* ``ondevice.adapt``: local adaptation under a memory budget (``budget_gb``, else the hardware profile's
  ``memory_cap_gb``). A ladder of training configurations, from most to least memory, is walked top down: LoRA r=16
  on every decoder linear; LoRA r=8 on the attention projections; the same on the last ``last_blocks`` blocks only
  (a sparse / partial update as in TinyTL, Cai et al., 2020, and PockEngine, Zhu et al., 2023: the early blocks are
  frozen and no backward pass runs through them); + gradient checkpointing; + an int8 frozen base (torchao
  weight-only, as ``peft.qlora``); norm-only (BitFit-style) on the last blocks. Each configuration's peak memory is
  estimated (:func:`estimate_peak`) and the first that fits is trained **in a fresh child process** whose peak
  resident memory (the kernel's ``VmHWM``, as the ``memory`` suite reads it) must stay under the budget. When the
  measured peak exceeds it, the estimates are corrected by the measured excess and the first configuration that
  then fits is tried; when none does, a :class:`UsageError` names the budget and the smallest configuration's need.
  The child reads the model from an artifact in the step's work directory and writes back only the trained
  parameters (safetensors); they are merged here into a plain float model (an int8 base is dequantized first, as
  ``peft.qlora`` does).
* ``ondevice.continual``: continual local updates, one step per chunk of local data (a path of
  ``ondevice.continual`` steps, one per chunk; ``evaluate: all`` measures every chunk's model). Each step fine-tunes
  LoRA (merged) on its chunk, optionally replaying a fraction of texts from ``replay_from`` (one dataset name: the
  earlier chunks' texts), and reports the local gain (held-out perplexity of the chunk before/after) and, when
  ``replay_from`` is given, the forgetting (held-out perplexity of the replay data before/after).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from adapters import formats as F
from adapters.errors import UsageError
from adapters.technique import Applied, technique
from adapters.techniques._training import (
    TrainReport,
    batches,
    causal_lm_loss,
    copied_model,
    decoder_blocks,
    decoder_linears,
    finite,
    seeded,
    step_budget,
    token_blocks,
    train,
    trainable_counts,
)
from adapters.techniques.peft_lora import (
    DEFAULT_TARGETS,
    _WeightTraining,
    fine_tune,
    reapply_masks,
    zero_masks,
)
from adapters.techniques.train import perplexity

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
GB = 1e9
#: the line the child prints its report on
MARKER = "SLM-ONDEVICE "


@dataclass(frozen=True)
class Rung:
    """One training configuration of the ladder.

    Attributes:
        name: short label (``lora-r16-all``, ``lora-r8-attn-last2-ckpt-int8``, ``norm-last2-ckpt-int8``).
        r: LoRA rank (0: no LoRA, the normalization weights train instead).
        targets: linear module names that get adapters (empty for norm-only).
        last_blocks: only the last this many decoder blocks train (0: all of them).
        checkpointing: gradient checkpointing of the decoder blocks (activations recomputed in backward).
        int8_base: the frozen base's decoder linears are torchao int8 weight-only while training (the child loads
            them one tensor at a time and quantizes each linear as it arrives: the float weights are never all in
            memory).
        micro_batch: sequences per forward/backward pass, the gradients of a step's batch accumulated over its
            micro-batches (0: the whole batch at once): the activations of one micro-batch are live at a time.
    """

    name: str
    r: int
    targets: tuple[str, ...]
    last_blocks: int
    checkpointing: bool
    int8_base: bool
    micro_batch: int = 0


def ladder(last_blocks: int) -> list[Rung]:
    """The configurations from most to least memory (``last_blocks``: N of the partial-update rungs)."""
    n = f"last{last_blocks}"
    return [
        Rung("lora-r16-all", 16, DEFAULT_TARGETS, 0, False, False),
        Rung("lora-r8-attn", 8, ATTENTION, 0, False, False),
        Rung(f"lora-r8-attn-{n}", 8, ATTENTION, last_blocks, False, False),
        Rung(f"lora-r8-attn-{n}-ckpt", 8, ATTENTION, last_blocks, True, False),
        Rung(f"lora-r8-attn-{n}-ckpt-int8", 8, ATTENTION, last_blocks, True, True),
        Rung(f"lora-r8-attn-{n}-ckpt-int8-mb1", 8, ATTENTION, last_blocks, True, True, 1),
        Rung(f"norm-{n}-ckpt-int8-mb1", 0, (), last_blocks, True, True, 1),
    ]


@dataclass(frozen=True)
class AdaptParams:
    """Params of ``ondevice.adapt``.

    Attributes:
        budget_gb: the memory budget of the training process (1 GB = 1e9 bytes); None: the hardware profile's
            ``memory_cap_gb``.
        last_blocks: N of the partial-update configurations (only the last N decoder blocks train).
        runtime_overhead_gb: the process's own memory besides the model (interpreter, torch, transformers, peft,
            torchao: about 0.5 GB measured on these machines), added to every estimate.
        max_attempts: child processes started at most (each retry follows a measured peak over the budget).
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak AdamW learning rate (the norm-only configuration uses 10x: gains need a larger step).
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        dataset: the local data: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic
            corpus.
        n_texts: texts read from it.
        eval_fraction: share of its token blocks held out for the local perplexity before/after (at least one).
        keep_sparsity: after merging, weights that were exactly zero in the input are set back to zero.
    """

    budget_gb: float | None = None
    last_blocks: int = 2
    runtime_overhead_gb: float = 0.6
    max_attempts: int = 3
    max_steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 4
    seq_len: int = 128
    dataset: str | None = None
    n_texts: int = 1000
    eval_fraction: float = 0.1
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        if self.budget_gb is not None and not self.budget_gb > 0:
            raise ValueError(f"budget_gb must be > 0, got {self.budget_gb}")
        if self.runtime_overhead_gb < 0:
            raise ValueError(f"runtime_overhead_gb must be >= 0, got {self.runtime_overhead_gb}")
        _check_training(self)
        for name in ("last_blocks", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _check_training(p: Any) -> None:
    if not 0 < p.lr < 1:
        raise ValueError(f"lr must be in (0, 1), got {p.lr}")
    if p.max_steps is not None and p.max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {p.max_steps}")
    if not 0 < p.eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {p.eval_fraction}")
    for name in ("batch_size", "n_texts"):
        if getattr(p, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(p, name)}")
    if p.seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {p.seq_len}")


class Estimate(NamedTuple):
    """A configuration's estimated peak memory in bytes, by part (see :func:`estimate_peak`)."""

    runtime: int
    weights: int
    training_state: int
    activations: int
    total: int
    trainable_params: int


def trained_block_ids(n_blocks: int, rung: Rung) -> list[int]:
    return list(range(n_blocks))[-rung.last_blocks:] if rung.last_blocks else list(range(n_blocks))


def _block_of(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def rung_trainable(model: Any, rung: Rung) -> int:
    """Parameters the configuration trains in ``model``: LoRA's r x (in + out) per targeted linear (both factors of
    a low-rank pair) in the trained blocks, or the normalization weights of those blocks and the final norm."""
    from torch import nn

    blocks = set(trained_block_ids(len(decoder_blocks(model)), rung))
    total = 0
    for name, mod in model.named_modules():
        block = _block_of(name)
        if rung.r and isinstance(mod, nn.Linear) and block in blocks and set(name.split(".")) & set(rung.targets):
            total += rung.r * (mod.in_features + mod.out_features)
        elif not rung.r and type(mod).__name__.endswith("Norm") and (block in blocks or block is None):
            total += sum(w.numel() for w in mod.parameters(recurse=False))
    return total


def estimate_peak(model: Any, rung: Rung, batch_size: int, seq_len: int, runtime_bytes: int) -> Estimate:
    """The configuration's peak memory for fp32 training with AdamW, in bytes::

        runtime + W_base + 4 T + 12 T + tokens x (n_saved x S + A_block + 12 vocab)

    ``W_base``: the weights while training: 4 bytes a parameter (tied ones once), or with an int8 base the decoder
    linears at 1 byte plus a 4-byte scale per output channel, plus the largest linear's float weight (the child
    loads one tensor at a time and quantizes each linear as it arrives). ``T``: trainable parameters (the adapters'
    own 4 bytes, their gradients 4 and AdamW's two moments 8). ``tokens = micro-batch x seq_len`` (the whole batch
    without micro-batches). Per token and block ``A_block = 4 (10 h + 5 i + 2 heads x
    seq_len)`` bytes (saved inputs of the norms, projections, MLP and the attention probabilities) plus ``4 r`` per
    adapter. ``S``, what a trained block keeps for backward: ``A_block``, or ``4 h`` (its input) with checkpointing;
    frozen early blocks keep nothing (no backward through them), one block's ``A_block`` is live at any time. The
    logits term (logits, log-softmax and its gradient) is often the largest for a small model's big vocabulary.
    """
    from torch import nn

    c = model.config
    h, i = int(c.hidden_size), int(c.intermediate_size)
    heads, vocab = int(c.num_attention_heads), int(c.vocab_size)
    n_blocks = len(decoder_blocks(model))
    _, total_params = trainable_counts(model)
    w_base = 4 * total_params
    if rung.int8_base:
        linear = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and _block_of(n) is not None]
        w_base -= sum(3 * m.weight.numel() - 4 * m.out_features for m in linear)
        w_base += 4 * max(m.weight.numel() for m in linear)
    trainable = rung_trainable(model, rung)
    adapters = 4 * trainable if rung.r else 0
    per_block = 4 * (10 * h + 5 * i + 2 * heads * seq_len) + 4 * rung.r * len(rung.targets)
    n_trained = len(trained_block_ids(n_blocks, rung))
    saved = 4 * h if rung.checkpointing else per_block
    tokens = (rung.micro_batch or batch_size) * seq_len
    activations = tokens * (n_trained * saved + per_block + 12 * vocab)
    weights = w_base + adapters
    state = 12 * trainable
    return Estimate(runtime_bytes, weights, state, activations, runtime_bytes + weights + state + activations,
                    trainable)


def prepare(model: Any, rung: Rung, lora_alpha_ratio: int = 2, base_quantized: bool = False) -> Any:
    """``model`` set up to train under ``rung`` (in place; a peft model for LoRA rungs): frozen base, the int8 base
    quantized (unless ``base_quantized``: :func:`load_quantized_base` did it), gradient checkpointing on, adapters or
    norm weights trainable in the last blocks only."""
    from peft import LoraConfig, get_peft_model

    from adapters.techniques.peft_family import quantize_base
    from adapters.techniques.peft_lora import lora_targets

    n_blocks = len(decoder_blocks(model))
    blocks = trained_block_ids(n_blocks, rung)
    if rung.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if rung.int8_base and not base_quantized:
        quantize_base(model)
    for w in model.parameters():
        w.requires_grad_(False)
    if not rung.r:
        for name, mod in model.named_modules():
            if type(mod).__name__.endswith("Norm") and (_block_of(name) in blocks or _block_of(name) is None):
                for w in mod.parameters(recurse=False):
                    w.requires_grad_(True)
        return model
    config = LoraConfig(r=rung.r, lora_alpha=lora_alpha_ratio * rung.r, lora_dropout=0.0,
                        target_modules=lora_targets(model, rung.targets), bias="none", task_type="CAUSAL_LM",
                        layers_to_transform=blocks if rung.last_blocks else None,
                        layers_pattern="layers" if rung.last_blocks else None)
    import warnings

    with warnings.catch_warnings():  # peft warns that it cannot re-quantize an int8 base on merge: finish() does not
        warnings.filterwarnings("ignore", message=".*get_apply_tensor_subclass.*")
        return get_peft_model(model, config)


def finish(model: Any, rung: Rung) -> Any:
    """The plain float model of a prepared one: LoRA merged (into the dequantized base with an int8 base)."""
    from adapters.techniques.peft_family import dequantized_merge

    if rung.r:
        model = dequantized_merge(model) if rung.int8_base else model.merge_and_unload()
    elif rung.int8_base:
        import torch
        from torchao.utils import TorchAOBaseTensor

        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.Linear) and isinstance(mod.weight, TorchAOBaseTensor):
                    mod.weight = torch.nn.Parameter(mod.weight.dequantize(), requires_grad=False)
    if rung.checkpointing:
        model.gradient_checkpointing_disable()
    return model


def vm_status(key: str) -> int:
    """A memory line of ``/proc/self/status`` in bytes (``VmHWM``, ``VmRSS``); 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


CHILD = r"""
import json, sys
args = json.loads(open(sys.argv[1]).read())
from adapters.runtime import prepare_process, set_threads
prepare_process()
import torch, peft, transformers  # noqa: F401  (libraries first: the runtime part of the peak)
set_threads(args["threads"])
from adapters.techniques.ondevice import child_train
print("SLM-ONDEVICE " + json.dumps(child_train(args)))
"""


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere), looked up once: ``find_library`` runs ``ldconfig`` each call."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the kernel (glibc's ``malloc_trim``; nothing elsewhere). glibc keeps
    freed blocks below its (growing) mmap threshold in the heap, so a process that frees hundreds of megabytes of
    float weights keeps them resident: under a memory budget that is memory the training never gets."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def load_quantized_base(model_dir: str | Path) -> Any:
    """The float model saved in ``model_dir`` with its decoder linears torchao int8 weight-only, built without ever
    holding all float weights: an empty (meta) model is filled one stored tensor at a time (each file opened for that
    tensor alone, so no mapped file pages stay resident) and each decoder linear is quantized as soon as its weights
    are in. None for what it cannot build this way (low-rank pairs, shared blocks): load the float model then."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    from transformers import AutoConfig, AutoModelForCausalLM

    from adapters.formats import STRUCTURE_FILE, shares_blocks

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    if shares_blocks(config) or (model_dir / STRUCTURE_FILE).is_file():
        return None
    with init_empty_weights():  # parameters on the meta device, buffers (rotary frequencies) real
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
    linears = {id(m) for m in decoder_linears(model).values()}
    stored: list[tuple[Path, str]] = []
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            stored += [(file, key) for key in f.keys()]  # noqa: SIM118 (safe_open is not a mapping)
    for file, key in stored:
        with safe_open(str(file), "pt") as f:
            tensor = f.get_tensor(key)
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if attr in owner._parameters:
            owner._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
        else:
            owner.register_buffer(attr, tensor)
        if id(owner) in linears and not any(w.is_meta for w in owner.parameters(recurse=False)):
            quantize_(owner, Int8WeightOnlyConfig())
            release_freed_memory()  # the float weight just freed: glibc keeps it in its heap otherwise
    model.tie_weights()
    empty = [n for n, w in model.named_parameters() if w.is_meta]
    if empty:
        raise RuntimeError(f"ondevice.adapt: {model_dir} holds no weights for {empty[:3]}")
    for w in model.parameters():
        w.requires_grad_(False)
    return model.eval()


def child_train(args: dict[str, Any]) -> dict[str, Any]:
    """The child's work: load the model artifact, train ``args["rung"]`` on the token blocks, write the trained
    parameters (safetensors) and return losses, counts and the process's peak RSS (``VmHWM``)."""
    from safetensors.torch import save_file

    from adapters.handle import ModelHandle

    runtime = vm_status("VmRSS")
    rung = Rung(**{**args["rung"], "targets": tuple(args["rung"]["targets"])})
    quantized = load_quantized_base(args["model_dir"]) if rung.int8_base else None
    base = quantized if quantized is not None else ModelHandle.load(args["model_dir"], threads=args["threads"]).model
    blocks = json.loads(Path(args["blocks"]).read_text())
    with seeded(args["seed"]):
        model = prepare(base, rung, base_quantized=quantized is not None)
        trainable, _ = trainable_counts(model)
        result = train(model, batches(blocks, args["batch_size"], args["seed"]), args["steps"], causal_lm_loss,
                       lr=args["lr"], warmup=min(10, args["steps"] // 10), micro_batch=rung.micro_batch,
                       after_step=release_freed_memory)
    save_file({n: w.detach().contiguous() for n, w in model.named_parameters() if w.requires_grad}, args["out"])
    return {"steps": result.steps, "first_loss": finite(result.first_loss), "final_loss": finite(result.final_loss),
            "trainable_params": trainable, "runtime_rss": runtime, "peak_rss": vm_status("VmHWM")}


@dataclass(frozen=True)
class Attempt:
    """One configuration the step considered.

    Attributes:
        configuration: the rung's name.
        estimated_peak_bytes: its estimate (corrected by the measured excess after a failed run).
        measured_peak_bytes: the child's peak RSS when it ran (None: not run).
        outcome: ``chosen``, or why it was rejected.
    """

    configuration: str
    estimated_peak_bytes: int
    measured_peak_bytes: int | None
    outcome: str


@dataclass(frozen=True)
class AdaptReport(TrainReport):
    """What ``ondevice.adapt`` did (the fields of ``TrainReport``, and:)

    Attributes:
        budget_bytes: the memory budget.
        budget_from: ``budget_gb`` (the parameter) or ``memory_cap_gb`` (the hardware profile).
        configuration: the rung that trained and fit.
        configuration_detail: its settings (rank, targets, last blocks, checkpointing, int8 base).
        estimated_peak_bytes: its estimate (:func:`estimate_peak`).
        estimate_parts: the estimate by part (runtime, weights, training_state, activations).
        measured_peak_bytes: the training child's peak RSS (``VmHWM``, the kernel's high-water mark).
        runtime_rss_bytes: the child's RSS after importing its libraries, before the model.
        perplexity_before: perplexity on the held-out local blocks before training.
        perplexity_after: the same after.
        held_out_blocks: blocks held out.
        attempts: every configuration considered, top of the ladder first, and why each was rejected.
    """

    budget_bytes: int = 0
    budget_from: str = ""
    configuration: str = ""
    configuration_detail: dict[str, Any] = field(default_factory=dict)
    estimated_peak_bytes: int = 0
    estimate_parts: dict[str, int] = field(default_factory=dict)
    measured_peak_bytes: int = 0
    runtime_rss_bytes: int = 0
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    held_out_blocks: int = 0
    attempts: tuple[Attempt, ...] = ()


def budget_of(p: AdaptParams, ctx: TechniqueContext) -> tuple[int, str]:
    """The budget in bytes and where it came from."""
    if p.budget_gb is not None:
        return int(p.budget_gb * GB), "budget_gb"
    cap = ctx.hardware.get("memory_cap_gb")
    if cap is not None:
        return int(float(cap) * GB), "memory_cap_gb"
    raise UsageError("ondevice.adapt.budget_gb: no memory budget: give budget_gb or a hardware profile with "
                     "memory_cap_gb")


def split_blocks(blocks: list[list[int]], fraction: float, what: str) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out) blocks: the last ``fraction`` (at least one) is held out."""
    if len(blocks) < 2:
        raise UsageError(f"{what}: the data makes fewer than two blocks of seq_len tokens (one is held out): give "
                         "more texts or a shorter seq_len")
    held = max(1, int(len(blocks) * fraction))
    return blocks[:-held], blocks[-held:]


def choose(estimates: dict[str, Estimate], budget: int, excess: int = 0, skip: tuple[str, ...] = ()) -> str | None:
    """The first configuration (in ladder order) whose estimate plus ``excess`` fits ``budget``, not in ``skip``."""
    return next((n for n, e in estimates.items() if n not in skip and e.total + excess <= budget), None)


def _gb(n: int) -> str:
    return f"{n / GB:.3f} GB"


@technique("ondevice.adapt")
class OnDeviceAdapt(_WeightTraining):
    """Local adaptation under a memory budget: the largest LoRA / partial / int8-base / norm-only configuration that
    fits, trained in a child process whose measured peak RSS must stay under the budget; merged."""

    Params = AdaptParams
    requires = ("peft", "torch", "torchao", "transformers", "safetensors")
    hints: ClassVar[dict[str, str]] = {F.ONNX: "adapt before deploy.onnxruntime"}

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.corpus import resolve_texts

        p = self.params
        budget, budget_from = budget_of(p, ctx)
        handle.activate()
        base = copied_model(handle)
        masks = zero_masks(base) if p.keep_sparsity else {}
        train_blocks, held_out = split_blocks(
            token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len), p.eval_fraction,
            "ondevice.adapt")
        seq = max(len(b) for b in train_blocks)
        rungs = {r.name: r for r in ladder(min(p.last_blocks, len(decoder_blocks(base))))}
        estimates = {n: estimate_peak(base, r, p.batch_size, seq, int(p.runtime_overhead_gb * GB))
                     for n, r in rungs.items()}
        work = Path(ctx.workdir) / "ondevice"
        work.mkdir(parents=True, exist_ok=True)
        fmt = F.TORCH_LOWRANK if handle.format == F.TORCH_LOWRANK else F.TORCH
        handle.derive(model=base, format=fmt).save(work / "model")
        (work / "blocks.json").write_text(json.dumps(train_blocks))
        steps = step_budget(p.max_steps, ctx, 50)
        attempts: list[Attempt] = []
        excess = 0
        tried: tuple[str, ...] = ()
        while True:
            name = choose(estimates, budget, excess, tried)
            if name is None or len(tried) >= p.max_attempts:
                raise UsageError(self._refusal(budget, estimates, excess, attempts, p.max_attempts))
            for skipped in rungs:
                if skipped == name:
                    break
                if skipped not in tried and not any(a.configuration == skipped for a in attempts):
                    attempts.append(Attempt(skipped, estimates[skipped].total + excess, None,
                                            f"estimate over the budget of {_gb(budget)}"))
            rung = rungs[name]
            out = self._run_child(work, rung, p, ctx, steps, len(tried))
            if out["peak_rss"] <= budget:
                attempts.append(Attempt(name, estimates[name].total + excess, out["peak_rss"], "chosen"))
                break
            attempts.append(Attempt(name, estimates[name].total + excess, out["peak_rss"],
                                    f"measured peak {_gb(out['peak_rss'])} over the budget of {_gb(budget)}"))
            excess = max(excess, out["peak_rss"] - estimates[name].total)
            tried = (*tried, name)
        model = self._merged(copied_model(handle), rung, Path(out["file"]), ctx.seed)
        reapply_masks(model, masks)
        est = estimates[name]
        report = AdaptReport(
            out["steps"], out["first_loss"], out["final_loss"], out["trainable_params"], trainable_counts(model)[1],
            bool(masks), budget, budget_from, name, {k: v for k, v in asdict(rung).items() if k != "name"},
            est.total, {k: v for k, v in est._asdict().items() if k not in ("total", "trainable_params")},
            out["peak_rss"], out["runtime_rss"], finite(perplexity(base, held_out)), finite(perplexity(model, held_out)),
            len(held_out), tuple(attempts))
        return Applied(handle.derive(model=model), report)

    def _run_child(self, work: Path, rung: Rung, p: AdaptParams, ctx: TechniqueContext, steps: int,
                   attempt: int) -> dict[str, Any]:
        from adapters.runtime import spawn_python

        out_file = work / f"trained-{attempt}.safetensors"
        args = {"model_dir": str(work / "model"), "blocks": str(work / "blocks.json"), "rung": asdict(rung),
                "seed": ctx.seed, "batch_size": p.batch_size, "steps": steps, "threads": int(ctx.hardware.get("threads") or 1),
                "lr": p.lr * (10 if not rung.r else 1), "out": str(out_file)}
        args_file = work / f"args-{attempt}.json"
        args_file.write_text(json.dumps(args))
        run = spawn_python(CHILD, [str(args_file)])
        line = next((x for x in run.stdout.splitlines() if x.startswith(MARKER)), None)
        if run.returncode != 0 or line is None:
            raise RuntimeError(f"ondevice.adapt: the training child failed ({run.returncode}): "
                               f"{run.stderr.strip().splitlines()[-3:]}")
        return {**json.loads(line[len(MARKER):]), "file": str(out_file)}

    @staticmethod
    def _merged(model: Any, rung: Rung, trained: Path, seed: int) -> Any:
        """The float model with the child's trained parameters put in under the same configuration, finished."""
        from safetensors.torch import load_file

        with seeded(seed):
            prepared = prepare(model, rung)
        state = load_file(str(trained))
        params = dict(prepared.named_parameters())
        missing = sorted(set(state) - set(params))
        if missing:
            raise RuntimeError(f"ondevice.adapt: trained parameters {missing[:3]} are not in the prepared model")
        import torch

        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)
        finished = finish(prepared, rung)
        for w in finished.parameters():
            w.requires_grad_(True)
        finished.eval()
        return finished

    @staticmethod
    def _refusal(budget: int, estimates: dict[str, Estimate], excess: int, attempts: list[Attempt],
                 max_attempts: int) -> str:
        smallest = list(estimates)[-1]
        est = estimates[smallest]
        need = est.total + excess
        parts = (f"runtime {est.runtime / GB:.3f} + weights {est.weights / GB:.3f} + training state "
                 f"{est.training_state / GB:.3f} + activations {est.activations / GB:.3f}")
        how = f"{_gb(need)}" + (f" (its estimate, {parts}, corrected by the {_gb(excess)} a run measured over it)"
                                if excess else f" (estimated: {parts})")
        ran = [f"{a.configuration}: {a.outcome}" for a in attempts if a.measured_peak_bytes is not None]
        stop = (f"no training configuration fits the memory budget of {_gb(budget)}" if len(ran) < max_attempts
                else f"no training configuration fit the memory budget of {_gb(budget)} in {max_attempts} attempts")
        return (f"ondevice.adapt: {stop}: the smallest, {smallest}, needs {how}" +
                (f"; ran {'; '.join(ran)}" if ran else "") + "; raise budget_gb, or shorten seq_len / batch_size")


@dataclass(frozen=True)
class ContinualParams:
    """Params of ``ondevice.continual`` (one step per chunk of local data).

    Attributes:
        dataset: this chunk: a named dataset of the spec (None: the upstream ``data.*`` output or the synthetic corpus).
        replay: share of the training blocks drawn from ``replay_from`` (0: none; needs ``replay_from`` when > 0).
        replay_from: one dataset name holding earlier chunks' texts: mixed in by ``replay`` and its held-out part
            measures forgetting.
        r, alpha, dropout, target_modules: the LoRA configuration (merged after each step).
        max_steps: optimizer steps; None uses the spec's ``max_steps``, else 50.
        lr: peak AdamW learning rate.
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        n_texts: texts read from the chunk (and from ``replay_from``).
        eval_fraction: share of the chunk's (and the replay data's) blocks held out for perplexity (at least one).
        keep_sparsity: after merging, weights that were exactly zero in the input are set back to zero.
    """

    dataset: str | None = None
    replay: float = 0.0
    replay_from: str | None = None
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    max_steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 4
    seq_len: int = 128
    n_texts: int = 1000
    eval_fraction: float = 0.2
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        _check_training(self)
        if not 0 <= self.replay < 1:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")
        if self.replay > 0 and not self.replay_from:
            raise ValueError("replay > 0 needs replay_from (a dataset of earlier chunks' texts)")
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


@dataclass(frozen=True)
class ContinualReport(TrainReport):
    """What one ``ondevice.continual`` step did (the fields of ``TrainReport``, and:)

    Attributes:
        chunk_index: this chunk's place in the stream (0: no earlier ``ondevice.continual`` step in the lineage).
        perplexity_before: perplexity on this chunk's held-out blocks before the step (the local gain's baseline).
        perplexity_after: the same after.
        replay_blocks: blocks of ``replay_from`` mixed into training.
        train_blocks: training blocks of this chunk.
        forgetting_before: perplexity on ``replay_from``'s held-out blocks before the step (None: no replay data).
        forgetting_after: the same after (higher than before: forgetting).
    """

    chunk_index: int = 0
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    replay_blocks: int = 0
    train_blocks: int = 0
    forgetting_before: float | None = None
    forgetting_after: float | None = None


def replay_texts(ctx: TechniqueContext, name: str, n: int) -> list[str]:
    """The texts of the dataset ``name`` of ``replay_from``: the harness hands them in as ``ctx.inputs["replay_from"]``
    (``dataset_params``); applied directly, ``ctx.datasets[name]``."""
    from adapters.corpus import record_text

    if "replay_from" in ctx.inputs:
        records = list(ctx.inputs["replay_from"])
    elif name in ctx.datasets:
        records = list(ctx.datasets[name])
    else:
        raise UsageError(f"ondevice.continual.replay_from: unknown dataset {name!r} (defined: "
                         f"{', '.join(sorted(ctx.datasets)) or 'none'})")
    return [record_text(r) for r in records[:n]]


@technique("ondevice.continual")
class OnDeviceContinual(_WeightTraining):
    """Continual local updates: LoRA (merged) on one chunk of local data per step, optional replay of earlier
    chunks; reports the chunk's local gain and the forgetting of the replayed data."""

    Params = ContinualParams
    requires = ("peft", "torch", "transformers")
    dataset_params = ("replay_from",)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        from adapters.corpus import resolve_texts
        from adapters.techniques.peft_lora import lora_model

        p = self.params
        chunk_train, chunk_held = split_blocks(
            token_blocks(handle.tokenizer, resolve_texts(ctx, p.dataset, p.n_texts), p.seq_len), p.eval_fraction,
            "ondevice.continual")
        replay_train: list[list[int]] = []
        replay_held: list[list[int]] = []
        if p.replay_from:
            replay_train, replay_held = split_blocks(
                token_blocks(handle.tokenizer, replay_texts(ctx, p.replay_from, p.n_texts), p.seq_len),
                p.eval_fraction, "ondevice.continual.replay_from")
        n_replay = min(len(replay_train), round(p.replay * len(chunk_train) / (1 - p.replay)))
        mixed = chunk_train + random.Random(ctx.seed).sample(replay_train, n_replay)
        handle.activate()
        before = perplexity(handle.model, chunk_held)
        forgot_before = perplexity(handle.model, replay_held) if replay_held else None
        run = fine_tune(handle, ctx, p, lambda m: lora_model(m, p), lambda m: m.merge_and_unload(), blocks=mixed)
        chunk = sum(s.technique == "ondevice.continual" for s in handle.lineage)
        report = ContinualReport(
            run.result.steps, finite(run.result.first_loss), finite(run.result.final_loss), run.trainable_params,
            run.total_params, run.sparsity_kept, chunk, finite(before), finite(perplexity(run.model, chunk_held)),
            n_replay, len(chunk_train), finite(forgot_before),
            finite(perplexity(run.model, replay_held)) if replay_held else None)
        return Applied(handle.derive(model=run.model), report)
