"""Hardware profiles (the declared target) and the detected environment recorded with every run."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from adapters.errors import UsageError
from suites.ceilings import cpu_model

DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class HardwareProfile:
    """A declared target: where and how models run when measured.

    Attributes:
        name: profile name (``cpu-1t``, ``cpu-2t``, ``cuda`` or user-defined).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch intra-op threads.
        dtype: the dtype models are measured in: float weights are cast to it before a suite runs
            (quantized weights keep theirs, and the suite records that).
        batch_size: default batch size for scoring.
        memory_cap_gb: memory the target has (None: no cap declared). A suite run or a technique whose
            model's weights alone exceed it is refused before loading, and the refusal is recorded.
    """

    name: str
    device: str = "cpu"
    threads: int = 1
    dtype: str = "float32"
    batch_size: int = 1
    memory_cap_gb: float | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise UsageError(f"hardware {self.name}: device {self.device!r} is not allowed (allowed: cpu, cuda, cuda:N)")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise UsageError(f"hardware {self.name}: threads must be an integer >= 1, got {self.threads!r}")
        if self.dtype not in DTYPES:
            raise UsageError(f"hardware {self.name}: dtype {self.dtype!r} is not allowed (allowed: {', '.join(DTYPES)})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"hardware {self.name}: batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.memory_cap_gb is not None and (isinstance(self.memory_cap_gb, bool) or
                                               not isinstance(self.memory_cap_gb, int | float) or self.memory_cap_gb <= 0):
            raise UsageError(f"hardware {self.name}: memory_cap_gb must be a number > 0, got {self.memory_cap_gb!r}")

    @property
    def memory_cap_bytes(self) -> int | None:
        return None if self.memory_cap_gb is None else int(self.memory_cap_gb * 1e9)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BUILTIN_PROFILES = {
    "cpu-1t": HardwareProfile("cpu-1t", "cpu", 1),
    "cpu-2t": HardwareProfile("cpu-2t", "cpu", 2),
    "cuda": HardwareProfile("cuda", "cuda", 1),
}

_FIELDS = {f.name for f in dataclasses.fields(HardwareProfile)}


def resolve_profile(value: Any, relative_to: str | None = None) -> HardwareProfile:
    """A builtin name, a mapping of fields, or a path to a YAML file holding one."""
    if isinstance(value, HardwareProfile):
        return value
    if isinstance(value, str) and value in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[value]
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        path = Path(value)
        if not path.is_absolute() and relative_to:
            path = Path(relative_to).parent / path
        if not path.is_file():
            raise UsageError(f"hardware profile file not found: {path}")
        value = yaml.safe_load(path.read_text()) or {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise UsageError(f"unknown hardware field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})")
        if "name" not in value:
            raise UsageError("a user-defined hardware profile needs a `name:`")
        if not isinstance(value["name"], str) or not value["name"].strip():
            raise UsageError(f"a hardware profile's `name:` must be a non-empty string, got {value['name']!r}")
        profile = HardwareProfile(**value)
        builtin = BUILTIN_PROFILES.get(profile.name)
        if builtin is not None and builtin != profile:
            raise UsageError(f"{profile.name!r} is a builtin profile's name ({builtin.as_dict()}): give this "
                             f"definition another name (results of the two would be stored under one name)")
        return profile
    raise UsageError(f"unknown hardware profile {value!r} (builtin: {', '.join(BUILTIN_PROFILES)}; or a mapping or YAML file)")


def unavailable_reason(profile: HardwareProfile) -> str | None:
    """Why this machine cannot honour the profile (None when it can): a CUDA device it does not have, or
    a dtype whose matmuls its device cannot run. Imports torch."""
    if profile.device.startswith("cuda"):
        if not cuda_available():
            return f"device {profile.device} needs a CUDA GPU, and this machine has none (use a cpu profile)"
        import torch

        index = int(profile.device.split(":")[1]) if ":" in profile.device else 0
        if index >= torch.cuda.device_count():
            return f"device {profile.device} does not exist (this machine has {torch.cuda.device_count()} CUDA devices)"
    if profile.dtype != "float32" and not dtype_supported(profile.dtype, profile.device):
        return f"{profile.dtype} matmuls do not run on this machine's {profile.device}"
    return None


def dtype_supported(dtype: str, device: str) -> bool:
    """Whether a small matmul in ``dtype`` runs on ``device`` here."""
    import torch

    try:
        x = torch.ones(4, 4, dtype=getattr(torch, dtype), device=device)
        return bool(torch.isfinite((x @ x).float()).all())
    except (RuntimeError, TypeError):
        return False


def cuda_available() -> bool:
    """True when a CUDA device is usable (imports torch only if it is already imported or installed)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def git_commit(directory: Path | None = None) -> str | None:
    """The project's git commit (with ``-dirty`` when the tree has changes), or None."""
    directory = directory or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


LIBRARIES = ("torch", "transformers", "lm-eval", "peft", "trl", "accelerate", "duckdb", "codecarbon", "onnxruntime",
             "optimum-quanto", "torchao", "llmcompressor", "compressed-tensors", "numpy", "tokenizers")


def detect_environment() -> dict[str, Any]:
    """What this machine is: CPU, cores, RAM, GPU, OS, Python, library versions, git commit, RAPL."""
    import psutil

    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    gpu = None
    if cuda_available():
        import torch

        gpu = torch.cuda.get_device_name(0)
    return {
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
        "git_commit": git_commit(),
        "rapl": Path("/sys/class/powercap/intel-rapl").exists(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


_ENVIRONMENT: dict[str, Any] | None = None


def this_machine(executor: str) -> dict[str, Any]:
    """Where this process runs, for the record of each task it runs: host name, process id, the executor, the
    Ray node id when it is a Ray worker (else None) and the machine's :func:`detect_environment` (read once
    per process)."""
    import socket
    import sys

    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = detect_environment()
    node_id = None
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "pid": os.getpid(), "executor": executor, "node_id": node_id,
            "environment": _ENVIRONMENT}
