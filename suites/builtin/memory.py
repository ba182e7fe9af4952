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
from suites._measure import describe
from suites.base import Metric, Suite, SuiteContext, SuiteResult, suite
from suites.builtin.latency import kv_bytes_per_token, prompt_ids

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILES = {"quick": {"repeats": 1, "new_tokens": 32, "prompt_tokens": 128},
            "standard": {"repeats": 3, "new_tokens": 64, "prompt_tokens": 256},
            "full": {"repeats": 5, "new_tokens": 128, "prompt_tokens": 512}}

CHILD = r"""
import json, sys, resource
from suites._measure import PeakRSS
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
ids = torch.tensor(args["prompt"])
with PeakRSS(children=False) as g, torch.inference_mode():
    h.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args["new_tokens"],
                     min_new_tokens=args["new_tokens"], do_sample=False,
                     pad_token_id=h.tokenizer.pad_token_id or h.tokenizer.eos_token_id)
out["generate_peak"] = g.peak
if torch.cuda.is_available():
    out["cuda_allocated_peak"] = torch.cuda.max_memory_allocated()
    out["cuda_reserved_peak"] = torch.cuda.max_memory_reserved()
out["self_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        out["vm_hwm"] = int(line.split()[1]) * 1024
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
        conf = {**PROFILES[ctx.profile], **{k: ctx.options[k] for k in self.options if k in ctx.options}}
        if not all(isinstance(conf[k], int) and conf[k] >= 1 for k in self.options):
            raise UsageError(f"memory options {conf} are not allowed (integers >= 1)")
        artifact = artifact_of(ctx)
        if artifact is None and handle.lineage and not all(_inference_time(s.technique) for s in handle.lineage):
            raise UsageError("memory: this model has no stored artifact to load in a fresh process")
        args = {"artifact": artifact, "source": handle.source.removeprefix("builtin:"), "threads": handle.threads,
                "new_tokens": conf["new_tokens"], "prompt": prompt_ids(handle, conf["prompt_tokens"], 1, ctx.seed)}
        reports = [child_run(args) for _ in range(conf["repeats"])]
        res = SuiteResult(settings={"memory": conf, "loaded_from": artifact or handle.source})
        method = "measured:psutil-rss-sampler-20ms"
        series = {
            "peak_rss_load": ([r["load_peak"] for r in reports], method),
            "load_rss_delta": ([r["after_load"] - r["before_load"] for r in reports], method),
            "peak_rss_generate": ([r["generate_peak"] for r in reports], method),
            # The kernel's high-water mark of the child's own address space. (wait4's ru_maxrss would also
            # count the spawning process's pages, which Linux carries into it at exec.)
            "max_rss_process": ([r["vm_hwm"] for r in reports], "measured:proc-status-VmHWM"),
        }
        for key in ("cuda_allocated_peak", "cuda_reserved_peak"):
            if key in reports[0]:
                series[key] = ([r[key] for r in reports], "measured:torch.cuda")
        for name, (values, how) in series.items():
            st = describe([float(v) for v in values])
            res.metrics.append(Metric("memory", "load+generate", name, st["mean"], _none(st["stderr"]), len(values),
                                      "bytes", False, how, st))
        self._static(handle, res)
        return res

    @staticmethod
    def _static(handle: ModelHandle, res: SuiteResult) -> None:
        foot = handle.weight_footprint()
        for dtype, nbytes in sorted(foot.items()):
            res.metrics.append(Metric("memory", "weights", f"weight_bytes_{dtype}", float(nbytes), 0.0, 1, "bytes",
                                      False, "counted:state_dict"))
        res.metrics.append(Metric("memory", "weights", "weight_bytes", float(sum(foot.values())), 0.0, 1, "bytes",
                                  False, "counted:state_dict", {"by_dtype": foot}))
        res.metrics.append(Metric("memory", "kv_cache", "kv_bytes_per_token", float(kv_bytes_per_token(handle.model.config)),
                                  0.0, 1, "bytes", False, "derived:2*layers*kv_heads*head_dim*4B"))
        res.metrics.append(Metric("memory", "kv_cache", "kv_bytes_per_token_measured", _measured_kv(handle), 0.0, 1,
                                  "bytes", False, "measured:past_key_values-nbytes"))


def _measured_kv(handle: ModelHandle) -> float:
    import torch

    ids = torch.tensor(prompt_ids(handle, 64, 1, 0))
    with torch.inference_mode():
        cache = handle.model(input_ids=ids, use_cache=True).past_key_values
    total = 0
    for layer in getattr(cache, "layers", []):
        total += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values) if t is not None)
    if not total and hasattr(cache, "to_legacy_cache"):
        total = sum(t.numel() * t.element_size() for kv in cache.to_legacy_cache() for t in kv)
    return total / ids.shape[1]


def _inference_time(technique: str) -> bool:
    from adapters.technique import TECHNIQUES

    return bool(getattr(TECHNIQUES.get(technique), "inference_time", False))


def _none(x: float) -> float | None:
    return None if x != x else x
