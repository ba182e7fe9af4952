"""The technique interface: one registered class per lifecycle technique.

A technique has a typed, frozen params dataclass and ``apply(handle, ctx) -> Applied``: the new handle
(usually with a copied model; the input handle is never mutated) and a small typed report of what the
technique measured about its own work. It declares the artifact formats it accepts and the one it
produces (:mod:`adapters.formats`); :meth:`Technique.run` is what the harness (and a test) calls: it
checks the input's format, applies, and stamps the lineage step and the output format on the result.

Example::

    @dataclass(frozen=True)
    class MagnitudeParams:
        sparsity: float = 0.5

    @technique("prune.magnitude")
    class MagnitudePrune(Technique):
        '''Unstructured magnitude pruning (Han et al., 2015).'''
        Params = MagnitudeParams
        def apply(self, handle, ctx):
            model = float_copy(handle)
            ...
            return Applied(handle.derive(model=model), PruneReport(sparsity=...))
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from adapters import formats as F
from adapters.components import Component, component_of
from adapters.errors import UsageError
from adapters.handle import LineageStep
from adapters.registry import Registry

if TYPE_CHECKING:
    from adapters.handle import ModelHandle


@dataclass(frozen=True)
class NoParams:
    """Params of a technique that takes none."""


class Applied(NamedTuple):
    """What applying a technique gave: the new handle and the technique's report (a frozen dataclass of
    what it measured about its own work, e.g. the sparsity reached or the KL before and after; or None)."""

    handle: ModelHandle
    report: Any = None


class FormatMismatch(UsageError):
    """A step does not accept its input's artifact format (raised at plan time, and by :meth:`Technique.run`).

    Attributes:
        technique: the step's technique.
        input_format: the format it was given.
        accepted: the formats it accepts (with these parameters).
        hint: the technique's own advice for this input, if it has one.
    """

    def __init__(self, technique: str, input_format: str, accepted: tuple[str, ...], hint: str = ""):
        self.technique, self.input_format, self.accepted, self.hint = technique, input_format, accepted, hint
        super().__init__(f"{technique} does not accept a {input_format} model (it accepts: "
                         f"{', '.join(accepted) or 'no model'})" + (f"; {hint}" if hint else ""))


def report_dict(report: Any) -> dict[str, Any] | None:
    """A report as plain JSON-able data (dataclass, mapping or None)."""
    if report is None:
        return None
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    if isinstance(report, dict):
        return dict(report)
    raise TypeError(f"a technique report must be a dataclass or a mapping, got {type(report).__name__}")


class Progress:
    """Progress reporter handed to techniques; the harness replaces it with a progress bar."""

    def update(self, done: int, total: int | None = None, message: str = "") -> None:
        """Report that ``done`` of ``total`` units of work are finished."""


@dataclass
class TechniqueContext:
    """Everything a technique may use besides its input model.

    Attributes:
        seed: the spec's seed; a technique must be deterministic under it.
        workdir: a private scratch directory for this step.
        hardware: the declared hardware profile (a mapping: device, threads, dtype, ...).
        inputs: auxiliary inputs by role, e.g. ``{"teacher": handle}`` or ``{"dataset": [...]}``.
        datasets: named datasets of the spec (lists of texts or records).
        progress: where to report progress.
        max_steps: the training-step budget for techniques that train (None: their default).
    """

    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path(".slm/work"))
    hardware: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    max_steps: int | None = None

    @property
    def device(self) -> str:
        return str(self.hardware.get("device", "cpu"))


def _placed(value: Any, device: str) -> Any:
    """A model input (a handle, or a list of them) on ``device``; anything else unchanged."""
    from adapters.handle import ModelHandle
    from adapters.runtime import on_device

    if isinstance(value, list):
        return [_placed(v, device) for v in value]
    return on_device(value, device) if isinstance(value, ModelHandle) else value


class Technique:
    """Base class of every technique. Subclasses set ``Params`` and implement :meth:`apply`.

    Class attributes set by :func:`technique`: ``name`` and ``component``. Subclasses may set
    ``version`` (bump it when the output for the same params changes: it is part of the cache key),
    ``inputs`` (roles of auxiliary inputs it needs, e.g. ``("teacher",)``), ``list_inputs`` (the roles that
    take several models, in order, as merging does; a list given to another role sweeps it), ``defaults_to_base`` (the
    roles that take the path's base model when the step does not name one), ``role_formats`` (the formats
    each auxiliary model role accepts), ``requires`` (the packages it needs, for messages and provenance),
    ``inference_time`` (True when it changes generation only and leaves the weights untouched),
    ``uses_seed`` (False when its output does not depend on the seed: the seed then stays out of its
    node's identity), ``uses_step_budget`` (True for training techniques that take the spec's
    ``max_steps`` when their own parameter is unset) and ``runs_on_device`` (True for techniques that train
    or calibrate with forward passes: :meth:`run` hands them their model inputs on the hardware profile's
    device, e.g. ``cuda:0``; every other technique receives them on the CPU). The lineage step records the
    device the step ran on. ``dataset_params`` names parameters besides ``dataset`` whose value names a dataset (of
    the spec, or a builtin one): the planner makes it a dataset node and hands its records to the step as
    ``ctx.inputs[<parameter>]`` (e.g. ``infer.rag``'s ``corpus``); :meth:`local_data` names the local files a step
    reads itself. ``optional_inputs`` names the roles of ``inputs`` a step may leave out (the technique then does
    without, e.g. ``infer.best_of_n`` scores with the path's own model when no ``scorer:`` is named).

    Formats: ``accepts`` lists the input formats, ``produces`` the output format (None: the input's own
    format); :meth:`output_format` may refine both from the parameters. An accepted quantized input
    (``dequantizes``) is turned into a float copy first (:func:`adapters.formats.float_copy`), and the
    lineage step says so.
    """

    name: ClassVar[str] = ""
    component: ClassVar[Component]
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    inputs: ClassVar[tuple[str, ...]] = ()
    list_inputs: ClassVar[tuple[str, ...]] = ()
    role_formats: ClassVar[dict[str, tuple[str, ...]]] = {}
    requires: ClassVar[tuple[str, ...]] = ()
    inference_time: ClassVar[bool] = False
    uses_seed: ClassVar[bool] = True
    uses_step_budget: ClassVar[bool] = False
    runs_on_device: ClassVar[bool] = False
    defaults_to_base: ClassVar[tuple[str, ...]] = ()
    dataset_params: ClassVar[tuple[str, ...]] = ()
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    accepts: ClassVar[tuple[str, ...]] = F.FLOAT_TORCH
    produces: ClassVar[str | None] = None
    dequantizes: ClassVar[tuple[str, ...]] = ()
    hints: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        """Apply the technique to ``handle`` (never mutated); return the new handle and a report."""
        raise NotImplementedError

    def run(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        """Check the input's format, apply, and stamp the lineage step and the output format.

        Raises:
            FormatMismatch: the technique does not accept ``handle.format`` with these parameters.
        """
        from adapters.runtime import on_device

        cls = type(self)
        out_format = cls.output_format(handle.format, self.params)
        device = ctx.device if cls.runs_on_device else "cpu"
        given = on_device(handle, device)
        moved = {role: _placed(value, device) for role, value in ctx.inputs.items()}
        if any(moved[r] is not v for r, v in ctx.inputs.items()):
            ctx = dataclasses.replace(ctx, inputs=moved)
        result = self.apply(given, ctx)
        if not isinstance(result, Applied):  # a plugin may return a bare handle
            result = Applied(result, None)
        out = result.handle
        if out is handle or out is given:
            raise TypeError(f"{cls.name}.apply returned its input handle: derive a new one")
        step = LineageStep(cls.name, cls.version, params_dict(self.params), cls.library_versions(),
                           input_format=handle.format, output_format=out_format,
                           conversion=cls.conversion(handle.format, self.params), report=report_dict(result.report),
                           device=device)
        out.lineage = (*handle.lineage, step)
        out.format = out_format
        return Applied(out, result.report)

    @classmethod
    def accepted_formats(cls, params: Any) -> tuple[str, ...]:
        """The input formats this technique takes with these parameters."""
        return cls.accepts

    @classmethod
    def output_format(cls, input_format: str, params: Any) -> str:
        """The format of the model this technique makes from an ``input_format`` model.

        Raises:
            FormatMismatch: the input format is not accepted.
        """
        accepted = cls.accepted_formats(params)
        if input_format not in accepted:
            raise FormatMismatch(cls.name, input_format, accepted,
                                 cls.hints.get(input_format, "") or F.REFUSAL_HINTS.get(input_format, ""))
        return cls.produces or input_format

    @classmethod
    def conversion(cls, input_format: str, params: Any) -> str | None:
        """What the technique does to take an input of this format, when it converts it (None otherwise)."""
        if input_format in cls.dequantizes:
            return f"dequantized the {input_format} weights to float before {cls.name}"
        return None

    @classmethod
    def dataset_request(cls, params: Any) -> DatasetRequest | None:
        """The dataset this step has the planner make for it as a node of its own (cached, shown by ``slm plan``,
        shared by every step that asks for the same one), or None (the default). The planner hands it to the step
        as ``ctx.inputs["dataset"]``; the model named by ``request.role`` becomes an input of the dataset node only.
        A technique applied without the harness makes the same records itself."""
        return None

    @classmethod
    def local_data(cls, params: Any, datasets: Sequence[str]) -> tuple[Path, ...]:
        """The local data files the step reads itself (not through a dataset input), given the names of the datasets
        the spec and the project define; their content is part of the node's identity. The planner calls it, so a
        parameter that names no dataset and no local file is refused at plan time.

        The default reads no file and checks that every ``dataset_params`` parameter names one of ``datasets``.

        Raises:
            UsageError: naming the parameter, the value and what is allowed.
        """
        for name in cls.dataset_params:
            value = getattr(params, name, None)
            if isinstance(value, str) and value not in datasets:
                raise UsageError(f"{name}: {value!r} names no dataset (datasets: {', '.join(datasets) or 'none'})")
        return ()

    @classmethod
    def check_roles(cls, params: Any, counts: dict[str, int]) -> str | None:
        """What is wrong with how many models each auxiliary role got (``counts``: role -> models), as a message
        naming the field; None when it fits. The planner calls it, so the error comes at plan time."""
        return None

    @classmethod
    def check_path(cls, params: Any, steps: Sequence[PathStep], index: int) -> str | None:
        """What is wrong with this step's place in its path, as one line naming the step it conflicts with; None when
        it fits. ``steps`` are every step of the path in order, this one at ``index``. The planner calls it once the
        whole path is built, so the error comes at plan time (a grid drops the combination)."""
        return None

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        """Whether the output depends on the spec's seed (then the seed is part of the node's identity)."""
        return cls.uses_seed

    @classmethod
    def step_budget_dependent(cls, params: Any) -> bool:
        """Whether the spec's ``max_steps`` reaches this step (training techniques whose own is unset)."""
        return cls.uses_step_budget and getattr(params, "max_steps", None) is None

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        """Installed versions of the packages in ``requires`` (absent ones are omitted)."""
        from importlib import metadata

        out = {}
        for pkg in cls.requires:
            try:
                out[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                pass
        return out


class DatasetRequest(NamedTuple):
    """A dataset a model technique asks the planner to make for it (:meth:`Technique.dataset_request`): the ``data.*``
    technique ``technique`` with ``params`` applied to the dataset named ``source``, with the step's ``role`` model as
    its ``reference``.

    Attributes:
        technique: the data technique that makes the records (e.g. ``data.generate``).
        params: its parameters.
        source: the dataset it reads: a dataset of the spec, or a builtin one (:data:`adapters.corpus.BUILTIN_DATASETS`).
        n: records of a builtin ``source``.
        role: the step's model role that the data technique uses as its ``reference`` (e.g. ``teacher``).
        field: the step's parameter that names ``source`` (for error messages).
    """

    technique: str
    params: dict[str, Any]
    source: str
    n: int
    role: str
    field: str


class PathStep(NamedTuple):
    """One step of a planned path as :meth:`Technique.check_path` sees it.

    Attributes:
        technique: the step's technique.
        params: its built parameters.
        roles: the auxiliary model roles the step names (e.g. ``("scorer",)``).
    """

    technique: str
    params: Any
    roles: tuple[str, ...] = ()


def role_before_weight_change(name: str, role: str, steps: Sequence[PathStep], index: int) -> str | None:
    """For an inference-time step that takes a second model as ``role`` (best-of-n's ``scorer:``, speculative
    decoding's ``draft:``): that model is held by the hook, not saved with the weights, so a weight-changing step after
    it would leave it behind. The refusal (for :meth:`Technique.check_path`), or None."""
    if role not in steps[index].roles:
        return None
    for j in range(index + 1, len(steps)):
        if not get_technique(steps[j].technique).inference_time:
            return (f"its `{role}:` model is not saved with the weights that step {j + 1} {steps[j].technique} "
                    f"writes: put {name} after that step")
    return None


class Selected(NamedTuple):
    """What a data-selection technique gave: the kept texts (in their original order) and its report."""

    texts: list[Any]
    report: Any = None


class DataTechnique(Technique):
    """A data-selection technique (``data.*``): it produces a dataset, not a model.

    ``select(texts, ctx)`` returns :class:`Selected` (the kept texts and a report); a reference model,
    where the method needs one, is ``ctx.inputs["reference"]`` (the harness passes the path's base model
    by default). The harness stores the result as ``dataset.jsonl`` and hands it to consumers as
    ``ctx.inputs["dataset"]``. It accepts no model format: in a model path it is a plan-time error.

    ``selects`` is True when the result is a subset of the input records, False for a technique that makes new
    records from them (``data.generate``). Data techniques do not depend on the seed unless they say so
    (:meth:`seed_dependent`): the seed is then part of the dataset node's identity.
    """

    accepts: ClassVar[tuple[str, ...]] = ()
    uses_seed: ClassVar[bool] = False
    selects: ClassVar[bool] = True
    #: whether ``select`` reads ``ctx.inputs["reference"]`` (False: the planner gives it no model, so none is loaded
    #: and none is part of the dataset node's identity)
    uses_reference: ClassVar[bool] = True
    role_formats: ClassVar[dict[str, tuple[str, ...]]] = {"reference": F.TORCH_BACKEND + (F.ONNX,)}

    def select(self, texts: list[Any], ctx: TechniqueContext) -> Selected:
        raise NotImplementedError

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        raise TypeError(f"{self.name} produces a dataset: call select(texts, ctx)")


def format_signature(cls: type[Technique], params: Any = None) -> list[tuple[str, str, str | None]]:
    """(input format, output format, conversion) for every format the technique accepts (default params)."""
    params = params if params is not None else cls.Params()
    return [(f, cls.output_format(f, params), cls.conversion(f, params)) for f in cls.accepted_formats(params)]


def describe_formats(cls: type[Technique]) -> str:
    """One line: ``torch, torch-sparse -> torch-sparse; torch-lowrank -> torch-lowrank`` (``*`` marks inputs
    the technique converts first, e.g. dequantizes)."""
    if issubclass(cls, DataTechnique):
        return "no model input -> dataset"
    groups: dict[str, list[str]] = {}
    for fmt_in, fmt_out, conversion in format_signature(cls):
        out = "unchanged" if fmt_out == fmt_in and not conversion and cls.produces is None else fmt_out
        groups.setdefault(out, []).append(fmt_in + ("*" if conversion else ""))
    return "; ".join(f"{', '.join(ins)} -> {out}" for out, ins in groups.items())


TECHNIQUES: Registry[type[Technique]] = Registry("technique", discover=("adapters.techniques",))


def technique(name: str) -> Callable[[type[Technique]], type[Technique]]:
    """Class decorator registering a technique under ``name`` (``family.variant``)."""

    def wrap(cls: type[Technique]) -> type[Technique]:
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"{cls.__name__}.Params must be a dataclass")
        cls.name = name
        cls.component = component_of(name)
        return TECHNIQUES.register(name, cls)

    return wrap


def get_technique(name: str) -> type[Technique]:
    return TECHNIQUES.get(name)


def build_params(cls: type[Technique], raw: dict[str, Any] | None, where: str = "") -> Any:
    """Validate ``raw`` against ``cls.Params`` and build it.

    Raises:
        UsageError: naming the parameter, the value and what is allowed, for unknown parameters,
            wrong types, non-finite floats, numbers below their bound (:func:`param_bounds`: a count >= 1 unless 0
            means something) and values rejected by the dataclass's ``__post_init__`` (which raises ``ValueError``
            with the allowed range).
    """
    raw = dict(raw or {})
    where = where or cls.name
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UsageError(
            f"{where}: unknown parameter {unknown[0]!r} for {cls.name} (allowed: {', '.join(fields) or 'none'})"
        )
    hints = typing.get_type_hints(cls.Params)
    for key, value in raw.items():
        raw[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        built = cls.Params(**raw)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    for key, value in raw.items():  # after __post_init__, whose message is the more precise where it has one
        problem = out_of_bounds(fields[key], hints[key], value)
        if problem:
            raise UsageError(f"{where}: {problem}")
    return built


class Bounds(NamedTuple):
    """The lowest value a numeric parameter allows (:func:`bounds`).

    Attributes:
        minimum: the lowest value (None: any finite number).
        why: what the lowest value means, for the message (e.g. ``0: no warm-up``).
    """

    minimum: float | None
    why: str = ""


def bounds(minimum: float | None, why: str = "") -> dict[str, Bounds]:
    """Field metadata giving a numeric parameter a lower bound other than the default one (:func:`out_of_bounds`),
    e.g. ``scale: float = field(default=1.0, metadata=bounds(None, "a negative scale subtracts the task vector"))``."""
    return {"bounds": Bounds(minimum, why)}


#: int parameters of which 0 is a meaningful value, by name (every other int parameter is a count or a size: >= 1)
ZERO_MEANS: dict[str, str] = {
    "max_steps": "0: no training step, the input model as is (a control)",
    "warmup_steps": "0: no warm-up",
    "top_k": "0: no top-k filter",
    "seed": "a seed like the spec's",
    "examples": "0: none in the report",
    "sink_tokens": "0: no attention sinks",
    "eval_blocks": "0: no validation",
    "probe_prompts": "0: no acceptance probe",
    "n_ctx": "0: the model's training context",
    "axis": "an axis index",
}


def param_bounds(fld: dataclasses.Field[Any], hint: Any) -> Bounds | None:
    """The lower bound of a numeric parameter: its field's :func:`bounds` metadata; else, for an int, >= 0 when 0
    means something (:data:`ZERO_MEANS`) and >= 1 otherwise (a count or a size); for a float, >= 0 (a rate, ratio,
    weight, temperature or size: tighter ranges are the params class's ``__post_init__``). None for other types."""
    if "bounds" in fld.metadata:
        return typing.cast(Bounds, fld.metadata["bounds"])
    kinds = {a for a in (typing.get_args(hint) if _is_union(hint) else (hint,)) if a is not type(None)}
    if kinds == {int}:
        return Bounds(0, ZERO_MEANS[fld.name]) if fld.name in ZERO_MEANS else Bounds(1)
    if kinds == {float}:
        return Bounds(0)
    return None


def out_of_bounds(fld: dataclasses.Field[Any], hint: Any, value: Any) -> str | None:
    """What is wrong with a numeric parameter's value against :func:`param_bounds` (one line naming the parameter,
    the value and what is allowed), or None when it fits."""
    limit = param_bounds(fld, hint)
    if limit is None or limit.minimum is None or value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value < limit.minimum:
        why = f" ({limit.why})" if limit.why else ""
        return f"{fld.name} must be >= {limit.minimum:g}, got {value!r}{why}"
    return None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def params_dict(params: Any) -> dict[str, Any]:
    """All parameters, defaults included, as plain JSON-able values."""
    return dataclasses.asdict(params)


_SCALARS: dict[type, str] = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; ints are accepted for floats. Raises UsageError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{where}: {value!r} is not allowed (allowed: {', '.join(map(repr, args))})")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has the wrong type ({hint})")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UsageError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint in _SCALARS:
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is float and ok and not math.isfinite(value):
            raise UsageError(f"{where}: expected a finite number, got {value!r}")
        if not ok:
            raise UsageError(f"{where}: expected {_SCALARS[hint]}, got {value!r}")
    return value
