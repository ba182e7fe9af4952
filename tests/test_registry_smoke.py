"""One smoke test per registered technique and per registered suite, on the pico model.

A technique registered tomorrow is tested tomorrow: these tests are parametrized over the
registries. Each technique must return a handle every suite can use (scoring, generation,
save/load); each suite must return metrics that carry n, unit, direction and method.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from adapters.errors import BackendUnavailableError, MissingDependencyError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, DataTechnique, TechniqueContext, build_params
from suites.base import SUITES, SuiteContext

TECHNIQUE_NAMES = TECHNIQUES.names()
SUITE_NAMES = SUITES.names()


def _context(tmp_path, tiny_handle) -> TechniqueContext:
    from adapters.corpus import synthetic_corpus

    # memory_cap_gb: the budget of ondevice.adapt when its own is unset (generous: the pico run needs ~0.7 GB)
    return TechniqueContext(seed=0, workdir=tmp_path, hardware={"device": "cpu", "threads": 1, "memory_cap_gb": 64},
                            inputs={"teacher": tiny_handle, "reference": tiny_handle, "models": [tiny_handle],
                                    "base": tiny_handle},
                            datasets={"synthetic": synthetic_corpus(64)}, max_steps=2)


@pytest.mark.parametrize("name", TECHNIQUE_NAMES)
def test_every_technique_runs_on_the_pico_model(name, tiny, tiny_handle, tmp_path):
    cls = TECHNIQUES.get(name)
    assert cls.__doc__ and cls.component.key, f"{name} needs a docstring and a component"
    technique = cls(build_params(cls, {}))
    ctx = _context(tmp_path, tiny_handle)
    try:
        if isinstance(technique, DataTechnique):
            from adapters.corpus import synthetic_corpus

            texts = synthetic_corpus(40)
            kept = technique.select(texts, ctx).texts
            assert 0 < len(kept) <= len(texts)
            if cls.selects:  # a selection keeps a subset of its input; a generator (data.generate) makes new records
                assert set(kept) <= set(texts)
            else:
                assert all(isinstance(r, str | dict) for r in kept)
            return
        out = technique.run(tiny, ctx).handle
    except (BackendUnavailableError, MissingDependencyError) as exc:
        pytest.skip(f"{name} cannot run here: {exc}")
    assert isinstance(out, ModelHandle)
    assert out.lineage and out.lineage[-1].technique == name
    assert tiny.lineage == (), "the input handle must not be changed"
    (ll,) = out.loglikelihood([("The river", " flows")])
    assert math.isfinite(ll.logprob) and ll.logprob < 0
    assert isinstance(out.generate(["Hello"], max_new_tokens=3)[0], str)
    assert sum(out.weight_footprint().values()) > 0
    if not cls.inference_time:
        out.save(tmp_path / "artifact")
        back = ModelHandle.load(tmp_path / "artifact")
        (ll2,) = back.loglikelihood([("The river", " flows")])
        assert ll2.logprob == pytest.approx(ll.logprob, abs=1e-3)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_every_suite_runs_on_the_pico_model(name, tiny_handle, tmp_path):
    cls = SUITES.get(name)
    ctx = SuiteContext(profile="quick", options={}, seed=0, workdir=tmp_path, hardware={"device": "cpu", "threads": 1},
                       base=tiny_handle)
    result = cls().run(tiny_handle, ctx)
    if getattr(cls, "needs_reference", False):  # two backends compared: a torch model alone has nothing to compare
        assert not result.metrics and result.settings["skipped"], "a torch model measured against itself"
        return
    assert result.metrics, f"{name} returned no metrics"
    for m in result.metrics:
        assert m.suite == name and m.n >= 1 and m.unit and m.method, m
        assert isinstance(m.higher_is_better, bool)
        if m.method.startswith("measured:rapl") and not Path("/sys/class/powercap/intel-rapl").exists():
            raise AssertionError(f"{m}: claims RAPL on a machine without it")
