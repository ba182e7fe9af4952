"""Process-level runtime settings that must be applied, and recorded, before measuring anything."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, TextIO


def prepare_process() -> None:
    """Call before torch is imported. On these shared 2-vCPU machines OpenMP's default spin-waiting
    makes a forward pass with 2 threads 3-6x slower than with 1 (DESIGN.md); passive waiting avoids it.
    Values already set by the user win."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # library progress bars; the harness draws its own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # its loguru console sink warns "no accelerator"
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # torchao warns about CUDA-only kernels it cannot load on a CPU build; torch about deprecated pytree enums
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # llmcompressor's tracing (SparseGPT)
    import warnings

    # quant.int8 builds torch.ao quantized tensors, which torch 2.13 announces as deprecated on every first use
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                            category=UserWarning)


class LibraryOutput(NamedTuple):
    """Where a run's output goes while :func:`library_output_to` is active.

    Attributes:
        console: the real stdout, for what a person should see (progress, results).
        log_path: the log file that receives library warnings, logging and anything printed to ``sys.stdout`` or
            ``sys.stderr`` meanwhile.
    """

    console: TextIO
    log_path: Path


def _stream_handlers(streams: tuple[Any, ...]) -> list[logging.StreamHandler[Any]]:
    """Every console handler of every logger (the root's included) that writes to one of ``streams``."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    # a handler whose stream is a property (logging's lastResort: always the current sys.stderr) follows the swap
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and not isinstance(getattr(type(h), "stream", None), property)
            and getattr(h, "stream", None) in streams]


@contextlib.contextmanager
def library_output_to(log_path: Path) -> Iterator[LibraryOutput]:
    """Divert library chatter (Python warnings, the logging of transformers/torch/lm-eval/torchao/codecarbon/...,
    prints and progress bars written to ``sys.stdout``/``sys.stderr``) to ``log_path`` (appended, line-buffered),
    so that the console shows only what the harness writes to :attr:`LibraryOutput.console`.

    Python-level only: file descriptors 1 and 2 are left alone, so a C extension's own stderr writes and a fatal
    error's traceback still reach the terminal. On exit ``sys.stdout``/``sys.stderr`` and the console handlers
    are restored; handlers that libraries created meanwhile (pointing at the log) are pointed back at stderr.
    The log file stays open until the process ends (a library may still hold it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    real_out, real_err = sys.stdout, sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    swapped = [(h, h.setStream(stream)) for h in _stream_handlers((real_out, real_err, sys.__stdout__,
                                                                   sys.__stderr__))]
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level, logging.INFO))  # our own events (slm.run) and libraries' notices
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger -> the log file
    sys.stdout = sys.stderr = stream
    try:
        yield LibraryOutput(real_out, log_path)
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h, old in swapped:
            h.setStream(old)
        for h in _stream_handlers((stream,)):
            h.setStream(real_err)
        stream.flush()


def set_threads(threads: int) -> int:
    """Apply an intra-op thread count to torch and return the count now in force."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def place(handle: Any, device: str = "cpu", dtype: str | None = "float32") -> Any:
    """``handle`` with its float torch weights on ``device`` in ``dtype`` (None: the dtype they have): a cast
    copy when they differ (the handle's format and lineage are kept; nothing is recorded as a step). Quantized
    torch formats and other backends are returned unchanged: their weights keep their own dtype and device
    (callers record that)."""
    import copy

    from adapters import formats as F

    if hasattr(handle, "on_provider"):  # an ONNX Runtime session: the execution provider follows the device
        return handle.on_provider(device)
    if handle.backend != "torch" or handle.format not in F.FLOAT_TORCH + (F.COMPRESSED,):
        return handle
    import torch

    dev = torch.device(device)
    first = next(handle.model.parameters(), None)
    if first is None:
        return handle
    target = getattr(torch, dtype) if dtype else first.dtype
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if first.dtype == target and first.device == dev:
        return handle
    return handle.derive(model=copy.deepcopy(handle.model).to(device=dev, dtype=target))


def on_device(handle: Any, device: str) -> Any:
    """``handle`` with its torch weights (float or quantized) on ``device``, their dtype kept: the handle itself
    when they are there already or its backend is not torch, else a handle on a moved copy. For techniques that
    run on the profile's device (``Technique.runs_on_device``)."""
    import copy

    if handle.backend != "torch" or _same_device(handle.device, device):
        return handle
    return handle.derive(model=copy.deepcopy(handle.model).to(device))


def _same_device(have: str, want: str) -> bool:
    """Whether a tensor on ``have`` (``cuda:0``) is on ``want`` (``cuda`` means the current CUDA device)."""
    if have == want:
        return True
    if want == "cuda" and have.startswith("cuda"):
        import torch

        return have == f"cuda:{torch.cuda.current_device()}"
    return False


class ChildRun(NamedTuple):
    """What a fresh Python child process did.

    Attributes:
        returncode: its exit status.
        stdout: what it printed.
        stderr: what it wrote to stderr.
        kernel_maxrss: the kernel's max RSS of the child in bytes (``wait4``; on Linux it also counts the spawning
            process's pages carried over at exec, so a child reports its own ``VmHWM`` for a clean figure).
    """

    returncode: int
    stdout: str
    stderr: str
    kernel_maxrss: int


#: the environment variable a parent sets to its pid for :func:`die_with_parent`
PARENT_PID = "SLM_PARENT_PID"


def die_with_parent() -> None:
    """In a child process the harness started: have Linux SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``), and
    exit at once when the parent named by ``$SLM_PARENT_PID`` is already gone (it died before this ran). A child of
    a killed ``slm run`` (a memory-suite measurement, a subprocess worker) must not outlive it. Nothing elsewhere."""
    parent = os.environ.get(PARENT_PID)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os._exit(1)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that dies with it (:func:`die_with_parent`), plus ``extra``."""
    return {**os.environ, PARENT_PID: str(os.getpid()), **extra}


def spawn_python(code: str, argv: list[str]) -> ChildRun:
    """Run ``python -c code *argv`` in a fresh process with this repository on its path, and wait for it.

    posix_spawn (vfork-style) rather than fork: a forked child starts with the parent's pages mapped, which the
    child's own memory measurements would then include."""
    root = str(Path(__file__).resolve().parents[1])
    env = child_env(PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    code = "from adapters.runtime import die_with_parent\ndie_with_parent()\n" + code
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        actions = [(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code, *argv], env, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        out.seek(0)
        err.seek(0)
        return ChildRun(os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode(),
                        usage.ru_maxrss * 1024)  # KiB on Linux
