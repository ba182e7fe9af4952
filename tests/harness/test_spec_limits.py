"""Hostile and malformed spec files get one line naming the file and what is wrong, never a traceback or a hang: the
kinds of issue 22's fuzzing (non-UTF-8 bytes, deep nesting, recursive YAML aliases, alias bombs, non-string keys,
lone surrogates, huge integers, oversized files, grids of 1e8+ combinations), and generated mutations of a valid
spec (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from adapters.errors import SLMError, SpecError
from harness import _fuzz
from harness._fuzz import mutation_strategy
from harness.spec import MAX_GRID_PATHS, load_spec, parse_spec


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


#: the one-line message each of harness._fuzz's hostile files gets from the loader (by the file's label there)
HOSTILE_MESSAGES = {
    "non-UTF-8 byte": "not UTF-8 text (byte 0xe9 at offset 9)",
    "UTF-16 bytes": "not UTF-8 text",
    "deep nesting": "nested",
    "recursive alias": "recursive",
    "alias bomb": "over 100000 values",
    "a date as a key": "a key must be a name, got date",
    "lone surrogate": "lone surrogate",
    "huge integer": "integer out of range",
    "over 1 MiB": "over the limit of 1048576",
}
HOSTILE_FILES = {label: data for data, label in _fuzz.HOSTILE}


@pytest.mark.parametrize(("data", "fragment"), [(HOSTILE_FILES[label], fragment)
                                                 for label, fragment in HOSTILE_MESSAGES.items()],
                         ids=list(HOSTILE_MESSAGES))
def test_hostile_files_are_one_line(tmp_path: Path, data: bytes, fragment: str):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = one_line(info.value)
    assert fragment in message and str(spec) in message


def test_a_grid_too_large_is_counted_before_it_is_expanded():
    stages = "\n".join(f"  s{i}: [none, quant.int8, prune.magnitude, factorize.svd, peft.lora, quant.rtn, "
                       f"prune.wanda, quant.awq, peft.dora, peft.ia3]" for i in range(8))  # 1e8 combinations
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: big\nbase: tiny-llama\ngrid:\n{stages}\n", file="big.yaml")
    assert "100000000 combinations, over the limit of 10000 paths" in one_line(info.value)
    assert "max_paths: 100000000" in str(info.value)
    small = "\n".join(f"  s{i}: [none, quant.int8, prune.magnitude]" for i in range(9))  # 3^9 = 19683
    with pytest.raises(SpecError, match=f"19683 combinations, over the limit of {MAX_GRID_PATHS}"):
        parse_spec(f"name: g\nbase: tiny-llama\ngrid:\n{small}\n", file="g.yaml")
    spec = parse_spec(f"name: g\nbase: tiny-llama\nmax_paths: 20000\ngrid:\n{small}\n", file="g.yaml")
    assert len(spec.paths) == 2**10 - 1  # the same step sequence from different stages is one path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation_strategy())
def test_mutated_specs_plan_or_fail_in_one_line(text: str):
    """Every mutation either plans or raises one of ours in one line (no other exception type escapes)."""
    from harness.plan import make_plan

    try:
        make_plan(parse_spec(text, file="fuzz.yaml"))
    except SLMError as exc:
        one_line(exc)


@pytest.mark.parametrize(("body", "fragment"), [
    ("suites: {quality: {batch_size: 0}}", "suites.quality.batch_size: 0 is not allowed: expected an integer >= 1"),
    ("suites: {quality: {limit: -3}}", "suites.quality.limit: -3 is not allowed"),
    ("suites: {quality: {limit: {wikitext: 0}}}", "expected {task: integer >= 1, ...}"),
    ("suites: {quality: {num_fewshot: -1}}", "expected an integer >= 0"),
    ("suites: {quality: {tasks: []}}", "expected a name or a non-empty list of names"),
    ("suites: {quality: {prefix_cache: maybe}}", "expected true or false"),
    ("suites: {latency: {batch_sizes: [1, 0]}}", "suites.latency.batch_sizes"),
    ("suites: {latency: {min_duration_s: .nan}}", "expected a number > 0"),
    ("suites: {energy: {windows: 0}}", "suites.energy.windows"),
    ("suites: {memory: {repeats: 1.5}}", "suites.memory.repeats"),
    ("suites: {trust: {n: 0}}", "suites.trust.n"),
])
def test_suite_option_values_fail_the_plan(body: str, fragment: str):
    from harness.plan import make_plan

    with pytest.raises(SpecError) as info:
        make_plan(parse_spec(f"name: s\nbase: tiny-llama\n{body}\npaths: [[]]\n", file="s.yaml"))
    assert fragment in one_line(info.value)


def test_an_undefined_dataset_name_fails_the_plan():
    from harness.plan import make_plan

    with pytest.raises(SpecError) as info:
        make_plan(parse_spec("name: s\nbase: tiny-llama\npaths: [[{peft.lora: {dataset: nope}}]]\n", file="s.yaml"))
    assert "paths[0][0].dataset: 'nope' names no dataset (defined: none; builtin: synthetic" in one_line(info.value)
    make_plan(parse_spec("name: s\nbase: tiny-llama\npaths: [[{peft.lora: {dataset: synthetic}}]]\n", file="s.yaml"))


@pytest.mark.parametrize(("steps", "fragment"), [
    ("[{infer.decoding: {num_beams: 0}}]", "paths[0][0]: num_beams must be >= 1, got 0"),
    ("[{peft.lora: {batch_size: 0}}]", "paths[0][0]: batch_size must be >= 1, got 0"),
    ("[{peft.lora: {alpha: -16}}]", "alpha must be >= 1, got -16"),
    ("[{train.continual: {weight_decay: -0.1}}]", "weight_decay must be >= 0, got -0.1"),
    ("[{infer.decoding: {strategy: sample, seed: -1}}]", "seed must be >= 0, got -1"),
    ("[{peft.lora: {lr: .nan}}]", "paths[0][0].lr: expected a finite number, got nan"),
    ("[{ondevice.continual: {replay_from: nope}}]", "replay_from: 'nope' names no dataset"),
    ("[{federated.distill: {public: nope}}]", "public: 'nope' names no dataset"),
])
def test_technique_parameter_values_fail_the_plan(steps: str, fragment: str):
    """Issue 22: values accepted at plan time that failed only at run time."""
    from harness.plan import make_plan

    with pytest.raises(SLMError) as info:
        make_plan(parse_spec(f"name: s\nbase: tiny-llama\npaths: [{steps}]\n", file="s.yaml"))
    assert fragment in one_line(info.value) and "s.yaml" in str(info.value)
    make_plan(parse_spec("name: s\nbase: tiny-llama\npaths: [[{merge.task_arithmetic: {models: [base], scale: -1}}]]\n",
                         file="s.yaml"))  # a negative task-vector scale is task negation
