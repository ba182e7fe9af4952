"""Artifact formats: the forms a model takes between lifecycle steps.

Every model handed from one step to the next has a named format. Each format has exactly one saver and
one loader, registered once here (or in the technique module that owns the format), and an artifact is
always reloaded by the format recorded in its ``handle.json``. Techniques declare which formats they
accept and which they produce (:class:`adapters.technique.Technique`), and the planner type-checks every
path with these names before anything runs.

| format | what the model is | saved as |
|---|---|---|
| ``torch`` | a dense transformers model | ``save_pretrained`` safetensors |
| ``torch-sparse`` | dense, with zeros that later steps keep unless told otherwise | ``save_pretrained`` safetensors |
| ``torch-lowrank`` | some linears replaced by :class:`~adapters.lowrank.LowRankLinear` pairs | safetensors + ``structure.json`` |
| ``torch-int8-dynamic`` | PyTorch dynamic int8 linears (fbgemm) | int8 + scales safetensors |
| ``quanto`` | optimum-quanto weight-only int8/int4 linears | quanto state dict + map |
| ``compressed-tensors`` | llmcompressor's packed checkpoint, dequantized in memory | the compressed-tensors checkpoint |
| ``onnx`` | an ONNX Runtime session over an exported graph | ``model.onnx`` + config |
| ``gguf`` | a GGUF file run by llama.cpp (llama-cpp-python) | ``model.gguf`` + ``llamacpp.json`` |
| ``peft-adapter`` | a float base with unmerged peft adapters (LoRA, DoRA, IA3, a soft prompt) | base safetensors + ``adapter/`` (peft's files) |

The structure of a model (which linears are low-rank pairs, and their ranks) is read from the model
itself when saving and written to ``structure.json``, so a quantized low-rank model reloads with its pairs.
Decoder blocks that share weights (``config.layer_sharing``, from ``init.scratch``) are stored once and shared
again on load (:func:`adapters.sources.restore_block_sharing`).
Nothing about persistence is carried in ``handle.meta``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import ModelLoadError
from adapters.registry import Registry

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

TORCH = "torch"
TORCH_SPARSE = "torch-sparse"
TORCH_LOWRANK = "torch-lowrank"
TORCH_INT8 = "torch-int8-dynamic"
QUANTO = "quanto"
COMPRESSED = "compressed-tensors"
ONNX = "onnx"
GGUF = "gguf"
PEFT_ADAPTER = "peft-adapter"

#: float torch formats whose weights a training step can update directly
FLOAT_TORCH = (TORCH, TORCH_SPARSE, TORCH_LOWRANK)
#: quantized torch formats a weight-changing step takes by dequantizing a copy first
QUANTIZED_TORCH = (TORCH_INT8, QUANTO, COMPRESSED)
#: every format whose model runs on torch (a teacher or a reference model can be any of them)
TORCH_BACKEND = FLOAT_TORCH + QUANTIZED_TORCH
#: every format a model can be evaluated in: the inference-time steps (``infer.*``) take any of them
EVALUABLE = TORCH_BACKEND + (ONNX, GGUF, PEFT_ADAPTER)

STRUCTURE_FILE = "structure.json"
#: what to do when a step refuses a model of this format (unless the step has its own ``hints``)
REFUSAL_HINTS = {PEFT_ADAPTER: "keep the adapters merged (merge: true on the adapter step; a soft prompt cannot be "
                               "merged) or put this step before it"}
#: the folder of a ``peft-adapter`` artifact that holds peft's own adapter files (``adapter_config.json``...)
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class ArtifactFormat:
    """One named form of a model between steps.

    Attributes:
        name: the format's name (``torch-int8-dynamic``).
        description: one line for ``slm techniques`` and the README.
        backend: the runtime its handles run on (``torch``, ``onnxruntime``).
        save: ``save(handle, directory)`` writes the weights (the handle writes tokenizer and handle.json).
        load: ``load(directory, info) -> ModelHandle`` with ``info`` the handle.json fields
            (lineage already parsed into LineageSteps).
        dequantize: for quantized torch formats, ``dequantize(model) -> model``: a float copy with the
            same structure (what a weight-changing step works on); None for float formats.
    """

    name: str
    description: str
    backend: str
    save: Callable[[ModelHandle, Path], None]
    load: Callable[[Path, dict[str, Any]], ModelHandle]
    dequantize: Callable[[Any], Any] | None = None


FORMATS: Registry[ArtifactFormat] = Registry("artifact format", discover=("adapters.techniques",))


def register_format(fmt: ArtifactFormat) -> ArtifactFormat:
    """Register a format once (a second registration under the same name raises)."""
    return FORMATS.register(fmt.name, fmt)


def get_format(name: str) -> ArtifactFormat:
    return FORMATS.get(name)


def format_names() -> list[str]:
    """Every registered format, in the order of the table above, then any others."""
    order = [TORCH, TORCH_SPARSE, TORCH_LOWRANK, TORCH_INT8, QUANTO, COMPRESSED, ONNX, GGUF, PEFT_ADAPTER]
    names = FORMATS.names()
    return [n for n in order if n in names] + [n for n in names if n not in order]


# -- model structure -----------------------------------------------------------------------------
def lowrank_ranks(model: Any) -> dict[str, int]:
    """``{qualified name: rank}`` of every low-rank pair in the model (quantized pairs included)."""
    from adapters.lowrank import LowRankLinear

    return {name: mod.rank for name, mod in model.named_modules() if isinstance(mod, LowRankLinear)}


def write_structure(model: Any, path: Path) -> None:
    """Record the structure ``from_config`` does not restore (low-rank pairs) next to the weights."""
    ranks = lowrank_ranks(model)
    if ranks:
        (Path(path) / STRUCTURE_FILE).write_text(json.dumps({"lowrank": ranks}, indent=1, sort_keys=True))


def empty_model(path: Path) -> Any:
    """The model of ``config.json`` with the recorded structure applied, randomly initialised (load weights next)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from adapters.lowrank import LowRankLinear, replace_module

    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
    if shares_blocks(config):  # before the low-rank pairs: a pair replaces a shared part at every depth
        from adapters.sources import restore_block_sharing

        restore_block_sharing(model, path)
    structure = Path(path) / STRUCTURE_FILE
    if structure.is_file():
        for name, rank in json.loads(structure.read_text()).get("lowrank", {}).items():
            lin = model.get_submodule(name)
            replace_module(model, name, LowRankLinear(lin.in_features, lin.out_features, rank,
                                                      bias=lin.bias is not None, dtype=lin.weight.dtype))
    return model


def load_weights(model: Any, path: Path, files: list[Path] | None = None) -> Any:
    """Load safetensors weights into ``model`` strictly (a tied lm_head may be absent); eval mode."""
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for shard in files or sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors = model.state_dict(keep_vars=True)
    loaded = {id(tensors[k]) for k in state if k in tensors}  # a shared block's tensors are stored once
    missing = [k for k in missing if not (k == "lm_head.weight" and tied) and id(tensors[k]) not in loaded]
    if missing or unexpected:
        raise ModelLoadError(f"{path}: the stored weights do not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    model.tie_weights()
    model.eval()
    return model


def float_copy(handle: ModelHandle) -> Any:
    """A float torch copy of the handle's model: a deep copy, or the format's dequantized copy."""
    fmt = get_format(handle.format)
    if fmt.backend != "torch":
        raise ModelLoadError(f"a {handle.format} model has no torch weights to copy")
    if fmt.dequantize is not None:
        return fmt.dequantize(handle.model)
    return copy.deepcopy(handle.model)


# -- the torch formats ---------------------------------------------------------------------------
def _save_pretrained(handle: ModelHandle, path: Path) -> None:
    handle.model.save_pretrained(path, safe_serialization=True)


def _load_pretrained(path: Path, info: dict[str, Any]) -> ModelHandle:
    from transformers import AutoConfig, AutoModelForCausalLM

    from adapters.handle import ModelHandle

    if shares_blocks(AutoConfig.from_pretrained(path)):
        model = load_weights(empty_model(path), path)  # blocks that share weights: rebuilt, then loaded
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    model.eval()
    return ModelHandle(model, tokenizer_of(path), **info)


def shares_blocks(config: Any) -> bool:
    """Whether a model config records decoder blocks that share weights (``init.scratch`` layer sharing)."""
    return getattr(config, "layer_sharing", "none") != "none"


def _save_lowrank(handle: ModelHandle, path: Path) -> None:
    handle.model.save_pretrained(path, safe_serialization=True)
    write_structure(handle.model, path)


def _load_lowrank(path: Path, info: dict[str, Any]) -> ModelHandle:
    from adapters.handle import ModelHandle

    return ModelHandle(load_weights(empty_model(path), path), tokenizer_of(path), **info)


def tokenizer_of(path: Path) -> Any:
    """The tokenizer saved next to an artifact."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


register_format(ArtifactFormat(TORCH, "dense transformers model", "torch", _save_pretrained, _load_pretrained))
register_format(ArtifactFormat(TORCH_SPARSE, "dense, with zeros later steps keep unless told otherwise", "torch",
                               _save_pretrained, _load_pretrained))
register_format(ArtifactFormat(TORCH_LOWRANK, "linears replaced by low-rank pairs (ranks in structure.json)", "torch",
                               _save_lowrank, _load_lowrank))


# -- unmerged peft adapters ----------------------------------------------------------------------
def virtual_tokens(model: Any) -> int:
    """The positions a peft prompt-learning model (prompt tuning) prepends to every input, whose logits it returns
    too (0 for any other model): scoring drops the first this many logits."""
    config = getattr(model, "active_peft_config", None) if hasattr(model, "peft_config") else None
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    return int(config.num_virtual_tokens)


def _save_adapter(handle: ModelHandle, path: Path) -> None:
    """The base's float weights (without adapters, with its low-rank structure) through ``save_pretrained``, and the
    adapters through peft's own ``save_pretrained`` in ``adapter/``."""
    model = handle.model
    base = model.get_base_model()
    if virtual_tokens(model) == 0:  # adapter layers are injected into the base: save a copy with them unloaded
        base = copy.deepcopy(model).unload()
    base.save_pretrained(path, safe_serialization=True)
    write_structure(base, path)
    model.save_pretrained(path / ADAPTER_DIR, safe_serialization=True)


def _load_adapter(path: Path, info: dict[str, Any]) -> ModelHandle:
    from peft import PeftModel

    from adapters.handle import ModelHandle

    base = load_weights(empty_model(path), path)
    model = PeftModel.from_pretrained(base, path / ADAPTER_DIR, is_trainable=False)
    model.eval()
    return ModelHandle(model, tokenizer_of(path), **info)


register_format(ArtifactFormat(PEFT_ADAPTER, "a float base with unmerged peft adapters (LoRA, DoRA, IA3, a soft "
                               "prompt)", "torch", _save_adapter, _load_adapter))
