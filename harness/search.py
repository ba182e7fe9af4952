"""``search:``: the best path of a grid under constraints, found with Optuna instead of running every path.

The space is the grid's stages (one categorical dimension per stage, its alternatives the choices; a swept parameter's
values are alternatives of their stage). Each trial (:meth:`Search.trial`):

1. Optuna's sampler asks for one combination of the stages; the planner's grid path for it is looked up (a combination
   that ``exclude:`` or a format mismatch removed from the grid is told as failed and does not count);
2. a combination whose path this study already ran is answered from the stored result, not run again;
3. otherwise the path is executed by the normal runner in the same run (cached nodes and stored suite runs reused, the
   path stored like any path), the objective and the constraints read back from the database and told to Optuna; with
   ``pruner: median`` (needs ``evaluate: all``) the path is computed stage by stage, the objective of every
   intermediate node reported, and the trial pruned when Optuna's MedianPruner says so (its later steps never run).

Constraints are Optuna's constrained optimization: each completed trial's bounds are set with
``Trial.set_constraint`` (<= 0 when a bound holds; optuna 5 replaced TPESampler's ``constraints_func`` with it), which
TPESampler models (infeasible trials rank below feasible ones); random and grid sampling ignore them while sampling,
and the best path reported is always the best *feasible* one (as ``Study.best_trial`` picks it). The study lives in ``<workspace>/search/<spec>-<key>.db`` (Optuna's RDB storage on SQLite),
keyed by the spec without ``trials``: running the same spec again continues it without repeating a trial.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import SpecError, UsageError
from harness.plan import Plan, PlannedPath, content_hash
from harness.spec import Constraint, ExperimentSpec, Goal, SearchSpec

#: consecutive asks that bring no new path before a search stops (the sampler keeps proposing paths already run, or
#: combinations the grid excludes)
MAX_IDLE_ASKS = 50
STATES = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class Value:
    """One metric of one node as the search reads it: the mean of the stored metrics the name matches."""

    value: float
    stderr: float | None
    n: int
    unit: str
    method: str

    def text(self) -> str:
        se = f" ± {self.stderr:.4g}" if self.stderr is not None else ""
        return f"{self.value:.4g}{se} {self.unit} (n={self.n}, {self.method})"


@dataclass(frozen=True)
class Measured:
    """What one trial measured on its path: ``state`` is complete, pruned or failed (``error`` says why)."""

    state: str
    objective: Value | None = None
    constraints: tuple[Value | None, ...] = ()
    error: str | None = None
    pruned_at: str | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study, as the search reports it."""

    number: int
    path: str
    path_id: str
    state: str
    objective: float | None
    constraint_values: tuple[float | None, ...]
    feasible: bool
    repeat_of: int | None = None
    error: str | None = None
    detail: str | None = None


@dataclass
class SearchSummary:
    """The outcome of ``slm run`` on a search spec: the run, the study and the best feasible path."""

    run: Any
    storage: Path
    study_name: str
    sampler: str
    space_size: int
    grid_paths: int
    budget: int
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    stopped: str | None = None

    @property
    def paths_run(self) -> int:
        """Distinct paths the study ran (complete, pruned or failed; repeats and combinations off the grid excluded)."""
        return len({t.path_id for t in self.trials if t.repeat_of is None and t.path_id})


class SearchSpace:
    """The grid's stages as Optuna dimensions, and the planned grid path of every combination."""

    def __init__(self, search: SearchSpec, plan: Plan):
        self.search, self.plan = search, plan
        self.by_name = {p.name: p for p in plan.paths}
        self.dropped = {d.name: d.reason for d in plan.dropped}

    def suggest(self, trial: Any) -> dict[str, str]:
        return {s.name: trial.suggest_categorical(s.name, list(s.choices)) for s in self.search.stages}

    def path_of(self, combination: dict[str, str]) -> PlannedPath | str:
        """The grid path of a combination, or why there is none (excluded, or its formats do not fit)."""
        steps = [stage.steps[stage.choices.index(combination[stage.name])] for stage in self.search.stages]
        name = " > ".join(s.label() for s in steps if s is not None) or "baseline"
        if name in self.by_name:
            return self.by_name[name]
        return self.dropped.get(name, f"{name!r} is excluded from the grid (`exclude:`)")

    def part(self, path: PlannedPath, upto: int | None = None) -> Plan:
        """The plan of one path, up to chain node ``upto`` (all of it by default): the nodes it needs and its suite
        runs on the nodes up to there."""
        chain = path.chain if upto is None else path.chain[: upto + 1]
        needed: set[str] = set()
        stack = [chain[-1]]
        while stack:
            h = stack.pop()
            if h not in needed:
                needed.add(h)
                stack.extend(self.plan.nodes[h].input_hashes())
        nodes = {h: n for h, n in self.plan.nodes.items() if h in needed}
        runs = [r for r in self.plan.suite_runs if path.path_id in r.path_ids and r.node in chain]
        return Plan(self.plan.spec, nodes, [path], runs)


# -- metrics ----------------------------------------------------------------------------------------------------------
def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE (``%`` any run, ``_`` one character) as a regular expression."""
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + r"\Z")


def headline(name: str) -> Any:
    """The leaderboard headline called ``name`` (:data:`results.views.HEADLINES`), or None."""
    from results.views import HEADLINES

    return next((h for h in HEADLINES if h.name == name), None)


def matching(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored metric rows (suite, task, metric, ...) that a search metric name means."""
    head = headline(name)
    if head is not None:
        task, metrics = _like(head.task), [_like(m) for m in head.metrics]
        return [r for r in rows if r["suite"] == head.suite and task.match(r["task"])
                and any(m.match(r["metric"]) for m in metrics)]
    parts = name.split("/")
    keys = ("suite", "task", "metric")[-len(parts):]
    return [r for r in rows if all(r[k] == p for k, p in zip(keys, parts, strict=True))]


def combine(rows: list[dict[str, Any]]) -> Value:
    """The mean of matched metrics, as a headline column is (stderr of the mean of independent estimates)."""
    ses = [r["stderr"] for r in rows if r["stderr"] is not None]
    stderr = math.sqrt(sum(s * s for s in ses)) / len(ses) if ses and len(ses) == len(rows) else None
    methods = sorted({str(r["method"]) for r in rows})
    return Value(sum(r["value"] for r in rows) / len(rows), stderr, sum(int(r["n"] or 0) for r in rows),
                 str(rows[0]["unit"]), "; ".join(methods) + (f"; mean of {len(rows)} metrics" if len(rows) > 1 else ""))


def read_value(name: str, fld: str, rows: list[dict[str, Any]], path: str) -> Value | None:
    """The value of metric ``name`` among a node's stored ``rows``; None when nothing matches. A name (not a headline)
    that matches several metrics is a usage error naming them (``fld`` is its field in the spec)."""
    found = matching(name, rows)
    if not found:
        return None
    units = {r["unit"] for r in found}
    if headline(name) is None and len(found) > 1 or len(units) > 1:
        keys = ", ".join(sorted(f"{r['suite']}/{r['task']}/{r['metric']}" for r in found)[:8])
        raise UsageError(f"{fld}: {name!r} matches {len(found)} metrics of path {path!r} ({keys}): name one as "
                         f"suite/task/metric")
    return combine(found)


def check_metrics(spec: ExperimentSpec) -> None:
    """Plan-time checks of the metric names: a headline, or a name with its suite, must come from a suite the spec
    runs (other names are checked against what the suites store, at the first trial)."""
    search = spec.search
    assert search is not None
    suites = {s.name for s in spec.suites}
    if not suites:
        raise SpecError("a search needs `suites:` to measure its objective", file=spec.file, field="suites")
    named = [("search.objective.metric", search.objective.metric)] + [
        (f"search.constraints[{i}].metric", c.metric) for i, c in enumerate(search.constraints)]
    for fld, name in named:
        head = headline(name)
        suite = head.suite if head is not None else (name.split("/")[0] if name.count("/") == 2 else None)
        if suite is not None and suite not in suites:
            what = f"the headline {name!r} comes from" if head is not None else f"{name!r} names"
            raise SpecError(f"{what} the {suite} suite, which the spec does not run (suites: {', '.join(sorted(suites))})",
                            file=spec.file, field=fld)


def node_metrics(db: Path, run_keys: list[str]) -> list[dict[str, Any]]:
    """The metrics of the given suite runs (those stored ``ok``) from the results database."""
    from results.store import connect

    if not run_keys:
        return []
    marks = ", ".join("?" for _ in run_keys)
    with connect(db, read_only=True) as con:
        cur = con.execute(f"SELECT m.suite, m.task, m.metric, m.value, m.stderr, m.n, m.unit, m.method FROM metrics m "
                          f"JOIN suite_runs sr ON sr.run_key = m.run_key WHERE sr.status = 'ok' AND m.value IS NOT NULL "
                          f"AND m.run_key IN ({marks})", run_keys)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# -- the study --------------------------------------------------------------------------------------------------------
def study_key(spec: ExperimentSpec) -> str:
    """The study's identity: the spec without ``search.trials`` (raising the budget continues the same study)."""
    raw = dict(spec.raw)
    raw["search"] = {k: v for k, v in dict(raw.get("search") or {}).items() if k != "trials"}
    return content_hash(raw)[:12]


def storage_path(spec: ExperimentSpec, workspace: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name).strip("-")[:60] or "search"
    return Path(workspace) / "search" / f"{slug}-{study_key(spec)}.db"


def quiet_optuna() -> None:
    """Optuna's own INFO lines and experimental-feature warnings stay off the console."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_sampler(search: SearchSpec, seed: int) -> Any:
    """Optuna's sampler for ``search.sampler`` (TPE multivariate: it models how stages combine)."""
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        return optuna.samplers.GridSampler({s.name: list(s.choices) for s in search.stages}, seed=seed)
    # TPE reads each finished trial's constraints (Trial.set_constraint; optuna 5 deprecates constraints_func)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials, multivariate=True)


def make_pruner(search: SearchSpec) -> Any:
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials)
    return optuna.pruners.NopPruner()


def open_study(spec: ExperimentSpec, workspace: Path) -> tuple[Any, Path]:
    """The study of ``spec`` in the workspace, created or loaded; its sampler is seeded with the search seed plus
    the trials already stored (a resumed random sampler does not replay the first trials)."""
    import optuna

    search = spec.search
    assert search is not None
    quiet_optuna()
    path = storage_path(spec, workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    name = study_key(spec)
    direction = optuna.study.StudyDirection.MAXIMIZE if search.objective.direction == "maximize" else (
        optuna.study.StudyDirection.MINIMIZE)
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                pruner=make_pruner(search))
    study.sampler = make_sampler(search, search.seed + len(study.trials))
    return study, path


def describe(spec: ExperimentSpec, plan: Plan) -> list[str]:
    """What ``slm plan`` prints for a search: the space, the budget, the sampler and pruner, objective and bounds."""
    search = spec.search
    assert search is not None
    dims = " x ".join(f"{s.name} ({len(s.choices)})" for s in search.stages)
    sampler = search.sampler + (f" (random for the first {search.startup_trials} trials)" if search.sampler == "tpe"
                                else "")
    pruner = (f"median (Optuna MedianPruner over intermediate nodes, after {search.startup_trials} trials)"
              if search.pruner else "none")
    return [
        f"search: {search.space_size} combinations ({dims}), {len(plan.paths)} of them grid paths that plan; "
        f"budget {search.trials} trials (distinct paths)",
        f"  objective: {search.objective.direction} {search.objective.metric}",
        *(f"  constraint: {c.label()}" for c in search.constraints),
        f"  sampler: {sampler}, seed {search.seed}; pruner: {pruner}",
    ]


# -- the search ---------------------------------------------------------------------------------------------------------
class Search:
    """One ``slm run`` of a search spec: a run session of the runner, the study, and the trial loop."""

    def __init__(self, runner: Any, echo: Callable[[str], None] = print):
        self.runner, self.echo = runner, echo
        self.spec: ExperimentSpec = runner.spec
        assert self.spec.search is not None
        self.search: SearchSpec = self.spec.search

    def run(self) -> SearchSummary:
        check_metrics(self.spec)
        with self.runner.session() as session:
            self.session = session
            self.space = SearchSpace(self.search, session.plan)
            study, path = open_study(self.spec, self.runner.workspace)
            out = SearchSummary(session.summary, path, study.study_name, self.search.sampler, self.search.space_size,
                                len(session.plan.paths), self.search.trials)
            self._resume(study, out)
            self._loop(study, out)
            out.best = best_feasible(out.trials, self.search.objective.direction)
        return out

    def _resume(self, study: Any, out: SearchSummary) -> None:
        """Trials left running by an interrupted search are failed (their path runs again, from the cache); the
        stored trials' paths are recorded in this run too."""
        from optuna.trial import TrialState

        from harness.runner import _path_record

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
        for t in study.get_trials(deepcopy=False):
            record = _record(t)
            if record is None:
                continue
            out.trials.append(record)
            planned = self.space.plan.paths
            for p in planned:
                if p.path_id == record.path_id and record.repeat_of is None:
                    self.session.store.record_path(self.session.summary.run_id, _path_record(p))
        if out.trials:
            self.echo(f"search: resuming study {study.study_name} with {out.paths_run} paths already run "
                      f"({len(out.trials)} trials)")

    def _loop(self, study: Any, out: SearchSummary) -> None:
        ran = {t.path_id: t for t in out.trials if t.repeat_of is None and t.path_id}
        idle = 0
        while len(ran) < min(self.search.trials, len(self.space.plan.paths)):
            if idle >= MAX_IDLE_ASKS:
                out.stopped = (f"the sampler proposed only paths already run or off the grid ({MAX_IDLE_ASKS} times "
                               f"in a row): "
                               f"stopped at {len(ran)} of {self.search.trials} trials")
                self.echo(f"search: {out.stopped}")
                return
            record = self.trial(study, ran)
            if record is None:
                idle += 1
                continue
            out.trials.append(record)
            if record.repeat_of is None:
                ran[record.path_id] = record
                idle = 0
            else:
                idle += 1
            self.echo(_trial_line(record, self.search))

    def trial(self, study: Any, ran: dict[str, TrialRecord]) -> TrialRecord | None:
        """One ask -> path -> measure -> tell. None for a combination that is not a grid path (told as failed)."""
        from optuna.trial import TrialState

        trial = study.ask()
        combination = self.space.suggest(trial)
        path = self.space.path_of(combination)
        if isinstance(path, str):
            trial.set_user_attr("not_in_grid", path)
            study.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr("path", path.name)
        trial.set_user_attr("path_id", path.path_id)
        earlier = ran.get(path.path_id)
        if earlier is not None:
            trial.set_user_attr("repeat_of", earlier.number)
            return self._tell_repeat(study, trial, earlier)
        try:
            measured = self.measure(trial, path)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        return self._tell(study, trial, path, measured)

    def _tell_repeat(self, study: Any, trial: Any, earlier: TrialRecord) -> TrialRecord:
        from optuna.trial import TrialState

        stored = study.trials[earlier.number]
        for key in ("objective", "constraint_values", "feasible", "error"):
            if key in stored.user_attrs:
                trial.set_user_attr(key, stored.user_attrs[key])
        for key, value in stored.constraints.items():
            trial.set_constraint(key, value)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(earlier.state, TrialState.FAIL)
        study.tell(trial, earlier.objective if state == TrialState.COMPLETE else None, state=state)
        record = _record(study.trials[trial.number])
        assert record is not None
        return record

    def _tell(self, study: Any, trial: Any, path: PlannedPath, measured: Measured) -> TrialRecord:
        from optuna.trial import TrialState

        n = len(self.search.constraints)
        if measured.error:
            trial.set_user_attr("error", measured.error[:500])
        if measured.objective is not None:
            trial.set_user_attr("objective", measured.objective.__dict__)
        values = [c.value if c is not None else None for c in measured.constraints]
        trial.set_user_attr("constraint_values", values)
        complete = measured.state == "complete" and measured.objective is not None and len(values) == n
        violations = [c.violation(v) for c, v in zip(self.search.constraints, values, strict=True)
                      if v is not None] if complete else []
        trial.set_user_attr("feasible", complete and all(v <= 0 for v in violations))
        if complete and measured.objective is not None:
            for i, (c, v) in enumerate(zip(self.search.constraints, violations, strict=True)):
                trial.set_constraint(f"{i}: {c.label()}", v)  # Optuna's convention: <= 0 holds
            study.tell(trial, measured.objective.value)
        elif measured.state == "pruned":
            trial.set_user_attr("pruned_at", measured.pruned_at)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
        record = _record(study.trials[trial.number])
        assert record is not None
        return record

    # -- measuring one path ----------------------------------------------------------------------------------------
    def measure(self, trial: Any, path: PlannedPath) -> Measured:
        """Execute ``path`` in this run and read its objective and constraints; with a pruner, stage by stage,
        reporting each intermediate node's objective (step = the grid stage that made the node)."""
        if self.search.pruner is not None:
            for upto, step in self._intermediate(trial, path):
                failed = self._execute(path, upto)
                if failed:
                    return Measured("failed", error=failed)
                value = self._value(self.search.objective.metric, "search.objective.metric", path, path.chain[upto])
                if value is None:
                    continue
                trial.report(value.value, step)
                if trial.should_prune():
                    return Measured("pruned", pruned_at=self.space.plan.nodes[path.chain[upto]].label)
        failed = self._execute(path, None)
        if failed:
            return Measured("failed", error=failed)
        leaf = path.leaf
        objective = self._value(self.search.objective.metric, "search.objective.metric", path, leaf)
        constraints = tuple(self._value(c.metric, f"search.constraints[{i}].metric", path, leaf)
                            for i, c in enumerate(self.search.constraints))
        if objective is None or any(c is None for c in constraints):
            problem = self._missing(path, objective, constraints)
            return Measured("failed", objective, constraints, error=problem)
        return Measured("complete", objective, constraints)

    def _intermediate(self, trial: Any, path: PlannedPath) -> list[tuple[int, int]]:
        """(chain index, grid stage index) of the path's intermediate model nodes: each stage not ``none`` in the
        trial's combination added one node, in stage order."""
        stages = [k for k, s in enumerate(self.search.stages) if trial.params.get(s.name, "none") != "none"]
        return [(i, stages[i - 1]) for i in range(1, len(path.chain) - 1) if i - 1 < len(stages)]

    def _execute(self, path: PlannedPath, upto: int | None) -> str | None:
        """Run the path (up to chain node ``upto``) in this run; the first failure of a node or suite run, or None."""
        part = self.space.part(path, upto)
        self.runner.execute(self.session, part)
        attempted = self.session.attempted
        for h in part.nodes:
            if attempted.get(h) not in (None, "ok", "cached"):
                node = part.nodes[h]
                return f"step {node.label} {attempted[h]}"
        for r in part.suite_runs:
            if attempted.get(r.run_key) not in (None, "ok"):
                return f"suite {r.suite.name} on {part.nodes[r.node].label}: {attempted[r.run_key]}"
        return None

    def _value(self, name: str, fld: str, path: PlannedPath, node: str) -> Value | None:
        keys = [r.run_key for r in self.space.plan.suite_runs if r.node == node]
        return read_value(name, fld, node_metrics(self.session.summary.db_path, keys), path.name)

    def _missing(self, path: PlannedPath, objective: Value | None, constraints: tuple[Value | None, ...]) -> str:
        """A metric a completed path did not store: a usage error (the name matches nothing the suites measure)."""
        fields = [("search.objective.metric", self.search.objective.metric, objective)] + [
            (f"search.constraints[{i}].metric", c.metric, v)
            for i, (c, v) in enumerate(zip(self.search.constraints, constraints, strict=True))]
        fld, name, _ = next(f for f in fields if f[2] is None)
        keys = [r.run_key for r in self.space.plan.suite_runs if r.node == path.leaf]
        stored = sorted({f"{r['suite']}/{r['task']}/{r['metric']}"
                         for r in node_metrics(self.session.summary.db_path, keys)})
        from results.views import HEADLINES

        raise UsageError(f"{self.spec.file}: {fld}: {name!r} matches no metric the suites stored for path "
                         f"{path.name!r} (stored: {', '.join(stored[:12]) or 'none'}"
                         f"{', ...' if len(stored) > 12 else ''}; or a headline: "
                         f"{', '.join(h.name for h in HEADLINES)})")


def _record(t: Any) -> TrialRecord | None:
    """A stored Optuna trial as a :class:`TrialRecord` (None for a combination off the grid, a running trial, or one
    an interruption failed before its result was told: every told trial has the ``feasible`` attribute)."""
    from optuna.trial import TrialState

    attrs = t.user_attrs
    if "path_id" not in attrs or t.state == TrialState.RUNNING or "feasible" not in attrs:
        return None  # off the grid, running, or interrupted before it was told (its path may be asked again)
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")
    stored = attrs.get("objective") if state != "pruned" else None
    return TrialRecord(t.number, attrs["path"], attrs["path_id"], state, stored["value"] if stored else None,
                       tuple(attrs.get("constraint_values") or ()), bool(attrs.get("feasible")),
                       attrs.get("repeat_of"), attrs.get("error"), Value(**stored).text() if stored else None)


def best_feasible(trials: list[TrialRecord], direction: str) -> TrialRecord | None:
    """The best completed trial whose constraints all hold (the first of equals), or None."""
    ok = [t for t in trials if t.state == "complete" and t.feasible and t.objective is not None]
    if not ok:
        return None
    sign = 1 if direction == "maximize" else -1
    return max(ok, key=lambda t: (sign * (t.objective or 0.0), -t.number))


def _trial_line(t: TrialRecord, search: SearchSpec) -> str:
    goal: Goal = search.objective
    if t.state == "complete":
        result = f"{goal.metric} = {t.objective:.4g}"
    elif t.state == "pruned":
        result = "pruned"
    else:
        result = f"failed: {(t.error or '').splitlines()[0][:200] if t.error else 'no result'}"
    bounds = "; ".join(_bound_text(c, v) for c, v in zip(search.constraints, t.constraint_values, strict=False))
    repeat = f" (repeat of trial {t.repeat_of}: stored result)" if t.repeat_of is not None else ""
    feasible = "" if t.state != "complete" or not search.constraints else (" feasible" if t.feasible else " INFEASIBLE")
    return f"trial {t.number}: {t.path}{repeat}: {result}" + (f"; {bounds}" if bounds else "") + feasible


def _bound_text(c: Constraint, v: float | None) -> str:
    if v is None:
        return f"{c.metric} not measured"
    holds = "ok" if c.violation(v) <= 0 else "violated"
    return f"{c.metric} = {v:.4g} ({c.op} {c.bound:g}: {holds})"


def summary_lines(out: SearchSummary, search: SearchSpec) -> list[str]:
    """The end of ``slm run`` on a search: the study in numbers and the best feasible path."""
    counts = {s: sum(1 for t in out.trials if t.state == s and t.repeat_of is None) for s in STATES}
    repeats = sum(1 for t in out.trials if t.repeat_of is not None)
    lines = [f"search: {out.paths_run} paths run of {out.grid_paths} grid paths ({out.space_size} combinations), "
             f"budget {out.budget}; {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed, "
             f"{repeats} repeats answered from stored results; sampler {out.sampler}",
             f"study: {out.study_name} in {out.storage} (running the same spec again continues it)"]
    if out.best is None:
        lines.append("best feasible path: none (no completed trial holds every constraint)")
    else:
        b = out.best
        bounds = "; ".join(_bound_text(c, v) for c, v in zip(search.constraints, b.constraint_values, strict=False))
        lines.append(f"best feasible path: {b.path} (trial {b.number}, path {b.path_id[:12]}): {search.objective.metric} "
                     f"= {b.detail} ({search.objective.direction})" + (f"; {bounds}" if bounds else ""))
    return lines
