"""The ready-set scheduler: tasks start as soon as their inputs exist, as many at once as the executor takes.

A :class:`Task` is one node to compute or one suite run. The runner builds the list in its preferred order
(nodes in dependency order, then suite runs grouped by node) and :func:`schedule` hands them to an executor:

* a task is *ready* when every task it depends on finished ``ok``; an executor that orders dependencies itself
  (``Executor.orders_dependencies``, Ray: a task waits for its inputs' object refs) gets a task as soon as
  its inputs are *submitted*;
* a task whose input failed is not run: ``on_done`` receives it as ``skipped`` with the cause;
* at most ``Executor.capacity`` tasks run at once; ready tasks start in list order;
* an ``exclusive`` task (a timing-sensitive suite: latency, energy, memory) never shares the machine: unless the
  executor isolates such tasks itself (``Executor.isolates``, Ray: a per-machine custom resource), the
  scheduler lets the running tasks finish, starts it alone, and starts nothing else until it is done.

Only the caller's thread runs ``on_start`` / ``on_done`` (the runner writes DuckDB there, one transaction per
result, as results arrive).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from harness.executors import Outcome


@dataclass(frozen=True)
class Task:
    """One unit of work for an executor.

    Attributes:
        key: unique within a run: ``node:<hash>`` or ``suite:<run key>``.
        kind: ``node`` or ``suite``.
        label: what the progress display and failure messages call it.
        deps: keys of the tasks that must finish ``ok`` first.
        exclusive: needs the machine to itself (timing-sensitive measurement).
        payload: what the executor needs (the node hash, or the suite run and its base node).
    """

    key: str
    kind: str
    label: str
    deps: tuple[str, ...] = ()
    exclusive: bool = False
    payload: dict[str, Any] = field(default_factory=dict)


def schedule(tasks: Sequence[Task], executor: Any, on_start: Callable[[Task], None],
             on_done: Callable[[Task, Outcome], None]) -> None:
    """Run ``tasks`` on ``executor`` until every one has finished, failed or been skipped.

    Args:
        tasks: in the order they should start when several are ready; ``deps`` name earlier tasks (a dependency
            that is not in ``tasks`` counts as already done).
        executor: has ``capacity``, ``isolates``, ``orders_dependencies`` and ``submit(task, after)`` returning a
            ``concurrent.futures.Future`` of an :class:`~harness.executors.Outcome`.
        on_start: called when a task is handed to the executor.
        on_done: called once per task with its outcome (``skipped`` when an input failed).
    """
    keys = {t.key for t in tasks}
    waiting = list(tasks)
    running: dict[Future[Outcome], Task] = {}
    futures: dict[str, Future[Outcome]] = {}
    outcome_of: dict[str, str] = {}  # finished task key -> status
    capacity = max(1, int(executor.capacity))
    isolates, ahead = bool(executor.isolates), bool(executor.orders_dependencies)

    def finish(task: Task, outcome: Outcome) -> None:
        outcome_of[task.key] = outcome.status
        on_done(task, outcome)

    labels = {t.key: t.label for t in tasks}

    def failed_input(task: Task) -> str | None:
        """The label of an input that finished without ``ok`` (None while all are fine or pending)."""
        bad = next((d for d in task.deps if d in outcome_of and outcome_of[d] != "ok"), None)
        return labels[bad] if bad is not None else None

    while waiting or running:
        started = _start_ready(waiting, running, futures, outcome_of, keys, capacity, isolates, ahead, executor,
                               on_start, finish, failed_input)
        if not running:
            if waiting and not started:
                stuck = ", ".join(t.label for t in waiting[:3])
                raise RuntimeError(f"scheduler: {len(waiting)} task(s) can never start ({stuck}): a dependency "
                                   "is missing from the task list")
            continue
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in [f for f in running if f in done]:  # in submission order
            task = running.pop(fut)
            outcome = _result(fut)
            bad = failed_input(task) if outcome.status not in ("ok", "refused") else None
            if bad is not None:  # the executor ran it against a failed input (dependencies ordered by the executor)
                outcome = Outcome("skipped", error=f"input {bad} failed")
            finish(task, outcome)


def _start_ready(waiting: list[Task], running: dict[Future[Outcome], Task], futures: dict[str, Future[Outcome]],
                 outcome_of: dict[str, str], keys: set[str], capacity: int, isolates: bool, ahead: bool,
                 executor: Any, on_start: Callable[[Task], None], finish: Callable[[Task, Outcome], None],
                 failed_input: Callable[[Task], str | None]) -> int:
    """Start every waiting task that may start now, in order; returns how many started or were skipped."""
    started = 0
    for task in list(waiting):
        bad = failed_input(task)
        if bad is not None:
            waiting.remove(task)
            finish(task, Outcome("skipped", error=f"input {bad} failed"))
            started += 1
            continue
        deps = [d for d in task.deps if d in keys]
        if not all(d in outcome_of or (ahead and d in futures) for d in deps):
            continue
        if len(running) >= capacity:
            break
        if not isolates:
            if any(t.exclusive for t in running.values()):
                break  # an exclusive task has the machine
            if task.exclusive and running:
                break  # let the others finish first; start nothing else meanwhile
        waiting.remove(task)
        on_start(task)
        after = [futures[d] for d in deps if d in futures and d not in outcome_of]
        fut = executor.submit(task, after)
        futures[task.key] = fut
        running[fut] = task
        started += 1
        if task.exclusive and not isolates:
            break
    return started


def _result(fut: Future[Outcome]) -> Outcome:
    try:
        return fut.result()
    except BaseException as exc:  # an executor that raises instead of returning a failed Outcome
        import traceback

        return Outcome("failed", error=f"{type(exc).__name__}: {exc}",
                       traceback="".join(traceback.format_exception(exc)))
