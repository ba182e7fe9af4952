"""The technique interface: one registered class per lifecycle technique.

A technique has a typed, frozen params dataclass and ``apply(handle, ctx) -> handle``. It never
mutates its input handle: it returns a new handle (usually with a copied model) whose lineage has
one more :class:`~adapters.handle.LineageStep`.

Example::

    @dataclass(frozen=True)
    class MagnitudeParams:
        sparsity: float = 0.5

    @technique("prune.magnitude")
    class MagnitudePrune(Technique):
        '''Unstructured magnitude pruning (Han et al., 2015).'''
        Params = MagnitudeParams
        def apply(self, handle, ctx): ...
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from adapters.components import Component, component_of
from adapters.errors import UsageError
from adapters.registry import Registry

if TYPE_CHECKING:
    from adapters.handle import ModelHandle


@dataclass(frozen=True)
class NoParams:
    """Params of a technique that takes none."""


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


class Technique:
    """Base class of every technique. Subclasses set ``Params`` and implement :meth:`apply`.

    Class attributes set by :func:`technique`: ``name`` and ``component``. Subclasses may set
    ``version`` (bump it when the output for the same params changes: it is part of the cache key),
    ``inputs`` (roles of auxiliary inputs it needs, e.g. ``("teacher",)``), ``requires`` (the
    packages it needs, for messages and provenance) and ``inference_time`` (True when it changes
    generation only and leaves the weights untouched).
    """

    name: ClassVar[str] = ""
    component: ClassVar[Component]
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    inputs: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    inference_time: ClassVar[bool] = False
    produces: ClassVar[str] = "model"

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        raise NotImplementedError

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


class DataTechnique(Technique):
    """A data-selection technique (``data.*``): it produces a dataset, not a model.

    ``select(texts, ctx)`` returns the kept texts; a reference model, where the method needs one,
    is ``ctx.inputs["reference"]`` (the harness passes the path's base model by default). The
    harness stores the result as ``dataset.jsonl`` and hands it to consumers as
    ``ctx.inputs["dataset"]``.
    """

    produces: ClassVar[str] = "dataset"

    def select(self, texts: list[str], ctx: TechniqueContext) -> list[str]:
        raise NotImplementedError

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> ModelHandle:
        raise TypeError(f"{self.name} produces a dataset: call select(texts, ctx)")


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
            wrong types, and values rejected by the dataclass's ``__post_init__`` (which raises
            ``ValueError`` with the allowed range).
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
        return cls.Params(**raw)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None


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
        if not ok:
            raise UsageError(f"{where}: expected {_SCALARS[hint]}, got {value!r}")
    return value
