"""The quality suite on the pico model: probes are large enough and seeded, a random model sits at chance,
results are bit-identical across runs, missing local data fails with the files it expects."""

from __future__ import annotations

import math

import pytest

from adapters.errors import UsageError
from suites import probes
from suites.base import SUITES, SuiteContext


def test_probes_have_200_seeded_items_with_valid_gold():
    for task in probes.PROBES:
        items = probes.items(task)
        assert len(items) >= 200
        assert items == probes.items(task)
        assert all(0 <= it["gold"] < len(it["choices"]) for it in items)
        assert len({it["query"] for it in items}) > 100  # not a handful of repeated items


def _run(handle, tmp_path, **options):
    ctx = SuiteContext(profile="quick", workdir=tmp_path, options=options)
    return SUITES.get("quality")().run(handle, ctx)


def test_random_model_is_at_chance_and_runs_are_identical(tiny_handle, tmp_path):
    res = _run(tiny_handle, tmp_path / "a")
    accs = {m.task: m for m in res.metrics if m.name == "acc"}
    assert set(accs) == set(probes.PROBES)
    for task, m in accs.items():
        chance = probes.PROBES[task][1]
        assert m.n == 50 and m.method.startswith("lm-eval")
        assert abs(m.value - chance) < 3.5 * math.sqrt(chance * (1 - chance) / m.n), (task, m.value)
    assert sum(1 for s in res.samples if s.task == "slm_agreement") == 50
    norm = {s.sample_id: s.correct for s in res.samples if s.task == "slm_agreement#acc_norm"}
    assert len(norm) == 50  # acc_norm keeps its own per-item outcomes for paired tests
    acc_norm = next(m for m in res.metrics if (m.task, m.name) == ("slm_agreement", "acc_norm"))
    assert sum(norm.values()) / 50 == pytest.approx(acc_norm.value)
    again = _run(tiny_handle, tmp_path / "b")
    assert [(m.task, m.name, m.value, m.stderr) for m in again.metrics] == \
           [(m.task, m.name, m.value, m.stderr) for m in res.metrics]


def test_local_benchmark_from_data_dir(tiny_handle, tmp_path, benchmarks_dir):
    res = _run(tiny_handle, tmp_path, tasks=["arc_easy"], data_dir=str(benchmarks_dir), limit=10)
    names = {m.name for m in res.metrics}
    assert names == {"acc", "acc_norm"} and all(m.n == 10 for m in res.metrics)
    assert all(len(s.loglikelihoods) >= 3 for s in res.samples if s.task == "arc_easy")


def test_missing_data_names_the_files(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="ARC-Easy-Dev.jsonl"):
        _run(tiny_handle, tmp_path, tasks=["arc_easy"], data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="unknown task"):
        _run(tiny_handle, tmp_path, tasks=["no_such_task_xyz"])
