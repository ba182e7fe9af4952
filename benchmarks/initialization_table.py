"""Issue 17's acceptance table, read from a results database (no torch; DuckDB only).

Usage::

    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/initialization.yaml --workspace .slm-init
    python benchmarks/initialization_table.py --db .slm-init/results.duckdb

One row per path of the latest run: WikiText-2 word perplexity (lm-eval ``wikitext``), parameters and weights in
memory (memory suite, counted), decode tokens/s at batch 1 (latency suite, mean ± stderr over its repeats) and what
each step of the path reported about its own work (parameters removed, sparsity, KL to the teacher before/after,
domain perplexity before/after, losses). Failed steps and suites are listed with their error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.queries import latest_run_id, rows  # noqa: E402
from results.store import connect  # noqa: E402

_SQL = """
WITH leaf AS (
    SELECT p.path_id, p.name, p.leaf_hash, p.chain FROM paths p JOIN run_paths rp USING (path_id) WHERE rp.run_id = ?
), m AS (
    SELECT path_id, suite, task, metric, value, stderr, n FROM metrics_long
)
SELECT leaf.name, leaf.chain,
       max(m.value) FILTER (WHERE m.suite = 'quality' AND m.task = 'wikitext' AND m.metric = 'word_perplexity') AS ppl,
       max(m.value) FILTER (WHERE m.suite = 'memory' AND m.metric = 'parameters') AS params,
       max(m.value) FILTER (WHERE m.suite = 'memory' AND m.metric = 'weight_bytes') AS weight_bytes,
       max(m.value) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps,
       max(m.stderr) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps_se,
       max(m.n) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps_n
FROM leaf LEFT JOIN m USING (path_id)
GROUP BY leaf.name, leaf.chain
"""


def _num(v: Any, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _arrow(report: dict[str, Any], before: str, after: str, label: str, digits: int = 3) -> str | None:
    if report.get(before) is None and report.get(after) is None:
        return None
    return f"{label} {_num(report.get(before), digits)}→{_num(report.get(after), digits)}"


def summary(technique: str, report: dict[str, Any] | None) -> str:
    """One short phrase of what a step reported about its own work."""
    if not report:
        return technique
    parts: list[str] = []
    if technique == "prune.structured":
        parts.append(f"MLP {report['intermediate_before']}→{report['intermediate_after']}, "
                     f"heads {report['heads_before']}→{report['heads_after']} ({report['importance']})")
    if technique == "prune.layers":
        parts.append(f"removed blocks {report['removed']} ({report['method']})")
    if "params_before" in report and "params_after" in report:
        parts.append(f"params {report['params_before'] / 1e6:.1f}M→{report['params_after'] / 1e6:.1f}M")
    if "sparsity" in report:
        parts.append(f"sparsity {report['sparsity']:.3f} ({report.get('pattern', '')})")
    for before, after, label in (("kl_before", "kl_after", "KL"), ("feature_mse_before", "feature_mse_after", "feat-MSE"),
                                 ("perplexity_before", "perplexity_after", "domain ppl")):
        text = _arrow(report, before, after, label, 2 if label == "domain ppl" else 3)
        if text:
            parts.append(text)
    if not parts and report.get("first_loss") is not None:
        parts.append(f"loss {_num(report.get('first_loss'))}→{_num(report.get('final_loss'))}")
    if technique.startswith("merge.") and "method" in report:
        parts.append(f"mergekit {report['method']}")
    return f"{technique}: " + "; ".join(parts) if parts else technique


def table(db: str | Path, task: str = "p128b1") -> str:
    """The Markdown table, as text."""
    run_id = latest_run_id(db)
    if run_id is None:
        raise SystemExit(f"{db}: no run recorded")
    with connect(db, read_only=True) as con:
        data = rows(con, _SQL, [run_id, task, task, task])
        nodes = {r["node_hash"]: r for r in rows(con, "SELECT node_hash, technique, report, status, error FROM nodes", [])}
        failures = rows(con, "SELECT technique, error FROM nodes WHERE status = 'failed' AND run_id = ?", [run_id])
        failures += rows(con, "SELECT suite AS technique, error FROM suite_runs WHERE status = 'failed' AND run_id = ?",
                         [run_id])
    out = [f"run {run_id}; decode tokens/s at {task} (prompt tokens x batch), mean ± stderr (n repeats)", "",
           "| path | WikiText-2 word ppl ↓ | parameters (M) ↓ | weights MiB ↓ | decode tokens/s ↑ | the steps' own reports |",
           "|---|---|---|---|---|---|"]
    order = {r["name"]: i for i, r in enumerate(data)}
    for r in sorted(data, key=lambda r: (r["name"] != "baseline", order[r["name"]])):
        chain = json.loads(r["chain"]) if isinstance(r["chain"], str) else (r["chain"] or [])
        steps = []
        for h in chain[1:]:
            node = nodes.get(h)
            if node and node["technique"]:
                rep = node["report"]
                steps.append(summary(node["technique"], json.loads(rep) if isinstance(rep, str) else rep))
        tps = "—" if r["tps"] is None else f"{r['tps']:.1f} ± {r['tps_se'] or 0:.1f} (n={r['tps_n']})"
        params = "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}"
        mib = "—" if r["weight_bytes"] is None else f"{r['weight_bytes'] / 2**20:.1f}"
        out.append(f"| {r['name']} | {_num(r['ppl'])} | {params} | {mib} | {tps} | {' · '.join(steps) or '—'} |")
    if failures:
        out += ["", "Failed:"] + [f"- {f['technique']}: {(f['error'] or '').splitlines()[0][:200]}" for f in failures]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=".slm-init/results.duckdb")
    parser.add_argument("--task", default="p128b1", help="latency task (prompt tokens x batch)")
    args = parser.parse_args()
    print(table(args.db, args.task))


if __name__ == "__main__":
    main()
