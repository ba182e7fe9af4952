"""A full disk or a read-only workspace is one line saying so, from the store, the artifact cache and the site build,
and from `slm run`, `slm cache prune` and `slm leaderboard build` (issue 22). A full disk is simulated by making the
write raise ENOSPC (a tiny tmpfs needs root); a read-only workspace by EROFS/EACCES, and for real with chmod where the
tests do not run as root (root writes through file modes)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from adapters.errors import StorageError, storage_error
from harness.cache import ArtifactCache
from harness.cli import main

SPEC = "name: s\nbase: tiny-llama\nsuites: {}\npaths: [[]]\n"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Run ``slm ARGS`` in this process; its exit code and its stderr lines."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    return int(info.value.code or 0), capsys.readouterr().err.strip().splitlines()


class _FullDisk:
    """A DuckDB connection whose COMMIT fails the way DuckDB reports a full disk."""

    def __init__(self, con: duckdb.DuckDBPyConnection, wal: str):
        self._con, self._wal = con, wal

    def execute(self, sql: str, *args: object) -> object:
        if sql.strip().upper() == "COMMIT":
            raise duckdb.IOException(f'IO Error: Could not write file "{self._wal}": No space left on device')
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    import results.store as store

    real = store.connect

    @contextlib.contextmanager
    def connect(path, read_only=False, sandbox=False):  # type: ignore[no-untyped-def]
        with real(path, read_only=read_only, sandbox=sandbox) as con:
            yield con if read_only else _FullDisk(con, f"{path}.wal")

    monkeypatch.setattr(store, "connect", connect)


@pytest.mark.parametrize(("exc", "fragment"), [
    (OSError(errno.ENOSPC, "No space left on device", "/ws/artifacts/x"), "No space left on device while writing "
                                                                         "/ws/artifacts/x"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/ws/a"), "No space left on device while writing /ws/a"),
    (OSError(errno.EROFS, "Read-only file system", "/ws/site"), "workspace /ws is read-only (Read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/ws/results.duckdb.lock"), "workspace /ws is read-only"),
    (duckdb.IOException('Could not write file "/ws/results.duckdb.wal": No space left on device'),
     "No space left on device while writing /ws/results.duckdb"),
])
def test_storage_error_names_the_cause_and_the_path(exc: BaseException, fragment: str):
    mapped = storage_error(exc, "/ws/results.duckdb", "/ws")
    assert mapped is not None and fragment in str(mapped) and "\n" not in str(mapped)


@pytest.mark.parametrize("exc", [OSError(errno.ENOENT, "No such file", "/x"), ValueError("no"),
                                 duckdb.IOException("Could not read enough bytes")])
def test_other_failures_are_not_storage_errors(exc: BaseException):
    assert storage_error(exc, "/ws/x") is None


def test_the_store_says_the_disk_is_full(tmp_path: Path, full_disk: None):
    from results.store import ResultStore

    with pytest.raises(StorageError) as info:
        ResultStore(tmp_path / "ws" / "results.duckdb")
    assert str(info.value).startswith(f"No space left on device while writing {tmp_path / 'ws' / 'results.duckdb'}")


def test_the_store_says_the_workspace_is_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import results.store as store

    db = tmp_path / "ws" / "results.duckdb"
    store.ResultStore(db)  # an existing workspace that became read-only

    @contextlib.contextmanager
    def locked(path, shared=False):  # type: ignore[no-untyped-def]
        if not shared:
            raise PermissionError(errno.EACCES, "Permission denied", f"{path}.lock")
        yield

    monkeypatch.setattr(store, "locked", locked)
    with pytest.raises(StorageError, match=rf"^workspace {tmp_path / 'ws'} is read-only \(Permission denied: "):
        store.ResultStore(db).finish_run("r", "ok")
    with store.connect(db, read_only=True) as con:  # reading still works
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_the_artifact_cache_says_the_disk_is_full_and_leaves_no_partial_artifact(tmp_path: Path):
    cache = ArtifactCache(tmp_path / "ws" / "artifacts")

    def build(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))

    with pytest.raises(StorageError, match="^No space left on device while writing .*model.safetensors"):
        cache.write("abc", build, {})
    assert list(cache.root.iterdir()) == [] and not cache.has("abc")


def test_slm_run_on_a_full_disk_is_one_line(tmp_path: Path, full_disk: None, capsys: pytest.CaptureFixture[str]):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code, lines = cli(capsys, "run", str(spec), "-w", str(tmp_path / "ws"), "--no-progress", "--no-leaderboard")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: No space left on device while writing {tmp_path / 'ws' / 'results.duckdb'}")


def _workspace_with_a_run(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(spec), "-w", str(ws), "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return ws


def test_cache_prune_and_site_build_on_a_read_only_or_full_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]):
    import harness.cache
    import leaderboard.build

    ws = _workspace_with_a_run(tmp_path)
    ArtifactCache(ws / "artifacts").write("abc", lambda folder: (folder / "weights").write_text("w"), {})
    entries = sorted(p.name for p in (ws / "artifacts").iterdir())
    site = sorted(str(p.relative_to(ws)) for p in (ws / "site").rglob("*"))
    assert entries and site

    def read_only_rmtree(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(harness.cache.shutil, "rmtree", read_only_rmtree)
    code, lines = cli(capsys, "cache", "prune", "--all", "-w", str(ws))
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: workspace {ws} is read-only"), lines
    assert sorted(p.name for p in (ws / "artifacts").iterdir()) == entries  # and it did not claim to remove any
    monkeypatch.undo()

    def full_write(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(leaderboard.build, "_write", full_write)
    code, lines = cli(capsys, "leaderboard", "build", "-w", str(ws))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: No space left on device while writing {ws}/"), lines
    assert sorted(str(p.relative_to(ws)) for p in (ws / "site").rglob("*")) == site  # the old site stays whole
    assert not [p for p in ws.iterdir() if ".build-" in p.name]  # and no half-built folder is left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file modes: chmod makes nothing read-only")
def test_a_really_read_only_workspace(tmp_path: Path):
    ws = _workspace_with_a_run(tmp_path)
    spec = tmp_path / "spec.yaml"
    folders = [ws, *[p for p in ws.rglob("*") if p.is_dir()]]
    for d in folders:
        d.chmod(0o555)
    for f in ws.rglob("*"):
        if f.is_file():
            f.chmod(0o444)
    try:
        for args in (("run", str(spec), "--no-progress"), ("cache", "prune", "--all"), ("leaderboard", "build")):
            out = subprocess.run([sys.executable, "-m", "harness.cli", *args, "-w", str(ws)], capture_output=True,
                                 text=True, cwd=tmp_path)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1 and len(lines) == 1 and f"workspace {ws}" in lines[0], (args, out.stderr)
    finally:
        for d in folders:
            d.chmod(0o755)
