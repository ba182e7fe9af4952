"""The artifact cache: ``<workspace>/artifacts/<node hash>/``, written atomically.

An artifact directory is built under a temporary name and renamed into place, so a crash never
leaves a half-written artifact that looks complete. ``node.json`` in it records what the node is and
what it cost to compute.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_FILE = "node.json"
TMP_PREFIX = ".tmp-"


class ArtifactCache:
    """Content-addressed artifacts of computed nodes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, node_hash: str) -> Path:
        return self.root / node_hash

    def has(self, node_hash: str) -> bool:
        return (self.path(node_hash) / NODE_FILE).is_file()

    def meta(self, node_hash: str) -> dict[str, Any]:
        return dict(json.loads((self.path(node_hash) / NODE_FILE).read_text()))

    def write(self, node_hash: str, build: Callable[[Path], None], meta: dict[str, Any]) -> Path:
        """Run ``build(tmpdir)``, add ``node.json`` and rename the directory into place.

        Raises:
            StorageError: the disk is full or the workspace read-only (one line, not the OS's traceback).
        """
        from adapters.errors import writing

        with writing(self.root, self.root.parent):
            return self._write(node_hash, build, meta)

    def _write(self, node_hash: str, build: Callable[[Path], None], meta: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(node_hash)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{node_hash}-", dir=self.root))
        try:
            build(tmp)
            files = [f for f in tmp.rglob("*") if f.is_file()]
            meta = {**meta, "artifact_bytes": sum(f.stat().st_size for f in files) if files else None}
            (tmp / NODE_FILE).write_text(json.dumps({**meta, "created": time.time()}, indent=2, default=str))
            if target.exists():  # computed concurrently by another run: keep the first
                return target
            try:
                os.rename(tmp, target)
            except OSError:  # another run renamed the same node into place between the check and here: keep it
                if not self.has(node_hash):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def find(self, prefix: str) -> str:
        """The hash of the one complete artifact whose hash starts with ``prefix`` (``slm plan`` prints 12 digits).

        Raises:
            UsageError: no artifact, or several, start with ``prefix``.
        """
        from adapters.errors import UsageError

        found = sorted(d.name for d in self.root.iterdir() if d.name.startswith(prefix) and self.has(d.name)) \
            if prefix and self.root.is_dir() else []
        if len(found) != 1:
            raise UsageError(f"{len(found) or 'no'} cached artifacts in {self.root} have a hash starting with "
                             f"{prefix!r}" + (f" ({', '.join(h[:16] for h in found[:5])}): give more digits"
                                              if found else " (see `slm cache ls`)"))
        return found[0]

    def entries(self) -> list[dict[str, Any]]:
        """Every complete artifact with its node metadata and size on disk."""
        out: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(TMP_PREFIX) or not (d / NODE_FILE).is_file():
                continue
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            out.append({**json.loads((d / NODE_FILE).read_text()), "hash": d.name, "bytes": size})
        return out

    def prune(self, keep: set[str] | None = None, everything: bool = False) -> list[str]:
        """Remove temporary leftovers, and artifacts not in ``keep`` (all of them with ``everything``).

        Raises:
            StorageError: the workspace is read-only.
        """
        from adapters.errors import writing

        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for d in sorted(self.root.iterdir()):
            stray = d.name.startswith(TMP_PREFIX) or not (d / NODE_FILE).is_file()
            if stray or everything or (keep is not None and d.name not in keep):
                with writing(d, self.root.parent), contextlib.suppress(FileNotFoundError):  # gone already: fine
                    shutil.rmtree(d)  # not ignore_errors: a read-only workspace removed nothing, and says so
                removed.append(d.name)
        return removed
