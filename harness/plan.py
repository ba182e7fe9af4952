"""The planner: an :class:`ExperimentSpec` becomes a type-checked DAG of content-hashed nodes.

A node is an artifact: a model source, a technique applied to its inputs, or a dataset. Its hash is its
whole identity: technique, technique version, every parameter with defaults, the hashes of all its inputs
(lists in order), the seed (when the technique depends on it), the step budget (when it reaches the
technique) and the content of every data file it reads. Paths that share a prefix share nodes, and a node
computed once is never computed again.

Every model node carries its artifact format (:mod:`adapters.formats`). A step whose technique does not
accept its input's format is refused here, before anything runs, with one line naming the path, the step,
the input format, what the step accepts and what to do; a grid drops (and lists) such combinations instead,
unless ``strict``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from adapters import formats as F
from adapters.corpus import BUILTIN_DATASETS, builtin_files
from adapters.errors import SpecError, UnknownNameError, UsageError
from adapters.sources import ModelSource
from adapters.technique import (
    DatasetRequest,
    DataTechnique,
    FormatMismatch,
    PathStep,
    Technique,
    build_params,
    get_technique,
    params_dict,
)
from harness.hardware import BUILTIN_PROFILES, HardwareProfile, resolve_profile, unavailable_reason
from harness.identity import data_identity, file_digest
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
        inputs: role -> node hash (or a list of hashes, in order); ``model`` is the main input, others are
            e.g. ``teacher``, ``dataset``.
        source: for a source node the model source (as written); for a raw dataset its spec.
        label: human-readable name.
        format: the artifact format of a model node's output (None for datasets).
        built: the technique's parameters object, built once by the planner (not serialized).
    """

    hash: str
    kind: str
    technique: str | None
    version: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    source: Any = None
    label: str = ""
    format: str | None = None
    built: Any = field(default=None, compare=False, repr=False)

    def input_hashes(self) -> list[str]:
        """Every input hash, lists flattened, in role order."""
        out: list[str] = []
        for ref in self.inputs.values():
            out.extend(ref if isinstance(ref, list) else [ref])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (everything but ``built``), for worker processes."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "built"}


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


@dataclass(frozen=True)
class DroppedPath:
    """A grid combination that does not type-check, and why (one line)."""

    name: str
    reason: str


@dataclass(frozen=True)
class SkippedProfile:
    """A declared hardware profile this machine cannot honour, and why (one line)."""

    name: str
    reason: str


@dataclass
class Plan:
    """The DAG (nodes in dependency order), the paths, the suite runs and the dropped combinations."""

    spec: ExperimentSpec
    nodes: dict[str, Node] = field(default_factory=dict)
    paths: list[PlannedPath] = field(default_factory=list)
    suite_runs: list[SuiteRun] = field(default_factory=list)
    dropped: list[DroppedPath] = field(default_factory=list)
    skipped_profiles: list[SkippedProfile] = field(default_factory=list)

    def technique_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.technique is not None]

    def descendants(self, node_hash: str) -> set[str]:
        out: set[str] = set()
        for n in self.nodes.values():
            if any(h == node_hash or h in out for h in n.input_hashes()):
                out.add(n.hash)
        return out


def make_plan(spec: ExperimentSpec, strict: bool = False, data_dir: str | None = None) -> Plan:
    """Validate names, parameters and formats, and build the DAG. Raises :class:`SpecError`.

    Args:
        spec: the experiment.
        strict: refuse grid combinations that do not type-check instead of dropping them.
        data_dir: the run's data directory (``--data-dir``), part of the identity of suite runs that read data.
    """
    return _Planner(spec, strict, data_dir).build()


def source_format(value: Any) -> str:
    """The artifact format of a base model source: the recorded one for a directory written by
    ``ModelHandle.save``, else ``torch`` (builtin, HF directory, GGUF and hub models load as dense torch)."""
    if isinstance(value, str):
        handle_file = Path(value).expanduser() / "handle.json"
        if handle_file.is_file():
            try:
                return str(json.loads(handle_file.read_text()).get("format", F.TORCH))
            except (OSError, json.JSONDecodeError):
                return F.TORCH
    return F.TORCH


class _Planner:
    def __init__(self, spec: ExperimentSpec, strict: bool = False, data_dir: str | None = None):
        self.spec = spec
        self.strict = strict
        self.data_dir = data_dir
        self.plan = Plan(spec)
        self.path_by_name = {p.name: p for p in spec.paths}
        self.leaf_of_path: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.visiting: list[str] = []
        self.dataset_nodes: dict[str, str] = {}
        self.building: list[str] = []  # the datasets being planned, outermost first (to refuse a cycle)

    def fail(self, fld: str, message: str) -> NoReturn:
        raise SpecError(message, file=self.spec.file, field=fld)

    def build(self) -> Plan:
        profiles = self._profiles()
        suites = self._suites()
        for path in self.spec.paths:
            self._path_leaf(path)
        kept = [p for p in self.spec.paths if p.name not in self.dropped]
        if not kept:
            first = next(iter(self.dropped.items()))
            self.fail("paths", f"no path type-checks; e.g. {first[0]!r}: {first[1]}")
        for path in kept:
            chain = self._chain(path)
            for hw in profiles:
                self.plan.paths.append(self._planned(path, chain, hw))
        self.plan.dropped = [DroppedPath(n, r) for n, r in self.dropped.items()]
        self._keep_reachable()
        self._suite_runs(suites)
        return self.plan

    # -- validation ---------------------------------------------------------------------------
    def _profiles(self) -> list[HardwareProfile]:
        """The declared profiles this machine can honour. One it cannot is refused (the only profile) or
        skipped with its reason recorded (one of several)."""
        out = []
        if not self.spec.hardware:
            self.fail("hardware", f"no profile given: name at least one (builtin: {', '.join(BUILTIN_PROFILES)})")
        several = len(self.spec.hardware) > 1
        seen: dict[str, HardwareProfile] = {}
        for i, hw in enumerate(self.spec.hardware):
            where = f"hardware[{i}]" if several else "hardware"
            try:
                profile = resolve_profile(hw, relative_to=self.spec.file)
            except UsageError as exc:
                self.fail(where, str(exc))
            if profile.name in seen:
                self.fail(where, f"two profiles are named {profile.name!r}" + (
                    "" if seen[profile.name] == profile else " with different definitions") + ": names must be unique")
            seen[profile.name] = profile
            reason = unavailable_reason(profile)
            if reason and not several:
                self.fail(where, f"profile {profile.name!r}: {reason}")
            if reason:
                self.plan.skipped_profiles.append(SkippedProfile(profile.name, reason))
                continue
            out.append(profile)
        if not out:
            self.fail("hardware", "no declared profile can run on this machine: "
                      + "; ".join(f"{s.name}: {s.reason}" for s in self.plan.skipped_profiles))
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
            problem = cls.check_options(dict(s.options))
            if problem:
                self.fail(f"suites.{s.name}.{problem[0]}", problem[1])
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
        return self._add(Node(content_hash(ident), "source", None, "", {}, {}, value, src.id, source_format(value)))

    def _path_leaf(self, path: PathSpec) -> str | None:
        """The leaf node of a path (None when the path was dropped for a format mismatch)."""
        if path.name in self.leaf_of_path or path.name in self.dropped:
            return self.leaf_of_path.get(path.name)
        if path.name in self.visiting:
            cycle = " -> ".join([*self.visiting[self.visiting.index(path.name):], path.name])
            self.fail(path.where, f"reference cycle between paths: {cycle}")
        self.visiting.append(path.name)
        try:
            current = self._source_node(path.base, f"{path.where}.base")
            for i, step in enumerate(path.steps):
                current = self._step_node(path, i, step, current)
            self._check_path(path, current)
        except _Mismatch as exc:
            self.visiting.pop()
            if path.where != "grid" or self.strict:
                self.fail(exc.where, exc.line)
            self.dropped[path.name] = exc.line
            return None
        self.visiting.pop()
        self.leaf_of_path[path.name] = current
        return current

    def _check_path(self, path: PathSpec, leaf: str) -> None:
        """Each step's :meth:`Technique.check_path` on the whole path (a conflict between steps, e.g. self-consistency
        with greedy decoding), as a mismatch line: a grid drops the combination, an explicit path is refused."""
        nodes = [self.plan.nodes[leaf]]
        while nodes[0].kind == "model":
            nodes.insert(0, self.plan.nodes[nodes[0].inputs["model"]])
        nodes = nodes[1:]
        roles = [get_technique(str(n.technique)).inputs for n in nodes]
        steps = [PathStep(str(n.technique), n.built, tuple(r for r in n.inputs if r in named))
                 for n, named in zip(nodes, roles, strict=True)]
        for i, node in enumerate(nodes):
            problem = get_technique(steps[i].technique).check_path(node.built, steps, i)
            if problem:
                raise _Mismatch(path.steps[i].where,
                                f"path {path.name!r}: step {i + 1} {steps[i].technique}: {problem}")

    def _technique(self, step: StepSpec) -> type[Technique]:
        try:
            return get_technique(step.technique)
        except UnknownNameError as exc:
            self.fail(step.where, str(exc))
            raise

    def _step_node(self, path: PathSpec, index: int, step: StepSpec, model: str) -> str:
        cls = self._technique(step)
        if issubclass(cls, DataTechnique):
            self.fail(step.where, f"{cls.name} produces a dataset, not a model: define it under `datasets:` "
                                  f"(e.g. {{clean: {{from: NAME, steps: [{cls.name}]}}}}) and name that dataset in a "
                                  f"training step's `dataset:`")
        params = dict(step.params)
        inputs: dict[str, Any] = {"model": model}
        for role in cls.inputs:
            ref = params.pop(role, None)
            if ref is not None or role not in cls.optional_inputs:
                inputs[role] = self._reference(step, role, ref, path.base)
        dataset = params.get("dataset")
        if isinstance(dataset, str) and dataset in self.spec.datasets:
            inputs["dataset"] = self._dataset_node(self.spec.datasets[dataset], path.base)
        elif isinstance(dataset, str) and dataset not in (*BUILTIN_DATASETS, "synthetic", "default"):
            self.fail(f"{step.where}.dataset", f"{dataset!r} names no dataset (defined: "
                                               f"{', '.join(self.spec.datasets) or 'none'}; builtin: "
                                               f"{', '.join(BUILTIN_DATASETS)})")
        built = build_params(cls, params, where=f"{self.spec.file}: {step.where}")
        problem = cls.check_roles(built, {r: len(v) if isinstance(v, list) else 1 for r, v in inputs.items()
                                          if r in cls.inputs})
        if problem:
            self.fail(step.where, problem)
        out_format = self._check_formats(path, index, step, cls, built, inputs)
        request = cls.dataset_request(built)
        if request is not None:
            inputs = self._requested_dataset(step, request, inputs, path.base)
        data = self._named_data(step, cls, built, inputs, path.base)
        full = params_dict(built)
        node = Node(node_hash(cls, built, full, inputs, self.spec, data), "model", cls.name, cls.version, full, inputs,
                    None, step.label(), out_format, built)
        return self._add(node)

    def _named_data(self, step: StepSpec, cls: type[Technique], built: Any, inputs: dict[str, Any],
                    base: str) -> list[str]:
        """Adds to ``inputs`` the datasets named by the step's ``dataset_params`` (a dataset of the spec, or a builtin
        one); returns the content digests of the local files the step reads itself (:meth:`Technique.local_data`)."""
        for fld in cls.dataset_params:
            name = getattr(built, fld, None)
            if isinstance(name, str) and name in self.spec.datasets:
                inputs[fld] = self._dataset_node(self.spec.datasets[name], base)
            elif isinstance(name, str) and name in BUILTIN_DATASETS:
                inputs[fld] = self._add(self._raw_dataset(DatasetSpec(name, builtin=name)))
        try:
            files = cls.local_data(built, [*self.spec.datasets, *BUILTIN_DATASETS])
        except UsageError as exc:
            self.fail(step.where, str(exc))
        return [file_digest(f) for f in files]

    def _check_formats(self, path: PathSpec, index: int, step: StepSpec, cls: type[Technique], built: Any,
                       inputs: dict[str, Any]) -> str:
        model = self.plan.nodes[inputs["model"]]
        for role, accepted in cls.role_formats.items():
            refs = inputs.get(role)
            for h in refs if isinstance(refs, list) else [refs] if refs else []:
                fmt = self.plan.nodes[h].format
                if fmt is not None and fmt not in accepted:
                    self.fail(f"{step.where}.{role}", f"path {path.name!r}: {cls.name} needs a `{role}:` of format "
                                                      f"{' / '.join(accepted)}, and {self.plan.nodes[h].label} is {fmt}")
        try:
            return cls.output_format(str(model.format), built)
        except FormatMismatch as exc:
            raise _Mismatch(step.where, self._mismatch_line(path, index, cls, model, exc)) from None

    def _mismatch_line(self, path: PathSpec, index: int, cls: type[Technique], model: Node, exc: FormatMismatch) -> str:
        made_by = f"made by step {index} {model.technique}" if model.technique else "the base model"
        advice = exc.hint or (f"reorder: put {cls.name} before {model.technique}" if model.technique
                              else "start from a base model it accepts")
        return (f"path {path.name!r}: step {index + 1} {cls.name} does not accept a {exc.input_format} model "
                f"({made_by}); it accepts {', '.join(exc.accepted) or 'no model'}; {advice}")

    def _reference(self, step: StepSpec, role: str, ref: Any, base: str) -> Any:
        where = f"{step.where}.{role}"
        if isinstance(ref, list):  # several models under one role (e.g. the models a merge combines), in order
            if role not in get_technique(step.technique).list_inputs:
                self.fail(where, f"{step.technique} takes one model as `{role}:`, got a list {ref!r}")
            if not ref:
                self.fail(where, f"expected at least one base or path name, got {ref!r}")
            return [self._reference(step, role, r, base) for r in ref]
        if ref is None:
            cls = get_technique(step.technique)
            if role == "reference" or role in getattr(cls, "defaults_to_base", ()):  # e.g. data selection scores
                return self._source_node(base, where)  # with the path's base; task vectors are taken from it
            self.fail(where, f"{step.technique} needs `{role}:` naming a base ({', '.join(self.spec.bases)}) or a path")
        if not isinstance(ref, str):
            self.fail(where, f"expected the name of a base or a path, got {ref!r}")
        if ref in self.spec.bases:
            return self._source_node(ref, where)
        if ref in self.path_by_name:
            leaf = self._path_leaf(self.path_by_name[ref])
            if leaf is None:
                raise _Mismatch(where, f"`{role}: {ref}` names a path that does not type-check ({self.dropped[ref]})")
            return leaf
        self.fail(where, f"{ref!r} names no base or path (bases: {', '.join(self.spec.bases)}; "
                         f"paths: {', '.join(list(self.path_by_name)[:10])})")
        raise AssertionError

    def _dataset_node(self, ds: DatasetSpec, base: str) -> str:
        if ds.name in self.dataset_nodes:
            return self.dataset_nodes[ds.name]
        if ds.name in self.building:
            cycle = " -> ".join([*self.building[self.building.index(ds.name):], ds.name])
            self.fail(f"datasets.{ds.name}", f"the dataset is made from itself ({cycle})")
        self.building.append(ds.name)
        try:
            return self._dataset_steps(ds, base)
        finally:
            self.building.pop()

    def _dataset_steps(self, ds: DatasetSpec, base: str) -> str:
        if ds.source is not None:
            if ds.source not in self.spec.datasets or ds.source == ds.name:
                self.fail(f"datasets.{ds.name}.from", f"{ds.source!r} names no other dataset "
                                                     f"(defined: {', '.join(self.spec.datasets)})")
            current = self._dataset_node(self.spec.datasets[ds.source], base)
        else:
            current = self._add(self._raw_dataset(ds))
        for step in ds.steps:
            cls = self._technique(step)
            if not issubclass(cls, DataTechnique):
                self.fail(step.where, f"{cls.name} produces a model; dataset steps must be data.* techniques")
            params = dict(step.params)
            reference = None
            if cls.uses_reference:
                reference = self._reference(step, "reference", params.pop("reference", None), base)
            elif "reference" in params:
                self.fail(f"{step.where}.reference", f"{cls.name} reads no model: drop `reference:`")
            built = build_params(cls, params, where=f"{self.spec.file}: {step.where}")
            named: dict[str, Any] = {}  # the datasets its `dataset_params` name (e.g. data.dsir's `target`)
            data = self._named_data(step, cls, built, named, base)
            current = self._data_node(cls, built, current, reference, step.label(), named, data)
        self.dataset_nodes[ds.name] = current
        return current

    def _data_node(self, cls: type[Technique], built: Any, texts: str, reference: str | None, label: str,
                   named: dict[str, Any] | None = None, data: list[str] | None = None) -> str:
        """A data technique applied to dataset node ``texts`` with model node ``reference`` (None for a technique that
        reads no model; and the dataset nodes ``named`` by its ``dataset_params``; ``data``: digests of the local files
        it reads itself); the seed is part of its identity only where the technique depends on it."""
        full = params_dict(built)
        inputs = {"texts": texts, **({"reference": reference} if reference is not None else {}), **(named or {})}
        ident: dict[str, Any] = {"technique": cls.name, "version": cls.version, "params": full, "inputs": inputs}
        if data:
            ident["data"] = data
        if cls.seed_dependent(built):
            ident["seed"] = self.spec.seed
        return self._add(Node(content_hash(ident), "dataset", cls.name, cls.version, full, inputs, None, label, None,
                              built))

    def _requested_dataset(self, step: StepSpec, request: DatasetRequest, inputs: dict[str, Any], base: str) -> dict[str, Any]:
        """The step's inputs with the dataset it asks for (:meth:`Technique.dataset_request`) as a node of its own:
        the data technique applied to the named dataset, with the step's ``request.role`` model as its reference (an
        input of the dataset node, no longer of the step's node). The same request from another step is the same
        node, and so is a ``datasets:`` entry that spells it out."""
        where = f"{step.where}.{request.field}"
        if request.source not in self.spec.datasets and request.source not in BUILTIN_DATASETS:
            self.fail(where, f"{request.source!r} names no dataset (defined: {', '.join(self.spec.datasets) or 'none'}; "
                             f"builtin: {', '.join(BUILTIN_DATASETS)})")
        if request.source in self.spec.datasets:
            texts = self._dataset_node(self.spec.datasets[request.source], base)
        else:
            texts = self._add(self._raw_dataset(DatasetSpec(request.source, builtin=request.source, n=request.n)))
        cls = self._technique(StepSpec(request.technique, where=where))
        built = build_params(cls, request.params, where=f"{self.spec.file}: {step.where}")
        out = {role: ref for role, ref in inputs.items() if role != request.role}
        by = step.params.get(request.role, base)
        out["dataset"] = self._data_node(cls, built, texts, inputs[request.role],
                                         f"{request.technique}({request.source} by {by})")
        return out

    def _raw_dataset(self, ds: DatasetSpec) -> Node:
        """A file or built-in dataset; identified by the file's content (not its name) or the seed."""
        raw = {"builtin": ds.builtin, "path": ds.path, "n": ds.n, "seed": self.spec.seed}
        if ds.path:
            path = Path(ds.path).expanduser()
            if not path.is_file():
                self.fail(f"datasets.{ds.name}.path", f"file not found: {ds.path}")
            raw["path"] = str(path.resolve())
            ident = {"content": file_digest(path), "n": ds.n, "suffix": path.suffix}
        else:
            ident = {"builtin": ds.builtin or "synthetic", "n": ds.n, "seed": self.spec.seed}
            try:  # a builtin made from local files (truthfulqa_pairs): identified by their content too
                files = builtin_files(ds.builtin or "synthetic", self.data_dir)
            except UsageError as exc:
                self.fail(f"datasets.{ds.name}.builtin", str(exc))
            if files:
                ident["content"] = [file_digest(f) for f in files]
                raw["data_dir"] = self.data_dir  # None: $SLM_DATA_DIR, as here
        return Node(content_hash(ident), "dataset", None, "", raw, {}, raw, ds.name)

    def _keep_reachable(self) -> None:
        """Drop nodes only dropped paths needed (dependency order is kept)."""
        needed: set[str] = set()
        stack = [p.leaf for p in self.plan.paths]
        while stack:
            h = stack.pop()
            if h not in needed:
                needed.add(h)
                stack.extend(self.plan.nodes[h].input_hashes())
        self.plan.nodes = {h: n for h, n in self.plan.nodes.items() if h in needed}

    # -- paths and suite runs -----------------------------------------------------------------
    def _chain(self, path: PathSpec) -> tuple[str, ...]:
        chain = [self.leaf_of_path[path.name]]
        while "model" in self.plan.nodes[chain[-1]].inputs:
            chain.append(self.plan.nodes[chain[-1]].inputs["model"])
        return tuple(reversed(chain))

    def _planned(self, path: PathSpec, chain: tuple[str, ...], hw: HardwareProfile) -> PlannedPath:
        nodes = [self.plan.nodes[h] for h in chain[1:]]
        steps = tuple({"technique": n.technique, "params": n.params, "label": n.label, "format": n.format}
                      for n in nodes)
        src = self.plan.nodes[chain[0]]
        path_id = content_hash({"chain": chain, "hardware": hw.name})
        return PlannedPath(path_id, path.name, path.base, src.label, hw, chain, steps, self._snippet(path, hw))

    def _snippet(self, path: PathSpec, hw: HardwareProfile) -> str:
        """A complete spec that plans this path to the same leaf: its bases, datasets, referenced paths,
        hardware profile, seed, step budget and suites."""
        paths, bases, datasets = self._closure(path)
        doc: dict[str, Any] = {"name": path.name, "bases": {b: self._source_text(b) for b in bases}}
        doc["hardware"] = hw.name if BUILTIN_PROFILES.get(hw.name) == hw else hw.as_dict()
        doc["seed"] = self.spec.seed
        if self.spec.max_steps is not None:
            doc["max_steps"] = self.spec.max_steps
        if self.spec.suites:
            doc["suites"] = {s.name: {"profile": s.profile, **s.options} for s in self.spec.suites}
        if datasets:
            doc["datasets"] = {d: self._dataset_text(self.spec.datasets[d]) for d in datasets}
        doc["paths"] = [{"name": p.name, "base": p.base, "steps": [_step_text(s) for s in p.steps]} for p in paths]
        return yaml.safe_dump(doc, sort_keys=False)

    def _closure(self, path: PathSpec) -> tuple[list[PathSpec], list[str], list[str]]:
        """The paths (this one last), bases and datasets a path needs, in a stable order."""
        paths: list[PathSpec] = []
        bases: list[str] = []
        datasets: list[str] = []

        def add(name: str, into: list[str]) -> None:
            if name not in into:
                into.append(name)

        def visit_dataset(name: str) -> None:
            ds = self.spec.datasets[name]
            if ds.source:
                visit_dataset(ds.source)
            for s in ds.steps:
                ref = s.params.get("reference")
                if isinstance(ref, str) and ref in self.path_by_name:  # e.g. data.generate by a tuned teacher
                    visit(self.path_by_name[ref])
                else:
                    add(ref if isinstance(ref, str) and ref in self.spec.bases else path.base, bases)
                for value in s.params.values():  # a dataset a parameter names (data.dsir's `target:`)
                    if isinstance(value, str) and value in self.spec.datasets and value != name:
                        visit_dataset(value)
            add(name, datasets)

        def visit(p: PathSpec) -> None:
            if p in paths:
                return
            add(p.base, bases)
            for s in p.steps:
                for value in s.params.values():
                    for ref in value if isinstance(value, list) else [value]:
                        if isinstance(ref, str) and ref in self.spec.bases and ref != s.params.get("dataset"):
                            add(ref, bases)
                        elif isinstance(ref, str) and ref in self.path_by_name and ref != p.name:
                            visit(self.path_by_name[ref])
                for value in s.params.values():  # `dataset:`, and any other parameter naming one (`prompts:`)
                    if isinstance(value, str) and value in self.spec.datasets:
                        visit_dataset(value)
            paths.append(p)

        visit(path)
        return paths, bases, datasets

    def _source_text(self, base: str) -> Any:
        value = self.spec.bases[base]
        src = ModelSource.parse(value)
        return src.ref if src.kind in ("hf_dir", "gguf") else value

    def _dataset_text(self, ds: DatasetSpec) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ds.builtin:
            out["builtin"] = ds.builtin
        if ds.path:
            out["path"] = str(Path(ds.path).expanduser().resolve())
        if ds.source:
            out["from"] = ds.source
        out["n"] = ds.n
        if ds.steps:
            out["steps"] = [_step_text(s) for s in ds.steps]
        return out

    def _suite_runs(self, suites: list[SuiteSpec]) -> None:
        wanted: dict[tuple[str, str], list[str]] = {}
        for p in self.plan.paths:
            nodes = p.chain if self.spec.evaluate == "all" else p.chain[-1:]
            for h in nodes:
                wanted.setdefault((h, p.hardware.name), []).append(p.path_id)
        profiles = {p.hardware.name: p.hardware for p in self.plan.paths}
        data = {s.name: self._suite_data(s) for s in suites}
        for (h, hw_name), path_ids in wanted.items():
            for s in suites:
                key = content_hash({"node": h, "suite": s.name, "profile": s.profile, "options": s.options,
                                    "hardware": dataclasses.asdict(profiles[hw_name]), "seed": self.spec.seed,
                                    **({"data": data[s.name]} if data[s.name] is not None else {})})
                self.plan.suite_runs.append(SuiteRun(key, h, s, profiles[hw_name], tuple(path_ids)))

    def _suite_data(self, s: SuiteSpec) -> str | None:
        """The content identity of the data a suite reads (suites with a ``data_dir`` option)."""
        if "data_dir" not in getattr(SUITES.get(s.name), "options", ()):
            return None
        import os

        return data_identity(s.options.get("data_dir") or self.data_dir or os.environ.get("SLM_DATA_DIR"))


class _Mismatch(Exception):
    """A format mismatch inside a path (a grid drops the path; explicit paths fail with ``line``)."""

    def __init__(self, where: str, line: str):
        super().__init__(line)
        self.where, self.line = where, line


def node_hash(cls: type[Technique], built: Any, full: dict[str, Any], inputs: dict[str, Any],
              spec: ExperimentSpec, data: list[str] | None = None) -> str:
    """A model node's identity: technique, version, params, inputs, and the seed and step budget where
    they reach the technique (dataset contents enter through the dataset input's own hash; ``data`` holds the
    content digests of the local files the step reads itself)."""
    ident: dict[str, Any] = {"technique": cls.name, "version": cls.version, "params": full, "inputs": inputs}
    if data:
        ident["data"] = data
    if cls.seed_dependent(built):
        ident["seed"] = spec.seed
    if cls.step_budget_dependent(built) and spec.max_steps is not None:
        ident["max_steps"] = spec.max_steps
    return content_hash(ident)


def _step_text(step: StepSpec) -> Any:
    return {step.technique: dict(step.params)} if step.params else step.technique
