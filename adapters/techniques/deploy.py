"""Deployment on ONNX Runtime: export the model to ONNX with its KV cache, then run it in a session.

The decoder is traced by ``torch.onnx.export`` (the TorchScript exporter; eager attention) as one graph
``(input_ids, attention_mask, position_ids, past.*) -> (logits, present.*)``. The returned handle's model
is :class:`adapters.techniques._ort.OrtCausalLM`, a transformers ``GenerationMixin`` model whose forward
runs that graph in an ``onnxruntime.InferenceSession``: lm-eval scoring, ``generate`` (greedy, beam,
sampling) and timed streaming all go through ONNX Runtime, none through torch's weights. Optionally the
linear layers' MatMuls are quantized to int8 with ORT's dynamic quantization (integer MatMul kernels,
activations quantized at run time; Jacob et al., 2018); the ``lm_head`` stays fp32 by default.

The artifact format is ``onnx``: the ``.onnx`` file plus config, tokenizer and session settings; loading
creates a new session.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters import formats as F
from adapters.errors import BackendUnavailableError, MissingDependencyError
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique
from adapters.techniques._training import copied_model

ONNX_FILE = "model.onnx"
SESSION_FILE = "onnx.json"
INSTALL = "pip install onnxruntime onnx"


@dataclass(frozen=True)
class OrtParams:
    """Params of ``deploy.onnxruntime``.

    Attributes:
        quantize: ``none`` (fp32 graph) or ``int8`` (ORT dynamic int8 on the linear MatMuls).
        quantize_lm_head: with ``int8``, also quantize the output projection (faster, larger quality loss).
        opset: ONNX opset of the export.
        optimization: ORT graph optimization level: ``all``, ``extended``, ``basic`` or ``disable``.
    """

    quantize: Literal["none", "int8"] = "none"
    quantize_lm_head: bool = False
    opset: int = 17
    optimization: Literal["all", "extended", "basic", "disable"] = "all"

    def __post_init__(self) -> None:
        if not 14 <= self.opset <= 21:
            raise ValueError(f"opset must be in [14, 21], got {self.opset}")


def _require() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "onnxruntime", "deploy.onnxruntime", INSTALL) from exc


def export_onnx(handle: ModelHandle, path: Path, opset: int) -> None:
    """Trace a copy of the handle's model (a Llama-family causal LM) with its KV cache into ``path``."""
    import torch

    from adapters.techniques._ort import ExportWrapper, io_names, kv_shape

    try:
        model = copied_model(handle)
    except RuntimeError as exc:  # quantized tensor subclasses (optimum-quanto) refuse deepcopy
        raise BackendUnavailableError(f"deploy.onnxruntime: the model cannot be copied for export ({exc})"[:300]
                                      + "; quantize in ONNX instead (quantize: int8)") from exc
    model.set_attn_implementation("eager")  # sdpa's is_causal shortcut would be traced as a constant
    config = model.config
    past_len, new_len = 3, 4  # any non-zero lengths: the axes are exported as dynamic
    ids = torch.ones(1, new_len, dtype=torch.long)
    mask = torch.ones(1, past_len + new_len, dtype=torch.long)
    pos = torch.arange(past_len, past_len + new_len)[None]
    past = [torch.zeros(kv_shape(config, 1, past_len)) for _ in range(2 * config.num_hidden_layers)]
    inputs, outputs = io_names(config.num_hidden_layers)
    dynamic = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    dynamic.update({n: {0: "batch", 2: "past"} for n in inputs[3:]})
    dynamic.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    try:
        with torch.no_grad():
            torch.onnx.export(ExportWrapper(model).eval(), (ids, mask, pos, *past), str(path), input_names=inputs,
                              output_names=outputs, dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    except Exception as exc:  # the exporter raises many types; all mean "this model does not export"
        raise BackendUnavailableError(f"deploy.onnxruntime: {type(model).__name__} did not export to ONNX "
                                      f"({type(exc).__name__}: {str(exc)[:300]}); quantized torch modules do not export, "
                                      "quantize in ONNX instead (quantize: int8)") from exc


def quantize_int8(src: Path, dst: Path, include_lm_head: bool) -> list[str]:
    """ORT dynamic int8 quantization of the MatMuls with constant weights; returns the excluded nodes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    excluded = [] if include_lm_head else [n.name for n in graph.node if "lm_head" in n.name]
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     nodes_to_exclude=excluded, per_channel=True)
    return excluded


@dataclass(frozen=True)
class ExportReport:
    """What the export produced.

    Attributes:
        onnx_bytes: size of the ONNX graph file (weights inside).
        quantize: ``none`` or ``int8``.
        excluded_nodes: MatMul nodes kept fp32 by the int8 quantization.
        opset: the ONNX opset.
    """

    onnx_bytes: int
    quantize: str
    excluded_nodes: list[str]
    opset: int


@technique("deploy.onnxruntime")
class OnnxRuntimeDeploy(Technique):
    """ONNX Runtime deployment: KV-cache ONNX export, optional dynamic int8 (Jacob et al., 2018), ORT session.

    Works on CPU (``CPUExecutionProvider``). A model holding torch-quantized modules (``quant.int8``,
    ``quant.rtn``) is refused when the spec is planned: deploy the float model and use ``quantize: int8`` here.
    A ``compressed-tensors`` (AWQ) input is exported as the dequantized float model it is in memory.
    """

    Params = OrtParams
    requires = ("onnxruntime", "onnx", "torch", "transformers")
    uses_seed = False
    accepts = F.FLOAT_TORCH + (F.COMPRESSED,)
    produces = F.ONNX
    hints = {F.TORCH_INT8: "torch-quantized modules do not export: deploy the float model with "
                           "deploy.onnxruntime(quantize: int8) instead of quant.int8",
             F.QUANTO: "quanto modules do not export: deploy the float model, with deploy.onnxruntime(quantize: int8) "
                       "for int8 weights",
             F.ONNX: "the model is already deployed on ONNX Runtime"}

    @classmethod
    def conversion(cls, input_format: str, params: Any) -> str | None:
        if input_format == F.COMPRESSED:
            return "exported the dequantized float weights of the compressed-tensors model"
        return None

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        _require()
        p = self.params
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        fp32 = ctx.workdir / ("fp32.onnx" if p.quantize == "int8" else ONNX_FILE)
        export_onnx(handle, fp32, p.opset)
        target, excluded = fp32, []
        if p.quantize == "int8":
            target = ctx.workdir / ONNX_FILE
            excluded = quantize_int8(fp32, target, p.quantize_lm_head)
        state = {"onnx_file": str(target), "optimization": p.optimization}
        report = ExportReport(target.stat().st_size, p.quantize, excluded, p.opset)
        return Applied(_ort_handle(handle, target, state), report)


def save_onnx(handle: ModelHandle, path: Path) -> None:
    """The ONNX graph (weights inside), the transformers config and the session settings."""
    shutil.copyfile(handle.format_state["onnx_file"], path / ONNX_FILE)
    handle.model.config.save_pretrained(path)
    (path / SESSION_FILE).write_text(json.dumps({"optimization": handle.format_state.get("optimization", "all")}))


def load_onnx(path: Path, info: dict[str, Any]) -> ModelHandle:
    from transformers import AutoConfig

    from adapters.techniques._ort import OrtCausalLM, OrtHandle

    _require()
    session = Path(path) / SESSION_FILE
    optimization = json.loads(session.read_text())["optimization"] if session.is_file() else "all"
    state = {"onnx_file": str(Path(path) / ONNX_FILE), "optimization": optimization}
    model = OrtCausalLM(AutoConfig.from_pretrained(path), Path(path) / ONNX_FILE, int(info.get("threads", 1)),
                        optimization)
    return OrtHandle(model, F.tokenizer_of(path), format_state=state, **info)


F.register_format(F.ArtifactFormat(F.ONNX, "ONNX graph with KV cache run in an ONNX Runtime session", "onnxruntime",
                                   save_onnx, load_onnx))


def _ort_handle(handle: ModelHandle, onnx_file: Path, state: dict[str, Any]) -> ModelHandle:
    from adapters.techniques._ort import OrtCausalLM, OrtHandle

    model = OrtCausalLM(handle.model.config, onnx_file, handle.threads, state["optimization"])
    return OrtHandle(model, handle.tokenizer, source=handle.source, backend="onnxruntime",
                     lineage=handle.lineage, threads=handle.threads, batch_size=handle.batch_size,
                     generation_kwargs=dict(handle.generation_kwargs), meta=dict(handle.meta), format=F.ONNX,
                     format_state=state, prompt_hooks=handle.prompt_hooks,
                     inference_hooks=handle.inference_hooks)
