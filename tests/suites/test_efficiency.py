"""Efficiency suites on the pico model: statistics math, option validation, energy sources, roofline
arithmetic, every latency metric's n/stdev/CV/percentiles, memory peaks that agree with the kernel's max
RSS, and energy labelled with its method."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from adapters.errors import UsageError
from suites._measure import EnergyMeter, RaplCounters, describe, percentile, repeat_until
from suites.base import SUITES, SuiteContext
from suites.builtin.latency import timed_generate
from suites.ceilings import RooflineInputs, bound, roofline_metrics

CEIL = {"bandwidth": {"bytes_per_s": 1e10, "n": 4, "stdev_rel": 0.02},
        "matmul": {"flops": 1e11, "n": 9, "stdev_rel": 0.03}}


def test_percentiles_and_describe_known_values():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 50) == 3.0 and percentile(xs, 90) == pytest.approx(4.6)
    assert percentile([5.0, 1.0], 25) == pytest.approx(2.0)  # unsorted input, interpolated
    d = describe(xs)
    assert d["n"] == 5 and d["mean"] == 3.0 and d["stdev"] == pytest.approx(1.5811388)
    assert d["stderr"] == pytest.approx(1.5811388 / math.sqrt(5))
    assert d["cv"] == pytest.approx(1.5811388 / 3) and d["p99"] == pytest.approx(4.96)
    one = describe([2.0])
    assert one["n"] == 1 and math.isnan(one["stdev"]) and math.isnan(one["cv"])


def test_repeat_until_needs_both_count_and_duration():
    now = [0.0]
    calls = []

    def work():
        now[0] += 0.1
        calls.append(now[0])
        return now[0]

    kept = repeat_until(work, min_repeats=3, min_duration_s=1.0, warmup=2, clock=lambda: now[0])
    assert len(kept) == 10 and len(calls) == 12  # duration dominates (1.0 s / 0.1 s); warm-ups discarded
    assert kept[0] == pytest.approx(0.3)
    assert len(repeat_until(work, min_repeats=5, min_duration_s=0.0, warmup=0, clock=lambda: now[0])) == 5
    assert len(repeat_until(work, 2, 100.0, warmup=0, max_repeats=7, clock=lambda: now[0])) == 7


@pytest.mark.parametrize(("suite", "options", "field"), [
    ("latency", {"batch_sizes": [1, 0]}, "latency.batch_sizes"),
    ("latency", {"prompt_lengths": []}, "latency.prompt_lengths"),
    ("latency", {"min_duration_s": "2"}, "latency.min_duration_s"),
    ("latency", {"new_tokens": 1}, "latency.new_tokens"),
    ("memory", {"repeats": 0}, "memory.repeats"),
    ("energy", {"window_s": 0.0}, "energy.window_s"),
    ("energy", {"windows": True}, "energy.windows"),
])
def test_bad_options_name_field_value_and_allowed(tiny_handle, tmp_path, suite, options, field):
    with pytest.raises(UsageError, match=rf"{field}: .* is not allowed \(allowed: .*>= "):
        SUITES.get(suite)().run(tiny_handle, SuiteContext(profile="quick", workdir=tmp_path, options=options))


def _fake_powercap(root: Path, values: dict[str, int], max_range: int = 1000) -> None:
    for zone, uj in values.items():
        (root / zone).mkdir(parents=True, exist_ok=True)
        (root / zone / "energy_uj").write_text(str(uj))
        (root / zone / "max_energy_range_uj").write_text(str(max_range))


def test_rapl_sums_packages_and_handles_wraparound(tmp_path):
    _fake_powercap(tmp_path, {"intel-rapl:0": 900, "intel-rapl:1": 100, "intel-rapl:0:0": 5})
    rapl = RaplCounters(tmp_path)
    assert [z.name for z in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]  # subzones are inside packages
    with EnergyMeter(tmp_path / "work", powercap=tmp_path) as meter:
        _fake_powercap(tmp_path, {"intel-rapl:0": 100, "intel-rapl:1": 600})  # package 0 wrapped
    assert meter.method == "measured:rapl"
    assert meter.joules == pytest.approx((1000 - 900 + 100 + 500) / 1e6)


def test_roofline_bound_is_the_slower_of_memory_and_compute():
    assert bound(1, (1e9, 1e9), CEIL) == (pytest.approx(10.0), pytest.approx(0.01), "memory")  # 0.1 s vs 0.01 s
    tps, rel, limit = bound(100, (1e8, 1e11), CEIL)  # 0.01 s vs 1 s
    assert (tps, limit) == (pytest.approx(100.0), "compute") and rel == pytest.approx(0.01)
    model = RooflineInputs(weight_bytes=10**8, body_params=10**7, head_params=10**6, kv_bytes_per_token=1000,
                           layers=2, attn_dim=64)
    assert model.decode_step(2, 10.0) == (10**8 + 2 * 10 * 1000, 2 * (2 * 11 * 10**6 + 4 * 2 * 10 * 64))
    assert model.prefill(1, 4) == (10**8 + 4000, 2 * 10**7 * 4 + 2 * 10**6 + 2 * 2 * 16 * 64)
    stats = describe([5.0, 5.2, 4.8])
    metrics = {m.name: m for m in roofline_metrics("p4b1", model, CEIL, 4, 1, 5, stats, stats)}
    decode_bound = 1 / max(model.decode_step(1, 6.0)[0] / 1e10, model.decode_step(1, 6.0)[1] / 1e11)
    assert metrics["roofline_tokens_per_s"].value == pytest.approx(decode_bound)
    assert metrics["roofline_fraction"].value == pytest.approx(5.0 / decode_bound)
    assert metrics["roofline_fraction"].n == 3 and metrics["roofline_fraction"].stderr > 0
    assert metrics["prefill_roofline_tokens_per_s"].details["bound_by"] == "memory"


def test_timed_generate_follows_the_handles_decoding(tiny):
    seen = {}
    real = tiny.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    tiny.model.generate = spy
    beam = tiny.derive(_step(), generation_kwargs={"num_beams": 2, "do_sample": False})
    assert len(timed_generate(beam, [[5, 6, 7, 8]], 5)) == 5  # one stamp per step, beam search included
    assert seen["num_beams"] == 2 and seen["min_new_tokens"] == seen["max_new_tokens"] == 5
    sampled = beam.derive(_step(), generation_kwargs={"do_sample": True, "top_k": 5, "seed": 3})
    stamps = timed_generate(sampled, [[5, 6, 7, 8], [9, 10, 11, 12]], 4)
    assert len(stamps) == 4 and stamps == sorted(stamps) and seen["do_sample"] and "seed" not in seen


def _step():
    from adapters.handle import LineageStep

    return LineageStep("infer.decoding")


def test_latency_metrics_carry_distribution_and_raw(tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    ctx = SuiteContext(profile="quick", workdir=tmp_path, options={"prompt_lengths": [16], "batch_sizes": [1, 2],
                                                                  "new_tokens": 6, "min_duration_s": 0.2})
    res = SUITES.get("latency")().run(tiny_handle, ctx)
    timed = [m for m in res.metrics if m.method == "measured:perf_counter"]
    assert {m.name for m in timed} == {"ttft_s", "itl_s", "e2e_s", "prefill_tokens_per_s", "decode_tokens_per_s"}
    assert {m.task for m in timed} == {"p16b1", "p16b2"}
    for m in timed:
        assert m.n >= 3 and m.stderr is not None and m.unit in ("s", "tokens/s")
        assert all(k in m.details for k in ("stdev", "cv", "p50", "p90", "p95", "p99"))
        assert m.details["p50"] <= m.details["p90"] <= m.details["p99"]
        assert sum(1 for r in res.raw if (r.task, r.name) == (m.task, m.name)) == m.n
    itl = next(m for m in timed if m.name == "itl_s" and m.task == "p16b1")
    runs = next(m for m in timed if m.name == "ttft_s" and m.task == "p16b1").n
    assert itl.n == runs * 5  # 6 tokens -> 5 gaps per run
    frac = [m for m in res.metrics if m.name.endswith("roofline_fraction")]
    assert len(frac) == 4 and all(0 < m.value < 1.5 and m.stderr is not None for m in frac)
    ceiling = {m.name: m for m in res.metrics if m.task == "ceiling"}
    assert set(ceiling) == {"memory_bandwidth", "matmul_flops"}
    assert all(m.method.startswith("measured:") and m.value > 0 and m.n > 1 for m in ceiling.values())
    assert (Path(tmp_path) / "ceilings.json").exists()


@pytest.mark.parametrize("from_artifact", [False, True])
def test_memory_peaks_agree_with_kernel_max_rss(tiny_handle, tmp_path, from_artifact):
    options: dict = {"repeats": 1}
    if from_artifact:  # the child loads the stored node, as the harness passes it
        options["artifact_dir"] = str(tiny_handle.save(tmp_path / "artifact"))
    res = SUITES.get("memory")().run(tiny_handle, SuiteContext(profile="quick", workdir=tmp_path, options=options))
    assert res.settings["loaded_from"] == options.get("artifact_dir", tiny_handle.source)
    m = {x.name: x for x in res.metrics}
    sampled = max(m["peak_rss_load"].value, m["peak_rss_generate"].value)
    assert abs(sampled - m["max_rss_process"].value) / m["max_rss_process"].value < 0.10
    assert m["rss_anon_after_load"].value + m["rss_file_after_load"].value <= m["max_rss_process"].value
    assert m["kv_bytes_per_token"].value == m["kv_bytes_per_token_measured"].value
    assert m["weight_bytes"].value == sum(tiny_handle.weight_footprint().values())
    assert m["parameters"].value == tiny_handle.num_parameters() and m["parameters"].unit == "count"
    assert "cuda_allocated_peak" not in m  # CPU profile


def test_energy_is_labelled_estimated_without_rapl(tiny_handle, tmp_path):
    res = SUITES.get("energy")().run(tiny_handle, SuiteContext(profile="quick", workdir=tmp_path,
                                                                options={"windows": 2, "window_s": 0.5}))
    by = {m.name: m for m in res.metrics}
    assert {"idle_power_w", "prefill_j_per_token", "decode_j_per_token", "decode_power_w"} <= set(by)
    for m in res.metrics:
        assert m.n == 2 and m.stderr is not None and len(m.details["seconds"]) == 2
        if not RaplCounters().zones:
            assert m.method.startswith("estimated:codecarbon-process-") and m.is_estimate
    assert by["decode_power_w"].value > by["idle_power_w"].value  # work draws more than sleeping
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # codecarbon wrote no files


@pytest.mark.slow
def test_smollm2_quick_latency_is_memory_bound_decode_and_compute_bound_prefill(smollm2, tmp_path, monkeypatch):
    """fp32 SmolLM2 must read all 540 MB of weights per decode step (memory-bound), while a 128-token prefill
    does 128x the FLOPs over the same bytes (compute-bound); neither can beat its roofline by much."""
    import time

    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    start = time.perf_counter()
    res = SUITES.get("latency")().run(smollm2, SuiteContext(profile="quick", workdir=tmp_path))
    elapsed = time.perf_counter() - start
    by = {(m.task, m.name): m for m in res.metrics}
    decode, prefill = by[("p128b1", "roofline_fraction")], by[("p128b1", "prefill_roofline_fraction")]
    print(f"quick latency on SmolLM2: {elapsed:.1f} s; decode {by[('p128b1', 'decode_tokens_per_s')].value:.1f} "
          f"tokens/s = {decode.value:.2f} of roofline; prefill {prefill.value:.2f} of roofline")
    assert decode.details["bound_by"] == "memory" and prefill.details["bound_by"] == "compute"
    assert 0.05 < decode.value < 1.3 and 0.05 < prefill.value < 1.3
    assert all(by[("p32b1", n)].n >= 3 for n in ("ttft_s", "decode_tokens_per_s"))


def test_latency_and_memory_run_on_a_quanto_rtn_model(tiny, tmp_path, monkeypatch):
    """optimum-quanto's tensors cannot be used under ``torch.inference_mode`` ("Cannot set version_counter for
    inference tensor" on SmolLM2): the timed and memory paths generate under ``no_grad``."""
    pytest.importorskip("optimum.quanto")
    from adapters.technique import TECHNIQUES, TechniqueContext, build_params

    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    cls = TECHNIQUES.get("quant.rtn")
    rtn = cls(build_params(cls, {"bits": 4})).run(tiny, TechniqueContext(seed=0, workdir=tmp_path)).handle
    ctx = SuiteContext(profile="quick", workdir=tmp_path, options={"prompt_lengths": [16], "batch_sizes": [1],
                                                                  "new_tokens": 4, "min_duration_s": 0.1})
    lat = SUITES.get("latency")().run(rtn, ctx)
    assert any(m.name == "decode_tokens_per_s" and m.value > 0 for m in lat.metrics)
    options = {"repeats": 1, "artifact_dir": str(rtn.save(tmp_path / "artifact"))}
    mem = SUITES.get("memory")().run(rtn, SuiteContext(profile="quick", workdir=tmp_path, options=options))
    assert {m.name for m in mem.metrics} >= {"peak_rss_load", "peak_rss_generate"}
