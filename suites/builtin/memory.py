"""The ``memory`` suite: peak resident memory while loading and while generating, weight bytes by dtype,
KV-cache bytes per token, and CUDA allocator peaks where there is a GPU.

Load and generation run in a fresh child process, so the numbers are the model's and not whatever the
harness process holds. The child samples its own RSS from a thread around each phase; the parent also
reads the kernel's high-water mark of the child's address space (``VmHWM``: what ``/usr/bin/time -v``
reports as maximum resident set size when the timing process itself is small), the whole-process peak.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import UsageError
from suites._measure import describe, none_if_nan, option
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import prompt_ids
from suites.ceilings import activation_bytes, kv_bytes_per_token

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
out["before_load"], out["load_peak"], out["after_load"] = m.start_rss, m.peak, m.sample()
out["status_after_load"] = proc_status()
cuda = args["device"] == "cuda" and torch.cuda.is_available()
ids = torch.tensor(args["prompt"])
if cuda:
    h.model.to("cuda")
    ids = ids.to("cuda")
    torch.cuda.reset_peak_memory_stats()
with PeakRSS(children=False) as g, torch.no_grad():
    h.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args["new_tokens"],
                     min_new_tokens=args["new_tokens"], do_sample=False,
                     pad_token_id=h.tokenizer.pad_token_id or h.tokenizer.eos_token_id)
out["generate_peak"] = g.peak
out["status_after_generate"] = proc_status()
if cuda:
    out["cuda_allocated_peak"] = torch.cuda.max_memory_allocated()
    out["cuda_reserved_peak"] = torch.cuda.max_memory_reserved()
out["self_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out["vm_hwm"] = proc_status()["VmHWM"]
print("SLM-MEMORY " + json.dumps(out))
"""


def child_run(args: dict[str, Any]) -> dict[str, Any]:
    """Run the load+generate child; returns its report plus the kernel's max RSS of the child."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    # posix_spawn (vfork-style) rather than fork: a forked child starts with the parent's pages mapped,
    # which the kernel's max RSS of the child would then include.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        actions = [(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", CHILD, json.dumps(args)], env,
                             file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read().decode(), err.read().decode()
    if returncode != 0:
        raise RuntimeError(f"memory child failed ({returncode}): {etext.strip().splitlines()[-1:]}")
    line = next(x for x in text.splitlines() if x.startswith("SLM-MEMORY "))
    report: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    report["kernel_maxrss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return report


def artifact_of(ctx: SuiteContext) -> str | None:
    """The node's stored model, if it has one (inference-time nodes store none)."""
    art = ctx.options.get("artifact_dir")
    return str(art) if art and (Path(art) / "handle.json").exists() else None


@suite("memory")
class MemorySuite(Suite):
    """Memory: peak RSS while loading and generating (fresh process), weight bytes, KV cache per token."""

    options = ("repeats", "new_tokens", "prompt_tokens")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        conf = {k: option("memory", ctx.options, PROFILES[ctx.profile], k, 1) for k in self.options}
        artifact = artifact_of(ctx)
        if artifact is None and handle.lineage and not all(_inference_time(s.technique) for s in handle.lineage):
            raise UsageError("memory: this model has no stored artifact (options.artifact_dir) to load in a fresh "
                             "process; only builtin sources and inference-time steps can be rebuilt")
        args = {"artifact": artifact, "source": handle.source.removeprefix("builtin:"), "threads": handle.threads,
                "device": ctx.hardware.get("device", "cpu"), "new_tokens": conf["new_tokens"],
                "prompt": prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed)}
        reports = [child_run(args) for _ in range(conf["repeats"])]
        res = SuiteResult(settings={"memory": conf, "loaded_from": artifact or handle.source})
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
    """Weight bytes by dtype (counted), KV-cache bytes per token (from the config and measured)."""
    foot = handle.weight_footprint()
    out = [Metric("memory", "weights", f"weight_bytes_{dtype}", float(nbytes), 0.0, 1, "bytes", False,
                  "counted:state_dict") for dtype, nbytes in sorted(foot.items())]
    out.append(Metric("memory", "weights", "weight_bytes", float(sum(foot.values())), 0.0, 1, "bytes", False,
                      "counted:state_dict", {"by_dtype": foot}))
    value_bytes = activation_bytes(handle.model)
    out.append(Metric("memory", "kv_cache", "kv_bytes_per_token", float(kv_bytes_per_token(handle.model.config,
                      value_bytes)), 0.0, 1, "bytes", False, "derived:2*layers*kv_heads*head_dim*dtype_bytes",
                      {"dtype_bytes": value_bytes}))
    measured = _measured_kv(handle)
    if measured is not None:  # a backend whose forward returns no cache object has nothing to measure
        out.append(Metric("memory", "kv_cache", "kv_bytes_per_token_measured", measured, 0.0, 1, "bytes", False,
                          "measured:past_key_values-nbytes"))
    return out


def _measured_kv(handle: ModelHandle) -> float | None:
    """Bytes of an actual ``past_key_values`` per prompt token (None when the model returns none)."""
    import torch

    ids = torch.tensor(prompt_ids(handle, 64, 1, 0))
    with torch.no_grad():
        cache = handle.model(input_ids=ids, use_cache=True).past_key_values
    tensors = [t for layer in getattr(cache, "layers", []) for t in (layer.keys, layer.values) if t is not None]
    if not tensors and hasattr(cache, "to_legacy_cache"):
        tensors = [t for kv in cache.to_legacy_cache() for t in kv]
    if not tensors:
        return None
    return sum(t.numel() * t.element_size() for t in tensors) / ids.shape[1]


def _inference_time(technique: str) -> bool:
    from adapters.technique import TECHNIQUES

    return bool(getattr(TECHNIQUES.get(technique), "inference_time", False))
