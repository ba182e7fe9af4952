"""The runner: a spec's plan executed in dependency order, then its suites, every result stored.

Reads like a script of named stages (:meth:`Runner.run`): plan, open the store, compute the nodes,
record the paths, run the suites, close. A failing node marks its descendants failed with the cause
and every other path goes on; finished nodes (artifact cache) and finished suite runs (database)
are skipped when a spec is run again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import ArtifactCache
from harness.executors import Outcome, make_executor
from harness.hardware import detect_environment
from harness.plan import Node, Plan, PlannedPath, SuiteRun, make_plan
from harness.progress import RunProgress
from harness.scheduler import Task, schedule
from harness.spec import ExperimentSpec


@dataclass
class RunSummary:
    """Counts of what a run did, and where its results are."""

    run_id: str
    workspace: Path
    db_path: Path
    steps_executed: int = 0
    steps_cached: int = 0
    steps_failed: int = 0
    suite_runs_executed: int = 0
    suite_runs_skipped: int = 0
    suite_runs_failed: int = 0
    wall_time_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped_profiles: list[str] = field(default_factory=list)
    suite_runs_refused: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if not (self.steps_failed or self.suite_runs_failed) else "partial"


@dataclass
class RunSession:
    """A run in progress (:meth:`Runner.session`): its whole plan, store, executor and summary, and what it has
    attempted so far (node hash or suite run key -> status), which a later :meth:`Runner.execute` does not repeat."""

    plan: Plan
    store: Any
    executor: Any
    summary: RunSummary
    attempted: dict[str, str] = field(default_factory=dict)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class Runner:
    """Executes one spec into one workspace.

    Args:
        executor: ``inprocess``, ``subprocess`` or ``ray`` (:mod:`harness.executors`).
        jobs: tasks at once for ``subprocess`` (child processes); for a local Ray instance, its CPUs.
        ray_address: an existing Ray cluster (``auto``, ``ray://host:10001``); None starts a local instance.
        retries: how often Ray retries a task whose worker died.
        run_id: the run's id (default: a fresh one), e.g. to name its log file before it starts.
        console: where the progress display writes (default: stdout).
    """

    def __init__(self, spec: ExperimentSpec, workspace: Path, executor: str = "inprocess",
                 data_dir: str | None = None, progress: bool = True, strict: bool = False, jobs: int = 1,
                 ray_address: str | None = None, retries: int = 2, run_id: str | None = None,
                 console: Any = None):
        self.spec = spec
        self.workspace = Path(workspace)
        self.executor_name = executor
        self.data_dir = data_dir
        self.strict = strict
        self.jobs, self.ray_address, self.retries = jobs, ray_address, retries
        self.run_id = run_id or new_run_id()
        self.progress = RunProgress(enabled=progress, out=console)

    def run(self) -> RunSummary:
        """Plan the spec and execute every path of it (a ``search:`` spec runs through :mod:`harness.search`)."""
        with self.session() as session:
            self.execute(session, session.plan)
        return session.summary

    @contextlib.contextmanager
    def session(self) -> Iterator[RunSession]:
        """One run: the plan, the executor and the store, opened and the run started; on leaving, the run is
        finished with its status (``interrupted`` on an exception) and the executor closed. Inside it,
        :meth:`execute` runs the whole plan or parts of it (a search runs one path per trial)."""
        start = time.perf_counter()
        plan = make_plan(self.spec, strict=self.strict, data_dir=self.data_dir)
        self._nodes = plan.nodes
        self._attempted: dict[str, str] = {}
        executor = make_executor(self.executor_name, plan, self.workspace, self.data_dir, jobs=self.jobs,
                                 ray_address=self.ray_address, retries=self.retries)
        store = self._open_store()
        summary = RunSummary(self.run_id, self.workspace, self.workspace / "results.duckdb",
                             dropped=[f"{d.name}: {d.reason}" for d in plan.dropped],
                             skipped_profiles=[f"{s.name}: {s.reason}" for s in plan.skipped_profiles])
        self._start(store, summary)
        session = RunSession(plan, store, executor, summary, self._attempted)
        try:
            yield session
        except BaseException:
            store.finish_run(summary.run_id, "interrupted")
            raise
        finally:
            executor.close()
        summary.wall_time_s = time.perf_counter() - start
        store.finish_run(summary.run_id, summary.status)
        store.close()

    def execute(self, session: RunSession, part: Plan) -> None:
        """Record ``part``'s paths in the run and compute what it still needs: nodes and suite runs neither cached,
        stored nor attempted earlier in this session."""
        with self.progress:
            self._record_paths(part, session.store, session.summary)
            tasks = self._tasks(part, session.store, session.summary)
            schedule(tasks, session.executor, self._begin,
                     lambda task, outcome: self._done(session.store, session.summary, task, outcome))

    # -- stages -------------------------------------------------------------------------------
    def _open_store(self) -> Any:
        from results.store import ResultStore

        self.workspace.mkdir(parents=True, exist_ok=True)
        return ResultStore(self.workspace / "results.duckdb")

    def _start(self, store: Any, summary: RunSummary) -> None:
        store.finish_stale_runs()  # runs whose process was killed are `interrupted`, not `running` forever
        env = detect_environment()
        hardware = {"profiles": list(self.spec.hardware)}
        store.start_run(run_id=summary.run_id, spec_name=self.spec.name, spec=self.spec.raw, spec_text=self.spec.text,
                        environment=env, hardware=hardware, git_commit=env.get("git_commit"))

    def _record_paths(self, plan: Plan, store: Any, summary: RunSummary) -> None:
        for p in plan.paths:
            store.record_path(summary.run_id, _path_record(p))

    def _tasks(self, plan: Plan, store: Any, summary: RunSummary) -> list[Task]:
        """The work left: nodes not in the artifact cache (in dependency order), then suite runs not in the
        database (grouped by node). Sources and cached nodes are recorded here, as they need no work."""
        from suites.base import SUITES

        cache = ArtifactCache(self.workspace / "artifacts")
        tasks: list[Task] = []
        node_task: dict[str, str] = {}
        for node in plan.nodes.values():
            if node.hash in self._attempted:
                continue
            if node.technique is None or cache.has(node.hash):
                status = "cached" if node.technique is not None else "ok"
                summary.steps_cached += node.technique is not None
                store.record_node(summary.run_id, _node_record(node, Outcome(status), _cached_meta(cache, node)))
                self._attempted[node.hash] = status
                continue
            node_task[node.hash] = f"node:{node.hash}"
            deps = tuple(node_task[h] for h in node.input_hashes() if h in node_task)
            tasks.append(Task(node_task[node.hash], "node", node.label, deps, payload={"hash": node.hash}))
        done = store.completed_suite_runs()
        fresh = [r for r in plan.suite_runs if r.run_key not in self._attempted]
        todo = [r for r in fresh if r.run_key not in done]
        summary.suite_runs_skipped += len(fresh) - len(todo)
        self._attempted.update((r.run_key, "ok") for r in fresh if r.run_key in done)
        base_of = {h: p.chain[0] for p in plan.paths for h in p.chain}
        for run in _grouped_by_node(todo):
            label = f"{run.suite.name} on {plan.nodes[run.node].label} [{run.hardware.name}]"
            deps = (node_task[run.node],) if run.node in node_task else ()
            tasks.append(Task(f"suite:{run.run_key}", "suite", label, deps,
                              exclusive=bool(getattr(SUITES.get(run.suite.name), "exclusive", False)),
                              payload={"run": run, "base_hash": base_of.get(run.node)}))
        self.progress.start_steps(len(node_task))
        self.progress.start_suites(len(tasks) - len(node_task))
        return tasks

    def _begin(self, task: Task) -> None:
        if task.kind == "node":
            self.progress.step_begin(task.label)
        else:
            self.progress.suite_begin(task.label)

    def _done(self, store: Any, summary: RunSummary, task: Task, outcome: Outcome) -> None:
        """Record one finished task (its own transaction) as it arrives."""
        if task.kind == "node":
            self._node_done(store, summary, task, outcome)
            return
        run: SuiteRun = task.payload["run"]
        self._attempted[run.run_key] = outcome.status
        if outcome.status == "skipped":  # its model failed: nothing to measure, nothing recorded
            self.progress.suite_done(task.label, ok=False)
            return
        store.record_suite_run(summary.run_id, _suite_record(run, outcome))
        if outcome.status == "ok":
            summary.suite_runs_executed += 1
        elif outcome.status == "refused":
            summary.suite_runs_refused += 1
            summary.refusals.append(f"{task.label}: {outcome.error}")
        else:
            summary.suite_runs_failed += 1
            summary.failures.append(f"{task.label}: {outcome.error}")
        self.progress.suite_done(task.label, ok=outcome.status in ("ok", "refused"))

    def _node_done(self, store: Any, summary: RunSummary, task: Task, outcome: Outcome) -> None:
        node = self._nodes[task.payload["hash"]]
        cache = ArtifactCache(self.workspace / "artifacts")
        meta = _cached_meta(cache, node) if outcome.status == "ok" else {}
        store.record_node(summary.run_id, _node_record(node, outcome, meta))
        self._attempted[node.hash] = outcome.status
        if outcome.status == "ok":
            summary.steps_executed += 1
        else:
            summary.steps_failed += 1
            if outcome.status != "skipped":
                summary.failures.append(f"{node.label}: {outcome.error}")
        self.progress.step_done(node.label, ok=outcome.status == "ok")


def _grouped_by_node(runs: list[SuiteRun]) -> list[SuiteRun]:
    """Suite runs ordered so that runs on the same node are adjacent (one model load serves them)."""
    order: dict[str, int] = {}
    for r in runs:
        order.setdefault(r.node, len(order))
    return sorted(runs, key=lambda r: order[r.node])


def _cached_meta(cache: ArtifactCache, node: Node) -> dict[str, Any]:
    return cache.meta(node.hash) if node.technique is not None and cache.has(node.hash) else {}


def _node_record(node: Node, outcome: Outcome, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = meta or {}
    cost = meta.get("cost") or outcome.cost.__dict__
    if outcome.status not in ("ok", "cached") and not meta.get("cost"):
        # a failed or skipped step measured nothing but, when it ran, the time until it failed: None, not 0
        cost = {"wall_time_s": outcome.wall_time_s or None}
    return {
        "node_hash": node.hash,
        "kind": node.kind,
        "technique": node.technique,
        "technique_version": node.version,
        "params": node.params,
        "inputs": node.inputs,
        "source": node.label if node.kind == "source" else None,
        "status": outcome.status,
        "error": outcome.error,
        "traceback": outcome.traceback,
        "wall_time_s": cost.get("wall_time_s"),
        "peak_rss_bytes": cost.get("peak_rss_bytes"),
        "energy_j": cost.get("energy_j"),
        "energy_method": cost.get("energy_method"),
        "library_versions": meta.get("library_versions", {}),
        "footprint": meta.get("footprint"),
        "artifact_bytes": meta.get("artifact_bytes"),
        "format": node.format,
        "report": meta.get("report"),
        "lineage_step": meta.get("lineage_step"),
        "machine": outcome.machine,
    }


def _path_record(p: PlannedPath) -> dict[str, Any]:
    return {
        "path_id": p.path_id,
        "name": p.name,
        "base": p.base_source,
        "hardware_profile": p.hardware.name,
        "leaf_hash": p.leaf,
        "chain": list(p.chain),
        "steps": [{"technique": s["technique"], "params": s["params"], "format": s.get("format")} for s in p.steps],
        "spec_snippet": p.spec_snippet,
    }


def _suite_record(run: SuiteRun, outcome: Outcome) -> dict[str, Any]:
    result = outcome.result or {}
    return {
        "run_key": run.run_key,
        "node_hash": run.node,
        "suite": run.suite.name,
        "profile": run.suite.profile,
        "hardware_profile": run.hardware.name,
        "settings": {**result.get("settings", {}), "options": run.suite.options, "hardware": run.hardware.as_dict()},
        "status": outcome.status,
        "error": outcome.error,
        "traceback": outcome.traceback,
        "wall_time_s": outcome.wall_time_s,
        "metrics": result.get("metrics", []),
        "samples": result.get("samples", []),
        "raw": result.get("raw", []),
        "machine": outcome.machine,
    }


def plan_only(spec: ExperimentSpec, strict: bool = False) -> Plan:
    return make_plan(spec, strict=strict)
