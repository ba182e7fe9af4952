"""Turning plan nodes into handles and datasets: load from the source or the artifact cache, or
compute (apply the technique) and store. Shared by the in-process and subprocess executors."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from adapters.corpus import builtin_records, read_records
from adapters.errors import SLMError
from adapters.technique import DataTechnique, TechniqueContext, build_params, get_technique, report_dict
from harness.cache import ArtifactCache
from harness.cost import CostMeter, StepCost
from harness.hardware import HardwareProfile
from harness.plan import Node

DATASET_FILE = "dataset.jsonl"
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


class Materializer:
    """Resolves node hashes to handles (models) or text lists (datasets).

    Keeps the ``keep`` most recently used handles in memory, so siblings that share a parent load
    it once. Parameters come built from the planner (``Node.built``) when the node was planned in this
    process, and are rebuilt from their JSON otherwise (a worker process).
    """

    def __init__(self, nodes: dict[str, Node], cache: ArtifactCache, hardware: HardwareProfile,
                 seed: int = 0, max_steps: int | None = None,
                 workdir: Path | None = None, keep: int = 2):
        self.nodes = nodes
        self.cache = cache
        self.hardware = hardware
        self.seed = seed
        self.max_steps = max_steps
        self.workdir = workdir or cache.root.parent / "work"
        self.keep = keep
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._texts: dict[str, list[str]] = {}

    # -- models -------------------------------------------------------------------------------
    def handle(self, h: str) -> Any:
        """The handle of node ``h`` (loaded, never computed: compute it first)."""
        if h in self._handles:
            self._handles.move_to_end(h)
            return self._handles[h]
        node = self.nodes[h]
        if node.kind == "source":
            from adapters.sources import load_source

            handle = load_source(node.source, threads=self.hardware.threads, batch_size=self.hardware.batch_size,
                                 seed=self.seed)
        elif self.cache.meta(h).get("reapply"):
            handle, _ = self._apply(node)  # inference-time technique: cheap, weights shared with the parent
        else:
            from adapters.handle import ModelHandle

            handle = ModelHandle.load(self.cache.path(h), threads=self.hardware.threads,
                                      batch_size=self.hardware.batch_size)
            handle.activate()
        return self._remember(h, handle)

    def weight_bytes(self, h: str) -> tuple[dict[str, int], str] | None:
        """The bytes of node ``h``'s weights by dtype, without loading it, and how they were found (the
        footprint recorded when it was computed, or the source's estimate); None when unknown."""
        node = self.nodes[h]
        if node.kind == "source":
            from adapters.sources import estimated_weight_bytes

            found = estimated_weight_bytes(node.source, seed=self.seed)
            return (found, "estimated from the source without loading it") if found else None
        if not self.cache.has(h):
            return None
        meta = self.cache.meta(h)
        if meta.get("footprint"):
            return dict(meta["footprint"]), "footprint recorded when the node was computed"
        return self.weight_bytes(str(node.inputs["model"])) if "model" in node.inputs else None

    def check_memory_cap(self, h: str, hw: HardwareProfile, what: str) -> None:
        """Refuse, before loading, to run ``what`` on node ``h`` when its weights alone (float weights at the
        profile's dtype) exceed the profile's ``memory_cap_gb``.

        Raises:
            ResourceRefusal: naming the cap, the bytes needed and how they were found.
        """
        from adapters import formats as F
        from adapters.errors import ResourceRefusal

        cap = hw.memory_cap_bytes
        found = self.weight_bytes(h) if cap is not None else None
        if cap is None or found is None:
            return
        by_dtype, how = found
        castable = self.nodes[h].format in F.FLOAT_TORCH + (F.COMPRESSED,)
        size = _DTYPE_BYTES.get(hw.dtype, 4)
        need = sum(n // _DTYPE_BYTES[d] * size if castable and d in _DTYPE_BYTES else n for d, n in by_dtype.items())
        if need > cap:
            raise ResourceRefusal(f"{what} refused before loading: profile {hw.name} has memory_cap_gb "
                                  f"{hw.memory_cap_gb}, and the weights alone take {need / 1e9:.3f} GB at "
                                  f"{hw.dtype if castable else 'their stored dtypes'} ({how})")

    def _remember(self, h: str, handle: Any) -> Any:
        self._handles[h] = handle
        while len(self._handles) > self.keep:
            self._handles.popitem(last=False)
        return handle

    def drop(self) -> None:
        self._handles.clear()

    # -- datasets -----------------------------------------------------------------------------
    def texts(self, h: str) -> list[Any]:
        """The records of dataset node ``h`` (strings, or prompt/completion dicts from JSONL files, the builtin
        instructions and ``data.generate``)."""
        if h in self._texts:
            return self._texts[h]
        node = self.nodes[h]
        if node.technique is None:
            raw = node.params
            texts = (read_records(raw["path"], limit=raw["n"]) if raw.get("path")
                     else builtin_records(raw.get("builtin") or "synthetic", raw["n"], raw["seed"], raw.get("data_dir")))
        else:
            lines = (self.cache.path(h) / DATASET_FILE).read_text(encoding="utf-8").splitlines()
            texts = [json.loads(line)["text"] for line in lines]
        self._texts[h] = texts
        return texts

    # -- computing ----------------------------------------------------------------------------
    def context(self, node: Node) -> TechniqueContext:
        inputs: dict[str, Any] = {}
        for role, ref in node.inputs.items():
            if role in ("model", "texts"):
                continue
            inputs[role] = [self._input(h) for h in ref] if isinstance(ref, list) else self._input(ref)
        workdir = self.workdir / node.hash
        workdir.mkdir(parents=True, exist_ok=True)
        return TechniqueContext(seed=self.seed, workdir=workdir, hardware=self.hardware.as_dict(), inputs=inputs,
                                max_steps=self.max_steps)

    def _input(self, h: str) -> Any:
        return self.texts(h) if self.nodes[h].kind == "dataset" else self.handle(h)

    def _apply(self, node: Node) -> tuple[Any, Any]:
        """Run the node's technique; returns (handle or kept records, report)."""
        cls = get_technique(str(node.technique))
        technique = cls(node.built if node.built is not None else build_params(cls, node.params))
        ctx = self.context(node)
        if isinstance(technique, DataTechnique):
            selected = technique.select(self.texts(str(node.inputs["texts"])), ctx)
            return selected.texts, selected.report
        applied = technique.run(self.handle(str(node.inputs["model"])), ctx)
        return applied.handle, applied.report

    def compute(self, h: str) -> StepCost:
        """Apply node ``h``'s technique to its (already available) inputs and store the artifact."""
        node = self.nodes[h]
        if node.kind == "source" or (node.kind == "dataset" and node.technique is None):
            return StepCost()
        cls = get_technique(str(node.technique))
        if "model" in node.inputs:
            self.check_memory_cap(str(node.inputs["model"]), self.hardware, f"technique {node.technique}")
        with CostMeter(self.workdir) as meter:
            result, report = self._apply(node)
        meta = {"hash": h, "kind": node.kind, "technique": node.technique, "version": node.version,
                "params": node.params, "inputs": node.inputs, "label": node.label,
                "library_versions": cls.library_versions(), "cost": meter.cost.__dict__,
                "reapply": bool(cls.inference_time), "report": report_dict(report)}
        if node.kind == "dataset":
            def build(tmp: Path) -> None:
                (tmp / DATASET_FILE).write_text("".join(json.dumps({"text": t}) + "\n" for t in result))
            self._texts[h] = list(result)
        else:
            meta["footprint"] = _safe_footprint(result)
            meta["format"] = result.format
            meta["lineage_step"] = dataclasses.asdict(result.lineage[-1])

            def build(tmp: Path) -> None:
                if not cls.inference_time:
                    result.save(tmp)
            self._remember(h, result)
        self.cache.write(h, build, meta)
        return meter.cost


def _safe_footprint(handle: Any) -> dict[str, int] | None:
    try:
        return dict(handle.weight_footprint())
    except (SLMError, RuntimeError, AttributeError, NotImplementedError):
        return None
