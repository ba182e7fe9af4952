"""``--executor ray`` on real Ray (pico model, seconds each): a local instance gives the in-process run's
numbers; two Ray nodes started with ``ray start`` (separate processes, own resources) both get work, and
killing the worker node's raylet mid-run still ends with every result exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from run_helpers import rows, run

from harness.runner import Runner
from harness.spec import parse_spec

ray = pytest.importorskip("ray")

from harness.ray_executor import SLOT_RESOURCE, SLOTS, check_slot_resource  # noqa: E402

GRID = """
name: raygrid
base: tiny-llama
hardware: cpu-1t
suites:
  test_nll: {profile: quick}
grid:
  first: [none, {tune.test_noise: {scale: 0.01}}, {tune.test_noise: {scale: 0.02}}]
  second: [none, {tune.test_noise: {scale: 0.03}}, {tune.test_noise: {scale: 0.04}}]
"""
SMALL = "name: rs\nbase: tiny-llama\nsuites: {test_nll: {}}\npaths: [[tune.test_noise], [prune.test_fail]]\n"


@pytest.fixture(scope="module", autouse=True)
def no_ray_token():
    """Private clusters on localhost without Ray's token authentication, for every test of this module: Ray
    caches its authentication state per process, so all of them must agree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        yield


@pytest.fixture()
def local_ray():
    """A local Ray instance with two CPUs and the slot resource (the executor then leaves it running)."""
    ray.init(num_cpus=2, resources={SLOT_RESOURCE: SLOTS}, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_a_local_ray_instance_gives_the_inprocess_numbers(test_components, local_ray, tmp_path):
    a = run(SMALL, tmp_path / "a")
    b = run(SMALL, tmp_path / "b", executor="ray")
    assert (b.steps_executed, b.steps_failed, b.suite_runs_executed) == (a.steps_executed, a.steps_failed,
                                                                         a.suite_runs_executed) == (1, 1, 1)
    sql = "SELECT path_name, task, metric, value, stderr, n FROM metrics_long ORDER BY ALL"
    assert rows(tmp_path / "a", sql) == rows(tmp_path / "b", sql)
    ((status, error, tb),) = rows(tmp_path / "b", "SELECT status, error, traceback FROM nodes WHERE technique = 'prune.test_fail'")
    assert status == "failed" and error == "RuntimeError: boom" and "slm_test_plugin" in tb  # the worker's traceback
    here = ray.get_runtime_context().get_node_id()
    machines = rows(tmp_path / "b", "SELECT DISTINCT json_extract_string(machine, '$.executor'), "
                                    "json_extract_string(machine, '$.node_id'), json_extract_string(machine, '$.env_id') "
                                    "FROM suite_runs")
    assert machines and all(m[0] == "ray" and m[1] == here and m[2] for m in machines)
    (envs,) = rows(tmp_path / "b", "SELECT count(*) FROM environments e JOIN suite_runs s "
                                   "ON e.env_id = json_extract_string(s.machine, '$.env_id')")[0]
    assert envs >= 1  # the worker's environment is stored, not only the driver's


def test_timing_suites_take_a_whole_ray_node_and_resources_follow_the_profile(test_components, local_ray, tmp_path):
    from harness.hardware import HardwareProfile
    from harness.plan import make_plan
    from harness.ray_executor import RayExecutor
    from harness.scheduler import Task

    plan = make_plan(parse_spec(SMALL, file="spec.yaml"))
    ex = RayExecutor(plan, tmp_path)
    run_ = plan.suite_runs[0]
    gpu = type(run_)(run_.run_key, run_.node, run_.suite, HardwareProfile("g", device="cuda", threads=4), run_.path_ids)
    latency = ex.options(Task("s", "suite", "latency", exclusive=True, payload={"run": gpu}))
    quality = ex.options(Task("q", "suite", "quality", payload={"run": run_}))
    assert latency["resources"] == {SLOT_RESOURCE: SLOTS} and latency["num_gpus"] == 1 and latency["num_cpus"] == 4
    assert quality["resources"] == {SLOT_RESOURCE: 1} and quality["num_gpus"] == 0 and quality["num_cpus"] == 1
    assert latency["max_retries"] == 2 and latency["retry_exceptions"] is False
    ex.close()
    assert ray.is_initialized()  # it did not start this instance, so it leaves it running


def test_a_cluster_without_the_slot_resource_and_a_missing_ray_are_clear_errors(monkeypatch):
    from adapters.errors import MissingDependencyError, UsageError
    from harness.ray_executor import import_ray

    check_slot_resource({"CPU": 4.0, SLOT_RESOURCE: 2000.0}, "auto")
    with pytest.raises(UsageError, match=r"has no 'slm_node' resource: start every Ray node with --resources"):
        check_slot_resource({"CPU": 4.0}, "auto")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raylet_pid(node_manager_port: int) -> int:
    import psutil

    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and f"--node_manager_port={node_manager_port}" in cmd:
            return int(proc.pid)
    raise AssertionError(f"no raylet with node manager port {node_manager_port}")


def test_two_ray_nodes_share_the_work_and_killing_one_loses_nothing(test_components, tmp_path, monkeypatch):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port, worker_port = _free_port(), _free_port()
    env = {**os.environ, "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
           "RAY_health_check_initial_delay_ms": "0"}
    slot = json.dumps({SLOT_RESOURCE: SLOTS})
    common = ["--num-cpus", "1", "--resources", slot, "--disable-usage-stats"]
    ip = ray.util.get_node_ip_address()  # the address Ray itself picks for this machine (and its driver)
    def ray_start(*args: str) -> None:
        proc = subprocess.run([ray_cli, "start", *args, *common], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"ray start {' '.join(args)}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"

    ray_start("--head", "--port", str(port), "--include-dashboard=false")
    try:
        address = f"{ip}:{port}"
        ray_start("--address", address, "--node-manager-port", str(worker_port))
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        deadline = time.time() + 30
        while ray.cluster_resources().get("CPU", 0) < 2 and time.time() < deadline:
            time.sleep(0.2)  # both nodes registered with their resources
        nodes = {n["NodeID"]: n["NodeManagerPort"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        worker = next(nid for nid, p in nodes.items() if p == worker_port)
        killed = threading.Event()
        real_done = Runner._done

        def done(self, store, summary, task, outcome):  # kill the worker node the first time it delivers a result
            real_done(self, store, summary, task, outcome)
            if (outcome.machine or {}).get("node_id") == worker and not killed.is_set():
                os.kill(_raylet_pid(worker_port), signal.SIGKILL)
                killed.set()

        monkeypatch.setattr(Runner, "_done", done)
        ws = tmp_path / "ws"
        first = run(GRID, ws, executor="ray", ray_address=address, retries=3)
        assert killed.is_set(), ("the worker node never delivered a result", first.failures[:2])
        monkeypatch.setattr(Runner, "_done", real_done)
        print(f"after killing the worker node: {first.status}; suite runs {first.suite_runs_executed}, "
              f"steps {first.steps_executed}, failed {first.steps_failed + first.suite_runs_failed}: {first.failures}")
        if first.status != "ok":  # a task whose retries were spent is recorded failed: a second run resumes it
            second = run(GRID, ws, executor="ray", ray_address=address)
            assert second.status == "ok", second.failures
    finally:
        ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
    counts = rows(ws, "SELECT path_name, count(*) FROM metrics_long GROUP BY path_name")
    assert len(counts) == 9 and all(c == 1 for _, c in counts)
    (ok, distinct) = rows(ws, "SELECT count(*), count(DISTINCT run_key) FROM suite_runs WHERE status = 'ok'")[0]
    assert ok == distinct == 9
    used = {r[0] for r in rows(ws, "SELECT json_extract_string(machine, '$.node_id') FROM suite_runs "
                                   "UNION ALL SELECT json_extract_string(machine, '$.node_id') FROM nodes")}
    assert worker in used and len(used - {None}) == 2, used  # work landed on both nodes
