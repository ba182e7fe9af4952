"""Helpers shared by the weight-changing techniques: seeding, copying, finding the decoder's linear
layers, packing texts into token blocks and a plain AdamW training loop.

torch is imported inside the functions so that listing the registry never needs it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from adapters.errors import UsageError

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's (and Python's) RNG seeded, restoring the outer RNG state after."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def quiet_trainer(trainer: Any) -> Any:
    """A transformers ``Trainer`` that does not print a dict per logging step (with ``disable_tqdm`` it adds a
    ``PrinterCallback``); losses stay in ``trainer.state.log_history`` for the step's report."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def without_trainer_patches(model: Any) -> Any:
    """``model`` without the fused LM head trl's trainers patch onto it: an instance ``forward`` whose fallback is the
    forward bound to this very object, so a deep copy of the model (the next step's input) would still run the
    original's weights. The class's own ``forward`` takes over again."""
    model.__dict__.pop("forward", None)
    return model


def copied_model(handle: ModelHandle) -> Any:
    """A float copy of the handle's model (techniques never change their input handle): a deep copy, or,
    for a quantized format, a dequantized copy with the same structure (see ``Technique.dequantizes``)."""
    from adapters.formats import float_copy

    return float_copy(handle)


@dataclass(frozen=True)
class TrainReport:
    """What a training technique did.

    Attributes:
        steps: optimizer steps taken.
        first_loss: the training loss of the first step (None when no step ran).
        final_loss: the training loss of the last step.
        trainable_params: parameters that received gradients.
        total_params: parameters of the model.
        sparsity_kept: whether weights that were zero in the input were kept at zero.
    """

    steps: int
    first_loss: float | None
    final_loss: float | None
    trainable_params: int | None = None
    total_params: int | None = None
    sparsity_kept: bool = False


def finite(x: Any) -> float | None:
    """``x`` as a float, or None for NaN / missing."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def trainable_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, tied ones counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def decoder_blocks(model: Any) -> Sequence[Any]:
    """The decoder blocks (``model.model.layers`` for Llama-family models)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None or len(layers) == 0:
        raise UsageError(f"{type(model).__name__} has no decoder blocks (expected model.model.layers)")
    return layers


def decoder_linears(model: Any, targets: Sequence[str] | None = None) -> dict[str, Any]:
    """Every ``nn.Linear`` inside the decoder blocks by qualified name (embeddings and lm_head excluded).

    Args:
        model: a causal LM.
        targets: if given, keep only layers whose name contains one of these substrings.
    """
    from torch import nn

    inside = {id(m) for block in decoder_blocks(model) for m in block.modules()}
    found = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and id(mod) in inside and (not targets or any(t in name for t in targets))
    }
    if not found:
        raise UsageError(f"no linear layers matched in the decoder blocks (targets: {list(targets or [])})")
    return found


def token_blocks(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """Texts tokenized, joined with EOS and cut into blocks of ``seq_len`` tokens (the tail is dropped,
    and a corpus shorter than one block becomes a single shorter block)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False).input_ids)
        if eos is not None:
            stream.append(eos)
    if len(stream) < 2:
        raise UsageError("the training texts are empty: nothing to train on")
    if len(stream) < seq_len:
        return [stream]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def batches(blocks: list[list[int]], batch_size: int, seed: int) -> Iterator[Any]:
    """An endless, seeded stream of ``(batch, seq_len)`` id tensors, reshuffled every epoch."""
    import torch

    rng = random.Random(seed)
    while True:
        order = list(range(len(blocks)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            chunk = [blocks[j] for j in order[i : i + batch_size]]
            yield torch.tensor(chunk, dtype=torch.long)


class TrainResult(NamedTuple):
    """What a training loop did: the per-step losses (first and last) and the step count."""

    first_loss: float
    final_loss: float
    steps: int


def train(
    model: Any,
    data: Iterator[Any],
    steps: int,
    loss_fn: Callable[[Any, Any], Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    warmup: int = 0,
    after_step: Callable[[], None] | None = None,
    progress: Any = None,
    micro_batch: int = 0,
) -> TrainResult:
    """Train ``model`` for ``steps`` AdamW steps with linear warmup then cosine decay to 10% of ``lr``.

    Args:
        model: the module to train (switched to train mode, back to eval mode at the end).
        data: yields input-id batches (moved to the model's device here).
        steps: number of optimizer steps.
        loss_fn: ``loss_fn(model, batch) -> scalar loss tensor``.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: linear warmup steps.
        after_step: called after each optimizer step (e.g. to re-apply a sparsity mask).
        progress: a :class:`~adapters.technique.Progress`.
        micro_batch: sequences per forward/backward pass: each batch's gradients are accumulated over its
            micro-batches, each weighted by its share of the batch (0: the whole batch in one pass).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses: list[float] = []
    device = next(model.parameters()).device
    for step in range(steps):
        batch = next(data).to(device)
        opt.zero_grad(set_to_none=True)
        if micro_batch and micro_batch < len(batch):
            loss = torch.zeros(())
            for part in batch.split(micro_batch):
                part_loss = loss_fn(model, part) * (len(part) / len(batch))
                part_loss.backward()
                loss += part_loss.detach()
        else:
            loss = loss_fn(model, batch)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.update(step + 1, steps, f"loss {losses[-1]:.3f}")
    model.eval()
    return TrainResult(losses[0] if losses else math.nan, losses[-1] if losses else math.nan, len(losses))


def causal_lm_loss(model: Any, ids: Any) -> Any:
    """Next-token cross-entropy of a causal LM on a batch of ids."""
    return model(input_ids=ids, labels=ids).loss


def step_budget(explicit: int | None, ctx: TechniqueContext, default: int) -> int:
    """The number of training steps: the technique's own parameter, else the spec's budget, else ``default``."""
    return explicit if explicit is not None else (ctx.max_steps if ctx.max_steps is not None else default)


class _StopForward(Exception):
    """Raised by a hook to end a calibration forward pass once the block of interest has run."""


def input_norms(model: Any, layers: dict[str, Any], batches: list[Any], stop_after: Any = None) -> dict[str, Any]:
    """||X_j||_2 of every input feature j of every layer over all calibration tokens (forward hooks).

    Args:
        model: the model to run.
        layers: the linear layers to measure, by name.
        batches: calibration input-id tensors.
        stop_after: a module after which each forward pass is cut short (the later blocks are not needed).
    """
    import torch

    def stop(*_: Any) -> None:
        raise _StopForward

    sq = {name: torch.zeros(lin.in_features, dtype=torch.float64, device=lin.weight.device)
          for name, lin in layers.items()}
    device = next(model.parameters()).device

    def hook(name: str) -> Any:
        def record(_mod: Any, args: tuple[Any, ...], _out: Any) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sq[name] += (x * x).sum(dim=0)

        return record

    handles = [lin.register_forward_hook(hook(name)) for name, lin in layers.items()]
    if stop_after is not None:
        handles.append(stop_after.register_forward_hook(stop))
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids.to(device))
                except _StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()
    return {name: v.sqrt().float() for name, v in sq.items()}


def calibration_batches(handle: ModelHandle, ctx: TechniqueContext, dataset: str | None, n: int, seq_len: int) -> list[Any]:
    """``n`` calibration sequences of ``seq_len`` tokens (one per tensor) from the technique's texts."""
    import torch

    from adapters.corpus import resolve_texts

    texts = resolve_texts(ctx, dataset, max(64, n * 4))
    return [torch.tensor([b]) for b in token_blocks(handle.tokenizer, texts, seq_len)[:n]]
