"""Model merging on mergekit's library (Goddard et al., 2024, "Arcee's MergeKit").

A merge step merges its input (the path so far) with the models named under ``models:`` (bases or path names, in
order), e.g. ``{merge.linear: {models: [sft_b], weights: [0.5, 0.5]}}``: one weight per model, the step's input
first. Task-vector methods (``merge.task_arithmetic``, ``merge.ties``, ``merge.dare``) subtract ``base:`` (a base
or path name; default: the path's base model) from every model, combine the task vectors and add them back.

Each model is written as a Hugging Face directory in the step's work folder and the merge runs through
``mergekit.merge.run_merge`` with a configuration equal to the YAML ``mergekit-yaml`` takes (kept next to the
output as ``mergekit_config.yml`` and in the step's report), in float32 on the CPU, with the spec's seed (DARE
drops at random). Inputs must be dense float models of one architecture: merge before quantizing, factorizing or
exporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from adapters import formats as F
from adapters.errors import MissingDependencyError, UsageError
from adapters.technique import Applied, Technique, bounds, technique

if TYPE_CHECKING:
    from adapters.handle import ModelHandle
    from adapters.technique import TechniqueContext

MERGEABLE = (F.TORCH, F.TORCH_SPARSE)
_HINT = "merge before quantizing or exporting (mergekit merges dense float checkpoints)"


@dataclass(frozen=True)
class MergeReport:
    """What a merge did.

    Attributes:
        method: mergekit's ``merge_method``.
        models: how many models were merged (the step's input included).
        config: the mergekit configuration, as ``mergekit-yaml`` takes it (model paths are the step's work folder).
        mergekit: mergekit's version.
    """

    method: str
    models: int
    config: str
    mergekit: str


def _weights(weights: list[float] | None, n: int, name: str) -> list[float]:
    """One weight per model (the step's input first); equal weights when none are given."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise UsageError(f"{name}.weights: {len(weights)} weights for {n} models (allowed: one per model, the "
                         "step's input first)")
    return [float(w) for w in weights]


class _Merge(Technique):
    """Shared mechanics: write the models, build mergekit's configuration, run it, load the result."""

    inputs: ClassVar[tuple[str, ...]] = ("models",)
    list_inputs: ClassVar[tuple[str, ...]] = ("models",)
    role_formats: ClassVar[dict[str, tuple[str, ...]]] = {"models": MERGEABLE}
    requires = ("mergekit", "torch", "transformers")
    accepts = MERGEABLE
    produces = F.TORCH
    uses_seed = False
    hints = {f: _HINT for f in (F.TORCH_INT8, F.QUANTO, F.COMPRESSED, F.ONNX)} | {
        F.TORCH_LOWRANK: "merge before factorize.svd (the factors of different models do not line up)"}
    method: ClassVar[str] = ""

    def config(self, paths: list[str], base: str | None) -> dict[str, Any]:
        """mergekit's configuration for ``paths`` (the step's input first) and the task-vector ``base``."""
        raise NotImplementedError

    @classmethod
    def check_roles(cls, params: Any, counts: dict[str, int]) -> str | None:
        """A weight per model, the step's input included (checked when the spec is planned)."""
        n = 1 + counts.get("models", 0)
        weights = getattr(params, "weights", None)
        if weights is not None and len(weights) != n:
            return (f"weights: {list(weights)} has {len(weights)} weights for {n} models (allowed: one per model, "
                    "the step's input first)")
        return None

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import yaml

        try:
            from mergekit.config import MergeConfiguration
            from mergekit.merge import run_merge
            from mergekit.options import MergeOptions
        except ImportError as exc:
            raise MissingDependencyError("mergekit", self.name, "pip install -e '.[merge]'") from exc
        from transformers import AutoModelForCausalLM

        others = list(ctx.inputs.get("models") or [])
        if not others:
            raise UsageError(f"{self.name} needs `models:` naming at least one base or path to merge with")
        base = ctx.inputs.get("base")
        work = Path(ctx.workdir)
        paths = [_write(h, work / f"model-{i}") for i, h in enumerate([handle, *others])]
        base_path = _write(base, work / "base") if base is not None else None
        config = self.config(paths, base_path)
        config["dtype"] = "float32"
        text = yaml.safe_dump(config, sort_keys=False)
        (work / "mergekit_config.yml").write_text(text)
        out = work / "merged"
        options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, random_seed=ctx.seed,
                               device="cpu", lazy_unpickle=False)
        run_merge(MergeConfiguration.model_validate(config), str(out), options)
        merged = AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
        report = MergeReport(config["merge_method"], len(paths), text, _version())
        return Applied(handle.derive(model=merged), report)


def _version() -> str:
    from importlib.metadata import version

    return version("mergekit")


def _write(handle: ModelHandle, path: Path) -> str:
    """``handle``'s model as a Hugging Face directory at ``path``."""
    if handle.format not in MERGEABLE:
        raise UsageError(f"a merge needs dense float models, and {handle.source} is {handle.format}: {_HINT}")
    handle.model.save_pretrained(path, safe_serialization=True)
    return str(path)


@dataclass(frozen=True)
class LinearParams:
    """Params of ``merge.linear`` (Wortsman et al., 2022, "Model soups").

    Attributes:
        weights: one per model, the step's input first (default: equal).
        normalize: divide by the sum of the weights.
    """

    weights: list[float] | None = None
    normalize: bool = True


@technique("merge.linear")
class LinearMerge(_Merge):
    """Weighted average of the parameters of the step's input and ``models:`` (mergekit ``linear``)."""

    Params = LinearParams
    method = "linear"

    def config(self, paths: list[str], base: str | None) -> dict[str, Any]:
        weights = _weights(self.params.weights, len(paths), self.name)
        return {"merge_method": "linear", "models": [{"model": p, "parameters": {"weight": w}}
                                                     for p, w in zip(paths, weights, strict=True)],
                "parameters": {"normalize": self.params.normalize}}


@dataclass(frozen=True)
class SlerpParams:
    """Params of ``merge.slerp``.

    Attributes:
        t: interpolation factor: 0 keeps the step's input, 1 gives the other model.
    """

    t: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {self.t}")


@technique("merge.slerp")
class SlerpMerge(_Merge):
    """Spherical linear interpolation of each tensor between the step's input and one other model (mergekit
    ``slerp``; Shoemake, 1985)."""

    Params = SlerpParams
    method = "slerp"

    @classmethod
    def check_roles(cls, params: Any, counts: dict[str, int]) -> str | None:
        if counts.get("models", 0) != 1:
            return f"models: slerp interpolates between two models: name exactly one (got {counts.get('models', 0)})"
        return None

    def config(self, paths: list[str], base: str | None) -> dict[str, Any]:
        return {"merge_method": "slerp", "base_model": paths[0], "models": [{"model": p} for p in paths],
                "parameters": {"t": self.params.t}}


@dataclass(frozen=True)
class TaskVectorParams:
    """Params of the task-vector merges.

    Attributes:
        weights: one per model, the step's input first (default: equal).
        density: fraction of each task vector kept (TIES trims by magnitude, DARE drops at random); 1 keeps all.
        normalize: divide by the sum of the weights.
        scale: scale of the merged task vector (mergekit's ``lambda``); negative subtracts it (task negation,
            Ilharco et al., 2023), 0 keeps the base.
    """

    weights: list[float] | None = None
    density: float = 1.0
    normalize: bool = True
    scale: float = field(default=1.0, metadata=bounds(None, "any number: a negative scale subtracts the task "
                                                            "vector (task negation)"))

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")


class _TaskVectorMerge(_Merge):
    inputs: ClassVar[tuple[str, ...]] = ("models", "base")
    defaults_to_base: ClassVar[tuple[str, ...]] = ("base",)
    role_formats: ClassVar[dict[str, tuple[str, ...]]] = {"models": MERGEABLE, "base": MERGEABLE}
    Params = TaskVectorParams
    uses_density: ClassVar[bool] = True

    def config(self, paths: list[str], base: str | None) -> dict[str, Any]:
        p = self.params
        weights = _weights(p.weights, len(paths), self.name)
        models = [{"model": path, "parameters": {"weight": w, **({"density": p.density} if self.uses_density else {})}}
                  for path, w in zip(paths, weights, strict=True)]
        return {"merge_method": self.merge_method(), "base_model": base, "models": models,
                "parameters": {"normalize": p.normalize, "lambda": p.scale}}

    def merge_method(self) -> str:
        return self.method


@technique("merge.task_arithmetic")
class TaskArithmeticMerge(_TaskVectorMerge):
    """Task arithmetic (Ilharco et al., 2023): base + sum of weighted task vectors (mergekit ``task_arithmetic``)."""

    method = "task_arithmetic"
    uses_density = False


@technique("merge.ties")
class TiesMerge(_TaskVectorMerge):
    """TIES-merging (Yadav et al., 2023): trim each task vector to its largest ``density`` fraction, elect a sign
    per parameter, average the agreeing values (mergekit ``ties``)."""

    method = "ties"


@dataclass(frozen=True)
class DareParams(TaskVectorParams):
    """Params of ``merge.dare``: those of the task-vector merges, ``density`` below 1 (the fraction kept after
    random dropping and rescaling), and ``variant`` ``ties`` (sign election, mergekit ``dare_ties``) or ``linear``
    (``dare_linear``)."""

    density: float = 0.5
    variant: str = "ties"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("ties", "linear"):
            raise ValueError(f"variant must be 'ties' or 'linear', got {self.variant!r}")


@technique("merge.dare")
class DareMerge(_TaskVectorMerge):
    """DARE (Yu et al., 2024, "Language Models are Super Mario"): drop each task-vector entry with probability
    1 - density, rescale the rest, then merge TIES-style or linearly (mergekit ``dare_ties`` / ``dare_linear``).
    Random: the spec's seed is part of the node's identity."""

    Params = DareParams
    uses_seed = True

    def merge_method(self) -> str:
        return f"dare_{self.params.variant}"

