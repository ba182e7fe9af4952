"""Deployment on llama.cpp: convert the model to GGUF with llama.cpp's own converter, quantize it with llama.cpp's
own quantizer, run it through llama-cpp-python.

The path's model is written as a Hugging Face directory (dequantized first when it is a quantized torch format; the
low-rank pairs of a ``torch-lowrank`` model multiplied back into dense weights, since llama.cpp's Llama graph has no
factorized linears), converted by the code of ``convert_hf_to_gguf.py`` from the llama.cpp commit llama-cpp-python
0.3.36 is built from (vendored unmodified, :mod:`adapters.third_party.llama_cpp_convert`) to F32, F16 or Q8_0, and for
the other types (k-quants Q6_K ... Q2_K, Q4_0) quantized from the F32 file by ``llama_model_quantize``, the function
behind ``llama-quantize`` (Gerganov et al., llama.cpp; k-quants: llama.cpp PR #1684). The returned handle runs the
GGUF file in ``llama_cpp.Llama`` (:class:`adapters.techniques._llamacpp.LlamaCppHandle`): lm-eval scoring and rolling
scoring, greedy and sampled generation with stop strings, streaming with per-token timestamps, footprint by ggml type.

The artifact format is ``gguf``: the ``.gguf`` file, the tokenizer and ``llamacpp.json`` (context size, type);
loading maps the file into a new ``Llama``. After this step only inference-time steps whose effect llama.cpp honours
may follow (``infer.decoding`` without beam search, ``infer.cot``, ``infer.self_consistency``, ``infer.best_of_n``,
``infer.rag``); weight-changing steps refuse a ``gguf`` model at plan time.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters import formats as F
from adapters.errors import MissingDependencyError
from adapters.handle import ModelHandle
from adapters.technique import Applied, PathStep, Technique, TechniqueContext, technique

GGUF_FILE = "model.gguf"
SETTINGS_FILE = "llamacpp.json"
INSTALL = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF" pip install llama-cpp-python==0.3.36 '
           "(or the extra: pip install -e '.[llamacpp]'; it builds llama.cpp from source, about 6 minutes)")
QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "F16", "F32")
#: inference-time techniques whose effect reaches llama.cpp (generation settings, task prompts, generation wrappers)
CARRIED = ("infer.decoding", "infer.cot", "infer.self_consistency", "infer.best_of_n", "infer.rag")


@dataclass(frozen=True)
class LlamaCppParams:
    """Params of ``deploy.llamacpp``.

    Attributes:
        quant: the GGUF weight type, by llama.cpp's names: ``F32``, ``F16``, ``Q8_0`` (written by the converter),
            ``Q6_K``, ``Q5_K_M``, ``Q4_K_M``, ``Q4_0``, ``Q3_K_M``, ``Q2_K`` (quantized from F32 by llama.cpp).
        n_ctx: the context window llama.cpp allocates its KV cache for, in tokens (llama.cpp's own default 4096),
            at most the model's training context; 0 takes the training context (transformers' default maximum length:
            then lm-eval's rolling windows match the torch model's even without the quality suite's ``max_length``;
            the KV cache is allocated whole, e.g. 190 MB for SmolLM2's 8192 tokens, many GB for 128k-token models).
            It is also the default window of lm-eval requests on this backend.
        kv_cache: the type llama.cpp caches keys and values in: ``f16`` (its default; log-likelihoods then differ
            from an fp32 torch model's by up to ~1e-3) or ``f32``.
    """

    quant: Literal["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "F16", "F32"] = "Q4_K_M"
    n_ctx: int = 4096
    kv_cache: Literal["f16", "f32"] = "f16"

    def __post_init__(self) -> None:
        if self.n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0 (0: the model's training context), got {self.n_ctx}")


@dataclass(frozen=True)
class GgufReport:
    """What the conversion produced.

    Attributes:
        quant: the requested type.
        gguf_bytes: size of the GGUF file.
        bits_per_weight: 8 x tensor bytes / tensor elements over every tensor of the file (norms included).
        tensor_types: tensors per ggml type (k-quant mixes keep some tensors at higher precision; tensors whose
            rows do not divide into 256-value blocks fall back to other types).
        densified_pairs: low-rank pairs multiplied back into dense weights (0 unless the input was low-rank).
        byte_level_tokenizer_rewritten: the tokenizer was handed to the converter as plain byte-level BPE
            (:func:`plain_byte_level_bpe`).
        convert_s: seconds in llama.cpp's converter.
        quantize_s: seconds in ``llama_model_quantize`` (None for types the converter writes itself).
        llama_cpp_commit: the llama.cpp commit of the converter (and of the runtime llama-cpp-python 0.3.36 builds).
    """

    quant: str
    gguf_bytes: int
    bits_per_weight: float
    tensor_types: dict[str, int]
    densified_pairs: int
    byte_level_tokenizer_rewritten: bool
    convert_s: float
    quantize_s: float | None
    llama_cpp_commit: str


def _require() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("llama-cpp-python", "deploy.llamacpp", INSTALL) from exc


def dense_float_model(handle: ModelHandle) -> tuple[Any, int]:
    """A float copy of the handle's model (dequantized where its format is quantized) with every low-rank pair
    replaced by the dense linear ``B @ A`` it computes; and how many pairs were replaced."""
    import torch

    from adapters.lowrank import replace_module

    model = F.float_copy(handle)
    pairs = F.lowrank_ranks(model)
    for name in pairs:
        a, b = model.get_submodule(name)[0], model.get_submodule(name)[1]
        dense = torch.nn.Linear(a.in_features, b.out_features, bias=b.bias is not None, dtype=b.weight.dtype)
        with torch.no_grad():
            dense.weight.copy_(b.weight @ a.weight)
            if b.bias is not None:
                dense.bias.copy_(b.bias)
        replace_module(model, name, dense)
    return model, len(pairs)


def write_hf_dir(model: Any, tokenizer: Any, path: Path) -> bool:
    """The model as a Hugging Face directory the converter reads: every tensor of ``state_dict`` (blocks that share
    weights written at every depth they run; a tied output head once, as the embedding), config and tokenizer
    (:func:`plain_byte_level_bpe`; returns whether it rewrote the tokenizer)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embedding = model.get_input_embeddings().weight.data_ptr()
    tensors, seen = {}, set()
    for key, value in model.state_dict().items():
        if tied and key == "lm_head.weight" and value.data_ptr() == embedding:
            continue
        t = value.detach().contiguous()
        if t.untyped_storage().data_ptr() in seen:  # safetensors stores no shared storage
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return plain_byte_level_bpe(path / "tokenizer.json")


def plain_byte_level_bpe(tokenizer_json: Path) -> bool:
    """Rewrite a byte-level BPE tokenizer that transformers' GGUF import marked ``byte_fallback`` (with a
    SentencePiece-style decoder) as the plain byte-level BPE it is; True when it did.

    The byte-level pre-tokenizer maps every byte to a symbol of the vocabulary, so the fallback never fires and the
    tokenization is the same; but llama.cpp's converter reads the mark as a SentencePiece-style ("llama") vocabulary,
    whose tokenizer then aborts on byte input. Written plainly, the converter recognizes the vocabulary (SmolLM2's as
    ``smollm``) and llama.cpp tokenizes as the Hugging Face tokenizer does (tested).
    """
    if not tokenizer_json.is_file():
        return False
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model, pre, decoder = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("decoder") or {}
    byte_level = [p for p in (pre, *pre.get("pretokenizers", [])) if p.get("type") == "ByteLevel"]
    level_decoder = [d for d in (decoder, *decoder.get("decoders", [])) if d.get("type") == "ByteLevel"]
    if not (model.get("type") == "BPE" and model.get("byte_fallback") and byte_level and level_decoder):
        return False
    model["byte_fallback"] = False
    data["decoder"] = level_decoder[0]
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return True


def make_gguf(handle: ModelHandle, workdir: Path, quant: str, threads: int) -> tuple[Path, GgufReport]:
    """Convert (and quantize) the handle's model into ``workdir/model.gguf``; scratch files are removed."""
    from adapters.techniques._gguf_convert import OUTTYPES, convert_hf_dir, quantize_gguf
    from adapters.techniques._llamacpp import file_stats
    from adapters.third_party.llama_cpp_convert import LLAMA_CPP_COMMIT

    workdir.mkdir(parents=True, exist_ok=True)
    model, pairs = dense_float_model(handle)
    hf_dir = workdir / "hf"
    tokenizer_rewritten = write_hf_dir(model, handle.tokenizer, hf_dir)
    del model
    target = workdir / GGUF_FILE
    direct = quant in OUTTYPES
    converted = target if direct else workdir / "f32.gguf"
    t0 = time.perf_counter()
    convert_hf_dir(hf_dir, converted, quant if direct else "F32")
    convert_s = time.perf_counter() - t0
    shutil.rmtree(hf_dir)
    quantize_s = None
    if not direct:
        t0 = time.perf_counter()
        quantize_gguf(converted, target, quant, threads)
        quantize_s = round(time.perf_counter() - t0, 2)
        converted.unlink()
    by_type = file_stats(target).by_type
    elements = sum(v["elements"] for v in by_type.values())
    report = GgufReport(quant, target.stat().st_size,
                        round(8 * sum(v["bytes"] for v in by_type.values()) / max(1, elements), 3),
                        {k: v["tensors"] for k, v in sorted(by_type.items())}, pairs, tokenizer_rewritten,
                        round(convert_s, 2), quantize_s, LLAMA_CPP_COMMIT)
    return target, report


@technique("deploy.llamacpp")
class LlamaCppDeploy(Technique):
    """llama.cpp deployment: GGUF by llama.cpp's converter, k-quants by its quantizer, run in llama-cpp-python.

    Takes float torch models (a sparse model's zeros become ordinary values; a low-rank model is multiplied back to
    dense weights) and quantized torch models after dequantizing them (then llama.cpp quantizes again). An ONNX model
    is refused when the spec is planned: deploy the torch model instead.
    """

    Params = LlamaCppParams
    requires = ("llama-cpp-python", "torch", "transformers")
    uses_seed = False
    accepts = F.FLOAT_TORCH + F.QUANTIZED_TORCH
    dequantizes = F.QUANTIZED_TORCH
    produces = F.GGUF
    hints = {F.ONNX: "the model is deployed on ONNX Runtime already: convert the torch model instead "
                     "(put deploy.llamacpp in place of deploy.onnxruntime)",
             F.GGUF: "the model is a GGUF model already: deploy once, with the quant type wanted "
                     "(re-quantizing a quantized GGUF compounds the error)"}

    @classmethod
    def conversion(cls, input_format: str, params: Any) -> str | None:
        if input_format == F.TORCH_SPARSE:
            return "stored the pruned zeros as ordinary values (llama.cpp has no sparse kernels)"
        if input_format == F.TORCH_LOWRANK:
            return "multiplied each low-rank pair back into a dense weight (B @ A) before converting to GGUF"
        return super().conversion(input_format, params)

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        """Refuse inference-time steps whose effect llama.cpp would not honour, before or after this step."""
        from adapters.technique import get_technique

        for i, step in enumerate(steps):
            if i == index or not get_technique(step.technique).inference_time:
                continue
            where = f"step {i + 1} {step.technique}"
            if step.technique not in CARRIED:
                return (f"{where} changes how the torch model runs, which deploy.llamacpp (step {index + 1}) cannot "
                        f"carry into llama.cpp; llama.cpp takes {', '.join(CARRIED)}")
            if step.technique == "infer.decoding" and getattr(step.params, "strategy", "") == "beam":
                return f"{where} asks for beam search, which llama.cpp (deploy.llamacpp, step {index + 1}) does not have"
        return None

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        _require()
        threads = int(ctx.hardware.get("threads", handle.threads) or handle.threads)
        target, report = make_gguf(handle, ctx.workdir, self.params.quant, threads)
        p = self.params
        state = {"gguf_file": str(target), "n_ctx": p.n_ctx, "quant": p.quant, "kv_cache": p.kv_cache}
        return Applied(llamacpp_handle(target, handle, state), report)


def llamacpp_handle(gguf_file: Path, like: ModelHandle, state: dict[str, Any]) -> ModelHandle:
    """A llama.cpp handle on ``gguf_file`` with ``like``'s tokenizer, lineage and run settings."""
    from adapters.techniques._llamacpp import LlamaCppHandle, LlamaCppModel

    model = LlamaCppModel(gguf_file, like.threads, int(state["n_ctx"]), state.get("kv_cache", "f16"))
    return LlamaCppHandle(model, like.tokenizer, source=like.source, backend="llama.cpp", lineage=like.lineage,
                          threads=like.threads, batch_size=like.batch_size,
                          generation_kwargs=dict(like.generation_kwargs), meta=dict(like.meta), format=F.GGUF,
                          format_state=state, prompt_hooks=like.prompt_hooks, inference_hooks=like.inference_hooks)


def load_gguf_file(gguf_file: str | Path, tokenizer: Any, *, threads: int = 1, n_ctx: int = 4096, kv_cache: str = "f16",
                   source: str | None = None) -> ModelHandle:
    """A GGUF file as it is (e.g. the embedded SmolLM2 Q4_1) on the llama.cpp backend, with a Hugging Face tokenizer
    of the same vocabulary; format ``gguf``, no lineage."""
    from adapters.techniques._llamacpp import LlamaCppHandle, LlamaCppModel

    _require()
    path = Path(gguf_file).resolve()
    model = LlamaCppModel(path, threads, n_ctx, kv_cache)
    state = {"gguf_file": str(path), "n_ctx": n_ctx, "quant": "as stored", "kv_cache": kv_cache}
    return LlamaCppHandle(model, tokenizer, source=source or f"gguf:{path}", backend="llama.cpp", threads=threads,
                          format=F.GGUF, format_state=state)


def save_gguf(handle: ModelHandle, path: Path) -> None:
    """The GGUF file and the run settings (the tokenizer and handle.json are written by the handle)."""
    shutil.copyfile(handle.format_state["gguf_file"], path / GGUF_FILE)
    (path / SETTINGS_FILE).write_text(json.dumps({k: handle.format_state[k] for k in ("n_ctx", "quant", "kv_cache")}))


def load_gguf(path: Path, info: dict[str, Any]) -> ModelHandle:
    from adapters.techniques._llamacpp import LlamaCppHandle, LlamaCppModel

    _require()
    state = {"gguf_file": str(Path(path) / GGUF_FILE), **json.loads((Path(path) / SETTINGS_FILE).read_text())}
    model = LlamaCppModel(Path(state["gguf_file"]), int(info.get("threads", 1)), int(state["n_ctx"]), state["kv_cache"])
    return LlamaCppHandle(model, F.tokenizer_of(path), format_state=state, **info)


F.register_format(F.ArtifactFormat(F.GGUF, "GGUF file run by llama.cpp (llama-cpp-python)", "llama.cpp",
                                   save_gguf, load_gguf))
