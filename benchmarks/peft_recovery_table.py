"""Issue 20's PEFT comparison, read from a results database (no torch; DuckDB only).

Usage::

    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/peft_recovery.yaml --workspace .slm-peft
    python benchmarks/peft_recovery_table.py --db .slm-peft/results.duckdb

One row per path of the latest ``peft-recovery`` run: WikiText-2 word perplexity, and of the path's last step (the
recovery): the parameters it trained (its report), its peak RSS and wall time (node costs: the process's resident
set while the step ran, and seconds), its first and final training loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.queries import rows  # noqa: E402
from results.store import connect  # noqa: E402

SPEC = "peft-recovery"


def table(db: str | Path) -> str:
    with connect(db, read_only=True) as con:
        run = rows(con, "SELECT run_id FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1", [SPEC])
        if not run:
            raise SystemExit(f"{db}: no run of spec {SPEC!r}")
        paths = rows(con, "SELECT p.path_id, p.name, p.leaf_hash FROM run_paths rp JOIN paths p USING (path_id) "
                          "WHERE rp.run_id = ? ORDER BY p.name", [run[0]["run_id"]])
        out = [f"run {run[0]['run_id']} (spec {SPEC})", "",
               "| path | WikiText-2 word ppl ↓ | trained parameters | peak RSS of the step MiB | step s | loss first → final |",
               "|---|---|---|---|---|---|"]
        for p in paths:
            ppl = rows(con, "SELECT value FROM metrics_long WHERE path_id = ? AND task = 'wikitext' "
                            "AND metric = 'word_perplexity'", [p["path_id"]])
            cost = rows(con, "SELECT technique, wall_time_s, peak_rss_bytes, report FROM node_costs WHERE node_hash = ?",
                        [p["leaf_hash"]])
            c = cost[0] if cost else {}
            value = f"{ppl[0]['value']:.2f}" if ppl else "—"
            rep = json.loads(c["report"]) if isinstance(c.get("report"), str) else (c.get("report") or {})
            trained = rep.get("trainable_params")
            loss = (f"{rep['first_loss']:.3f} → {rep['final_loss']:.3f}" if rep.get("first_loss") is not None
                    and rep.get("final_loss") is not None else "—")
            out.append(f"| {p['name']} | {ppl[0]['value']:.2f} | {trained if trained is not None else '—'} "
                       f"| {c['peak_rss_bytes'] / 2**20:.0f} | {c['wall_time_s']:.0f} | {loss} |" if cost and ppl else
                       f"| {p['name']} | {value} | — | — | — | — |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=".slm-peft/results.duckdb")
    print(table(p.parse_args(argv).db))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
