"""Experiment specs: YAML -> a validated :class:`ExperimentSpec` with every path expanded.

Errors are :class:`~adapters.errors.SpecError`: one line with the file, the field (or line) and
what is allowed. The form is documented in README.md ("Experiment specs").
"""

from __future__ import annotations

import itertools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapters.corpus import BUILTIN_DATASETS
from adapters.errors import SpecError, UsageError
from suites.base import PROFILES

TOP_LEVEL = ("name", "base", "bases", "hardware", "seed", "suites", "datasets", "grid", "exclude", "include",
             "paths", "evaluate", "description", "max_steps", "max_paths", "search")
EVALUATE = ("leaves", "all")
#: the limits every spec is held to before anything is built from it (a spec is a few KiB of YAML)
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
#: grid combinations a spec may expand to unless it raises the limit with ``max_paths:``
MAX_GRID_PATHS = 10_000


@dataclass(frozen=True)
class StepSpec:
    """One technique with its parameters as written (sweeps already expanded).

    ``refs`` holds parameters that name another model or dataset (``teacher: teacher``)."""

    technique: str
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def label(self) -> str:
        if not self.params:
            return self.technique
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.technique}({args})"


@dataclass(frozen=True)
class PathSpec:
    """A lifecycle path: a base model source and the steps applied to it, in order."""

    name: str
    base: str
    steps: tuple[StepSpec, ...]
    where: str = ""


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    profile: str = "quick"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: ``builtin: NAME`` (one of :data:`adapters.corpus.BUILTIN_DATASETS`; n), ``path: FILE`` (limit),
    or ``from: NAME`` + ``steps``."""

    name: str
    builtin: str | None = None
    path: str | None = None
    source: str | None = None
    steps: tuple[StepSpec, ...] = ()
    n: int = 1000


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment. ``bases`` maps base names to model sources (the first is the default)."""

    name: str
    bases: dict[str, Any]
    hardware: tuple[Any, ...]
    seed: int
    suites: tuple[SuiteSpec, ...]
    datasets: dict[str, DatasetSpec]
    paths: tuple[PathSpec, ...]
    evaluate: str = "leaves"
    max_steps: int | None = None
    file: str = "<spec>"
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    search: SearchSpec | None = None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: spec file not found")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {size} bytes, over the limit of {MAX_SPEC_BYTES} (1 MiB)", file=str(path))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): save the spec as "
                        f"UTF-8", file=str(path)) from None
    return parse_spec(text, file=str(path))


def parse_spec(text: str, file: str = "<spec>") -> ExperimentSpec:
    """Parse YAML text into a validated spec (structure only; names are checked by :mod:`harness.validate`)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"invalid YAML: {problem}", file=file, field=line) from None
    except RecursionError:
        raise SpecError(f"nested too deeply (the limit is {MAX_DEPTH} levels)", file=file) from None
    if not isinstance(raw, dict):
        raise SpecError(f"a spec must be a mapping of fields, got {type(raw).__name__}", file=file)
    _check_shape(raw, file)
    ctx = _Ctx(file)
    unknown = sorted(set(map(str, raw)) - set(TOP_LEVEL))
    if unknown:
        ctx.fail(unknown[0], f"unknown field (allowed: {', '.join(TOP_LEVEL)})")
    bases = _bases(raw, ctx)
    paths = _paths(raw, ctx, default_base=next(iter(bases)))
    if not paths:
        ctx.fail("paths", "the spec defines no path: give `grid:` stages and/or a non-empty `paths:` list")
    names = [p.name for p in paths]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        ctx.fail("paths", f"two paths are named {dup!r}; path names must be unique")
    evaluate = raw.get("evaluate", "leaves")
    if evaluate not in EVALUATE:
        ctx.fail("evaluate", f"{evaluate!r} is not allowed (allowed: {', '.join(EVALUATE)})")
    return ExperimentSpec(
        name=_str(raw.get("name", Path(file).stem), ctx, "name"),
        bases=bases,
        hardware=tuple(_as_list(raw.get("hardware", "cpu-1t"))),
        seed=_int(raw.get("seed", 0), ctx, "seed"),
        suites=_suites(raw.get("suites", {}), ctx),
        datasets=_datasets(raw.get("datasets", {}) or {}, ctx),
        paths=tuple(paths),
        evaluate=evaluate,
        max_steps=None if raw.get("max_steps") is None else _int(raw["max_steps"], ctx, "max_steps", minimum=1),
        file=file,
        text=text,
        raw=raw,
        search=parse_search(raw, ctx, evaluate),
    )


def _check_shape(raw: Any, file: str) -> None:
    """Refuse, in one line, what YAML can build but no spec is: a structure that contains itself (a recursive alias),
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values (aliases multiplying a subtree), keys
    that are not strings or numbers, strings that are not valid Unicode (lone surrogates) and integers beyond 64 bits.
    Iterative: a hostile spec cannot exhaust the stack."""
    seen = 0
    stack: list[tuple[Any, str, tuple[int, ...]]] = [(raw, "", ())]
    while stack:
        value, where, parents = stack.pop()
        seen += 1
        fld = where or None
        if seen > MAX_VALUES:
            raise SpecError(f"the spec holds over {MAX_VALUES} values (YAML aliases repeating a subtree?)", file=file)
        if len(parents) > MAX_DEPTH:
            raise SpecError(f"nested deeper than {MAX_DEPTH} levels", file=file, field=fld)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise SpecError("a string holds a lone surrogate (not valid Unicode)", file=file, field=fld) from None
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise SpecError(f"integer out of range (more than 64 bits): {str(value)[:20]}...", file=file, field=fld)
        elif isinstance(value, dict | list):
            if id(value) in parents:
                raise SpecError("a YAML alias refers to a structure that contains it (recursive)", file=file, field=fld)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(value, dict) and not isinstance(key, str | int | float | bool):
                    raise SpecError(f"a key must be a name, got {type(key).__name__} {str(key)[:40]!r}", file=file,
                                    field=fld)
                label = f"{where}.{key}" if where and isinstance(value, dict) else (
                    f"{where}[{key}]" if where else str(key))
                stack.append((child, label, (*parents, id(value))))


class _Ctx:
    def __init__(self, file: str):
        self.file = file

    def fail(self, fld: str, message: str) -> None:
        raise SpecError(message, file=self.file, field=fld)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _str(value: Any, ctx: _Ctx, fld: str) -> str:
    if not isinstance(value, str) or not value:
        ctx.fail(fld, f"expected a non-empty string, got {value!r}")
    return str(value)


def _int(value: Any, ctx: _Ctx, fld: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        ctx.fail(fld, f"expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _bases(raw: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    if "bases" in raw:
        bases = raw["bases"]
        if not isinstance(bases, dict) or not bases:
            ctx.fail("bases", "expected a non-empty mapping of name: model source")
        if "base" in raw:
            ctx.fail("base", "give either `base:` or `bases:`, not both")
        for key, value in bases.items():
            if not isinstance(value, str | dict):
                ctx.fail(f"bases.{key}", f"expected a model source (name, directory, .gguf, hub id), got {value!r}")
        return {str(k): v for k, v in bases.items()}
    base = raw.get("base", "smollm2-135m-instruct")
    if not isinstance(base, str | dict):
        ctx.fail("base", f"expected a model source (name, directory, .gguf, hub id), got {base!r}")
    return {"base": base}


def _suites(raw: Any, ctx: _Ctx) -> tuple[SuiteSpec, ...]:
    if raw is None:
        return ()
    if isinstance(raw, list):
        raw = {str(name): {} for name in raw}
    if not isinstance(raw, dict):
        ctx.fail("suites", f"expected a mapping of suite: {{profile: ..., options}}, got {raw!r}")
    out = []
    for name, conf in raw.items():
        conf = {} if conf is None else conf
        if not isinstance(conf, dict):
            ctx.fail(f"suites.{name}", f"expected a mapping like {{profile: quick}}, got {conf!r}")
        conf = dict(conf)
        profile = conf.pop("profile", "quick")
        if profile not in PROFILES:
            ctx.fail(f"suites.{name}.profile", f"{profile!r} is not allowed (allowed: {', '.join(PROFILES)})")
        out.append(SuiteSpec(str(name), profile, conf))
    return tuple(out)


def _datasets(raw: Any, ctx: _Ctx) -> dict[str, DatasetSpec]:
    if not isinstance(raw, dict):
        ctx.fail("datasets", f"expected a mapping of name: dataset, got {raw!r}")
    out = {}
    for name, conf in raw.items():
        where = f"datasets.{name}"
        if not isinstance(conf, dict):
            ctx.fail(where, f"expected {{builtin: {' | '.join(BUILTIN_DATASETS)}, n: N}} | {{path: FILE, limit: N}} | "
                           "{from: NAME, steps: [...]}")
        kinds = [k for k in ("builtin", "path", "from") if k in conf]
        if len(kinds) != 1:
            ctx.fail(where, "give exactly one of builtin:, path:, from:")
        extra = sorted(set(conf) - {"builtin", "path", "from", "steps", "n", "limit"})
        if extra:
            ctx.fail(f"{where}.{extra[0]}", "unknown field (allowed: builtin, path, from, steps, n, limit)")
        if conf.get("builtin") is not None and conf["builtin"] not in BUILTIN_DATASETS:
            ctx.fail(f"{where}.builtin", f"{conf['builtin']!r} is not allowed (allowed: {', '.join(BUILTIN_DATASETS)})")
        n = _int(conf.get("n", conf.get("limit", 1000)), ctx, f"{where}.n", minimum=1)
        steps = tuple(_steps(conf.get("steps", []), ctx, f"{where}.steps", sweep=False)[0])
        out[str(name)] = DatasetSpec(str(name), conf.get("builtin"), conf.get("path"), conf.get("from"), steps, n)
    return out


def _step_variants(item: Any, ctx: _Ctx, where: str) -> list[StepSpec | None]:
    """One written step -> its variants (a parameter given as a list sweeps); ``none`` -> [None]."""
    if item is None or item == "none":
        return [None]
    if isinstance(item, str):
        return [StepSpec(item, {}, where)]
    if isinstance(item, dict) and len(item) == 1:
        (technique, params), = item.items()
        params = {} if params is None else params
        if not isinstance(params, dict):
            ctx.fail(where, f"parameters of {technique} must be a mapping, got {params!r}")
        keys = list(params)
        list_params = _list_params(str(technique))
        values = [_sweep_values(v, k in list_params) for k, v in params.items()]
        if any(len(v) == 0 for v in values):
            ctx.fail(where, f"{technique}: a swept parameter has an empty list of values")
        return [StepSpec(str(technique), dict(zip(keys, combo, strict=True)), where) for combo in itertools.product(*values)]
    ctx.fail(where, f"a step is a technique name, {{technique: {{param: value}}}} or none; got {item!r}")
    return []


# Parameters whose value is itself a list, for techniques the registry does not know (yet).
_LIST_PARAMS = {"target_modules", "partners", "layers", "tasks", "modules", "exclude", "targets"}


def _list_params(technique: str) -> set[str]:
    """The technique's list-valued parameters, from its parameters dataclass's type hints."""
    try:
        from adapters.technique import get_technique

        cls = get_technique(technique)
        hints = typing.get_type_hints(cls.Params)
    except Exception:  # noqa: BLE001 - an unknown technique is reported by the planner, with the allowed names
        return _LIST_PARAMS
    out = set(cls.list_inputs)  # a role that takes several models in order
    for name, hint in hints.items():
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(o in (list, tuple) or typing.get_origin(o) in (list, tuple) for o in options):
            out.add(name)
    return out


def _sweep_values(value: Any, list_valued: bool) -> list[Any]:
    """A list sweeps a scalar parameter; a list-valued parameter sweeps only a list of lists."""
    if not isinstance(value, list):
        return [value]
    if list_valued:
        return value if value and all(isinstance(v, list) for v in value) else [value]
    return value


def _repeated(block: Any, ctx: _Ctx, where: str) -> list[tuple[Any, str]]:
    """``{repeat: {times: N, steps: [...]}}`` -> its steps N times, in order, as (step item, where).

    Inside the block a parameter given as a list of N values is a schedule (round i takes value i; for a
    list-valued parameter, a list of N lists); any other value is the same in every round. Sweeps are not allowed
    inside a repeat (a list of another length is an error)."""
    if not isinstance(block, dict) or set(block) - {"times", "steps"} or "steps" not in block:
        ctx.fail(where, f"expected {{times: N, steps: [...]}}, got {block!r}")
    times = block.get("times")
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        ctx.fail(f"{where}.times", f"{times!r} is not allowed (an integer >= 1)")
    steps = block["steps"]
    if not isinstance(steps, list) or not steps:
        ctx.fail(f"{where}.steps", f"expected a non-empty list of steps, got {steps!r}")
    out: list[tuple[Any, str]] = []
    for r in range(times):
        for j, item in enumerate(steps):
            at = f"{where}.steps[{j}]"
            if isinstance(item, dict) and len(item) == 1:
                (technique, params), = item.items()
                if isinstance(params, dict):
                    listed = _list_params(str(technique))
                    item = {technique: {k: _scheduled(v, k in listed, times, r, ctx, f"{at}.{k}")
                                        for k, v in params.items()}}
            out.append((item, f"{at} (round {r + 1} of {times})"))
    return out


def _scheduled(value: Any, list_valued: bool, times: int, round_: int, ctx: _Ctx, where: str) -> Any:
    """The value of one parameter in round ``round_`` of a repeat block (see :func:`_repeated`)."""
    if not isinstance(value, list) or (list_valued and not all(isinstance(v, list) for v in value)):
        return value
    if len(value) != times:
        ctx.fail(where, f"{value!r}: a schedule inside a repeat needs one value per round ({times}), got "
                        f"{len(value)} (sweeps are not allowed inside a repeat)")
    return value[round_]


def _steps(items: Any, ctx: _Ctx, where: str, sweep: bool = True) -> list[list[StepSpec]]:
    """A written step list -> every expanded step list (cartesian over swept parameters); ``repeat`` blocks are
    unrolled first (:func:`_repeated`)."""
    if not isinstance(items, list):
        ctx.fail(where, f"expected a list of steps, got {items!r}")
    flat: list[tuple[Any, str]] = []
    for i, it in enumerate(items):
        if isinstance(it, dict) and set(it) == {"repeat"}:
            flat.extend(_repeated(it["repeat"], ctx, f"{where}[{i}].repeat"))
        else:
            flat.append((it, f"{where}[{i}]"))
    options = [_step_variants(it, ctx, at) for it, at in flat]
    out = [[s for s in combo if s is not None] for combo in itertools.product(*options)]
    return out if sweep else out[:1]


def _grid_paths(raw: dict[str, Any], ctx: _Ctx, base: str) -> list[PathSpec]:
    grid = raw.get("grid")
    if grid is None:
        return []
    if not isinstance(grid, dict) or not grid:
        ctx.fail("grid", "expected a non-empty mapping of stage: [alternatives]")
    stages = []
    for stage, alts in grid.items():
        if not isinstance(alts, list) or not alts:
            ctx.fail(f"grid.{stage}", f"expected a non-empty list of alternatives (techniques or none), got {alts!r}")
        variants = [v for i, a in enumerate(alts) for v in _step_variants(a, ctx, f"grid.{stage}[{i}]")]
        stages.append((str(stage), variants))
    excludes = _rules(raw.get("exclude", []), ctx, "exclude", [s for s, _ in stages])
    limit = raw.get("max_paths", MAX_GRID_PATHS)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        ctx.fail("max_paths", f"expected an integer >= 1, got {limit!r}")
    count = 1
    for _, variants in stages:
        count *= len(variants)
    if count > limit:
        ctx.fail("grid", f"{count} combinations, over the limit of {limit} paths: narrow the grid, or raise the "
                         f"limit with `max_paths: {count}`")
    paths = []
    for combo in itertools.product(*(v for _, v in stages)):
        choice = {stage: (step.technique if step else "none") for (stage, _), step in zip(stages, combo, strict=True)}
        if any(all(choice[k] == v for k, v in rule.items()) for rule in excludes):
            continue
        steps = tuple(s for s in combo if s is not None)
        paths.append(PathSpec(_path_name(steps), base, steps, "grid"))
    return paths


def _rules(raw: Any, ctx: _Ctx, fld: str, stages: list[str]) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        ctx.fail(fld, "expected a list of {stage: technique-or-none} rules")
    for i, rule in enumerate(raw):
        if not isinstance(rule, dict) or not rule:
            ctx.fail(f"{fld}[{i}]", f"expected a mapping {{stage: technique-or-none}}, got {rule!r}")
        bad = [k for k in rule if k not in stages]
        if bad:
            ctx.fail(f"{fld}[{i}].{bad[0]}", f"no such grid stage (stages: {', '.join(stages)})")
    return [{str(k): str(v) for k, v in r.items()} for r in raw]


def _path_name(steps: tuple[StepSpec, ...]) -> str:
    return " > ".join(s.label() for s in steps) or "baseline"


def _paths(raw: dict[str, Any], ctx: _Ctx, default_base: str) -> list[PathSpec]:
    paths = _grid_paths(raw, ctx, default_base)
    for key in ("paths", "include"):
        if not isinstance(raw.get(key) or [], list):
            ctx.fail(key, "expected a list of step lists or {name, base, steps} mappings")
    explicit = list(raw.get("paths") or []) + list(raw.get("include") or [])
    for i, item in enumerate(explicit):
        where = f"paths[{i}]"
        name, base, steps = None, default_base, item
        if isinstance(item, dict) and "steps" in item:
            extra = sorted(set(item) - {"name", "base", "steps"})
            if extra:
                ctx.fail(f"{where}.{extra[0]}", "unknown field (allowed: name, base, steps)")
            name, base, steps = item.get("name"), item.get("base", default_base), item["steps"]
        variants = _steps(steps, ctx, f"{where}.steps" if isinstance(item, dict) else where)
        for expanded in variants:
            st = tuple(expanded)
            label = _path_name(st)
            full = (f"{name}[{label}]" if len(variants) > 1 else str(name)) if name else label
            paths.append(PathSpec(full, str(base), st, where))
    seen: dict[tuple[str, tuple[str, ...]], PathSpec] = {}
    for p in paths:  # the same path given twice (e.g. by grid and include) is one path
        seen.setdefault((p.base, tuple(s.label() for s in p.steps)), p)
    return list(seen.values())


# -- search: (harness/search.py runs it) -----------------------------------------------------------------------------
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
SEARCH_FIELDS = ("objective", "constraints", "trials", "sampler", "seed", "pruner", "startup_trials")


@dataclass(frozen=True)
class Goal:
    """The metric a search optimizes: a leaderboard headline name (``quality``, ``decode_tps``, ...), or a stored
    metric as ``suite/task/metric``, ``task/metric`` or ``metric`` (it must then match exactly one stored metric)."""

    metric: str
    direction: str


@dataclass(frozen=True)
class Constraint:
    """A bound a found path must hold: ``metric op bound`` with ``op`` ``>=`` or ``<=`` (metric named as in
    :class:`Goal`)."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when the constraint holds, else by how much it is missed."""
        return self.bound - value if self.op == ">=" else value - self.bound

    def label(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class SearchStage:
    """One grid stage as a search dimension: its alternatives' labels (``none`` for no step) and steps."""

    name: str
    choices: tuple[str, ...]
    steps: tuple[StepSpec | None, ...]


@dataclass(frozen=True)
class SearchSpec:
    """``search:``: find the best path of the grid under constraints with Optuna instead of running every path.

    Attributes:
        objective: what to optimize.
        constraints: bounds every reported best path holds.
        trials: how many distinct paths the search may run (a combination asked again is answered from its stored
            result and does not count).
        sampler: ``tpe``, ``random`` or ``grid`` (Optuna's TPESampler, RandomSampler, GridSampler).
        seed: the sampler's seed.
        pruner: ``median`` (Optuna's MedianPruner over a path's intermediate nodes; needs ``evaluate: all``) or None.
        startup_trials: trials before TPE models the space and before the pruner prunes (random until then).
        stages: the grid's stages, the dimensions of the space.
    """

    objective: Goal
    constraints: tuple[Constraint, ...]
    trials: int
    sampler: str
    seed: int
    pruner: str | None
    startup_trials: int
    stages: tuple[SearchStage, ...]

    @property
    def space_size(self) -> int:
        size = 1
        for stage in self.stages:
            size *= len(stage.choices)
        return size


def parse_search(raw: dict[str, Any], ctx: _Ctx, evaluate: str) -> SearchSpec | None:
    """The ``search:`` field (None without one); its structure only: metric names are checked by
    :mod:`harness.search` against the suites (a headline's suite at plan time, any other name at the first trial)."""
    conf = raw.get("search")
    if conf is None:
        return None
    if not isinstance(conf, dict):
        ctx.fail("search", f"expected a mapping {{objective: {{metric, direction}}, constraints, trials, sampler}}, "
                           f"got {conf!r}")
    unknown = sorted(set(map(str, conf)) - set(SEARCH_FIELDS))
    if unknown:
        ctx.fail(f"search.{unknown[0]}", f"unknown field (allowed: {', '.join(SEARCH_FIELDS)})")
    if not isinstance(raw.get("grid"), dict):
        ctx.fail("search", "a search needs a `grid:`: its stages and their alternatives are the search space")
    if raw.get("paths") or raw.get("include"):
        ctx.fail("search", "a search runs over the `grid:` only: drop `paths:`/`include:` (or run them in another "
                           "spec)")
    if isinstance(raw.get("hardware"), list) and len(raw["hardware"]) != 1:
        ctx.fail("hardware", "a search measures its constraints on one hardware profile: name exactly one")
    if "objective" not in conf:
        ctx.fail("search.objective", "missing: give {metric: NAME, direction: maximize | minimize}")
    objective = _goal(conf["objective"], ctx, "search.objective")
    constraints = conf.get("constraints") or []
    if not isinstance(constraints, list):
        ctx.fail("search.constraints", f"expected a list of {{metric: NAME, '>=': NUMBER}}, got {constraints!r}")
    trials = _int(conf.get("trials", 10), ctx, "search.trials", minimum=1)
    sampler = conf.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        ctx.fail("search.sampler", f"{sampler!r} is not allowed (allowed: {', '.join(SAMPLERS)})")
    pruner = conf.get("pruner", "none")
    if pruner not in PRUNERS:
        ctx.fail("search.pruner", f"{pruner!r} is not allowed (allowed: {', '.join(PRUNERS)})")
    if pruner != "none" and evaluate != "all":
        ctx.fail("search.pruner", "pruning needs intermediate values: set `evaluate: all` (the suites then measure "
                                  "every intermediate node of a path, and a trial is pruned after a stage)")
    startup = _int(conf.get("startup_trials", max(1, min(10, trials // 2))), ctx, "search.startup_trials",
                   minimum=1)
    return SearchSpec(objective, tuple(_constraint(c, ctx, f"search.constraints[{i}]") for i, c in
                                       enumerate(constraints)),
                      trials, str(sampler), _int(conf.get("seed", raw.get("seed", 0)), ctx, "search.seed"),
                      None if pruner == "none" else str(pruner), startup, _search_stages(raw["grid"], ctx))


def _metric_name(value: Any, ctx: _Ctx, fld: str) -> str:
    if not isinstance(value, str) or not value.strip() or value.count("/") > 2:
        ctx.fail(fld, f"expected a metric name (a headline such as quality, or suite/task/metric, task/metric, "
                      f"metric), got {value!r}")
    return str(value)


def _goal(conf: Any, ctx: _Ctx, fld: str) -> Goal:
    if not isinstance(conf, dict) or set(conf) - {"metric", "direction"}:
        ctx.fail(fld, f"expected {{metric: NAME, direction: maximize | minimize}}, got {conf!r}")
    direction = conf.get("direction")
    if direction not in DIRECTIONS:
        ctx.fail(f"{fld}.direction", f"{direction!r} is not allowed (allowed: {', '.join(DIRECTIONS)})")
    return Goal(_metric_name(conf.get("metric"), ctx, f"{fld}.metric"), str(direction))


def _constraint(conf: Any, ctx: _Ctx, fld: str) -> Constraint:
    ops = [op for op in (">=", "<=") if isinstance(conf, dict) and op in conf]
    if not isinstance(conf, dict) or len(ops) != 1 or set(conf) - {"metric", ops[0]}:
        ctx.fail(fld, f"expected {{metric: NAME, '>=': NUMBER}} or {{metric: NAME, '<=': NUMBER}}, got {conf!r}")
    bound = conf[ops[0]]
    if isinstance(bound, bool) or not isinstance(bound, int | float) or bound != bound:
        ctx.fail(f"{fld}.{ops[0]}", f"expected a number, got {bound!r}")
    return Constraint(_metric_name(conf.get("metric"), ctx, f"{fld}.metric"), ops[0], float(bound))


def _search_stages(grid: dict[str, Any], ctx: _Ctx) -> tuple[SearchStage, ...]:
    """The grid's stages with their alternatives (sweeps expanded: each swept value is an alternative)."""
    out = []
    for stage, alts in grid.items():
        choices: dict[str, StepSpec | None] = {}
        for i, alt in enumerate(alts):
            for step in _step_variants(alt, ctx, f"grid.{stage}[{i}]"):
                choices.setdefault("none" if step is None else step.label(), step)
        out.append(SearchStage(str(stage), tuple(choices), tuple(choices.values())))
    return tuple(out)
