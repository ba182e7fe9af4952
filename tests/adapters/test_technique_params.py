from dataclasses import dataclass
from typing import Literal

import pytest

from adapters.errors import UsageError
from adapters.technique import Technique, build_params


@dataclass(frozen=True)
class _P:
    sparsity: float = 0.5
    pattern: Literal["unstructured", "2:4"] = "unstructured"
    layers: list[int] | None = None

    def __post_init__(self):
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")


class _T(Technique):
    name = "prune.fake"
    Params = _P


def test_build_params_defaults_and_coercion():
    p = build_params(_T, {"sparsity": 0, "layers": [1, 2]})
    assert p == _P(sparsity=0.0, layers=[1, 2]) and isinstance(p.sparsity, float)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"sparsty": 0.3}, "unknown parameter 'sparsty'"),
        ({"sparsity": "high"}, "expected a number"),
        ({"sparsity": 1.5}, "sparsity must be in [0, 1)"),
        ({"pattern": "3:4"}, "'3:4' is not allowed (allowed: 'unstructured', '2:4')"),
        ({"layers": ["x"]}, "layers[0]: expected an integer"),
        ({"sparsity": True}, "expected a number"),
    ],
)
def test_build_params_rejects_bad_values(raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(_T, raw, where="spec.yaml: grid.prune[1]")
    assert fragment in str(info.value)
    assert str(info.value).startswith("spec.yaml: grid.prune[1]")


# -- every registered technique's numeric parameters: bounds at plan time (issue 22) --------------------------------
import dataclasses  # noqa: E402
import math  # noqa: E402
import typing  # noqa: E402

from adapters.technique import TECHNIQUES, get_technique  # noqa: E402

#: parameters (any technique) of which 0 is a legitimate value
ZERO_OK = {
    "max_steps",  # no training step: the input model as is, a control
    "warmup_steps", "top_k", "examples", "sink_tokens", "probe_prompts",  # 0: the feature is off
    "seed",  # a seed like the spec's own (>= 0)
    "n_ctx",  # llama.cpp: the model's training context
    "axis",  # kv.quantized: 0 is the only axis allowed
    "dropout", "lora_dropout", "replay", "proximal_mu", "weight_decay", "activation_aware", "confidence_threshold",
    "dampening_frac", "runtime_overhead_gb",  # 0: the regulariser, mixing or margin is off
    "sparsity", "head_ratio",  # prune nothing (the dense baseline)
    "t",  # slerp: keep the step's input
    "k1", "b",  # BM25: binary term frequency / no length normalisation
    "scale",  # task vector merges: the base alone
}
#: (technique.parameter) of which 0 is legitimate where the same name elsewhere is not
ZERO_OK_STEPS = {"distill.logit.alpha", "distill.feature.alpha",  # the loss weight: 0 trains on the LM loss alone
                 "tune.dpo.eval_fraction", "tune.kto.eval_fraction",  # no held-out pairs
                 "federated.fedavg.eval_blocks", "federated.distill.eval_blocks"}  # no validation loss
#: negative values are legitimate only for a task vector's scale (task negation, Ilharco et al., 2023)
NEGATIVE_OK = {"merge.dare.scale", "merge.ties.scale", "merge.task_arithmetic.scale"}


def _numeric_fields() -> list[tuple[str, str, type]]:
    out = []
    for name in sorted(TECHNIQUES.names()):
        cls = get_technique(name)
        if not cls.__module__.startswith("adapters."):
            continue  # test plugins
        hints = typing.get_type_hints(cls.Params)
        for fld in dataclasses.fields(cls.Params):
            kinds = {a for a in typing.get_args(hints[fld.name]) or (hints[fld.name],) if a is not type(None)}
            if kinds in ({int}, {float}):
                out.append((name, fld.name, kinds.pop()))
    return out


NUMERIC = _numeric_fields()


def _outcome(name: str, field: str, value: object) -> str | None:
    """None when the value builds, else the one-line error."""
    try:
        build_params(get_technique(name), {field: value}, where="s.yaml: paths[0][0]")
    except UsageError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith("s.yaml: paths[0][0]") and field in text, text
        return text
    return None


def test_every_technique_has_numeric_parameters_to_check():
    assert len(NUMERIC) > 200 and len({n for n, _, _ in NUMERIC}) > 40


@pytest.mark.parametrize(("name", "field", "kind"), NUMERIC, ids=[f"{n}.{f}" for n, f, _ in NUMERIC])
def test_zero_and_negative_numeric_parameters(name: str, field: str, kind: type):
    """A negative value is one line (bar a task vector's scale); so is 0, except where 0 means something."""
    key = f"{name}.{field}"
    negative = _outcome(name, field, kind(-1))
    assert (negative is None) == (key in NEGATIVE_OK), negative
    zero = _outcome(name, field, kind(0))
    if field in ZERO_OK or key in ZERO_OK_STEPS:
        assert zero is None, zero
    else:
        assert zero is not None and "0" in zero, f"{key}: 0 accepted"


FLOATS = [(n, f) for n, f, k in NUMERIC if k is float]


@pytest.mark.parametrize(("name", "field"), FLOATS, ids=[f"{n}.{f}" for n, f in FLOATS])
def test_non_finite_floats_are_refused(name: str, field: str):
    for value in (math.nan, math.inf, -math.inf):
        assert "finite" in (_outcome(name, field, value) or ""), f"{name}.{field}: {value} accepted"


RATIOS = [(n, f) for n, f, _ in NUMERIC if f in ("keep", "sparsity", "density", "dropout", "lora_dropout", "top_p",
                                                  "t", "eval_fraction", "client_fraction", "replay", "head_ratio",
                                                  "mlp_ratio", "smoothing_strength")]


@pytest.mark.parametrize(("name", "field"), RATIOS, ids=[f"{n}.{f}" for n, f in RATIOS])
def test_ratios_above_one_are_refused(name: str, field: str):
    assert _outcome(name, field, 1.5) is not None, f"{name}.{field}: 1.5 accepted"


def test_bounds_metadata_and_zero_means():
    from dataclasses import field as dc_field

    from adapters.technique import bounds

    @dataclass(frozen=True)
    class P:
        n: int = 4
        top_k: int = 0
        shift: float = dc_field(default=0.0, metadata=bounds(None, "any number"))
        budget: int = dc_field(default=3, metadata=bounds(2, "two at least"))

    class T(Technique):
        name = "x.fake"
        Params = P

    assert build_params(T, {"top_k": 0, "shift": -3.5, "budget": 2}) == P(4, 0, -3.5, 2)
    with pytest.raises(UsageError, match=r"^w: n must be >= 1, got 0$"):
        build_params(T, {"n": 0}, where="w")
    with pytest.raises(UsageError, match=r"top_k must be >= 0, got -1 \(0: no top-k filter\)"):
        build_params(T, {"top_k": -1}, where="w")
    with pytest.raises(UsageError, match=r"budget must be >= 2, got 1 \(two at least\)"):
        build_params(T, {"budget": 1}, where="w")


def test_every_technique_default_passes_its_own_bounds():
    """The runner rebuilds a node's params with every default filled in: a default outside a bound would fail it."""
    from adapters.technique import params_dict

    for name in TECHNIQUES.names():
        cls = get_technique(name)
        assert build_params(cls, params_dict(cls.Params())) == cls.Params(), name
