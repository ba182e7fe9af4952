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
