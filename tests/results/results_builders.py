"""Builders of results databases from plain records (what the harness hands to the store)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from results.store import ResultStore

REPO = Path(__file__).resolve().parents[2]


def metric(suite: str, task: str, name: str, value: float, stderr: float | None, n: int, unit: str,
           hib: bool, method: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(suite=suite, task=task, name=name, value=value, stderr=stderr, n=n, unit=unit,
                higher_is_better=hib, method=method, details=details or {})


def write_run(db: Path, run_id: str, paths: dict[str, dict[str, Any]], source_format: str | None = None) -> None:
    """``paths``: name -> {acc_correct: list[bool], latency: list[float] (s), energy: float}, and optionally
    sparsity, the ``details`` of the latency and energy metrics (``latency_details``, ``energy_details``), and
    the step's ``format``, ``report`` and ``lineage_step`` (schema v4; absent: null, as in a
    database written before v4). ``source_format``: the artifact format of the shared source node."""
    store = ResultStore(db)
    store.start_run(run_id=run_id, spec_name="t", spec={}, spec_text="", environment={"cpu_model": "x"},
                    hardware={}, git_commit=None)
    store.record_node(run_id, dict(node_hash="src", kind="source", technique=None, source="builtin:tiny-llama",
                                   status="ok", format=source_format))
    for name, p in paths.items():
        leaf = f"n-{name}"
        store.record_node(run_id, dict(node_hash=leaf, kind="model", technique="prune.magnitude",
                                       params={"sparsity": p.get("sparsity", 0.5)}, inputs={"model": "src"},
                                       status="ok", wall_time_s=1.5, peak_rss_bytes=10**8, energy_j=3.0,
                                       energy_method="estimated:codecarbon-cpu_load", format=p.get("format"),
                                       report=p.get("report"), lineage_step=p.get("lineage_step")))
        store.record_path(run_id, dict(path_id=f"p-{name}", name=name, base="builtin:tiny-llama",
                                       hardware_profile="cpu-1t", leaf_hash=leaf, chain=["src", leaf],
                                       steps=[{"technique": "prune.magnitude", "params": {},
                                               "format": p.get("format")}], spec_snippet="x"))
        correct = p["acc_correct"]
        acc = sum(correct) / len(correct)
        se = (acc * (1 - acc) / (len(correct) - 1)) ** 0.5
        samples = [dict(suite="quality", task="probe", sample_id=str(i), correct=c, score=float(c),
                        loglikelihoods=(-1.0, -2.0), prediction="a", target="a") for i, c in enumerate(correct)]
        store.record_suite_run(run_id, dict(
            run_key=f"q-{name}", node_hash=leaf, suite="quality", profile="quick", hardware_profile="cpu-1t",
            settings={"hardware": {"name": "cpu-1t", "threads": 1}}, status="ok", wall_time_s=2.0,
            metrics=[metric("quality", "probe", "acc", acc, se, len(correct), "fraction", True, "lm-eval 0.4.13")],
            samples=samples, raw=[]))
        lat = p["latency"]
        med = sorted(lat)[len(lat) // 2]
        store.record_suite_run(run_id, dict(
            run_key=f"l-{name}", node_hash=leaf, suite="latency", profile="quick", hardware_profile="cpu-1t",
            settings={}, status="ok", wall_time_s=2.0,
            metrics=[metric("latency", "decode@p16b1", "itl_s", med, 0.01 * med, len(lat), "s", False,
                            "measured:perf_counter", p.get("latency_details")),
                     metric("energy", "decode@p16b1", "decode_j_per_token", p["energy"], 0.02 * p["energy"], 5,
                            "J/token", False, "estimated:codecarbon-cpu_load", p.get("energy_details"))],
            samples=[], raw=[dict(suite="latency", task="decode@p16b1", name="itl_s", index=i, value=v, unit="s")
                             for i, v in enumerate(lat)]))
    store.finish_run(run_id, "ok")


def outcomes(n: int, acc: float, seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < acc for _ in range(n)]


def latencies(n: int, center: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + 0.02 * rng.gauss(0, 1)) for _ in range(n)]


def slm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120)
