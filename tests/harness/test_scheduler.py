"""The ready-set scheduler with a fake executor: parallel up to capacity, a task starts as soon as its inputs
finished, a failed input skips its dependants (and only them), an exclusive task never overlaps other work,
and an executor that orders dependencies itself receives tasks before their inputs finish."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from harness.executors import Outcome
from harness.scheduler import Task, schedule


class FakeExecutor:
    """Runs each task on a thread for ``durations[key]`` seconds; ``fail`` keys return ``failed``."""

    isolates = False

    def __init__(self, capacity: int, durations: dict[str, float], fail: set[str] = frozenset(),
                 orders_dependencies: bool = False):
        self.capacity, self.durations, self.fail = capacity, durations, fail
        self.orders_dependencies = orders_dependencies
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.lock = threading.Lock()
        self.spans: dict[str, tuple[float, float]] = {}
        self.submitted_after: dict[str, int] = {}

    def submit(self, task: Task, after=()) -> Future:
        self.submitted_after[task.key] = len(after)

        def work() -> Outcome:
            for f in after:  # an executor that orders dependencies waits for them itself
                f.result()
            start = time.perf_counter()
            time.sleep(self.durations.get(task.key, 0.05))
            with self.lock:
                self.spans[task.key] = (start, time.perf_counter())
            return Outcome("failed", error="boom") if task.key in self.fail else Outcome("ok")

        return self.pool.submit(work)


def run(tasks, executor):
    done: dict[str, Outcome] = {}
    started: list[str] = []
    schedule(tasks, executor, lambda t: started.append(t.key), lambda t, o: done.__setitem__(t.key, o))
    return started, done


def concurrency(spans) -> int:
    """The most tasks that ran at the same time."""
    events = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_tasks_run_in_parallel_up_to_capacity_and_as_soon_as_their_inputs_exist():
    tasks = [Task("n1", "node", "n1"), Task("n2", "node", "n2"),
             Task("s1", "suite", "s1", deps=("n1",)), Task("s2", "suite", "s2", deps=("n2",))]
    ex = FakeExecutor(2, {"n1": 0.1, "n2": 0.6, "s1": 0.1, "s2": 0.1})
    _, done = run(tasks, ex)
    assert {k: o.status for k, o in done.items()} == dict.fromkeys(("n1", "n2", "s1", "s2"), "ok")
    assert overlap(ex.spans["n1"], ex.spans["n2"])  # two slots: both nodes at once
    assert ex.spans["s1"][0] < ex.spans["n2"][1]  # s1 started while n2 still ran: it waited for n1 only
    assert ex.spans["s2"][0] >= ex.spans["n2"][1]
    assert concurrency(ex.spans) == 2


def test_a_failed_input_skips_its_dependants_and_nothing_else():
    tasks = [Task("bad", "node", "bad-node"), Task("good", "node", "good-node"),
             Task("child", "node", "child", deps=("bad",)), Task("grandchild", "suite", "gc", deps=("child",)),
             Task("s", "suite", "s", deps=("good",))]
    _, done = run(tasks, FakeExecutor(2, {}, fail={"bad"}))
    assert done["bad"].status == "failed" and done["good"].status == "ok" and done["s"].status == "ok"
    assert done["child"].status == "skipped" and "bad-node" in done["child"].error
    assert done["grandchild"].status == "skipped" and "child" in done["grandchild"].error


def test_an_exclusive_task_never_shares_the_machine():
    tasks = [Task(f"n{i}", "node", f"n{i}") for i in range(3)]
    tasks += [Task("lat", "suite", "latency", deps=("n0",), exclusive=True)]
    tasks += [Task(f"q{i}", "suite", f"quality{i}", deps=(f"n{i}",)) for i in range(3)]
    ex = FakeExecutor(3, {"n0": 0.05, "n1": 0.3, "n2": 0.3, "lat": 0.2})
    _, done = run(tasks, ex)
    assert all(o.status == "ok" for o in done.values()) and len(done) == 7
    lat = ex.spans["lat"]
    assert not any(overlap(lat, span) for k, span in ex.spans.items() if k != "lat"), ex.spans


def test_an_executor_that_orders_dependencies_gets_tasks_before_their_inputs_finish():
    tasks = [Task("n", "node", "n"), Task("m", "node", "m", deps=("n",)), Task("s", "suite", "s", deps=("m",))]
    ex = FakeExecutor(10, {"n": 0.2}, orders_dependencies=True)
    started, done = run(tasks, ex)
    assert started == ["n", "m", "s"] and ex.submitted_after == {"n": 0, "m": 1, "s": 1}
    assert all(o.status == "ok" for o in done.values())
    assert ex.spans["n"][1] <= ex.spans["m"][0] <= ex.spans["m"][1] <= ex.spans["s"][0]


def test_an_executor_that_raises_is_recorded_as_a_failure_not_a_crash():
    class Raising(FakeExecutor):
        def submit(self, task, after=()):
            fut: Future = Future()
            fut.set_exception(RuntimeError("worker lost"))
            return fut

    _, done = run([Task("n", "node", "n"), Task("s", "suite", "s", deps=("n",))], Raising(1, {}))
    assert done["n"].status == "failed" and "worker lost" in done["n"].error and "RuntimeError" in done["n"].traceback
    assert done["s"].status == "skipped"


def test_a_dependency_outside_the_list_counts_as_done_and_a_cycle_is_an_error():
    _, done = run([Task("s", "suite", "s", deps=("cached-node",))], FakeExecutor(1, {}))
    assert done["s"].status == "ok"
    with pytest.raises(RuntimeError, match="can never start"):
        run([Task("a", "node", "a", deps=("b",)), Task("b", "node", "b", deps=("a",))], FakeExecutor(1, {}))
