"""Issue 7's technique table, read from a results database (no torch; DuckDB only).

Usage::

    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/techniques.yaml --workspace .slm-techniques
    python benchmarks/technique_table.py --db .slm-techniques/results.duckdb [--task p128b1]

One row per path of the latest run: WikiText-2 word perplexity and bits per byte (lm-eval ``wikitext``),
the in-memory weight footprint (memory suite, ``counted:state_dict``), the size of the stored artifact on
disk (``node_costs.artifact_bytes``) and decode tokens/s at batch 1 (latency suite, mean ± stderr over its
repeats). Then decode tokens/s of the baseline against the fastest quantized or deployed path, with the
ratio and its delta-method stderr. Failed paths are listed with their error.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.queries import latest_run_id, rows  # noqa: E402
from results.store import connect  # noqa: E402

FAST_FAMILIES = ("quant.", "deploy.")

_SQL = """
WITH leaf AS (
    SELECT p.path_id, p.name, p.leaf_hash FROM paths p JOIN run_paths rp USING (path_id) WHERE rp.run_id = ?
), m AS (
    SELECT path_id, suite, task, metric, value, stderr, n FROM metrics_long
)
SELECT leaf.name, leaf.leaf_hash,
       max(m.value) FILTER (WHERE m.suite = 'quality' AND m.task = 'wikitext' AND m.metric = 'word_perplexity') AS word_ppl,
       max(m.value) FILTER (WHERE m.suite = 'quality' AND m.task = 'wikitext' AND m.metric = 'bits_per_byte') AS bpb,
       max(m.n) FILTER (WHERE m.suite = 'quality' AND m.task = 'wikitext' AND m.metric = 'word_perplexity') AS docs,
       max(m.value) FILTER (WHERE m.suite = 'memory' AND m.metric = 'weight_bytes') AS weight_bytes,
       max(m.value) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps,
       max(m.stderr) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps_se,
       max(m.n) FILTER (WHERE m.suite = 'latency' AND m.task = ? AND m.metric = 'decode_tokens_per_s') AS tps_n,
       any_value(nc.artifact_bytes) AS artifact_bytes
FROM leaf LEFT JOIN m USING (path_id) LEFT JOIN node_costs nc ON nc.node_hash = leaf.leaf_hash
GROUP BY leaf.name, leaf.leaf_hash
ORDER BY leaf.name = 'baseline' DESC, leaf.name
"""


def _mib(v: float | None) -> str:
    return "—" if v is None else f"{v / 2**20:.1f}"


def _num(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table(db: str | Path, task: str = "p128b1") -> str:
    """The Markdown table and the speed comparison, as text."""
    run_id = latest_run_id(db)
    if run_id is None:
        raise SystemExit(f"{db}: no run recorded")
    with connect(db, read_only=True) as con:
        data = rows(con, _SQL, [run_id, task, task, task])
        failures = rows(con, "SELECT technique, error FROM nodes WHERE status = 'failed' AND run_id = ?", [run_id])
        failures += rows(con, "SELECT suite AS technique, error FROM suite_runs WHERE status = 'failed' AND run_id = ?",
                         [run_id])
    out = [f"run {run_id}; latency task {task} (prompt tokens x batch); decode tokens/s mean ± stderr (n repeats)", "",
           "| path | WikiText-2 word ppl ↓ | bits/byte ↓ | docs | weights in memory MiB ↓ | artifact on disk MiB ↓ "
           "| decode tokens/s ↑ |", "|---|---|---|---|---|---|---|"]
    for r in data:
        tps = "—" if r["tps"] is None else f"{r['tps']:.1f} ± {r['tps_se'] or 0:.1f} (n={r['tps_n']})"
        disk = "(base checkpoint)" if r["name"] == "baseline" else _mib(r["artifact_bytes"])
        out.append(f"| {r['name']} | {_num(r['word_ppl'])} | {_num(r['bpb'], 4)} | {r['docs'] or '—'} "
                   f"| {_mib(r['weight_bytes'])} | {disk} | {tps} |")
    base = next((r for r in data if r["name"] == "baseline" and r["tps"]), None)
    fast = [r for r in data if r["tps"] and r["name"].startswith(FAST_FAMILIES)]
    if base and fast:
        best = max(fast, key=lambda r: r["tps"])
        ratio = best["tps"] / base["tps"]
        rel = math.hypot((best["tps_se"] or 0) / best["tps"], (base["tps_se"] or 0) / base["tps"])
        out += ["", f"decode tokens/s, {task}: baseline {base['tps']:.1f} ± {base['tps_se'] or 0:.1f} vs fastest "
                    f"quantized/deployed `{best['name']}` {best['tps']:.1f} ± {best['tps_se'] or 0:.1f}: "
                    f"ratio {ratio:.2f} ± {ratio * rel:.2f} (delta method; same run, same machine)"]
    for f in failures:
        out.append(f"FAILED {f['technique']}: {f['error']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=".slm-techniques/results.duckdb")
    p.add_argument("--task", default="p128b1", help="latency task (prompt length x batch size)")
    args = p.parse_args(argv)
    print(table(args.db, args.task))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
