"""Process-level runtime settings that must be applied, and recorded, before measuring anything."""

from __future__ import annotations

import logging
import os


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


def set_threads(threads: int) -> int:
    """Apply an intra-op thread count to torch and return the count now in force."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
