"""The warehouse: schema and migrations, one row per metric with its method, atomic and concurrent writes."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import duckdb
import pytest
from results_builders import metric, slm

from results import queries
from results.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from results.store import ResultStore


def test_one_row_per_path_suite_task_metric_with_method(two_path_db: Path):
    names, body = queries.run_sql(two_path_db, "SELECT path_name, suite, task, metric, count(*) AS c, "
                                               "min(method) AS method FROM metrics_long GROUP BY ALL ORDER BY ALL")
    assert [r[:4] for r in body] == [
        ("base", "energy", "decode@p16b1", "decode_j_per_token"), ("base", "latency", "decode@p16b1", "itl_s"),
        ("base", "quality", "probe", "acc"), ("pruned", "energy", "decode@p16b1", "decode_j_per_token"),
        ("pruned", "latency", "decode@p16b1", "itl_s"), ("pruned", "quality", "probe", "acc")]
    assert all(r[4] == 1 and r[5] for r in body)
    est = queries.run_sql(two_path_db, "SELECT DISTINCT is_estimate FROM metrics_long WHERE suite = 'energy'")[1]
    assert est == [(True,)]


def test_rerecording_a_suite_run_replaces_it(two_path_db: Path):
    store = ResultStore(two_path_db)
    run = dict(run_key="q-base", node_hash="n-base", suite="quality", profile="quick", hardware_profile="cpu-1t",
               settings={}, status="ok", metrics=[metric("quality", "probe", "acc", 0.5, 0.1, 10, "fraction", True,
                                                         "lm-eval")],
               samples=[dict(suite="quality", task="probe", sample_id="0", correct=True)], raw=[])
    store.record_suite_run("run1", run)
    store.record_suite_run("run1", run)
    _, body = queries.run_sql(two_path_db, "SELECT count(*), max(value) FROM metrics WHERE run_key = 'q-base'")
    assert body == [(1, 0.5)]
    assert queries.run_sql(two_path_db, "SELECT count(*) FROM samples WHERE run_key = 'q-base'")[1] == [(1,)]


def test_a_failing_write_leaves_nothing(two_path_db: Path):
    store = ResultStore(two_path_db)
    bad = dict(run_key="new", node_hash="n-base", suite="quality", profile="quick", hardware_profile="cpu-1t",
               settings={}, status="ok", metrics=[metric("quality", "t", "acc", 0.5, 0.1, 10, "fraction", True, "x")],
               samples=[{"suite": "quality"}], raw=[])  # a sample without task/sample_id: the write fails midway
    with pytest.raises(KeyError):
        store.record_suite_run("run1", bad)
    for table in ("suite_runs", "metrics"):
        assert queries.run_sql(two_path_db, f"SELECT count(*) FROM {table} WHERE run_key = 'new'")[1] == [(0,)]


def test_cached_node_keeps_first_cost(two_path_db: Path):
    store = ResultStore(two_path_db)
    store.record_node("run2", dict(node_hash="n-base", kind="model", technique="prune.magnitude", status="cached"))
    _, body = queries.run_sql(two_path_db, "SELECT status, wall_time_s, run_id FROM nodes WHERE node_hash='n-base'")
    assert body == [("ok", 1.5, "run1")]


def test_older_database_migrates_and_keeps_rows(tmp_path: Path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, upto=1) == 1
    con.execute("INSERT INTO paths (path_id, name, run_id) VALUES ('p1', 'old path', 'r0')")
    con.close()
    ResultStore(db)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert con.execute("SELECT name FROM paths").fetchall() == [("old path",)]
    # v2 backfills run membership from v1 rows
    assert con.execute("SELECT run_id, path_id FROM run_paths").fetchall() == [("r0", "p1")]
    con.close()


def test_v3_database_migrates_to_the_latest_schema_and_keeps_rows(tmp_path: Path):
    db = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, upto=3) == 3
    con.execute("INSERT INTO nodes (node_hash, kind, technique, params, status, wall_time_s, artifact_bytes, run_id) "
                "VALUES ('n1', 'model', 'prune.magnitude', '{\"sparsity\": 0.5}', 'ok', 1.5, 4096, 'r0')")
    con.execute("INSERT INTO paths (path_id, name, leaf_hash, chain, run_id) VALUES ('p1', 'v3 path', 'n1', "
                "'[\"n1\"]', 'r0')")
    con.close()
    ResultStore(db)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 6 == SCHEMA_VERSION
    assert con.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(v,) for v in range(1, 7)]
    assert con.execute("SELECT node_hash, technique, params, wall_time_s, artifact_bytes, run_id, format, report, "
                       "lineage_step, machine FROM nodes").fetchall() == [
        ("n1", "prune.magnitude", '{"sparsity": 0.5}', 1.5, 4096, "r0", None, None, None, None)]
    assert con.execute("SELECT name, leaf_hash FROM paths").fetchall() == [("v3 path", "n1")]
    con.close()
    names, body = queries.run_sql(db, "SELECT node_hash, artifact_bytes, format, report FROM node_costs")
    assert names == ["node_hash", "artifact_bytes", "format", "report"] and body == [("n1", 4096, None, None)]


def test_format_report_and_lineage_step_round_trip(tmp_path: Path):
    db = tmp_path / "v4.duckdb"
    store = ResultStore(db)
    report = {"sparsity": 0.5, "pruned_weights": 12288, "layers": 14, "pattern": "unstructured",
              "losses": [2.5, 2.25], "note": "<b>x</b> é"}
    step = {"technique": "peft.lora", "version": "2", "params": {"r": 8}, "library_versions": {"peft": "0.13"},
            "input_format": "torch-int8-dynamic", "output_format": "torch",
            "conversion": "dequantized the torch-int8-dynamic weights to float before peft.lora"}
    store.record_node("r1", dict(node_hash="src", kind="source", source="builtin:tiny-llama", status="ok",
                                 format="torch-int8-dynamic"))
    store.record_node("r1", dict(node_hash="n1", kind="model", technique="peft.lora", status="ok", format="torch",
                                 report=report, lineage_step=step))
    store.record_node("r1", dict(node_hash="n2", kind="model", technique="quant.dynamic", status="ok"))
    with duckdb.connect(str(db), read_only=True) as con:
        got = queries.rows(con, "SELECT node_hash, format, report, lineage_step FROM nodes ORDER BY node_hash")
    assert [(r["node_hash"], r["format"]) for r in got] == [("n1", "torch"), ("n2", None), ("src", "torch-int8-dynamic")]
    assert got[0]["report"] == report and got[0]["lineage_step"] == step  # decoded like every JSON column
    assert got[1]["report"] is None and got[1]["lineage_step"] is None and got[2]["report"] is None
    # a node seen again as cached keeps what the computing run recorded
    store.record_node("r2", dict(node_hash="n1", kind="model", technique="peft.lora", status="cached"))
    names, body = queries.run_sql(db, "SELECT node_hash, format, report FROM node_costs ORDER BY node_hash")
    assert [(r[0], r[1]) for r in body] == [("n1", "torch"), ("n2", None)]  # technique nodes only
    assert json.loads(body[0][2]) == report and body[1][2] is None
    assert queries.run_sql(db, "SELECT report->>'$.pattern', report->'$.pruned_weights' FROM node_costs "
                               "WHERE node_hash = 'n1'")[1] == [("unstructured", "12288")]


def test_newer_database_is_refused(tmp_path: Path):
    db = tmp_path / "new.duckdb"
    ResultStore(db)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        ResultStore(db)


def _writer(db: str, tag: str, n: int) -> None:
    store = ResultStore(db)
    store.start_run(run_id=tag, spec_name=tag, spec={}, spec_text="", environment={}, hardware={}, git_commit=None)
    for i in range(n):
        store.record_suite_run(tag, dict(
            run_key=f"{tag}-{i}", node_hash=f"{tag}-node", suite="quality", profile="quick",
            hardware_profile="cpu-1t", settings={}, status="ok",
            metrics=[metric("quality", f"t{i}", "acc", i / n, 0.01, 100, "fraction", True, "lm-eval")],
            samples=[dict(suite="quality", task=f"t{i}", sample_id=str(j), correct=j % 2 == 0) for j in range(20)],
            raw=[]))
    store.finish_run(tag, "ok")


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path):
    db = str(tmp_path / "shared.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, tag, 25)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    _, body = queries.run_sql(db, "SELECT count(*), count(DISTINCT run_key) FROM metrics")
    assert body == [(50, 50)]
    assert queries.run_sql(db, "SELECT count(*) FROM samples")[1] == [(1000,)]
    assert queries.run_sql(db, "SELECT count(*) FROM runs WHERE status = 'ok'")[1] == [(2,)]


def test_cli_results_sql_and_export(two_path_db: Path, tmp_path: Path):
    out = slm("results", "--db", str(two_path_db))
    assert out.returncode == 0, out.stderr
    assert "base" in out.stdout and "pruned" in out.stdout and "±" in out.stdout
    sql = slm("results", "--db", str(two_path_db), "--sql", "SELECT path_name, quality FROM leaderboard ORDER BY 1",
              "--json")
    assert sql.returncode == 0, sql.stderr
    assert [r["path_name"] for r in json.loads(sql.stdout)] == ["base", "pruned"]
    bad = slm("results", "--db", str(two_path_db), "--sql", "SELECT nope FROM leaderboard")
    assert bad.returncode == 2 and "views:" in bad.stderr
    for fmt in ("parquet", "csv", "json"):
        res = slm("export", "--db", str(two_path_db), "--format", fmt, "--out", str(tmp_path / fmt))
        assert res.returncode == 0, res.stderr
        n = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / fmt / ('metrics_long.' + fmt)}'").fetchall()[0][0]
        assert n == 6
    wrong = slm("export", "--db", str(two_path_db), "--format", "xlsx")
    assert wrong.returncode == 2 and "allowed: parquet, csv, json" in wrong.stderr


def test_where_a_task_ran_is_stored_with_that_machines_own_environment(tmp_path: Path):
    db = tmp_path / "v5.duckdb"
    store = ResultStore(db)
    worker_env = {"cpu_model": "Worker CPU", "cpu_cores_logical": 64, "ram_bytes": 2**38, "gpu": None, "os": "Linux"}
    machine = {"host": "worker-3", "pid": 4242, "executor": "ray", "node_id": "abc123", "environment": worker_env}
    store.record_suite_run("r1", {"run_key": "k1", "node_hash": "n1", "suite": "quality", "status": "ok",
                                  "machine": machine, "metrics": []})
    store.record_node("r1", {"node_hash": "n2", "kind": "model", "technique": "prune.magnitude", "status": "ok",
                             "machine": {**machine, "host": "worker-4"}})
    con = duckdb.connect(str(db), read_only=True)
    (stored,) = con.execute("SELECT machine FROM suite_runs").fetchone()
    stored = json.loads(stored)
    assert {k: stored[k] for k in ("host", "pid", "executor", "node_id")} == {k: machine[k] for k in
                                                                             ("host", "pid", "executor", "node_id")}
    assert "environment" not in stored
    assert con.execute("SELECT cpu, cores FROM environments WHERE env_id = ?", [stored["env_id"]]).fetchall() == [
        ("Worker CPU", 64)]
    assert json.loads(con.execute("SELECT machine FROM nodes").fetchone()[0])["host"] == "worker-4"
    con.close()


def test_a_run_whose_process_died_is_finished_as_interrupted(tmp_path: Path):
    """kill -9 leaves a run `running`; the next start finishes it as `interrupted` when its process is gone (a dead pid,
    or a live pid that is another process), and leaves alone a live run, another host's run and an owner-less one."""
    import subprocess
    import sys

    from results.store import process_owner

    store = ResultStore(tmp_path / "results.duckdb")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owners = {"dead": process_owner(dead.pid), "live": process_owner(), "elsewhere": {**process_owner(), "host": "x"},
              "reused": {**process_owner(), "start_ticks": -1}, "unknown": None}
    for run_id, owner in owners.items():
        store.start_run(run_id=run_id, spec_name=run_id, spec={}, spec_text="", environment={}, hardware={},
                        git_commit=None)
        with store._tx() as con:
            con.execute("UPDATE runs SET owner = ? WHERE run_id = ?", [json.dumps(owner) if owner else None, run_id])
    assert sorted(store.finish_stale_runs()) == ["dead", "reused"]
    con = duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True)
    status = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    finished = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE finished_at IS NOT NULL").fetchall()}
    con.close()
    assert status == {"dead": "interrupted", "reused": "interrupted", "live": "running", "elsewhere": "running",
                      "unknown": "running"} and finished == {"dead", "reused"}
