"""The ``memory`` suite: peak resident memory while loading and while generating, weight bytes by dtype,
KV-cache bytes per token, and CUDA allocator peaks where there is a GPU.

Load and generation run in a fresh child process, so the numbers are the model's and not whatever the
harness process holds. The child samples its own RSS from a thread around each phase; the parent also
reads the kernel's high-water mark of the child's address space (``VmHWM``: what ``/usr/bin/time -v``
reports as maximum resident set size when the timing process itself is small), the whole-process peak.

What the child loads (:func:`origin`): the node's stored artifact through the loader of its recorded format;
for an inference-time leaf (``infer.decoding``, stored without weights) the nearest ancestor in the artifact
cache that has a model, or the path's source when there is none (a builtin name, a local Hugging Face
directory, a ``.gguf`` file, a hub id). It casts float weights to the hardware profile's dtype (quantized and
ONNX weights keep theirs), moves a torch model to a CUDA device the profile names, and generates with the
handle's decoding settings. ``settings.loaded`` records what was loaded and how.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import SLMError, UsageError
from adapters.handle import HANDLE_FILE
from suites._measure import describe, none_if_nan, option
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import decoding_kwargs, prompt_ids

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES = {"quick": {"repeats": 2, "new_tokens": 32, "prompt_tokens": 128},
            "standard": {"repeats": 3, "new_tokens": 64, "prompt_tokens": 256},
            "full": {"repeats": 5, "new_tokens": 128, "prompt_tokens": 512}}

CHILD = r"""
import json, sys, resource
from suites._measure import PeakRSS, proc_status
args = json.loads(sys.argv[1])
from adapters.runtime import prepare_process, set_threads
prepare_process()
import torch  # libraries are imported before measuring: the load phase is the model's
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
set_threads(args["threads"])
from adapters.handle import ModelHandle
from adapters.sources import load_source
out = {}
with PeakRSS(children=False) as m:
    if args["artifact"]:
        h = ModelHandle.load(args["artifact"], threads=args["threads"])
    else:
        h = load_source(args["source"], threads=args["threads"])
    # the profile's dtype, as the harness casts float weights before a suite runs (quantized ones keep theirs)
    applied = h.move(dtype=args["dtype"])
out["before_load"], out["load_peak"], out["after_load"] = m.start_rss, m.peak, m.sample()
out["status_after_load"] = proc_status()
out["dtype_applied"] = applied["dtype"]
cuda = args["device"].startswith("cuda") and torch.cuda.is_available() and h.backend == "torch"
ids = torch.tensor(args["prompt"])
if cuda:
    h.move(device=args["device"])
    ids = ids.to(args["device"])
    torch.cuda.reset_peak_memory_stats()
h.generation_kwargs = dict(args["generation"])  # the path's decoding settings (an ancestor may have been loaded)
h.seed_sampling(args["seed"])  # seeded sampling
with PeakRSS(children=False) as g:
    h.generate_ids(ids, args["new_tokens"], min_new_tokens=args["new_tokens"])
out["generate_peak"] = g.peak
out["status_after_generate"] = proc_status()
if cuda:
    out["cuda_allocated_peak"] = torch.cuda.max_memory_allocated()
    out["cuda_reserved_peak"] = torch.cuda.max_memory_reserved()
out["self_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out["vm_hwm"] = proc_status()["VmHWM"]
out["format"], out["weights_by_dtype"] = h.format, h.weight_footprint()  # after the peaks
print("SLM-MEMORY " + json.dumps(out))
"""


def child_run(args: dict[str, Any]) -> dict[str, Any]:
    """Run the load+generate child; returns its report plus the kernel's max RSS of the child."""
    from adapters.runtime import spawn_python

    run = spawn_python(CHILD, [json.dumps(args)])
    if run.returncode != 0:
        raise RuntimeError(f"memory child failed ({run.returncode}): {run.stderr.strip().splitlines()[-1:]}")
    line = next(x for x in run.stdout.splitlines() if x.startswith("SLM-MEMORY "))
    report: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    report["kernel_maxrss"] = run.kernel_maxrss
    return report


NODE_FILE = "node.json"  # harness.cache.NODE_FILE (read, not imported: suites do not depend on the harness)
RELOADABLE_SOURCES = ("builtin", "hf_dir", "gguf", "hub")


def origin(handle: ModelHandle, ctx: SuiteContext) -> dict[str, Any]:
    """What the child loads to rebuild ``handle``: ``{"kind": "artifact", "from": <dir>}`` (a directory with
    ``handle.json``, loaded by its recorded format) or ``{"kind": "source", "from": <source id>, "ref": <what
    load_source parses>}``; ``via`` lists the inference-time nodes walked over to reach it.

    The harness passes the node's artifact directory (``options.artifact_dir``, ``<workspace>/artifacts/<hash>``).
    An inference-time node stores no weights, only ``node.json``, whose ``inputs.model`` names its parent: the
    walk goes to the parent's directory (a sibling) until one holds a model; a parent with no directory is the
    path's source. Raises :class:`UsageError` when nothing can rebuild the model in a fresh process.
    """
    via: list[str] = []
    art = ctx.options.get("artifact_dir")
    d = Path(art) if art else None
    while d is not None and d.is_dir():
        if (d / HANDLE_FILE).is_file():
            return {"kind": "artifact", "from": str(d), "via": via}
        if not (d / NODE_FILE).is_file():
            break  # not a harness artifact directory: nothing stored here
        meta = json.loads((d / NODE_FILE).read_text())
        technique = str(meta.get("technique"))
        if not (meta.get("reapply") or _inference_time(technique)):
            raise UsageError(f"memory: {d} holds no stored model ({HANDLE_FILE} is missing) although its step "
                             f"{technique} changes weights: the artifact is incomplete; recompute it")
        parent = (meta.get("inputs") or {}).get("model")
        via.append(f"{d.name} ({technique})")
        if not isinstance(parent, str) or len(via) > 256:
            raise UsageError(f"memory: cannot find the model input of the inference-time node {d} in its {NODE_FILE}")
        d = d.parent / parent
    missing = d if via and d is not None else None  # walked to a parent that has no artifact directory
    weight_steps = [s.technique for s in handle.lineage if not _inference_time(s.technique)]
    if weight_steps:
        where = (f"its stored ancestor {missing.name} is not in {missing.parent}" if missing is not None
                 else "no stored artifact was given (options.artifact_dir)")
        raise UsageError(f"memory: the model after {' > '.join(weight_steps)} cannot be loaded in a fresh process: "
                         f"{where}; run it through the harness (slm run), which stores every weight-changing step")
    return {"kind": "source", "from": handle.source, "ref": source_ref(handle.source), "via": via}


def source_ref(source_id: str) -> str:
    """The reference ``load_source`` parses back into the source ``source_id`` names (``builtin:tiny-llama`` ->
    ``tiny-llama``, ``hf_dir:/abs/dir`` -> ``/abs/dir``, ``gguf:/abs/m.gguf`` -> ``/abs/m.gguf``, ``hub:org/name``
    -> ``org/name``); raises :class:`UsageError` for a source that cannot be rebuilt from its id."""
    from adapters.sources import ModelSource

    kind, sep, ref = source_id.partition(":")
    if kind == "scratch":
        raise UsageError(f"memory: the source {source_id} is a randomly initialised model: its id is a hash of the "
                         "config and does not carry the config or the seed, so a fresh process cannot rebuild it; "
                         "measure a step after it (which the harness stores), or save the model (ModelHandle.save) "
                         "and use that directory as the base")
    if not sep or kind not in RELOADABLE_SOURCES:
        ref = source_id  # a plain reference (e.g. a builtin name)
    elif kind in ("hf_dir", "gguf") and not Path(ref).exists():
        raise UsageError(f"memory: cannot reload the source {source_id} in a fresh process: {ref} no longer exists")
    try:
        parsed = ModelSource.parse(ref)
    except SLMError as exc:  # the file or directory is gone, or the name is unknown
        raise UsageError(f"memory: cannot reload the source {source_id} in a fresh process: {exc}") from None
    if sep and kind in RELOADABLE_SOURCES and parsed.id != source_id:
        raise UsageError(f"memory: the source {source_id} now reads as {parsed.id}: cannot reload it")
    return ref


@suite("memory")
class MemorySuite(Suite):
    """Memory: peak RSS while loading and generating (fresh process), weight bytes, KV cache per token."""

    options = ("repeats", "new_tokens", "prompt_tokens")
    exclusive = True

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        conf = {k: option("memory", ctx.options, PROFILES[ctx.profile], k, 1) for k in self.options}
        found = origin(handle, ctx)
        generation = decoding_kwargs(handle)
        seed = handle.generation_kwargs.get("seed")
        args = {"artifact": found["from"] if found["kind"] == "artifact" else None, "source": found.get("ref"),
                "threads": handle.threads, "device": str(ctx.hardware.get("device") or "cpu"),
                "dtype": ctx.hardware.get("dtype"),
                "new_tokens": conf["new_tokens"], "prompt": prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed),
                "generation": generation, "seed": seed}
        reports = [child_run(args) for _ in range(conf["repeats"])]
        first = reports[0]
        loaded = {"kind": found["kind"], "from": found["from"], "via": found["via"], "format": first["format"],
                  "dtype_applied": first["dtype_applied"], "weights_by_dtype": first["weights_by_dtype"],
                  "weight_bytes": sum(first["weights_by_dtype"].values()),
                  "generation_kwargs": {**generation, **({"seed": seed} if seed is not None else {})}}
        res = SuiteResult(settings={"memory": conf, "loaded_from": found["from"], "loaded": loaded})
        for name, (values, how) in _series(reports).items():
            st = describe([float(v) for v in values])
            res.metrics.append(Metric("memory", "load+generate", name, st["mean"], none_if_nan(st["stderr"]),
                                      len(values), "bytes", False, how, st))
        res.metrics.extend(static_metrics(handle))
        return res


def _series(reports: list[dict[str, Any]]) -> dict[str, tuple[list[float], str]]:
    """Metric name -> (one value per child run, method)."""
    sampler, status = "measured:psutil-rss-sampler-20ms", "measured:proc-status"
    series = {
        "peak_rss_load": ([r["load_peak"] for r in reports], sampler),
        "load_rss_delta": ([r["after_load"] - r["before_load"] for r in reports], sampler),
        "peak_rss_generate": ([r["generate_peak"] for r in reports], sampler),
        # The kernel's high-water mark of the child's own address space. (wait4's ru_maxrss would also
        # count the spawning process's pages, which Linux carries into it at exec.)
        "max_rss_process": ([r["vm_hwm"] for r in reports], "measured:proc-status-VmHWM"),
    }
    # Weights loaded from safetensors are memory-mapped: they count as file-backed RSS once touched, which
    # is at the first forward pass, not at load. Anonymous vs file-backed says which memory is whose.
    for phase in ("load", "generate"):
        for kind in ("RssAnon", "RssFile"):
            values = [r[f"status_after_{phase}"].get(kind) for r in reports]
            if all(v is not None for v in values):
                series[f"{kind.lower().replace('rss', 'rss_')}_after_{phase}"] = (values, status)
    for key in ("cuda_allocated_peak", "cuda_reserved_peak"):
        if key in reports[0]:
            series[key] = ([r[key] for r in reports], "measured:torch.cuda")
    return series


def static_metrics(handle: ModelHandle) -> list[Metric]:
    """Weight bytes by dtype and parameters (counted), KV-cache bytes per token (from the config and measured)."""
    foot = handle.weight_footprint()
    out = [Metric("memory", "weights", f"weight_bytes_{dtype}", float(nbytes), 0.0, 1, "bytes", False,
                  "counted:state_dict") for dtype, nbytes in sorted(foot.items())]
    out.append(Metric("memory", "weights", "weight_bytes", float(sum(foot.values())), 0.0, 1, "bytes", False,
                      "counted:state_dict", {"by_dtype": foot}))
    out.append(Metric("memory", "weights", "parameters", float(handle.num_parameters()), 0.0, 1, "count", False,
                      "counted:model.parameters (tied once)"))
    value_bytes = handle.activation_bytes()
    out.append(Metric("memory", "kv_cache", "kv_bytes_per_token", float(handle.kv_bytes_per_token()), 0.0, 1,
                      "bytes", False, "derived:2*layers*kv_heads*head_dim*dtype_bytes", {"dtype_bytes": value_bytes}))
    measured = handle.measured_kv_bytes(prompt_ids(handle, 64, 1, 0))
    if measured is not None:  # a backend whose forward returns no cache object has nothing to measure
        out.append(Metric("memory", "kv_cache", "kv_bytes_per_token_measured", measured, 0.0, 1, "bytes", False,
                          "measured:past_key_values-nbytes"))
    return out


def _inference_time(technique: str) -> bool:
    from adapters.technique import TECHNIQUES

    return bool(getattr(TECHNIQUES.get(technique), "inference_time", False))
