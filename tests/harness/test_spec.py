"""Spec validation: every malformed spec is one clear line (file, field, what is allowed), exit 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import SLMError, SpecError, UsageError
from harness.plan import make_plan
from harness.spec import parse_spec

GOOD = """
name: t
base: tiny-llama
suites:
  test_nll: {profile: quick}
grid:
  a: [none, {tune.test_noise: {scale: [0.1, 0.2]}}]
  b: [none, tune.test_noise]
"""


def plan_of(text: str):
    return make_plan(parse_spec(textwrap.dedent(text), file="spec.yaml"))


def test_grid_expands_with_sweeps(test_components):
    spec = parse_spec(GOOD, file="spec.yaml")
    assert [p.name for p in spec.paths] == [
        "baseline", "tune.test_noise", "tune.test_noise(scale=0.1)", "tune.test_noise(scale=0.1) > tune.test_noise",
        "tune.test_noise(scale=0.2)", "tune.test_noise(scale=0.2) > tune.test_noise",
    ]


def test_list_valued_parameters_sweep_only_as_a_list_of_lists():
    # factorize.svd's `targets` is typed list[str] | None: one list is one value, a list of lists sweeps.
    one = parse_spec("name: t\nbase: tiny-llama\ngrid:\n  a: [{factorize.svd: {rank: 4, targets: [mlp, q_proj]}}]\n",
                     file="spec.yaml")
    assert [p.steps[0].params for p in one.paths] == [{"rank": 4, "targets": ["mlp", "q_proj"]}]
    two = parse_spec("name: t\nbase: tiny-llama\ngrid:\n  a: [{factorize.svd: {rank: [4, 8], targets: [[mlp], [q_proj]]}}]\n",
                     file="spec.yaml")
    assert [(p.steps[0].params["rank"], p.steps[0].params["targets"]) for p in two.paths] == [
        (4, ["mlp"]), (4, ["q_proj"]), (8, ["mlp"]), (8, ["q_proj"])]


def test_exclude_rule_drops_combinations(test_components):
    spec = parse_spec(GOOD + "exclude:\n  - {a: none, b: none}\n", file="spec.yaml")
    assert "baseline" not in [p.name for p in spec.paths] and len(spec.paths) == 5


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("name: x\nbase: tiny-llama\ngrid:\n  a: [prune.magnitud]\n", ["spec.yaml: grid.a[0]", "unknown technique"]),
        ("name: x\nbase: tiny-llama\nsuites: {qualty: {}}\npaths: [[tune.test_noise]]\n",
         ["spec.yaml: suites.qualty", "unknown suite"]),
        ("name: x\nbase: tiny-llama\npaths: [[{tune.test_noise: {scale: fast}}]]\n",
         ["spec.yaml: paths[0][0].scale", "expected a number, got 'fast'"]),
        ("name: x\nbase: tiny-llama\npaths: [[{tune.test_noise: {scale: 3}}]]\n",
         ["spec.yaml: paths[0][0]", "scale must be in [0, 1], got 3"]),
        ("name: x\nbase: tiny-llama\npaths: [[{tune.test_noise: {scal: 0.1}}]]\n", ["unknown parameter 'scal'"]),
        ("name: x\nbase: tiny-llama\ngrid: {}\n", ["spec.yaml: grid", "non-empty"]),
        ("name: x\nbase: tiny-llama\ngrid:\n  a: []\n", ["spec.yaml: grid.a", "non-empty list"]),
        ("name: x\nbase: tiny-llama\n", ["spec.yaml: paths", "defines no path"]),
        ("name: x\nbase: tiny-llama\nhardware: cpu-9t\npaths: [[tune.test_noise]]\n", ["spec.yaml: hardware", "cpu-1t"]),
        ("name: x\nbase: tiny-lama\npaths: [[tune.test_noise]]\n", ["spec.yaml: base", "did you mean 'tiny-llama'"]),
        ("name: x\nbase: tiny-llama\nsuites: {test_nll: {profile: huge}}\npaths: [[tune.test_noise]]\n",
         ["suites.test_nll.profile", "allowed: quick, standard, full"]),
        ("name: x\nbase: tiny-llama\nevaluate: some\npaths: [[tune.test_noise]]\n", ["evaluate", "leaves, all"]),
        ("name: x\nbase: tiny-llama\nbogus: 1\npaths: [[tune.test_noise]]\n", ["spec.yaml: bogus", "unknown field"]),
        ("name: x\nbase: tiny-llama\npaths: [[tune.test_noise]\n", ["spec.yaml: line", "invalid YAML"]),
        ("name: x\nbase: tiny-llama\npaths:\n  - {name: p1, steps: [{distill.test: {teacher: p2}}]}\n",
         ["unknown technique 'distill.test'"]),
        ("name: x\nbase: tiny-llama\ngrid:\n  a: [tune.test_noise]\nexclude: [{c: none}]\n",
         ["spec.yaml: exclude[0].c", "no such grid stage"]),
    ],
)
def test_malformed_specs_name_file_field_and_allowed(test_components, text, fragments):
    with pytest.raises(UsageError) as info:
        plan_of(text)
    msg = str(info.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_reference_to_undefined_path_and_cycle(test_components, monkeypatch):
    from dataclasses import dataclass

    from adapters.technique import TECHNIQUES, Technique, technique

    @dataclass(frozen=True)
    class KDParams:
        temperature: float = 2.0

    TECHNIQUES.unregister("distill.test_kd")

    @technique("distill.test_kd")
    class KD(Technique):
        """needs a teacher"""

        Params = KDParams
        inputs = ("teacher",)

    try:
        with pytest.raises(SpecError, match=r"paths\[0\]\.steps\[0\]\.teacher: 'nope' names no base or path"):
            plan_of("name: x\nbase: tiny-llama\npaths:\n  - {name: p1, steps: [{distill.test_kd: {teacher: nope}}]}\n")
        with pytest.raises(SpecError, match="reference cycle between paths: p1 -> p2 -> p1"):
            plan_of(
                "name: x\nbase: tiny-llama\npaths:\n"
                "  - {name: p1, steps: [{distill.test_kd: {teacher: p2}}]}\n"
                "  - {name: p2, steps: [{distill.test_kd: {teacher: p1}}]}\n"
            )
        plan = plan_of(
            "name: x\nbases: {student: tiny-llama, teacher: tiny-llama}\npaths:\n"
            "  - {name: kd, base: student, steps: [{distill.test_kd: {teacher: teacher}}]}\n"
        )
        (kd,) = plan.technique_nodes()
        assert set(kd.inputs) == {"model", "teacher"}
    finally:
        TECHNIQUES.unregister("distill.test_kd")


def test_cli_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: tiny-llama\ngrid:\n  a: [quant.nope]\n")
    out = subprocess.run([sys.executable, "-m", "harness.cli", "plan", str(bad), "-w", str(tmp_path / "ws")],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "grid.a[0]" in lines[0] and "unknown technique" in lines[0]


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=16),
                    st.text(max_size=8), st.sampled_from(["none", "tune.test_noise", "tiny-llama", "cpu-1t", "quick"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.sampled_from(
                                                            ["scale", "profile", "tune.test_noise", "a", "steps",
                                                             "name", "base", "teacher"]), inner, max_size=3)),
                      max_leaves=8)
_spec = st.dictionaries(st.sampled_from(["name", "base", "bases", "hardware", "seed", "suites", "grid", "paths",
                                         "exclude", "include", "evaluate", "datasets", "max_steps", "junk"]),
                        _value, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_spec)
def test_random_specs_never_raise_uncaught(test_components, raw):
    text = yaml.safe_dump(raw)
    try:
        plan_of(text)
    except SLMError as exc:
        assert "\n" not in str(exc).strip() or "YAML" in str(exc)


_GOOD_RAW = yaml.safe_load(GOOD + "datasets:\n  d: {builtin: synthetic, n: 10}\npaths:\n  - {name: p, steps: [tune.test_noise]}\n")


def _leaf_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaf_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaf_paths(v, (*prefix, i))


_LOCATIONS = [p for p in _leaf_paths(_GOOD_RAW) if p]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_LOCATIONS), _value)
def test_mutated_valid_specs_never_raise_uncaught(test_components, location, value):
    import copy

    raw = copy.deepcopy(_GOOD_RAW)
    target = raw
    for key in location[:-1]:
        target = target[key]
    target[location[-1]] = value
    try:
        plan_of(yaml.safe_dump(raw))
    except SLMError as exc:
        assert str(exc).strip()
