"""Benchmark: build the static site from a results database of 10,000 paths (issue 9 acceptance: < 10 s).

The database has the real schema (``ResultStore``) and is filled in bulk with SQL, shaped like what
``slm run`` records: 10,000 paths on two hardware profiles, lineages of two or three steps sharing their
prefixes, and per path about 50 metrics from five suites (the counts a real quick run records: quality 8,
latency 16, memory 11, energy 4, trust 12), with 1% of the steps failed with a traceback.

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

TECHS = "['prune.magnitude', 'prune.wanda', 'factorize.svd', 'distill.logit']"
FILL = f"""
INSERT INTO runs (run_id, spec_name, spec, spec_text, started_at, status, environment, hardware)
VALUES ('bench', 'bench', '{{}}', '', now(), 'ok', '{{"cpu_model": "bench", "torch": "2.13.0"}}', '{{}}');
INSERT INTO nodes (node_hash, kind, technique, technique_version, params, inputs, source, status, run_id)
VALUES ('src', 'source', NULL, NULL, '{{}}', '{{}}', 'builtin:smollm2-135m-instruct', 'ok', 'bench');
INSERT INTO nodes (node_hash, kind, technique, technique_version, params, inputs, source, status, error, traceback,
                   wall_time_s, peak_rss_bytes, energy_j, energy_method, library_versions, run_id)
SELECT 'a' || i, 'model', {TECHS}[1 + i % 4], '1', '{{"sparsity": ' || (i % 10) / 10.0 || '}}', '{{"model": "src"}}',
       NULL, 'ok', NULL, NULL, 30 + i % 7, 900000000 + i, 200.0 + i % 13, 'estimated:codecarbon-process-cpu_load',
       '{{}}', 'bench'
FROM range(500) t(i);
INSERT INTO nodes (node_hash, kind, technique, technique_version, params, inputs, source, status, error, traceback,
                   wall_time_s, peak_rss_bytes, energy_j, energy_method, library_versions, run_id)
SELECT 'n' || i, 'model', ['peft.lora', 'quant.int8', 'quant.rtn', 'tune.sft'][1 + i % 4], '1',
       '{{"r": ' || 4 * (1 + i % 4) || ', "lr": 0.0002, "target_modules": ["q_proj", "v_proj"]}}',
       '{{"model": "a' || i % 500 || '"}}', NULL, CASE WHEN i % 100 = 7 THEN 'failed' ELSE 'ok' END,
       CASE WHEN i % 100 = 7 THEN 'RuntimeError: out of memory' END,
       CASE WHEN i % 100 = 7 THEN 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError' END,
       60 + i % 11, 1000000000 + i, 400.0 + i % 17, 'estimated:codecarbon-process-cpu_load', '{{}}', 'bench'
FROM range(?) t(i);
INSERT INTO paths SELECT 'p' || i, 'path ' || i || ' <b>&</b>', 'builtin:smollm2-135m-instruct',
       ['cpu-1t', 'cpu-2t'][1 + i % 2], 'n' || i, '["src", "a' || i % 500 || '", "n' || i || '"]',
       '[{{"technique": "prune.magnitude", "params": {{"sparsity": 0.5}}}}, {{"technique": "peft.lora", "params": {{}}}}]',
       'paths:\n  - [prune.magnitude: {{sparsity: 0.5}}, peft.lora]', 'bench'
FROM range(?) t(i);
INSERT INTO run_paths SELECT 'bench', 'p' || i FROM range(?) t(i);
INSERT INTO suite_runs (run_key, run_id, node_hash, suite, profile, hardware_profile, settings, status, error, traceback,
                        wall_time_s, recorded_at)
SELECT 'k' || i || s, 'bench', 'n' || i, s, 'quick', ['cpu-1t', 'cpu-2t'][1 + i % 2], '{{}}',
       'ok', NULL, NULL, 3.0, now()
FROM range(?) t(i), (VALUES ('quality'), ('latency'), ('memory'), ('energy'), ('trust')) v(s) WHERE i % 100 != 7;
INSERT INTO metrics SELECT 'k' || i || 'quality', 'quality', task, m, 0.3 + (hash(i || task || m) % 500) / 1000.0,
       0.03, 50, 'fraction', true, 'lm-eval 0.4.13', '{{}}'
FROM range(?) t(i), (VALUES ('slm_arithmetic'), ('slm_world_facts'), ('slm_agreement'), ('slm_sequence')) v(task),
     (VALUES ('acc'), ('acc_norm')) w(m);
INSERT INTO metrics SELECT 'k' || i || 'latency', 'latency', task, m, 10 + (hash(i || task || m) % 2000) / 100.0,
       0.1, 5, u, hib, 'measured:perf_counter', '{{}}'
FROM range(?) t(i), (VALUES ('p32b1'), ('p128b1')) v(task),
     (VALUES ('decode_tokens_per_s', 'tokens/s', true), ('ttft_s', 's', false), ('itl_s', 's', false),
             ('e2e_s', 's', false), ('prefill_tokens_per_s', 'tokens/s', true), ('roofline_fraction', 'fraction', true),
             ('roofline_tokens_per_s', 'tokens/s', true), ('matmul_flops', 'FLOP/s', true)) w(m, u, hib);
INSERT INTO metrics SELECT 'k' || i || 'memory', 'memory', task, m, 5e8 + hash(i || m) % 100000000, NULL, 1, 'bytes',
       false, 'measured:psutil-rss-sampler-20ms', '{{}}'
FROM range(?) t(i), (VALUES ('load+generate', 'peak_rss_generate'), ('load+generate', 'peak_rss_load'),
     ('load+generate', 'load_rss_delta'), ('load+generate', 'max_rss_process'), ('kv_cache', 'kv_bytes_per_token'),
     ('kv_cache', 'kv_bytes_per_token_measured'), ('weights', 'weight_bytes'), ('weights', 'weight_bytes_float32'),
     ('weights', 'weight_bytes_int8'), ('weights', 'weight_bytes_int64'), ('weights', 'weight_bytes_float64')) v(task, m);
INSERT INTO metrics SELECT 'k' || i || 'energy', 'energy', task, m, 0.05 + (hash(i || m) % 100) / 1000.0, 0.005, 2,
       u, false, 'estimated:codecarbon-process-cpu_load', '{{}}'
FROM range(?) t(i), (VALUES ('decode', 'decode_j_per_token', 'J/token'), ('decode', 'decode_power_w', 'W'),
     ('idle', 'idle_power_w', 'W'), ('prefill', 'prefill_j_per_token', 'J/token')) v(task, m, u);
INSERT INTO metrics SELECT 'k' || i || 'trust', 'trust', task, m, 0.5 + (hash(i || task || m) % 500) / 1000.0, 0.02,
       200, 'ratio', true, 'ratio:path/base', '{{}}'
FROM range(?) t(i), (VALUES ('robustness'), ('toxicity'), ('bias'), ('truthfulness'), ('calibration'), ('privacy')) v(task),
     (VALUES ('retention_score'), ('score')) w(m);
"""


def make_db(path: Path, n: int) -> None:
    """A results database of ``n`` paths with the real schema and views."""
    ResultStore(path)
    con = duckdb.connect(str(path))
    for stmt in [s for s in FILL.split(";\n") if s.strip()]:
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
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    n_metrics = con.execute("SELECT count(*) FROM metrics_long").fetchone()[0]  # type: ignore[index]
    con.close()
    t1 = time.perf_counter()
    build_site(out / "results.duckdb", out / "site")
    t2 = time.perf_counter()
    pages = sum(1 for _ in (out / "site" / "paths").glob("*.html"))
    size = sum(f.stat().st_size for f in (out / "site").rglob("*") if f.is_file())
    print(f"database with {args.paths} paths and {n_metrics} metric rows made in {t1 - t0:.1f} s")
    print(f"site built in {t2 - t1:.2f} s: {pages} path pages, {size / 1e6:.0f} MB -> "
          f"{'under' if t2 - t1 < 10 else 'OVER'} 10 s")


if __name__ == "__main__":
    main()
