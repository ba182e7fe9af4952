"""Issue 22's acceptance loops, run as a person would run ``slm`` (subprocesses, real workspaces; not in CI).

(a) fuzz: N malformed specs (:mod:`harness._fuzz`, the hypothesis test's mutations, plus its hostile files) each
    planned by ``slm plan`` in a subprocess with a timeout: accepted, one-line errors, tracebacks, hangs.
(b) kill -9: T trials of ``slm run`` on a tiny spec (tiny-llama, 3 paths, quick quality and a one-repeat memory
    suite), each in a fresh workspace, SIGKILLed at a random moment and resumed to completion: lost rows
    (expected path x metric missing), duplicated rows, runs left ``running``, children of the killed run still alive.
(c) B concurrent ``slm leaderboard build`` of one workspace: crashes, and whether the final site has every file of a
    build made alone.

Usage: ``python benchmarks/robustness.py [--fuzz 400] [--trials 10] [--builds 20] [--parts fuzz,kill,site]``
(``--workdir`` keeps the workspaces; default a temporary folder). Each part prints its counts as a table.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness._fuzz import HOSTILE, random_mutation  # noqa: E402

SLM = [sys.executable, "-m", "harness.cli"]

KILL_SPEC = """\
name: robustness
base: tiny-llama
hardware: cpu-1t
suites:
  quality: {profile: quick, limit: 4}
  memory: {profile: quick, repeats: 1, new_tokens: 8, prompt_tokens: 16}
paths:
  - []
  - [{prune.magnitude: {sparsity: 0.5}}]
  - [quant.int8]
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for key, value in (("OMP_WAIT_POLICY", "PASSIVE"), ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_DATASETS_OFFLINE", "1")):
        env.setdefault(key, value)
    return env


def table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


# -- (a) fuzz --------------------------------------------------------------------------------------------------------
class Planned(NamedTuple):
    outcome: str  # accepted | one-line error | traceback | hang | other
    detail: str


def _plan(spec: Path, workspace: Path, timeout: float) -> Planned:
    try:
        out = subprocess.run([*SLM, "plan", str(spec), "-w", str(workspace)], capture_output=True, text=True,
                             errors="replace", env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return Planned("hang", spec.name)
    err = out.stderr.strip()
    if "Traceback (most recent call last)" in err:
        return Planned("traceback", err.splitlines()[-1][:200])
    if out.returncode == 0:
        return Planned("accepted", "")
    lines = [line for line in err.splitlines() if line.strip()]
    if out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return Planned("one-line error", lines[0][:200])
    return Planned("other", f"rc={out.returncode}: {err[-300:]}")


def fuzz(n: int, workdir: Path, seed: int, jobs: int, timeout: float) -> dict[str, int]:
    rng = random.Random(seed)
    folder = workdir / "fuzz"
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, (data, _) in enumerate(HOSTILE):
        specs.append(folder / f"hostile-{i:02d}.yaml")
        specs[-1].write_bytes(data)
    for i in range(max(0, n - len(specs))):
        specs.append(folder / f"mutation-{i:04d}.yaml")
        specs[-1].write_text(random_mutation(rng), encoding="utf-8", errors="surrogatepass")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda s: _plan(s, folder / "ws-never-created", timeout), specs))
    counts = collections.Counter(r.outcome for r in results)
    rows: list[tuple[str, Any]] = [("generated", len(specs)), ("accepted", counts["accepted"]),
                                   ("one-line errors", counts["one-line error"]), ("tracebacks", counts["traceback"]),
                                   (f"hangs (> {timeout:g} s)", counts["hang"]), ("other", counts["other"]),
                                   ("workspace created", (folder / "ws-never-created").exists()),
                                   ("wall time", f"{time.perf_counter() - started:.0f} s ({jobs} at once)")]
    print(f"(a) fuzz: slm plan on {len(specs)} malformed specs ({len(HOSTILE)} hostile files + mutations, seed {seed})")
    print(table(rows))
    firsts: dict[str, tuple[str, str]] = {}
    for spec, r in zip(specs, results, strict=True):
        if r.outcome in ("traceback", "other", "hang"):
            firsts.setdefault(f"{r.outcome}: {r.detail.split(':')[0]}", (spec.name, r.detail))
    for kind, (name, detail) in firsts.items():
        print(f"  first {kind} -> {name}: {detail}")
    errors = collections.Counter(r.detail.split(": ", 2)[-1][:60] for r in results if r.outcome == "one-line error")
    print("  most frequent errors: " + "; ".join(f"{k!r} x{v}" for k, v in errors.most_common(5)))
    return dict(counts)


# -- (b) kill -9 -----------------------------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def kill_loop(trials: int, workdir: Path, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    spec = workdir / "kill.yaml"
    spec.write_text(KILL_SPEC)
    reference_ws = workdir / "kill-reference"
    cmd = [*SLM, "run", str(spec), "--no-progress", "--no-leaderboard"]
    if (reference_ws / "results.duckdb").exists():  # a kept --workdir: the reference run of an earlier call
        full_s = float(_query(reference_ws / "results.duckdb", "SELECT max(epoch(finished_at - started_at)) FROM runs "
                                                                "WHERE status = 'ok'")[0][0])
    else:
        started = time.perf_counter()
        ref = subprocess.run([*cmd, "-w", str(reference_ws)], capture_output=True, text=True, env=_env())
        full_s = time.perf_counter() - started
        if ref.returncode != 0:
            raise SystemExit(f"the reference run failed: {ref.stderr[-2000:]}")
    expected = set(_query(reference_ws / "results.duckdb", "SELECT path_name, suite, task, metric FROM metrics_long"))
    print(f"(b) kill -9: {trials} trials of slm run ({len(expected)} path x metric rows, a run alone took "
          f"{full_s:.0f} s), each killed at a random moment in [1 s, {full_s:.0f} s] then resumed")
    totals = collections.Counter()
    for trial in range(trials):
        # a workspace per trial: in one workspace every trial after the first would find everything done already
        ws = workdir / f"kill-ws-{trial + 1}"
        at = rng.uniform(1.0, full_s)
        proc = subprocess.Popen([*cmd, "-w", str(ws)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=_env())
        deadline = time.monotonic() + at
        kids: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            kids |= _children(proc.pid)
            time.sleep(0.1)
        finished_first = proc.poll() is not None
        if finished_first:  # runs got faster than the reference (less load, warm caches): draw later kills earlier
            full_s = max(2.0, min(full_s, at - (deadline - time.monotonic())))
        kids |= _children(proc.pid) if not finished_first else set()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(2.0)  # a child's PR_SET_PDEATHSIG, or its own exit, has had time to act
        orphans = {k for k in kids if _alive(k)}
        for k in orphans:  # leave nothing running for the next trial
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        resumed = subprocess.run([*cmd, "-w", str(ws)], capture_output=True, text=True, env=_env())
        db = ws / "results.duckdb"
        got = _query(db, "SELECT path_name, suite, task, metric FROM metrics_long")
        lost = len(expected - set(got))
        duplicated = len(got) - len(set(got))
        duplicated += _query(db, "SELECT count(*) - count(DISTINCT run_key) FROM suite_runs")[0][0]
        stale = _query(db, "SELECT count(*) FROM runs WHERE status = 'running'")[0][0]
        totals.update({"trials": 1, "killed before the end": int(not finished_first), "resume failed":
                       int(resumed.returncode != 0), "lost rows": lost, "duplicated rows": duplicated,
                       "stale running runs": stale, "orphaned children": len(orphans),
                       "children seen": len(kids)})
        print(f"  trial {trial + 1}: killed at {at:.1f} s{' (had finished)' if finished_first else ''}, "
              f"{len(kids)} children seen, {len(orphans)} left alive; resume rc={resumed.returncode}; lost {lost}, "
              f"duplicated {duplicated}, stale running {stale}")
    statuses = collections.Counter(s for t in range(trials) for (s,) in _query(
        workdir / f"kill-ws-{t + 1}" / "results.duckdb", "SELECT status FROM runs"))
    print(table([*totals.items(), ("run statuses", dict(statuses))]))
    return dict(totals)


# -- (c) concurrent site builds --------------------------------------------------------------------------------------
def _files(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): p.stat().st_size for p in sorted(site.rglob("*")) if p.is_file()}


def site_builds(builds: int, workdir: Path) -> dict[str, int]:
    ws = workdir / "kill-reference"
    if not (ws / "results.duckdb").exists():
        spec = workdir / "kill.yaml"
        spec.write_text(KILL_SPEC)
        subprocess.run([*SLM, "run", str(spec), "--no-progress", "--no-leaderboard", "-w", str(ws)], check=True,
                       capture_output=True, env=_env())
    alone = workdir / "site-alone"
    subprocess.run([*SLM, "leaderboard", "build", "-w", str(ws), "--out", str(alone)], check=True,
                   capture_output=True, env=_env())
    reference = _files(alone)
    started = time.perf_counter()
    procs = [subprocess.Popen([*SLM, "leaderboard", "build", "-w", str(ws)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(builds)]
    outs = [(p.wait(), p.stderr.read() if p.stderr else "") for p in procs]
    crashes = [err for rc, err in outs if rc != 0]
    tracebacks = sum("Traceback" in err for _, err in outs)
    site = _files(ws / "site")
    missing = sorted(set(reference) - set(site))
    empty = sorted(k for k, v in site.items() if v == 0 and reference.get(k, 0) > 0)
    leftovers = sorted(p.name for p in ws.iterdir() if ".build-" in p.name)  # half-built sites left behind
    rows: list[tuple[str, Any]] = [("builds at once", builds), ("crashes (exit != 0)", len(crashes)),
                                   ("tracebacks", tracebacks), ("files of a build alone", len(reference)),
                                   ("files in the final site", len(site)), ("missing", len(missing)),
                                   ("empty", len(empty)), ("leftover build folders", len(leftovers)),
                                   ("wall time", f"{time.perf_counter() - started:.0f} s")]
    print(f"(c) {builds} concurrent `slm leaderboard build` of one workspace")
    print(table(rows))
    for err in crashes[:1]:
        print(f"  first crash: {err.strip()[-500:]}")
    if missing:
        print(f"  first missing: {missing[:5]}")
    return {"crashes": len(crashes), "missing": len(missing)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=400, help="specs to generate")
    parser.add_argument("--fuzz-jobs", type=int, default=3, help="slm plan processes at once")
    parser.add_argument("--fuzz-timeout", type=float, default=120.0, help="seconds before a plan counts as a hang")
    parser.add_argument("--trials", type=int, default=10, help="kill -9 trials")
    parser.add_argument("--builds", type=int, default=20, help="concurrent site builds")
    parser.add_argument("--parts", default="fuzz,kill,site", help="which parts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the specs and workspaces here (default: a temporary folder)")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory(prefix="slm-robustness-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if "fuzz" in parts:
            fuzz(args.fuzz, workdir, args.seed, args.fuzz_jobs, args.fuzz_timeout)
        if "kill" in parts:
            kill_loop(args.trials, workdir, args.seed)
        if "site" in parts:
            site_builds(args.builds, workdir)


if __name__ == "__main__":
    main()
