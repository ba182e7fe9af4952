"""``python -m harness.worker TASK.json OUT.json``: one node or one suite run in a fresh process.

Used by the subprocess executor; :func:`execute` is also what a Ray task runs. Writes
``{"status", "cost"|"result", "error", "traceback", "machine"}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from adapters.runtime import prepare_process


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task (``op`` ``node`` or ``suite``, see ``SubprocessExecutor.task_dict``) in this process and
    return its outcome as JSON-able data; an exception is returned as ``failed`` with its traceback (a
    ``ResourceRefusal`` as ``refused``)."""
    prepare_process()
    from harness.cache import ArtifactCache
    from harness.executors import node_from_dict, run_suite_on
    from harness.hardware import HardwareProfile, this_machine
    from harness.materialize import Materializer
    from harness.plan import SuiteRun
    from harness.spec import SuiteSpec

    workspace = Path(task["workspace"])
    nodes = {h: node_from_dict(n) for h, n in task["nodes"].items()}
    hw = HardwareProfile(**task["hardware"])
    mat = Materializer(nodes, ArtifactCache(workspace / "artifacts"), hw, seed=task["seed"],
                       max_steps=task.get("max_steps"), workdir=workspace / "work")
    out: dict[str, Any]
    try:
        if task["op"] == "node":
            cost = mat.compute(task["hash"])
            out = {"status": "ok", "cost": dataclasses.asdict(cost)}
        else:
            r = task["run"]
            run = SuiteRun(r["run_key"], r["node"], SuiteSpec(**r["suite"]), HardwareProfile(**r["hardware"]),
                           tuple(r["path_ids"]))
            workdir = workspace / "work" / f"suite-{run.run_key}"
            out = {"status": "ok",
                   "result": run_suite_on(mat, run, task.get("base_hash"), workdir, task["seed"], task.get("data_dir"))}
    except Exception as exc:
        from adapters.errors import ResourceRefusal

        if isinstance(exc, ResourceRefusal):
            out = {"status": "refused", "error": str(exc)}
        else:
            out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        mat.drop()
    out["machine"] = this_machine(str(task.get("executor", "subprocess")))
    return json.loads(json.dumps(out, default=str))


def main(task_file: str, out_file: str) -> int:
    Path(out_file).write_text(json.dumps(execute(json.loads(Path(task_file).read_text())), default=str))
    return 0


if __name__ == "__main__":
    from adapters.runtime import die_with_parent

    die_with_parent()  # a worker of a killed `slm run` stops with it
    sys.exit(main(sys.argv[1], sys.argv[2]))
