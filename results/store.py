"""Writing results: one transaction per node and per suite run, safe for concurrent ``slm run`` processes.

DuckDB allows one writing process per database file, and a read-only connection cannot open while a
writer holds the file. So no connection is kept open: every call takes an exclusive ``fcntl`` lock on
``<db>.lock``, opens the database, does its work in one transaction, commits and closes. Two runs writing
at once interleave whole transactions and lose nothing; a crash mid-write rolls the transaction back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from adapters.errors import UsageError, storage_error, writing
from results.schema import migrate
from results.views import create_views, refresh_metrics_wide

_SAMPLE_COLS = ("suite", "task", "sample_id", "correct", "score", "loglikelihoods", "prediction", "target")
_RAW_COLS = ("suite", "task", "name", "index", "value", "unit")
_MAX_TEXT = 2000  # predictions are kept for inspection, not as a corpus


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold the database's inter-process lock (shared for readers, exclusive for writers). A reader creates nothing
    and opens nothing for writing (a read-only workspace is readable): without a lock file no writer has written
    there, so there is nothing to wait for."""
    lock_path = Path(str(path) + ".lock")
    if shared:
        try:
            fh = open(lock_path)  # flock needs no write access
        except (FileNotFoundError, PermissionError):
            yield
            return
    else:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+")
    with fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_owner(pid: int | None = None) -> dict[str, Any]:
    """Who runs a run: host, boot id, pid and the process's start time (a reused pid has another start time)."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start_ticks": _start_ticks(pid)}


def owner_is_dead(owner: dict[str, Any]) -> bool:
    """Whether the process ``owner`` names is gone for sure: on this host, after a reboot, or its pid is not running
    (or runs a later process). False where it cannot be told (another host, no /proc)."""
    if owner.get("host") != socket.gethostname():
        return False
    boot = _boot_id()
    if boot and owner.get("boot_id") and boot != owner["boot_id"]:
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    ticks = _start_ticks(pid)
    return ticks is not None and owner.get("start_ticks") is not None and ticks != owner["start_ticks"]


#: DuckDB settings of a connection that reaches nothing but its own database: no other file (ATTACH, COPY, EXPORT,
#: read_csv/read_text/glob...), no network, no extension install or load, and no SET that would undo this
SANDBOX: dict[str, Any] = {"enable_external_access": False, "autoinstall_known_extensions": False,
                           "autoload_known_extensions": False, "lock_configuration": True}


@contextlib.contextmanager
def connect(path: str | Path, read_only: bool = False, sandbox: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection under the lock. Readers of a missing database get an empty in-memory one.
    ``sandbox`` (read-only connections): the connection can reach no file, network or extension (:data:`SANDBOX`)."""
    path = Path(path)
    if sandbox and not read_only:
        raise ValueError("a sandboxed connection is read-only")
    with locked(path, shared=read_only):
        if read_only and not path.exists():
            con = duckdb.connect(":memory:")
            migrate(con)
            create_views(con)
            for key, value in SANDBOX.items() if sandbox else ():  # lock_configuration last: the others first
                con.execute(f"SET {key} = {str(value).lower()}")
        else:
            try:
                con = duckdb.connect(str(path), read_only=read_only, config=dict(SANDBOX) if sandbox else {})
            except duckdb.Error as exc:  # not a DuckDB file, a lost header, a write-ahead log that fails to replay
                mapped = None if read_only else storage_error(exc, path)  # or a workspace it cannot write to
                if mapped is not None:
                    raise mapped from None
                raise UsageError(f"{path}: not a readable results database ({str(exc).strip().splitlines()[0]}): "
                                 f"`slm results --repair` copies what DuckDB can still read into a new one; else "
                                 f"restore it from a backup, or move it aside and a new run starts a new one") from None
        try:
            yield con
        finally:
            con.close()


class ResultStore:
    """The results database of a workspace (``<workspace>/results.duckdb``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with connect(self.path) as con:
                migrate(con)
                create_views(con)

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A full disk or a read-only workspace as its one-line error (not DuckDB's or the OS's traceback)."""
        return writing(self.path, self.path.parent, (OSError, duckdb.Error))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._writing(), connect(self.path) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (disk full) has ended the transaction already: its own error is the one to report,
                # not ROLLBACK's "no transaction is active"
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, *, run_id: str, spec_name: str, spec: dict[str, Any], spec_text: str,
                  environment: dict[str, Any], hardware: dict[str, Any], git_commit: str | None) -> None:
        with self._tx() as con:
            env_id = _environment(con, environment)
            con.execute(
                "INSERT INTO runs (run_id, spec_name, spec, spec_text, started_at, status, git_commit, environment,"
                " hardware, env_id, owner) VALUES (?, ?, ?, ?, now(), 'running', ?, ?, ?, ?, ?)",
                [run_id, spec_name, _json(spec), spec_text, git_commit, _json(environment), _json(hardware), env_id,
                 _json(process_owner())])

    def finish_run(self, run_id: str, status: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE runs SET status = ?, finished_at = now() WHERE run_id = ?", [status, run_id])

    def finish_stale_runs(self) -> list[str]:
        """Mark ``interrupted`` every run still ``running`` whose owning process is gone (same host: the pid is not
        alive with its recorded start time, or the machine rebooted); runs of other hosts and runs recorded before
        owners were (no owner) are left as they are. Returns the run ids finished."""
        with self._tx() as con:
            stale = [run_id for run_id, owner in con.execute(
                "SELECT run_id, owner FROM runs WHERE status = 'running' AND owner IS NOT NULL").fetchall()
                if owner_is_dead(json.loads(owner))]
            for run_id in stale:
                con.execute("UPDATE runs SET status = 'interrupted', finished_at = now() WHERE run_id = ?", [run_id])
        return stale

    # -- nodes and paths --------------------------------------------------------------------
    def record_node(self, run_id: str, node: dict[str, Any]) -> None:
        """Upsert by hash. A node seen again as ``cached`` keeps the cost of the run that computed it."""
        with self._tx() as con:
            row = con.execute("SELECT status FROM nodes WHERE node_hash = ?", [node["node_hash"]]).fetchone()
            if row and node["status"] == "cached" and row[0] in ("ok", "cached"):
                return
            con.execute("DELETE FROM nodes WHERE node_hash = ?", [node["node_hash"]])
            con.execute(
                "INSERT INTO nodes (node_hash, kind, technique, technique_version, params, inputs, source, status, "
                "error, traceback, wall_time_s, peak_rss_bytes, energy_j, energy_method, library_versions, footprint, "
                "run_id, artifact_bytes, format, report, lineage_step, machine) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [node["node_hash"], node.get("kind"), node.get("technique"), _text(node.get("technique_version")),
                 _json(node.get("params") or {}), _json(node.get("inputs") or {}), node.get("source"),
                 node.get("status"), node.get("error"), node.get("traceback"), _num(node.get("wall_time_s")),
                 _int(node.get("peak_rss_bytes")), _num(node.get("energy_j")), node.get("energy_method"),
                 _json(node.get("library_versions") or {}), _json(node.get("footprint")), run_id,
                 _int(node.get("artifact_bytes")), node.get("format"), _json(node.get("report")),
                 _json(node.get("lineage_step")), _json(_machine(con, node.get("machine")))])
            if node.get("kind") == "source" and node.get("source"):
                con.execute("INSERT INTO model_sources VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            [node["source"], node["node_hash"], run_id])

    def record_path(self, run_id: str, path: dict[str, Any]) -> None:
        with self._tx() as con:
            con.execute("DELETE FROM paths WHERE path_id = ?", [path["path_id"]])
            con.execute(
                "INSERT INTO paths VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [path["path_id"], path["name"], path.get("base"), path.get("hardware_profile"), path["leaf_hash"],
                 _json(path.get("chain") or []), _json(path.get("steps") or []), path.get("spec_snippet"), run_id])
            con.execute("INSERT INTO run_paths VALUES (?, ?) ON CONFLICT DO NOTHING", [run_id, path["path_id"]])

    # -- suite runs -------------------------------------------------------------------------
    def record_suite_run(self, run_id: str, run: dict[str, Any]) -> None:
        """Everything of one suite run in one transaction; recording the same ``run_key`` again replaces it."""
        key = run["run_key"]
        settings = run.get("settings") or {}
        with self._tx() as con:
            for table in ("metrics", "samples", "raw_samples", "suite_runs"):
                con.execute(f"DELETE FROM {table} WHERE run_key = ?", [key])
            con.execute(
                "INSERT INTO suite_runs (run_key, run_id, node_hash, suite, profile, hardware_profile, settings, "
                "status, error, traceback, wall_time_s, recorded_at, machine) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)",
                [key, run_id, run["node_hash"], run["suite"], run.get("profile"), run.get("hardware_profile"),
                 _json(settings), run.get("status"), run.get("error"), run.get("traceback"),
                 _num(run.get("wall_time_s")), _json(_machine(con, run.get("machine")))])
            hw = settings.get("hardware")
            if run.get("hardware_profile") and isinstance(hw, dict):
                con.execute("INSERT INTO hardware_profiles VALUES (?, ?) ON CONFLICT DO UPDATE SET "
                            "definition = excluded.definition", [run["hardware_profile"], _json(hw)])
            self._insert_metrics(con, key, run.get("metrics") or [])
            _insert_frame(con, "samples", key, [_sample_row(s) for s in run.get("samples") or []], _SAMPLE_COLS)
            _insert_frame(con, "raw_samples", key, [[r[c] for c in _RAW_COLS] for r in run.get("raw") or []],
                          _RAW_COLS)
            if run.get("metrics"):
                refresh_metrics_wide(con)

    @staticmethod
    def _insert_metrics(con: duckdb.DuckDBPyConnection, key: str, metrics: list[dict[str, Any]]) -> None:
        rows = [[key, m["suite"], m["task"], m["name"], _num(m["value"]), _num(m.get("stderr")), int(m["n"]),
                 m["unit"], bool(m["higher_is_better"]), m["method"], _json(m.get("details") or {})]
                for m in metrics]
        if rows:
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def completed_suite_runs(self) -> set[str]:
        with connect(self.path, read_only=True) as con:
            return {r[0] for r in con.execute("SELECT run_key FROM suite_runs WHERE status = 'ok'").fetchall()}

    def close(self) -> None:
        """Nothing to release: connections live only for one call."""


def _environment(con: duckdb.DuckDBPyConnection, environment: dict[str, Any]) -> str:
    """Store a machine's environment once (keyed by its content hash) and return its ``env_id``."""
    env_id = _hash(environment)
    con.execute("INSERT INTO environments VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [env_id, environment.get("cpu_model"), environment.get("cpu_cores_logical"), environment.get("ram_bytes"),
                 _text(environment.get("gpu")), _json(environment)])
    return env_id


def _machine(con: duckdb.DuckDBPyConnection, machine: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a task ran, as stored: its environment moves to ``environments`` and is referenced by ``env_id``."""
    if not machine:
        return None
    out = {k: v for k, v in machine.items() if k != "environment"}
    if isinstance(machine.get("environment"), dict):
        out["env_id"] = _environment(con, machine["environment"])
    return out


def _insert_frame(con: duckdb.DuckDBPyConnection, table: str, key: str, rows: list[list[Any]],
                  cols: tuple[str, ...]) -> None:
    """Bulk insert through a DataFrame (executemany is row-by-row and slow for thousands of samples)."""
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=list(cols))
    frame.insert(0, "run_key", key)
    con.register("_incoming", frame)
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _incoming")
    finally:
        con.unregister("_incoming")


def _sample_row(s: dict[str, Any]) -> list[Any]:
    lls = [float(x) for x in (s.get("loglikelihoods") or ())]
    return [s["suite"], s["task"], str(s["sample_id"]), s.get("correct"), _num(s.get("score")), lls,
            _clip(s.get("prediction")), _clip(s.get("target"))]


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def database_path(workspace: str | Path | None = None) -> Path:
    """``<workspace>/results.duckdb``; the workspace is ``--workspace``, ``$SLM_HOME`` or ``./.slm``."""
    ws = Path(workspace) if workspace else Path(os.environ.get("SLM_HOME", ".slm"))
    return ws.expanduser().resolve() / "results.duckdb"
