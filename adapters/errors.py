"""The error hierarchy. Every error the user can cause has a one-line message that says what was
wrong and what is allowed; the CLI prints ``str(error)`` and exits with the error's ``exit_code``."""

from __future__ import annotations

import contextlib
import difflib
import errno
from collections.abc import Iterable, Iterator
from pathlib import Path


class SLMError(Exception):
    """Base of every error this product raises on purpose."""

    exit_code = 1


class UsageError(SLMError):
    """Bad input from the user (CLI arguments, spec files, names). Exit status 2."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(unknown_name_message(kind, name, self.known))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class SpecError(UsageError):
    """A malformed experiment spec: names the file, the field, the value and what is allowed."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file, self.field = file, field
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class MissingDependencyError(SLMError):
    """An optional package is needed and absent; the message carries the install command."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        self.package = package
        cmd = install or f"pip install {package}"
        super().__init__(f"{purpose} needs the package '{package}', which is not installed: run `{cmd}`")


class BackendUnavailableError(SLMError):
    """The technique or suite cannot run on this machine (e.g. a CUDA-only kernel on a CPU)."""


class ResourceRefusal(SLMError):
    """A suite run or a technique refused before loading: the declared hardware cannot hold it (e.g. its
    weights alone exceed the profile's ``memory_cap_gb``). Recorded as data (status ``refused``), not a failure."""


class ModelLoadError(SLMError):
    """A model source could not be loaded (missing file, no network for a hub id, bad GGUF...)."""


class StorageError(SLMError):
    """A write the file system refused: the disk is full, or the workspace is read-only (:func:`storage_error`)."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(exc: BaseException, path: str | Path, workspace: str | Path | None = None) -> StorageError | None:
    """The one-line error for a write that failed because the disk is full or the workspace is read-only (an
    ``OSError``'s errno, or the text of a library's I/O error, e.g. DuckDB's); None for any other failure.

    Args:
        exc: the failure.
        path: what was being written (an ``OSError``'s own ``filename`` wins).
        workspace: the workspace it belongs to (default: the folder of the file).
    """
    code, text = getattr(exc, "errno", None), str(exc)
    where = Path(getattr(exc, "filename", None) or path)
    if code in _FULL or "No space left on device" in text or "Disk quota exceeded" in text:
        return StorageError(f"No space left on device while writing {where}: free some space (`slm cache prune` "
                            f"removes the artifacts no spec needs) and run again")
    if code in _READ_ONLY or "Read-only file system" in text or "Permission denied" in text:
        why = getattr(exc, "strerror", None) or ("read-only file system" if "Read-only" in text else "permission denied")
        return StorageError(f"workspace {workspace or where.parent} is read-only ({why}: {where}): make it writable, or "
                            f"give another with --workspace or SLM_HOME")
    return None


@contextlib.contextmanager
def writing(path: str | Path, workspace: str | Path | None = None,
            errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[None]:
    """Turn a disk-full or read-only failure of the writes inside into its one-line :class:`StorageError`
    (:func:`storage_error`); any other exception goes through unchanged."""
    try:
        yield
    except errors as exc:
        mapped = storage_error(exc, path, workspace)
        if mapped is None:
            raise
        raise mapped from None


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown technique 'prune.magnitud'; did you mean 'prune.magnitude'? known: ...``"""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
    return f"unknown {kind} {name!r}{hint} (known: {listing})"
