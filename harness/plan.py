"""The planner: an :class:`ExperimentSpec` becomes a DAG of content-hashed nodes.

A node is an artifact: a model source, a technique applied to its inputs, or a dataset. Its hash
covers (technique, technique version, every parameter with defaults, input hashes), so paths that
share a prefix share nodes and a node computed once is never computed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from adapters.errors import SpecError, UnknownNameError, UsageError
from adapters.sources import ModelSource
from adapters.technique import Technique, build_params, get_technique, params_dict
from harness.hardware import HardwareProfile, resolve_profile
from harness.spec import DatasetSpec, ExperimentSpec, PathSpec, StepSpec, SuiteSpec
from suites.base import SUITES


def content_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace), first 16 hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Node:
    """One artifact of the plan.

    Attributes:
        hash: content hash (the cache key).
        kind: ``source``, ``model`` or ``dataset``.
        technique: registry name (None for sources and raw datasets).
        version: the technique's version.
        params: every parameter, defaults included.
        inputs: role -> node hash; ``model`` is the main input, others are e.g. ``teacher``, ``dataset``.
        source: for a source node the model source (as written); for a raw dataset its spec.
        label: human-readable name.
    """

    hash: str
    kind: str
    technique: str | None
    version: str
    params: dict[str, Any]
    inputs: dict[str, str]
    source: Any = None
    label: str = ""


@dataclass(frozen=True)
class PlannedPath:
    """A path on one hardware profile: its chain of nodes, source first."""

    path_id: str
    name: str
    base: str
    base_source: str
    hardware: HardwareProfile
    chain: tuple[str, ...]
    steps: tuple[dict[str, Any], ...]
    spec_snippet: str

    @property
    def leaf(self) -> str:
        return self.chain[-1]


@dataclass(frozen=True)
class SuiteRun:
    """One suite to run on one node on one hardware profile."""

    run_key: str
    node: str
    suite: SuiteSpec
    hardware: HardwareProfile
    path_ids: tuple[str, ...]


@dataclass
class Plan:
    """The DAG (nodes in dependency order), the paths and the suite runs of an experiment."""

    spec: ExperimentSpec
    nodes: dict[str, Node] = field(default_factory=dict)
    paths: list[PlannedPath] = field(default_factory=list)
    suite_runs: list[SuiteRun] = field(default_factory=list)

    def technique_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.technique is not None]

    def descendants(self, node_hash: str) -> set[str]:
        out: set[str] = set()
        for n in self.nodes.values():
            if any(h == node_hash or h in out for h in n.inputs.values()):
                out.add(n.hash)
        return out


def make_plan(spec: ExperimentSpec) -> Plan:
    """Validate names and parameters, and build the DAG. Raises :class:`SpecError`."""
    return _Planner(spec).build()


class _Planner:
    def __init__(self, spec: ExperimentSpec):
        self.spec = spec
        self.plan = Plan(spec)
        self.path_by_name = {p.name: p for p in spec.paths}
        self.leaf_of_path: dict[str, str] = {}
        self.visiting: list[str] = []
        self.dataset_nodes: dict[str, str] = {}

    def fail(self, fld: str, message: str) -> None:
        raise SpecError(message, file=self.spec.file, field=fld)

    def build(self) -> Plan:
        profiles = self._profiles()
        suites = self._suites()
        for path in self.spec.paths:
            self._path_leaf(path)
        for path in self.spec.paths:
            chain = self._chain(path)
            for hw in profiles:
                self.plan.paths.append(self._planned(path, chain, hw))
        self._suite_runs(suites)
        return self.plan

    # -- validation ---------------------------------------------------------------------------
    def _profiles(self) -> list[HardwareProfile]:
        out = []
        for i, hw in enumerate(self.spec.hardware):
            try:
                out.append(resolve_profile(hw, relative_to=self.spec.file))
            except UsageError as exc:
                self.fail(f"hardware[{i}]" if len(self.spec.hardware) > 1 else "hardware", str(exc))
        return out

    def _suites(self) -> list[SuiteSpec]:
        for s in self.spec.suites:
            try:
                cls = SUITES.get(s.name)
            except UnknownNameError as exc:
                self.fail(f"suites.{s.name}", str(exc))
            allowed = getattr(cls, "options", ())
            bad = sorted(set(s.options) - set(allowed)) if allowed else []
            if bad:
                self.fail(f"suites.{s.name}.{bad[0]}", f"unknown option (allowed: profile, {', '.join(allowed)})")
        return list(self.spec.suites)

    # -- nodes --------------------------------------------------------------------------------
    def _add(self, node: Node) -> str:
        self.plan.nodes.setdefault(node.hash, node)
        return node.hash

    def _source_node(self, base: str, where: str) -> str:
        if base not in self.spec.bases:
            self.fail(where, f"unknown base {base!r} (defined: {', '.join(self.spec.bases)})")
        value = self.spec.bases[base]
        try:
            src = ModelSource.parse(value)
        except UsageError as exc:
            self.fail(f"bases.{base}" if len(self.spec.bases) > 1 or base != "base" else "base", str(exc))
        except Exception as exc:  # ModelLoadError for missing files
            self.fail("base" if base == "base" else f"bases.{base}", str(exc))
        ident = {"source": src.id, "seed": self.spec.seed if src.kind == "scratch" else None}
        return self._add(Node(content_hash(ident), "source", None, "", {}, {}, value, src.id))

    def _path_leaf(self, path: PathSpec) -> str:
        if path.name in self.leaf_of_path:
            return self.leaf_of_path[path.name]
        if path.name in self.visiting:
            cycle = " -> ".join([*self.visiting[self.visiting.index(path.name):], path.name])
            self.fail(path.where, f"reference cycle between paths: {cycle}")
        self.visiting.append(path.name)
        current = self._source_node(path.base, f"{path.where}.base")
        for step in path.steps:
            current = self._step_node(step, current, path.base)
        self.visiting.pop()
        self.leaf_of_path[path.name] = current
        return current

    def _technique(self, step: StepSpec) -> type[Technique]:
        try:
            return get_technique(step.technique)
        except UnknownNameError as exc:
            self.fail(step.where, str(exc))
            raise

    def _step_node(self, step: StepSpec, model: str, base: str) -> str:
        cls = self._technique(step)
        params = dict(step.params)
        inputs = {"model": model}
        for role in cls.inputs:
            inputs[role] = self._reference(step, role, params.pop(role, None), base)
        dataset = params.get("dataset")
        if isinstance(dataset, str) and dataset in self.spec.datasets:
            ds_hash = self._dataset_node(self.spec.datasets[dataset], base)
            if self.plan.nodes[ds_hash].technique is not None:
                inputs["dataset"] = ds_hash
        built = build_params(cls, params, where=f"{self.spec.file}: {step.where}")
        full = params_dict(built)
        ident = {"technique": cls.name, "version": cls.version, "params": full, "inputs": inputs}
        return self._add(Node(content_hash(ident), "model", cls.name, cls.version, full, inputs, None, step.label()))

    def _reference(self, step: StepSpec, role: str, ref: Any, base: str) -> str:
        where = f"{step.where}.{role}"
        if ref is None:
            if role == "reference":  # data selection scores with the path's base by default
                return self._source_node(base, where)
            self.fail(where, f"{step.technique} needs `{role}:` naming a base ({', '.join(self.spec.bases)}) or a path")
        if not isinstance(ref, str):
            self.fail(where, f"expected the name of a base or a path, got {ref!r}")
        if ref in self.spec.bases:
            return self._source_node(ref, where)
        if ref in self.path_by_name:
            return self._path_leaf(self.path_by_name[ref])
        self.fail(where, f"{ref!r} names no base or path (bases: {', '.join(self.spec.bases)}; "
                         f"paths: {', '.join(list(self.path_by_name)[:10])})")
        raise AssertionError

    def _dataset_node(self, ds: DatasetSpec, base: str) -> str:
        if ds.name in self.dataset_nodes:
            return self.dataset_nodes[ds.name]
        if ds.source is not None:
            if ds.source not in self.spec.datasets or ds.source == ds.name:
                self.fail(f"datasets.{ds.name}.from", f"{ds.source!r} names no other dataset "
                                                     f"(defined: {', '.join(self.spec.datasets)})")
            current = self._dataset_node(self.spec.datasets[ds.source], base)
        else:
            raw = {"builtin": ds.builtin, "path": ds.path, "n": ds.n, "seed": self.spec.seed}
            current = self._add(Node(content_hash(raw), "dataset", None, "", raw, {}, raw, ds.name))
        for step in ds.steps:
            cls = self._technique(step)
            if cls.produces != "dataset":
                self.fail(step.where, f"{cls.name} produces a model; dataset steps must be data.* techniques")
            params = dict(step.params)
            inputs = {"texts": current, "reference": self._reference(step, "reference", params.pop("reference", None), base)}
            full = params_dict(build_params(cls, params, where=f"{self.spec.file}: {step.where}"))
            ident = {"technique": cls.name, "version": cls.version, "params": full, "inputs": inputs}
            current = self._add(Node(content_hash(ident), "dataset", cls.name, cls.version, full, inputs, None, step.label()))
        self.dataset_nodes[ds.name] = current
        return current

    # -- paths and suite runs -----------------------------------------------------------------
    def _chain(self, path: PathSpec) -> tuple[str, ...]:
        chain = [self.leaf_of_path[path.name]]
        while "model" in self.plan.nodes[chain[-1]].inputs:
            chain.append(self.plan.nodes[chain[-1]].inputs["model"])
        return tuple(reversed(chain))

    def _planned(self, path: PathSpec, chain: tuple[str, ...], hw: HardwareProfile) -> PlannedPath:
        nodes = [self.plan.nodes[h] for h in chain[1:]]
        steps = tuple({"technique": n.technique, "params": n.params, "label": n.label} for n in nodes)
        src = self.plan.nodes[chain[0]]
        path_id = content_hash({"chain": chain, "hardware": hw.name})
        snippet = yaml.safe_dump(
            {
                "name": path.name,
                "base": src.source,
                "hardware": hw.name,
                "seed": self.spec.seed,
                "paths": [[{s.technique: dict(s.params)} if s.params else s.technique for s in path.steps]],
            },
            sort_keys=False,
        )
        return PlannedPath(path_id, path.name, path.base, src.label, hw, chain, steps, snippet)

    def _suite_runs(self, suites: list[SuiteSpec]) -> None:
        wanted: dict[tuple[str, str], list[str]] = {}
        for p in self.plan.paths:
            nodes = p.chain if self.spec.evaluate == "all" else p.chain[-1:]
            for h in nodes:
                wanted.setdefault((h, p.hardware.name), []).append(p.path_id)
        profiles = {p.hardware.name: p.hardware for p in self.plan.paths}
        for (h, hw_name), path_ids in wanted.items():
            for s in suites:
                key = content_hash({"node": h, "suite": s.name, "profile": s.profile, "options": s.options,
                                    "hardware": dataclasses.asdict(profiles[hw_name]), "seed": self.spec.seed})
                self.plan.suite_runs.append(SuiteRun(key, h, s, profiles[hw_name], tuple(path_ids)))
