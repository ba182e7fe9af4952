"""Benchmark: build the static site from a results database of 10,000 paths (issue 9 acceptance: < 10 s).

The database is made with the real schema (``ResultStore``) and filled in bulk with SQL: 10,000 paths on
two hardware profiles, each with a two-step lineage and quality, latency, memory and energy metrics.

    python benchmarks/leaderboard_10k.py [--paths 10000] [--out /tmp/lb10k]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import duckdb

from leaderboard.build import build_site
from results.store import ResultStore

FILL = """
INSERT INTO runs (run_id, spec_name, spec, spec_text, started_at, status, environment, hardware)
VALUES ('bench', 'bench', '{}', '', now(), 'ok', '{"cpu_model": "bench"}', '{}');
INSERT INTO nodes (node_hash, kind, technique, technique_version, params, inputs, source, status, wall_time_s,
                   peak_rss_bytes, energy_j, energy_method, library_versions, run_id)
SELECT 'n' || i, 'model', ['prune.magnitude', 'prune.wanda', 'quant.int8', 'peft.lora'][1 + i % 4], '1',
       '{"sparsity": ' || (i % 10) / 10.0 || '}', '{}', NULL, 'ok', 1 + i % 7, 500000000 + i, 10.0 + i % 13,
       'estimated:codecarbon-process-cpu_load', '{}', 'bench'
FROM range(?) t(i);
INSERT INTO paths SELECT 'p' || i, 'path ' || i || ' <b>&</b>', 'builtin:smollm2-135m-instruct',
       ['cpu-1t', 'cpu-2t'][1 + i % 2], 'n' || i, '["src", "n' || i || '"]',
       '[{"technique": "prune.magnitude", "params": {"sparsity": 0.5}}]', 'name: x', 'bench'
FROM range(?) t(i);
INSERT INTO run_paths SELECT 'bench', 'p' || i FROM range(?) t(i);
INSERT INTO suite_runs SELECT 'k' || i || s, 'bench', 'n' || i, s, 'quick', ['cpu-1t', 'cpu-2t'][1 + i % 2], '{}',
       'ok', NULL, NULL, 3.0, now()
FROM range(?) t(i), (VALUES ('quality'), ('latency'), ('memory'), ('energy')) v(s);
INSERT INTO metrics SELECT 'k' || i || 'quality', 'quality', task, 'acc', 0.3 + (hash(i || task) % 500) / 1000.0,
       0.03, 50, 'fraction', true, 'lm-eval 0.4.13', '{}'
FROM range(?) t(i), (VALUES ('slm_arithmetic'), ('slm_world_facts'), ('slm_agreement'), ('slm_sequence')) v(task);
INSERT INTO metrics SELECT 'k' || i || 'latency', 'latency', 'p128b1', m, 10 + (hash(i || m) % 2000) / 100.0, 0.1, 5,
       u, m = 'decode_tokens_per_s', 'measured:perf_counter', '{}'
FROM range(?) t(i), (VALUES ('decode_tokens_per_s', 'tokens/s'), ('ttft_s', 's')) v(m, u);
INSERT INTO metrics SELECT 'k' || i || 'memory', 'memory', 'load+generate', 'peak_rss_generate',
       5e8 + hash(i) % 100000000, 1e6, 3, 'bytes', false, 'measured:psutil-rss-sampler-20ms', '{}' FROM range(?) t(i);
INSERT INTO metrics SELECT 'k' || i || 'energy', 'energy', 'decode', 'decode_j_per_token',
       0.05 + (hash(i) % 100) / 1000.0, 0.005, 2, 'J/token', false, 'estimated:codecarbon-process-cpu_load', '{}'
FROM range(?) t(i);
"""


def make_db(path: Path, n: int) -> None:
    ResultStore(path)  # the real schema and views
    con = duckdb.connect(str(path))
    for stmt in [s for s in FILL.split(";") if s.strip()]:
        con.execute(stmt, [n] * stmt.count("?"))
    con.close()
    ResultStore(path)  # refresh metrics_wide for the keys now present


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--out", default="/tmp/lb10k")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    make_db(out / "results.duckdb", args.paths)
    t1 = time.perf_counter()
    build_site(out / "results.duckdb", out / "site")
    t2 = time.perf_counter()
    pages = sum(1 for _ in (out / "site" / "paths").glob("*.html"))
    print(f"database with {args.paths} paths made in {t1 - t0:.1f} s")
    print(f"site built in {t2 - t1:.2f} s: {pages} path pages -> {'under' if t2 - t1 < 10 else 'OVER'} 10 s")


if __name__ == "__main__":
    main()
