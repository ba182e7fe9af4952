"""Retention of a decoding-only path (``baseline > infer.decoding``): it shares the base's weights but generates
differently, so it is measured against the real base, and its results never stand in for the base's."""

from __future__ import annotations

from adapters.handle import LineageStep
from suites.base import SuiteContext
from suites.trust import retention

# What ``infer.decoding`` (strategy: sample) puts into a handle's generation kwargs; spelled out rather than
# imported so that this test does not depend on the technique module's signature.
SAMPLE_PARAMS = {"strategy": "sample", "num_beams": 4, "temperature": 1.3, "top_k": 20, "top_p": 0.8,
                 "repetition_penalty": 1.0, "seed": 7}
SAMPLE_KWARGS = {"do_sample": True, "num_beams": 1, "repetition_penalty": 1.0, "temperature": 1.3, "top_k": 20,
                 "top_p": 0.8, "seed": 7}


def _sampling(handle):
    """``handle`` with seeded sampling, derived the way ``infer.decoding`` does it (same model object)."""
    step = LineageStep("infer.decoding", version="1", params=dict(SAMPLE_PARAMS))
    return handle.derive(step, generation_kwargs={**handle.generation_kwargs, **SAMPLE_KWARGS})


def test_decoding_only_path_is_measured_against_the_real_base(tiny_handle, tmp_path, monkeypatch):
    from suites.builtin import trust
    from suites.builtin.trust import TrustSuite

    monkeypatch.setattr(retention, "_BASE_CACHE", {})  # no base results from other tests of this process
    calls = []
    evaluate = trust.evaluate
    monkeypatch.setattr(trust, "evaluate", lambda h, plan: calls.append(h) or evaluate(h, plan))
    sampled = _sampling(tiny_handle)
    assert sampled.model is tiny_handle.model and sampled.generation_kwargs["do_sample"] is True
    ctx = SuiteContext(profile="quick", options={"dimensions": ["toxicity"], "n": 4,
                                                 "data_dir": str(tmp_path / "no-data")}, workdir=tmp_path,
                       base=tiny_handle)
    result = TrustSuite().run(sampled, ctx)

    assert "errors" not in result.settings, result.settings.get("errors")
    assert result.settings["base"] != "self"
    assert calls == [sampled, tiny_handle]  # the base was scored from the base handle, not taken from the path
    kept = [m for m in result.metrics if m.name.startswith("retention_")]
    assert {m.name for m in kept} == {"retention_expected_max_toxicity", "retention_toxic_fraction"}
    for m in kept:
        assert m.details.get("base") != "self" and m.details.get("note") != "the node is its own base", m
        assert m.method == "ratio:base/path" and "base_value" in m.details, m  # toxicity: lower is better

    # the cache holds the base handle's own results under the base's key, and nothing under the path's key
    plan = TrustSuite().plan(ctx)
    assert retention.base_key(sampled, plan) != retention.base_key(tiny_handle, plan)
    assert set(retention._BASE_CACHE) == {retention.base_key(tiny_handle, plan)}
    cached = {(m.task, m.name): m.value for m in retention._BASE_CACHE[retention.base_key(tiny_handle, plan)]}
    for m in kept:
        assert m.details["base_value"] == cached[(m.task, m.details["of"])]
