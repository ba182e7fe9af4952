"""Executors: where a node is computed and a suite is run.

The interface every executor implements (the runner's scheduler, :mod:`harness.scheduler`, uses only this):

* ``submit(task, after) -> concurrent.futures.Future[Outcome]``: start a :class:`~harness.scheduler.Task`;
  ``after`` holds the futures of its inputs still running (only for executors that order dependencies);
* ``capacity``: how many tasks may run at once (the scheduler never submits more);
* ``isolates``: True when the executor itself keeps ``exclusive`` tasks alone on a machine;
* ``orders_dependencies``: True when a task may be submitted before its inputs finish;
* ``close()``: release workers.

An outcome is data: a failure is ``Outcome("failed", error, traceback)``, never an exception, and
``Outcome.machine`` says where the task ran (host, Ray node id, environment).

* ``inprocess`` (default): everything in this process, one task at a time; handles stay in memory between steps.
* ``subprocess``: each node and each suite run in a fresh Python process (``python -m harness.worker``),
  ``--jobs N`` of them at once, so an out-of-memory kill takes down one task, not the run. Results come back
  as JSON; only the parent writes to the database.
* ``ray``: Ray Core tasks on a local instance or a cluster (:mod:`harness.ray_executor`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.runtime import child_env
from harness.cache import ArtifactCache
from harness.cost import StepCost
from harness.hardware import HardwareProfile, this_machine
from harness.materialize import Materializer
from harness.plan import Node, Plan, SuiteRun

EXECUTORS = ("inprocess", "subprocess", "ray")


@dataclass
class Outcome:
    """What executing a node or a suite run gave: status, cost or result, and the error if any."""

    status: str
    cost: StepCost = field(default_factory=StepCost)
    result: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    wall_time_s: float = 0.0
    machine: dict[str, Any] | None = None


def with_runtime(handle: Any, hw: HardwareProfile) -> Any:
    """``handle`` as the profile runs it: float weights on its device in its dtype (a cast copy when they
    differ), its threads and batch size."""
    from adapters.runtime import place

    placed = place(handle, hw.device, hw.dtype)
    if placed is handle and handle.threads == hw.threads and handle.batch_size == hw.batch_size:
        return handle
    other = copy.copy(placed)
    other.threads, other.batch_size, other._lm = hw.threads, hw.batch_size, None
    return other


def run_suite_on(mat: Materializer, run: SuiteRun, base_hash: str | None, workdir: Path, seed: int,
                 data_dir: str | None) -> dict[str, Any]:
    """Run one suite on one node; returns the JSON-able result (metrics, samples, raw, settings)."""
    from suites.base import SUITES, SuiteContext

    cls = SUITES.get(run.suite.name)
    mat.check_memory_cap(run.node, run.hardware, f"suite {run.suite.name}")
    handle = with_runtime(mat.handle(run.node), run.hardware)
    handle.activate()
    base = None
    if getattr(cls, "needs_base", False) and base_hash and base_hash != run.node:
        base = with_runtime(mat.handle(base_hash), run.hardware)
    reference = None
    if getattr(cls, "needs_reference", False) and (ref := torch_reference(mat.nodes, run.node)) is not None:
        mat.check_memory_cap(ref, run.hardware, f"suite {run.suite.name}'s torch reference")
        reference = with_runtime(mat.handle(ref), run.hardware)
    options = dict(run.suite.options)
    artifact = mat.cache.path(run.node)
    saved = None if artifact.is_dir() else saved_handle_dir(mat.nodes[run.node])
    if artifact.is_dir() or saved:  # a base written by ModelHandle.save reloads from itself
        options.setdefault("artifact_dir", saved or str(artifact))
    data = options.get("data_dir") or data_dir
    ctx = SuiteContext(profile=run.suite.profile, options=options, seed=seed, workdir=workdir,
                       hardware=run.hardware.as_dict(), data_dir=Path(str(data)) if data else None, base=base,
                       reference=reference)
    workdir.mkdir(parents=True, exist_ok=True)
    result = cls().run(handle, ctx)
    settings = {**handle.settings, **result.settings, "device": run.hardware.device,
                "profile_dtype_applied": handle.settings.get("dtype") == run.hardware.dtype}
    return {
        "metrics": [dataclasses.asdict(m) for m in result.metrics],
        "samples": [dataclasses.asdict(s) for s in result.samples],
        "raw": [dataclasses.asdict(r) for r in result.raw],
        "settings": settings,
    }


def torch_reference(nodes: dict[str, Node], h: str) -> str | None:
    """The nearest node of ``h``'s lineage (following ``model`` inputs) whose artifact runs on torch, when ``h`` itself
    runs on another backend (ONNX Runtime, llama.cpp): the same weights before the deploy step converted them. None
    when ``h`` runs on torch or no such node exists (e.g. a GGUF source)."""
    from adapters import formats as F

    def on_torch(node: Node) -> bool:
        fmt = node.format or (F.TORCH if node.kind == "source" else None)
        return fmt not in (F.ONNX, F.GGUF)

    if on_torch(nodes[h]):
        return None
    while "model" in nodes[h].inputs:
        h = nodes[h].inputs["model"]
        if on_torch(nodes[h]):
            return h
    return None


def saved_handle_dir(node: Node) -> str | None:
    """The directory of a source node that is a handle written by ``ModelHandle.save`` (else None)."""
    if node.kind != "source" or not isinstance(node.source, str):
        return None
    from adapters.handle import HANDLE_FILE

    path = Path(node.source).expanduser()
    return str(path.resolve()) if (path / HANDLE_FILE).is_file() else None


class InProcessExecutor:
    """Runs nodes and suites in this process, one at a time (``submit`` returns a finished future)."""

    name = "inprocess"
    capacity = 1
    isolates = False
    orders_dependencies = False

    def __init__(self, plan: Plan, workspace: Path, data_dir: str | None = None):
        self.plan, self.workspace, self.data_dir = plan, workspace, data_dir
        hw = plan.paths[0].hardware if plan.paths else HardwareProfile("cpu-1t")
        self.mat = Materializer(plan.nodes, ArtifactCache(workspace / "artifacts"), hw, seed=plan.spec.seed,
                                max_steps=plan.spec.max_steps,
                                workdir=workspace / "work")

    def submit(self, task: Any, after: Sequence[Future[Outcome]] = ()) -> Future[Outcome]:
        """Run ``task`` now; ``after`` is ignored (the scheduler only submits ready tasks here)."""
        fut: Future[Outcome] = Future()
        p = task.payload
        outcome = self.compute_node(p["hash"]) if task.kind == "node" else self.run_suite(p["run"], p.get("base_hash"))
        outcome.machine = this_machine(self.name)
        fut.set_result(outcome)
        return fut

    def close(self) -> None:
        self.mat.drop()

    def compute_node(self, h: str) -> Outcome:
        start = time.perf_counter()
        try:
            cost = self.mat.compute(h)
            return Outcome("ok", cost=cost, wall_time_s=time.perf_counter() - start)
        except Exception as exc:
            return _failure(exc, start)

    def run_suite(self, run: SuiteRun, base_hash: str | None) -> Outcome:
        start = time.perf_counter()
        try:
            workdir = self.workspace / "work" / f"suite-{run.run_key}"
            result = run_suite_on(self.mat, run, base_hash, workdir, self.plan.spec.seed, self.data_dir)
            return Outcome("ok", result=result, wall_time_s=time.perf_counter() - start)
        except Exception as exc:
            return _failure(exc, start)


def _failure(exc: BaseException, start: float) -> Outcome:
    from adapters.errors import ResourceRefusal

    if isinstance(exc, ResourceRefusal):
        return Outcome("refused", error=str(exc), wall_time_s=time.perf_counter() - start)
    return Outcome("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                   wall_time_s=time.perf_counter() - start)


class SubprocessExecutor:
    """Runs each node and each suite run in a fresh ``python -m harness.worker`` process, up to ``jobs`` at once
    (each child sets the thread count its hardware profile declares)."""

    name = "subprocess"
    isolates = False
    orders_dependencies = False

    def __init__(self, plan: Plan, workspace: Path, data_dir: str | None = None, jobs: int = 1):
        self.plan, self.workspace, self.data_dir = plan, workspace, data_dir
        self.hw = plan.paths[0].hardware if plan.paths else HardwareProfile("cpu-1t")
        self.capacity = jobs
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="slm-job")

    def submit(self, task: Any, after: Sequence[Future[Outcome]] = ()) -> Future[Outcome]:
        """Start a child process for ``task`` on a pool thread; the future resolves when it exits."""
        return self._pool.submit(self._call, self.task_dict(task))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def task_dict(self, task: Any) -> dict[str, Any]:
        return task_dict(task, self.plan, self.workspace, self.data_dir, self.hw, self.name)

    def _call(self, task: dict[str, Any]) -> Outcome:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="slm-worker-") as tmp:
            task_file, out_file = Path(tmp) / "task.json", Path(tmp) / "out.json"
            task_file.write_text(json.dumps(task, default=str))
            proc = subprocess.run([sys.executable, "-m", "harness.worker", str(task_file), str(out_file)],
                                  capture_output=True, text=True, env=child_env())
            if proc.stdout.strip() or proc.stderr.strip():  # the child's library output: into the run's log
                logging.getLogger("slm.worker").info("worker output (%s):\n%s%s", task.get("op", "task"),
                                                     proc.stdout[-20000:], proc.stderr[-20000:])
            if proc.returncode != 0 or not out_file.exists():
                return Outcome("failed", error=_exit_reason(proc.returncode), traceback=proc.stderr[-8000:],
                               wall_time_s=time.perf_counter() - start)
            out = json.loads(out_file.read_text())
        return outcome_from_dict(out, time.perf_counter() - start)


def task_dict(task: Any, plan: Plan, workspace: Path, data_dir: str | None, hw: HardwareProfile, executor: str,
              with_nodes: bool = True) -> dict[str, Any]:
    """The JSON task a worker runs (:func:`harness.worker.execute`): the node to compute, or the suite run and
    its base node, with the plan's nodes (unless ``with_nodes`` is False: the Ray executor shares them once)."""
    p = task.payload
    if task.kind == "node":
        extra: dict[str, Any] = {"hash": p["hash"]}
    else:
        run = p["run"]
        extra = {"run": {"run_key": run.run_key, "node": run.node, "suite": dataclasses.asdict(run.suite),
                         "hardware": run.hardware.as_dict(), "path_ids": list(run.path_ids)},
                 "base_hash": p.get("base_hash")}
    return {"op": task.kind, "workspace": str(workspace),
            "nodes": {h: n.to_dict() for h, n in plan.nodes.items()} if with_nodes else None,
            "hardware": hw.as_dict(), "seed": plan.spec.seed, "max_steps": plan.spec.max_steps,
            "data_dir": data_dir, "executor": executor, **extra}


def outcome_from_dict(out: dict[str, Any], wall_time_s: float) -> Outcome:
    """An :class:`Outcome` from a worker's JSON answer (:func:`harness.worker.execute`)."""
    return Outcome(out["status"], cost=StepCost(**out.get("cost", {})), result=out.get("result"),
                   error=out.get("error"), traceback=out.get("traceback"), wall_time_s=wall_time_s,
                   machine=out.get("machine"))


def _exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with status {code}"


def make_executor(name: str, plan: Plan, workspace: Path, data_dir: str | None = None, jobs: int = 1,
                  ray_address: str | None = None, retries: int = 2) -> Any:
    """The executor called ``name`` (see :data:`EXECUTORS`).

    Raises:
        UsageError: an unknown name, ``jobs`` below 1, or ``jobs`` above 1 for the in-process executor.
        MissingDependencyError: ``ray`` without Ray installed.
    """
    from adapters.errors import UsageError

    if name not in EXECUTORS:
        raise UsageError(f"--executor: {name!r} is not allowed (allowed: {', '.join(EXECUTORS)})")
    if jobs < 1:
        raise UsageError(f"--jobs: {jobs} is not allowed (an integer >= 1)")
    if name == "inprocess":
        if jobs > 1:
            raise UsageError(f"--jobs {jobs} needs --executor subprocess or ray (in-process runs one task at a time)")
        return InProcessExecutor(plan, workspace, data_dir)
    if name == "subprocess":
        return SubprocessExecutor(plan, workspace, data_dir, jobs=jobs)
    from harness.ray_executor import RayExecutor

    return RayExecutor(plan, workspace, data_dir, address=ray_address, retries=retries,
                       jobs=jobs if jobs > 1 else None)


def node_from_dict(d: dict[str, Any]) -> Node:
    return Node(**d)
