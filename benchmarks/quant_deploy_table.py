"""Issue 19's acceptance table and "the bar", read from a results database (no torch; DuckDB only).

Usage::

    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/quant_deploy.yaml --workspace .slm-quant-deploy
    python benchmarks/quant_deploy_table.py --db .slm-quant-deploy/results.duckdb

One row per path of the latest ``quant-deploy`` run, in the spec's order: WikiText-2 word perplexity, ARC-Easy and
PIQA accuracy and their mean (stderr of the mean of two independent samples), weights in memory (memory suite),
the artifact on disk (node costs), decode tokens/s and time to first token at batch 1 (latency suite: mean ±
stderr over its repeats), and what each step reported about itself.

Then the bar, for every path against ``fp32`` (eager PyTorch, same run, same machine): the decode speed-up as the
ratio of median tokens/s with a 95% bootstrap interval (the repeats of both paths resampled independently, 2000
times), the perplexity ratio, and the mean-accuracy difference over the pooled ARC-Easy + PIQA items with its paired
tests (exact McNemar on the per-item outcomes; a paired bootstrap 95% interval of the difference). A path clears the
bar when the speed-up's lower bound is >= 3, perplexity is within 5% and the accuracy difference is within 1 point.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.general_table import _reports  # noqa: E402
from results.compare import PathData, load_path_data  # noqa: E402
from results.queries import rows  # noqa: E402
from results.stats import mcnemar_exact, paired_bootstrap  # noqa: E402
from results.store import connect  # noqa: E402

SPEC = "quant-deploy"
BASE = "fp32"
LATENCY_TASK = "p128b1"
ACC_TASKS = ("arc_easy", "piqa")
RESAMPLES = 2000
BAR_SPEEDUP, BAR_PPL, BAR_ACC = 3.0, 1.05, 0.01


def _num(v: Any, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _metric(data: PathData, suite: str, task: str, metric: str) -> dict[str, Any] | None:
    return data.metrics.get((suite, task, metric))


def _val(m: dict[str, Any] | None, digits: int = 2, se: bool = True) -> str:
    if m is None or m["value"] is None:
        return "—"
    return f"{m['value']:.{digits}f}" + (f" ± {m['stderr']:.{digits}f}" if se and m.get("stderr") is not None else "")


def mean_accuracy(data: PathData) -> tuple[float, float] | None:
    found = [_metric(data, "quality", t, "acc") for t in ACC_TASKS]
    if any(m is None or m["value"] is None for m in found):
        return None
    value = sum(m["value"] for m in found) / len(found)  # type: ignore[index]
    se = math.sqrt(sum((m["stderr"] or 0) ** 2 for m in found)) / len(found)  # type: ignore[index]
    return value, se


def ratio_of_medians(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """median(b) / median(a) and its 95% percentile-bootstrap interval (each sample resampled on its own)."""
    rng = random.Random(seed)
    point = statistics.median(b) / statistics.median(a)
    boots = sorted(statistics.median(rng.choices(b, k=len(b))) / statistics.median(rng.choices(a, k=len(a)))
                   for _ in range(RESAMPLES))
    return point, boots[int(0.025 * RESAMPLES)], boots[int(0.975 * RESAMPLES) - 1]


def pooled_outcomes(data: PathData) -> dict[str, bool]:
    return {f"{t}:{sid}": ok for t in ACC_TASKS for sid, ok in data.correct.get(("quality", t), {}).items()}


def step_summary(technique: str, r: dict[str, Any]) -> str:
    """One short phrase of what a step reported about itself."""
    if technique == "quant.qat":
        return (f"QAT {r.get('steps')} steps ({r.get('loss')}): held-out ppl float {_num(r.get('perplexity_float'))}, "
                f"PTQ {_num(r.get('perplexity_ptq'))} → QAT {_num(r.get('perplexity_qat'))}; KL "
                f"{_num(r.get('kl_ptq'), 4)} → {_num(r.get('kl_qat'), 4)}")
    if technique == "deploy.llamacpp":
        bpw = r.get("bits_per_weight")
        return f"llama.cpp {r.get('quant')}" + (f", {_num(bpw)} bits/weight" if bpw is not None else "")
    if technique == "deploy.speculative":
        return f"draft acceptance {_num(r.get('acceptance_rate'), 3)}"
    if technique == "deploy.compile":
        return (f"torch.compile {r.get('backend')}, first generation (compile) {_num(r.get('warmup_s'), 0)} s, "
                f"{r.get('graphs')} graphs")
    if technique == "kv.quantized":
        return f"{r.get('cache')}: KV bytes/token {_num(r.get('ratio'), 3)} of the dense cache's"
    if technique in ("quant.gptq", "quant.awq", "quant.smoothquant", "quant.rtn"):
        bits = r.get("bits") or r.get("scheme") or r.get("mode")
        return f"{technique} {bits}"
    return technique


def table(db: str | Path) -> str:
    with connect(db, read_only=True) as con:
        run = rows(con, "SELECT run_id, spec_text FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1",
                   [SPEC])
        if not run:
            raise SystemExit(f"{db}: no run of spec {SPEC!r}")
        run_id, text = run[0]["run_id"], run[0]["spec_text"] or ""
        paths = rows(con, "SELECT p.path_id, p.name, p.chain, p.leaf_hash FROM run_paths rp JOIN paths p "
                          "USING (path_id) WHERE rp.run_id = ?", [run_id])
        paths.sort(key=lambda p: text.find(f"name: {p['name']}"))
        data = {p["name"]: load_path_data(con, p["path_id"]) for p in paths}
        reports = {p["name"]: _reports(con, p["chain"]) for p in paths}
        disk = {p["name"]: (rows(con, "SELECT artifact_bytes FROM node_costs WHERE node_hash = ?", [p["leaf_hash"]])
                            or [{"artifact_bytes": None}])[0]["artifact_bytes"] for p in paths}
        failed = rows(con, "SELECT technique AS what, error FROM nodes WHERE status = 'failed' AND run_id = ?", [run_id])
        failed += rows(con, "SELECT suite AS what, error FROM suite_runs WHERE status = 'failed' AND run_id = ?",
                       [run_id])
    out = [f"run {run_id} (spec {SPEC}); value ± stderr; latency: batch 1, 128-token prompt, 64 new tokens", "",
           "| path | WikiText-2 word ppl ↓ | ARC-Easy acc ↑ | PIQA acc ↑ | mean acc ↑ | weights in memory MiB ↓ "
           "| on disk MiB ↓ | decode tokens/s ↑ | TTFT ms ↓ | the step's own report |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        d = data[p["name"]]
        acc = mean_accuracy(d)
        weights = _metric(d, "memory", "weights", "weight_bytes")
        tps = _metric(d, "latency", LATENCY_TASK, "decode_tokens_per_s")
        ttft = _metric(d, "latency", LATENCY_TASK, "ttft_s")
        ttft_ms = None if ttft is None or ttft["value"] is None else \
            f"{1000 * ttft['value']:.1f} ± {1000 * (ttft['stderr'] or 0):.1f}"
        weights_mib = "—" if weights is None else f"{weights['value'] / 2**20:.1f}"
        on_disk = "(base checkpoint)" if p["name"] == BASE else \
            ("—" if disk[p["name"]] is None else f"{disk[p['name']] / 2**20:.1f}")
        steps = " · ".join(step_summary(t, r) for t, r in reports[p["name"]]) or "eager PyTorch fp32"
        out.append(f"| {p['name']} | {_val(_metric(d, 'quality', 'wikitext', 'word_perplexity'))} "
                   f"| {_val(_metric(d, 'quality', 'arc_easy', 'acc'), 3)} | {_val(_metric(d, 'quality', 'piqa', 'acc'), 3)} "
                   f"| {'—' if acc is None else f'{acc[0]:.3f} ± {acc[1]:.3f}'} "
                   f"| {weights_mib} "
                   f"| {on_disk} | {_val(tps, 1)} | {ttft_ms or '—'} | {steps} |")
    out += ["", *bar(data)]
    for f in failed:
        out.append(f"FAILED {f['what']}: {(f['error'] or '').strip().splitlines()[-1][:200]}")
    return "\n".join(out)


def bar(data: dict[str, PathData]) -> list[str]:
    base = data.get(BASE)
    key = ("latency", LATENCY_TASK, "decode_tokens_per_s")
    if base is None or not base.raw.get(key):
        return ["the bar: no fp32 decode measurements"]
    ppl_base = _metric(base, "quality", "wikitext", "word_perplexity")
    acc_base, out_base = mean_accuracy(base), pooled_outcomes(base)
    out = [f"The bar: decode >= {BAR_SPEEDUP:g}x fp32 (95% bootstrap interval of the ratio of medians, lower bound), "
           f"WikiText-2 ppl within {100 * (BAR_PPL - 1):g}%, mean ARC-Easy+PIQA accuracy within {100 * BAR_ACC:g} point "
           "(paired on the same items)", "",
           "| path | decode speed-up [95% CI] | ppl ratio | Δ mean acc [95% CI paired bootstrap] | McNemar p (n) "
           "| clears the bar |", "|---|---|---|---|---|---|"]
    for name, d in data.items():
        if name == BASE or not d.raw.get(key):
            continue
        speed, lo, hi = ratio_of_medians(base.raw[key], d.raw[key])
        ppl = _metric(d, "quality", "wikitext", "word_perplexity")
        ppl_ratio = None if ppl is None or ppl_base is None else ppl["value"] / ppl_base["value"]
        acc = mean_accuracy(d)
        mine = pooled_outcomes(d)
        common = sorted(out_base.keys() & mine.keys())
        mc = mcnemar_exact([out_base[i] for i in common], [mine[i] for i in common]) if common else None
        pb = paired_bootstrap([float(out_base[i]) for i in common], [float(mine[i]) for i in common]) if common else None
        d_acc = None if acc is None or acc_base is None else acc[0] - acc_base[0]
        ok = (lo >= BAR_SPEEDUP and ppl_ratio is not None and ppl_ratio <= BAR_PPL and d_acc is not None
              and d_acc >= -BAR_ACC)
        ci = ("—" if pb is None else f"{pb.diff:+.3f}" if pb.ci_low is None or pb.ci_high is None
              else f"{pb.diff:+.3f} [{pb.ci_low:+.3f}, {pb.ci_high:+.3f}]")
        out.append(f"| {name} | {speed:.2f}x [{lo:.2f}, {hi:.2f}] | {_num(ppl_ratio, 3)} | {ci} "
                   f"| {'—' if mc is None else f'{mc.p_value:.3g} ({mc.n})'} | {'**yes**' if ok else 'no'} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=".slm-quant-deploy/results.duckdb")
    args = p.parse_args(argv)
    print(table(args.db))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
