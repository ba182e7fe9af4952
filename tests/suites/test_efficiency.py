"""Efficiency suites on the pico model: statistics math, every latency metric's n/stdev/CV/percentiles,
memory peaks that agree with the kernel's max RSS, and energy labelled with its method."""

from __future__ import annotations

from pathlib import Path

import pytest

from suites._measure import RAPL, describe, percentile, repeat_until
from suites.base import SUITES, SuiteContext


def test_percentiles_and_describe_known_values():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 50) == 3.0 and percentile(xs, 90) == pytest.approx(4.6)
    d = describe(xs)
    assert d["n"] == 5 and d["mean"] == 3.0 and d["stdev"] == pytest.approx(1.5811388)
    assert d["cv"] == pytest.approx(1.5811388 / 3) and d["p99"] == pytest.approx(4.96)


def test_repeat_until_needs_both_count_and_duration():
    now = [0.0]

    def clock():
        return now[0]

    def work():
        now[0] += 0.1
        return now[0]

    kept = repeat_until(work, min_repeats=3, min_duration_s=1.0, warmup=2, clock=clock)
    assert len(kept) == 10  # duration dominates: 1.0 s / 0.1 s
    now[0] = 0.0
    assert len(repeat_until(work, min_repeats=5, min_duration_s=0.0, warmup=0, clock=clock)) == 5


def test_latency_metrics_carry_distribution_and_raw(tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    ctx = SuiteContext(profile="quick", workdir=tmp_path, options={"prompt_lengths": [16], "batch_sizes": [1, 2],
                                                                  "new_tokens": 6, "min_duration_s": 0.2})
    res = SUITES.get("latency")().run(tiny_handle, ctx)
    timed = [m for m in res.metrics if m.method == "measured:perf_counter"]
    assert {m.name for m in timed} == {"ttft_s", "itl_s", "e2e_s", "prefill_tokens_per_s", "decode_tokens_per_s"}
    for m in timed:
        assert m.n >= 3 and m.stderr is not None
        assert all(k in m.details for k in ("stdev", "cv", "p50", "p90", "p95", "p99"))
        assert sum(1 for r in res.raw if (r.task, r.name) == (m.task, m.name)) == m.n
    itl = next(m for m in timed if m.name == "itl_s" and m.task == "p16b1")
    runs = next(m for m in timed if m.name == "ttft_s" and m.task == "p16b1").n
    assert itl.n == runs * 5  # 6 tokens -> 5 gaps per run
    frac = [m for m in res.metrics if m.name == "roofline_fraction"]
    assert len(frac) == 2 and all(0 < m.value < 1.5 for m in frac)
    assert (Path(tmp_path) / "ceilings.json").exists()


def test_memory_peaks_agree_with_kernel_max_rss(tiny_handle, tmp_path):
    res = SUITES.get("memory")().run(tiny_handle, SuiteContext(profile="quick", workdir=tmp_path))
    m = {x.name: x for x in res.metrics}
    sampled = max(m["peak_rss_load"].value, m["peak_rss_generate"].value)
    assert abs(sampled - m["max_rss_process"].value) / m["max_rss_process"].value < 0.10
    assert m["kv_bytes_per_token"].value == m["kv_bytes_per_token_measured"].value
    assert m["weight_bytes"].value == sum(tiny_handle.weight_footprint().values())


def test_energy_is_labelled_estimated_without_rapl(tiny_handle, tmp_path):
    res = SUITES.get("energy")().run(tiny_handle, SuiteContext(profile="quick", workdir=tmp_path,
                                                                options={"windows": 2, "window_s": 1.0}))
    names = {m.name for m in res.metrics}
    assert {"idle_power_w", "prefill_j_per_token", "decode_j_per_token"} <= names
    for m in res.metrics:
        assert m.n == 2 and m.method
        if not RAPL.exists():
            assert m.method.startswith("estimated:codecarbon")
