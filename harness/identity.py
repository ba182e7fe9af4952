"""Content identity of the files a node or a suite run reads: what goes into their hashes.

A node that reads a dataset file is identified by the file's content, not its name; a suite run that reads
a data directory is identified by the directory's content, so editing a data file, or pointing a rerun at
real data instead of the built-in fallback, recomputes exactly what depends on it. Digests are memoized per
process by (path, size, modification time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_DIGESTS[key] = h.hexdigest()[:16]
    return _FILE_DIGESTS[key]


def dir_digest(path: str | Path) -> str:
    """A digest of every file under a directory: relative names and contents (hidden files skipped)."""
    root = Path(path).expanduser().resolve()
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            full = Path(dirpath) / name
            h.update(f"{full.relative_to(root).as_posix()}\0{file_digest(full)}\n".encode())
    return h.hexdigest()[:16]


def data_identity(path: str | Path | None) -> str | None:
    """What identifies a suite's data directory: its content digest, ``missing:<path>`` when it does not
    exist (the suite falls back to built-in data), or None when no directory is given."""
    if path is None or path == "":
        return None
    p = Path(str(path)).expanduser()
    return dir_digest(p) if p.is_dir() else f"missing:{p}"
