"""Hugging Face checkpoint -> GGUF with llama.cpp's own converter, then llama.cpp's own quantizer.

:func:`convert_hf_dir` runs the conversion code of ``convert_hf_to_gguf.py`` (vendored unmodified in
:mod:`adapters.third_party.llama_cpp_convert`, from the llama.cpp commit that ``llama-cpp-python`` was built from):
the same calls its ``main()`` makes for a local directory (``ModelBase.load_hparams``, ``get_model_architecture``,
``get_model_class``, ``ModelBase(...).write()``). It runs in this process, because a fresh interpreter spends 5-20 s
on these machines importing torch and transformers before converting anything; the converter's ``gguf`` and
``conversion`` packages are put into ``sys.modules`` under their upstream names only while it runs (the converter
imports them by those names), and the installed ``gguf`` wheel is restored afterwards. Its log lines and progress bar
are captured and shown only when it fails.

:func:`quantize_gguf` calls ``llama_model_quantize`` (the library function behind ``llama-quantize``) through
llama-cpp-python's ctypes binding, with llama.cpp's C logging captured the same way.
Imported lazily (torch at call time); the registry skips ``_`` modules.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from adapters.errors import BackendUnavailableError

VENDOR = Path(__file__).resolve().parents[1] / "third_party" / "llama_cpp_convert"
#: the packages the converter imports by their upstream names
_OWN = ("gguf", "conversion")
#: what ``convert_hf_to_gguf.py --outtype`` writes itself (``LlamaFileType`` members)
OUTTYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "Q8_0": "MOSTLY_Q8_0"}
#: what ``llama_model_quantize`` makes from an F32 GGUF (``LLAMA_FTYPE_*`` of llama.h); deploy.llamacpp has the
#: converter write F32, F16 and Q8_0 itself
QUANT_FTYPES = {"Q8_0": "MOSTLY_Q8_0", "F16": "MOSTLY_F16", "Q6_K": "MOSTLY_Q6_K", "Q5_K_M": "MOSTLY_Q5_K_M",
                "Q4_K_M": "MOSTLY_Q4_K_M", "Q4_0": "MOSTLY_Q4_0", "Q3_K_M": "MOSTLY_Q3_K_M", "Q2_K": "MOSTLY_Q2_K"}

_modules: dict[str, ModuleType] = {}  # the converter's modules, kept between conversions
_lock = threading.Lock()


def _is_own(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _OWN)


@contextlib.contextmanager
def converter_modules() -> Iterator[ModuleType]:
    """llama.cpp's ``conversion`` package, importable (with its own ``gguf``) for the duration of the block."""
    with _lock:
        saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _is_own(k)]}
        sys.modules.update(_modules)
        paths = [str(VENDOR), str(VENDOR / "gguf-py")]
        sys.path[0:0] = paths
        no_local = os.environ.get("NO_LOCAL_GGUF")
        os.environ["NO_LOCAL_GGUF"] = "1"  # conversion/base.py would otherwise add gguf-py to sys.path for good
        try:
            yield importlib.import_module("conversion")
        finally:
            if no_local is None:
                os.environ.pop("NO_LOCAL_GGUF", None)
            _modules.update({k: sys.modules.pop(k) for k in [k for k in sys.modules if _is_own(k)]})
            sys.modules.update(saved)
            for p in paths:
                sys.path.remove(p)


@contextlib.contextmanager
def captured_python_output() -> Iterator[io.StringIO]:
    """Python-level stderr and the converter's loggers into a buffer (shown only when the conversion fails);
    transformers' own console handler (bound to the real stderr) to errors only meanwhile."""
    from transformers.utils import logging as hf_logging

    buf = io.StringIO()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    handler = logging.StreamHandler(buf)
    loggers = [logging.getLogger(n) for n in ("hf-to-gguf", "gguf", "gguf.gguf_writer", "gguf.vocab")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            yield buf
    finally:
        hf_logging.set_verbosity(verbosity)
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


def convert_hf_dir(hf_dir: Path, out_file: Path, outtype: str) -> None:
    """Write ``out_file`` (GGUF, ``outtype`` one of :data:`OUTTYPES`) from the Hugging Face directory ``hf_dir``.

    Raises:
        BackendUnavailableError: the converter does not support the architecture, or failed (with its last log lines).
    """
    import torch

    with converter_modules() as conv, captured_python_output() as log:
        gguf = sys.modules["gguf"]
        try:
            with torch.inference_mode():
                hparams = conv.ModelBase.load_hparams(hf_dir, False)
                arch = conv.get_model_architecture(hparams, conv.ModelType.TEXT)
                try:
                    model_class = conv.get_model_class(arch)
                except NotImplementedError:
                    raise BackendUnavailableError(f"llama.cpp's converter does not support the architecture {arch}") from None
                model = model_class(hf_dir, getattr(gguf.LlamaFileType, OUTTYPES[outtype]), out_file)
                model.write()
        except BackendUnavailableError:
            raise
        except Exception as exc:  # the converter raises many types; all mean "this checkpoint did not convert"
            tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
            raise BackendUnavailableError(f"llama.cpp's convert_hf_to_gguf failed on {hf_dir.name} "
                                          f"({type(exc).__name__}: {str(exc)[:300]}); its log: {tail[-400:]}") from exc


@contextlib.contextmanager
def captured_c_stderr() -> Iterator[list[str]]:
    """File descriptor 2 (where llama.cpp's C code logs) into a temporary file, and Python's ``sys.stderr`` (where
    llama-cpp-python's log callback prints) into a buffer; their lines land in the yielded list."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    buf = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stderr(buf):
                yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines() + buf.getvalue().splitlines())


def quantize_gguf(src: Path, dst: Path, quant: str, threads: int) -> None:
    """``llama_model_quantize(src -> dst)`` to ``quant`` (one of :data:`QUANT_FTYPES`) on ``threads`` threads.

    Raises:
        BackendUnavailableError: llama.cpp refused (with its last log lines).
    """
    import ctypes

    import llama_cpp

    from adapters.techniques._llamacpp import quiet_llama_cpp

    quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{QUANT_FTYPES[quant]}")
    params.nthread = threads
    with captured_c_stderr() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise BackendUnavailableError(f"llama_model_quantize to {quant} failed (return code {rc}): "
                                      + " | ".join(log[-3:])[-400:])
