"""``--executor ray``: nodes and suite runs as Ray Core tasks, on a local Ray instance or a cluster.

* **Resources from the hardware profile**: ``num_cpus`` = the profile's threads, ``num_gpus`` = 1 for a cuda
  profile, and one unit of the custom resource :data:`SLOT_RESOURCE` per task; an ``exclusive`` task
  (latency, energy, memory) asks for all :data:`SLOTS` units of it, so it runs alone on its Ray node. Every
  node of a cluster must offer the resource: ``ray start ... --resources '{"slm_node": 1000}'``; a local
  instance started here gets it.
* **Spread**: tasks are placed with Ray's ``SPREAD`` strategy, across the nodes that have room (every task
  reads its inputs from the shared workspace, so no node is "closer" to the data).
* **Dependencies are task dependencies**: a task receives its inputs' object refs; Ray starts it when they are
  ready, and it runs nothing when one of them failed.
* **Artifacts** are written to the workspace, which every worker must reach at the same path (a shared
  filesystem: NFS, a mounted volume). Results travel back to the driver, which alone writes DuckDB.
* **Retries**: a task whose worker process dies (out of memory, a lost node) is retried up to ``retries``
  times, on any node that has the resources; a Python exception in the task is data (``failed`` with the
  worker's traceback), not retried. When retries are spent the task is recorded ``failed`` with Ray's error.
* Ray is an optional extra, imported only here: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness.executors import Outcome, outcome_from_dict, task_dict
from harness.hardware import HardwareProfile
from harness.plan import Plan

SLOT_RESOURCE = "slm_node"
SLOTS = 1000  # units of SLOT_RESOURCE per Ray node: a task takes 1, an exclusive task all of them
FORWARDED_ENV = ("SLM_", "HF_", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_", "OMP_WAIT_POLICY", "TQDM_DISABLE", "PYTHONPATH")


def import_ray() -> Any:
    """``ray``, or a clear error saying how to install it."""
    from adapters.errors import MissingDependencyError

    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "--executor ray", "pip install -e '.[ray]'") from exc
    return ray


def check_slot_resource(resources: dict[str, float], address: str | None) -> None:
    """Refuse a cluster whose nodes do not offer :data:`SLOT_RESOURCE` (tasks would wait forever).

    Raises:
        UsageError: saying how to start the Ray nodes.
    """
    from adapters.errors import UsageError

    if not resources.get(SLOT_RESOURCE):
        where = f" at {address}" if address else ""
        raise UsageError(f"the Ray cluster{where} has no {SLOT_RESOURCE!r} resource: start every Ray node with "
                         f"--resources '{{\"{SLOT_RESOURCE}\": {SLOTS}}}' (it keeps timing-sensitive suites alone "
                         "on a machine)")


def run_task(task: dict[str, Any], nodes: dict[str, Any], *inputs: dict[str, Any]) -> dict[str, Any]:
    """The body of every Ray task: ``task`` with the plan's ``nodes`` (one object shared by all tasks), after
    its ``inputs`` (the outcomes of the tasks it depends on) finished; nothing runs when one of them failed."""
    from harness.hardware import this_machine
    from harness.worker import execute

    bad = next((i for i in inputs if i.get("status") != "ok"), None)
    if bad is not None:
        return {"status": "skipped", "error": f"an input finished {bad.get('status')}", "machine": this_machine("ray")}
    start = time.perf_counter()
    out = execute({**task, "nodes": nodes})
    out["wall_time_s"] = time.perf_counter() - start
    return out


class RayExecutor:
    """Submits tasks to Ray; futures resolve to :class:`~harness.executors.Outcome` as tasks finish."""

    name = "ray"
    isolates = True
    orders_dependencies = True
    capacity = 1_000_000  # Ray queues what the cluster cannot start yet

    def __init__(self, plan: Plan, workspace: Path, data_dir: str | None = None, address: str | None = None,
                 retries: int = 2, jobs: int | None = None):
        from adapters.errors import UsageError

        ray = import_ray()
        self.ray, self.retries, self._owns = ray, retries, False
        if retries < 0:
            raise UsageError(f"--retries: {retries} is not allowed (an integer >= 0)")
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR, "runtime_env": {"env_vars": env}}
            if address:
                ray.init(address=address, **kwargs)
            else:  # a local instance: all cores (or --jobs of them), with the slot resource
                ray.init(num_cpus=jobs or os.cpu_count() or 1, resources={SLOT_RESOURCE: SLOTS}, **kwargs)
            self._owns = True
        check_slot_resource(ray.cluster_resources(), address)
        self.plan, self.workspace, self.data_dir = plan, Path(workspace).resolve(), data_dir
        self.hw = plan.paths[0].hardware if plan.paths else HardwareProfile("cpu-1t")
        self._nodes = ray.put({h: n.to_dict() for h, n in plan.nodes.items()})
        self._remote = ray.remote(run_task)
        self._refs: dict[Future[Outcome], Any] = {}

    def options(self, task: Any) -> dict[str, Any]:
        """Ray task options for ``task``: resources from its hardware profile, the slot, retries, a name."""
        hw: HardwareProfile = task.payload["run"].hardware if task.kind == "suite" else self.hw
        return {"num_cpus": hw.threads, "num_gpus": 1 if hw.device.startswith("cuda") else 0,
                "resources": {SLOT_RESOURCE: SLOTS if task.exclusive else 1}, "max_retries": self.retries,
                "retry_exceptions": False, "scheduling_strategy": "SPREAD",
                "name": f"slm {task.kind}: {task.label}"[:120]}

    def submit(self, task: Any, after: Sequence[Future[Outcome]] = ()) -> Future[Outcome]:
        """Submit ``task`` as a Ray task that waits for the tasks behind ``after``."""
        parents = [self._refs[f] for f in after]
        payload = task_dict(task, self.plan, self.workspace, self.data_dir, self.hw, self.name, with_nodes=False)
        ref = self._remote.options(**self.options(task)).remote(payload, self._nodes, *parents)
        fut: Future[Outcome] = Future()
        self._refs[fut] = ref
        submitted = time.perf_counter()

        def resolve(ray_future: Future[Any]) -> None:
            try:
                out = ray_future.result()
                fut.set_result(outcome_from_dict(out, out.get("wall_time_s", time.perf_counter() - submitted)))
            except BaseException as exc:  # the worker died and retries are spent, or the task was cancelled
                fut.set_result(Outcome("failed", error=f"{type(exc).__name__}: {str(exc).strip()[:2000]}",
                                       traceback="".join(traceback.format_exception(exc))[-8000:],
                                       wall_time_s=time.perf_counter() - submitted))

        ref.future().add_done_callback(resolve)
        return fut

    def close(self) -> None:
        """Cancel what is still queued or running, and stop the local instance this executor started."""
        for fut, ref in self._refs.items():
            if not fut.done():
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # already finished or lost: nothing to cancel
                    pass
        if self._owns:
            self.ray.shutdown()


def cluster_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected Ray cluster: node id, host and resources (for ``slm env``)."""
    ray = import_ray()
    return [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname"), "resources": n.get("Resources", {})}
            for n in ray.nodes() if n.get("Alive")]

