"""Effects of a grid and order effects: what each technique does to a headline metric, and what two do together.

A run whose paths form a factorial grid over *stages* (the spec's ``grid:``: each stage has alternatives,
``none`` among them) gets, per headline metric, a regression with main effects and all pairwise interactions
(statsmodels' formula API, Treatment coding with ``none`` as the reference):

* metrics with per-item outcomes (quality, trust): OLS over items x cells on the items every cell scored,
  tasks weighted equally (weights 1/n of the task, so the estimand is the headline's mean over tasks), with
  cluster-robust standard errors by item (the item is the blocking factor; it is balanced over the cells, so
  it is orthogonal to the terms, and clustering absorbs its correlation across cells);
* metrics with only value ± stderr per cell (latency, memory, energy): weighted least squares over the cells
  with weights 1/stderr² when the design leaves residual degrees of freedom, else the estimates without an
  interval ("no replicates").

Missing cells (a failed path, a combination the spec excluded or the planner dropped) are listed; the fit
uses the present cells, and a term the present cells cannot identify (rank-deficient) is reported as not
estimable instead of as a number. Paths that apply the same steps in another order (A>B vs B>A) are compared
pairwise with the test ``slm compare`` uses (:mod:`results.compare`).

The data functions here return plain dicts (JSON-ready); the text rendering lives in
:mod:`results.analyze_commands`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from adapters.errors import UsageError
from results.compare import PAIRED_SUITES, PathData, compare_metric, load_path_data
from results.queries import rows
from results.store import connect
from results.views import HEADLINES, Headline

NONE = "none"
Key = tuple[str, str, str]


# -- the design: stages, levels, cells -----------------------------------------------------------------------------
@dataclass
class Design:
    """The factorial design of one (base, hardware profile) group of a run's paths.

    Attributes:
        base, hardware_profile: the group.
        stages: stage name -> its levels, the reference level first.
        cells: path_id -> {stage: level} for every path in the grid.
        names: path_id -> path name.
        excluded: paths of the group left out of the grid, with the reason.
        exclude_rules: the spec's ``exclude:`` rules (stage -> technique or ``none``).
    """

    base: str
    hardware_profile: str
    stages: dict[str, list[str]]
    cells: dict[str, dict[str, str]]
    names: dict[str, str]
    excluded: list[dict[str, str]] = field(default_factory=list)
    exclude_rules: list[dict[str, str]] = field(default_factory=list)


def _family(technique: str) -> str:
    return technique.split(".")[0]


def _spec_stages(spec: Any) -> list[tuple[str, set[str]]] | None:
    """The spec's grid as [(stage, techniques of its alternatives, ``none`` included)], or None."""
    grid = spec.get("grid") if isinstance(spec, dict) else None
    if not isinstance(grid, dict) or not grid:
        return None
    out = []
    for stage, alts in grid.items():
        names = set()
        for alt in alts if isinstance(alts, list) else []:
            if alt is None or alt == NONE:
                names.add(NONE)
            elif isinstance(alt, str):
                names.add(alt)
            elif isinstance(alt, dict) and len(alt) == 1:
                names.add(str(next(iter(alt))))
        out.append((str(stage), names))
    return out


def _fallback_stages(paths: list[dict[str, Any]]) -> list[tuple[str, set[str]]]:
    """Stages from the techniques' families (prune, peft, quant, ...), ordered by their mean position in the paths."""
    positions: dict[str, list[float]] = {}
    techniques: dict[str, set[str]] = {}
    for p in paths:
        steps = p["steps"]
        for i, s in enumerate(steps):
            fam = _family(s["technique"])
            positions.setdefault(fam, []).append(i / max(len(steps) - 1, 1))
            techniques.setdefault(fam, set()).add(s["technique"])
    order = sorted(positions, key=lambda f: (sum(positions[f]) / len(positions[f]), f))
    return [(fam, techniques[fam] | {NONE}) for fam in order]


def _assign(steps: list[dict[str, Any]], stages: list[tuple[str, set[str]]]) -> dict[str, int | None] | None:
    """Each stage -> the index of the path's step that fills it (None: ``none``), steps in stage order; None when
    the steps do not fit the stages (another order, a technique outside the grid, a stage without ``none``)."""
    out: dict[str, int | None] = {}
    i = 0
    for stage, names in stages:
        if i < len(steps) and steps[i]["technique"] in names:
            out[stage] = i
            i += 1
        elif NONE in names:
            out[stage] = None
        else:
            return None
    return out if i == len(steps) else None


def _canon(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _labels(assigned: dict[str, dict[str, int | None]], steps: dict[str, list[dict[str, Any]]],
            stage: str) -> dict[str, str]:
    """path_id -> the stage's level: the technique, with the parameters that vary between the run's steps of that
    technique in this stage (a sweep) written out."""
    chosen = {pid: steps[pid][idx] for pid, a in assigned.items() if (idx := a[stage]) is not None}
    by_tech: dict[str, list[dict[str, Any]]] = {}
    for s in chosen.values():
        by_tech.setdefault(s["technique"], []).append(s.get("params") or {})
    varying = {t: sorted({k for p in ps for k in p if len({_canon(q.get(k)) for q in ps}) > 1})
               for t, ps in by_tech.items()}
    out = {}
    for pid in assigned:
        step = chosen.get(pid)
        if step is None:
            out[pid] = NONE
            continue
        keys = varying[step["technique"]]
        params = step.get("params") or {}
        out[pid] = step["technique"] + (f"({','.join(f'{k}={params.get(k)}' for k in keys)})" if keys else "")
    return out


def recover_designs(spec: Any, paths: list[dict[str, Any]], spec_text: str | None = None) -> tuple[str, list[Design]]:
    """The grid designs of a run's paths (one per base and hardware profile) and where the stages came from.

    Stages and their techniques come from the spec's ``grid:``: its YAML text keeps the stages' order; the stored
    JSON has its keys sorted, so without the text the stages are ordered by where their techniques stand in the
    paths. Without a grid, stages are the techniques' families (each with ``none`` as a level). A path whose steps
    do not fit the stages is excluded, named.
    """
    stages = _spec_stages(_spec_from_text(spec_text))
    if not stages:
        stages = _spec_stages(spec)
        if stages:
            where = _positions(paths)
            stages.sort(key=lambda st: min((where[t] for t in st[1] if t in where), default=-1.0))
    source = "spec grid" if stages else "technique families"
    if not stages:
        stages = _fallback_stages(paths)
    written = spec.get("exclude") if isinstance(spec, dict) else None
    rules = [{str(k): str(v) for k, v in r.items()} for r in written or [] if isinstance(r, dict)]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in paths:
        groups.setdefault((p["base"], p["hardware_profile"]), []).append(p)
    designs = []
    for (base, hw), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        designs.append(_design(base, hw, members, stages, rules))
    return source, designs


def _positions(paths: list[dict[str, Any]]) -> dict[str, float]:
    """Technique -> its mean relative position (0 first, 1 last) in the paths' steps."""
    seen: dict[str, list[float]] = {}
    for p in paths:
        for i, step in enumerate(p["steps"]):
            seen.setdefault(step["technique"], []).append(i / max(len(p["steps"]) - 1, 1))
    return {t: sum(v) / len(v) for t, v in seen.items()}


def _spec_from_text(text: str | None) -> Any:
    """The spec's YAML (which keeps the grid's stage order), or None when absent or unreadable."""
    if not text:
        return None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _design(base: str, hw: str, members: list[dict[str, Any]], stages: list[tuple[str, set[str]]],
            rules: list[dict[str, str]]) -> Design:
    assigned: dict[str, dict[str, int | None]] = {}
    steps = {p["path_id"]: p["steps"] for p in members}
    names = {p["path_id"]: p["name"] for p in members}
    excluded = []
    for p in members:
        a = _assign(p["steps"], stages)
        if a is None:
            excluded.append({"path": p["name"], "reason": "its steps do not fit the grid's stages in order"})
        else:
            assigned[p["path_id"]] = a
    labels = {stage: _labels(assigned, steps, stage) for stage, _ in stages}
    cells = {pid: {stage: labels[stage][pid] for stage, _ in stages} for pid in assigned}
    seen: dict[tuple[str, ...], str] = {}
    for pid in sorted(cells, key=lambda q: names[q]):
        key = tuple(cells[pid].values())
        if key in seen:
            excluded.append({"path": names[pid], "reason": f"the same cell as {names[seen[key]]}"})
            del cells[pid]
        else:
            seen[key] = pid
    levels: dict[str, list[str]] = {}
    for stage, _ in stages:
        present = sorted({c[stage] for c in cells.values()})
        if NONE in present:
            present = [NONE] + [v for v in present if v != NONE]
        levels[stage] = present
    return Design(base, hw, levels, cells, {pid: names[pid] for pid in cells}, excluded, rules)


# -- per-cell data of a headline metric ---------------------------------------------------------------------------
def _like(pattern: str, text: str) -> bool:
    """SQL LIKE (``%`` and ``_``) as the views use it."""
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, flags=re.DOTALL) is not None


def headline_keys(h: Headline, data: PathData) -> list[Key]:
    """The metrics of a path that make up headline ``h`` (the leaderboard view averages them)."""
    return sorted(k for k in data.metrics if k[0] == h.suite and _like(h.task, k[1])
                  and any(_like(m, k[2]) for m in h.metrics) and data.metrics[k]["value"] is not None)


def item_outcomes(key: Key, data: PathData) -> dict[str, float]:
    """Per-item outcomes of one metric (the rules of :mod:`results.compare`: this metric's own outcomes, else the
    task's ``correct`` flag for an accuracy, else the task's per-item score when the task has one metric)."""
    suite, task, metric = key
    if suite not in PAIRED_SUITES:
        return {}
    own, task_key = (suite, f"{task}#{metric}"), (suite, task)
    if own in data.correct:
        return {k: float(v) for k, v in data.correct[own].items()}
    if own in data.scores:
        return dict(data.scores[own])
    accuracy = metric == "acc" or metric.startswith("exact_match") or metric in ("mc1", "correct")
    if accuracy and task_key in data.correct:
        return {k: float(v) for k, v in data.correct[task_key].items()}
    if len(data.metrics_for_task(suite, task)) == 1 and task_key in data.scores:
        return dict(data.scores[task_key])
    return {}


# -- fitting -------------------------------------------------------------------------------------------------------
_COL = re.compile(r"C\(s(\d+), Treatment\(reference='L0'\)\)\[T\.L(\d+)\]")


def _formula(n_stages: int) -> str:
    terms = " + ".join(f"C(s{i}, Treatment(reference='L0'))" for i in range(n_stages))
    return f"y ~ ({terms})**2" if n_stages > 1 else f"y ~ {terms}"


def _term_of(column: str, stages: list[str], levels: dict[str, list[str]]) -> dict[str, str]:
    """A design column (``C(s0, ...)[T.L1]:C(s1, ...)[T.L1]``) -> {stage: level}."""
    out = {}
    for part in column.split(":"):
        m = _COL.fullmatch(part)
        if m:
            stage = stages[int(m.group(1))]
            out[stage] = levels[stage][int(m.group(2))]
    return out


def _estimable(x: np.ndarray) -> list[int]:
    """The columns of ``x`` that are linearly independent of the columns before them (the rank is that of the
    distinct rows: the cells)."""
    cells = np.unique(x, axis=0)
    keep: list[int] = []
    for j in range(x.shape[1]):
        if np.linalg.matrix_rank(cells[:, keep + [j]]) > len(keep):
            keep.append(j)
    return keep


def _frame(design: Design, stages: list[str], records: list[dict[str, Any]]) -> Any:
    """A pandas frame of the records with each stage coded L0 (reference), L1, ... as a categorical."""
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for i, stage in enumerate(stages):
        codes = [f"L{j}" for j in range(len(design.stages[stage]))]
        df[f"s{i}"] = pd.Categorical(df[stage].map(lambda v, s=stage: f"L{design.stages[s].index(v)}"),
                                     categories=codes)
    return df


def _fit(design: Design, stages: list[str], df: Any, weights: np.ndarray | None,
         groups: np.ndarray | None) -> dict[str, Any]:
    """Fit y on the stages' main effects and pairwise interactions; terms, intervals and the per-term tests."""
    with warnings.catch_warnings():  # statsmodels' numerical warnings (e.g. no residual df) are stated, not shown
        warnings.simplefilter("ignore")
        return _fit_quietly(design, stages, df, weights, groups)


def _fit_quietly(design: Design, stages: list[str], df: Any, weights: np.ndarray | None,
                 groups: np.ndarray | None) -> dict[str, Any]:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    model = smf.wls(_formula(len(stages)), data=df, weights=weights if weights is not None else 1.0)
    names = list(model.exog_names)
    keep = _estimable(np.asarray(model.exog))
    exog = np.asarray(model.exog)[:, keep]
    reduced = sm.WLS(model.endog, exog, weights=weights if weights is not None else 1.0)
    df_resid = exog.shape[0] - exog.shape[1]
    if groups is not None:
        res = reduced.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    else:
        res = reduced.fit()
    with_interval = groups is not None or df_resid > 0
    terms = [_term_entry(name, j, keep, res, with_interval, stages, design) for j, name in enumerate(names)]
    tests = _term_tests(res, [names[j] for j in keep], stages, design) if with_interval else []
    if with_interval and len(keep) == len(names) and groups is None:
        tests = _anova(model) or tests
    return {"terms": terms, "tests": tests, "df_resid": int(df_resid), "with_interval": with_interval,
            "n_clusters": int(len(np.unique(groups))) if groups is not None else None}


def _term_entry(name: str, j: int, keep: list[int], res: Any, with_interval: bool, stages: list[str],
                design: Design) -> dict[str, Any]:
    """One design column as a term: estimate, stderr, 95% CI and p, or not estimable."""
    term = _term_of(name, stages, design.stages)
    entry: dict[str, Any] = {"term": _term_label(term), "levels": term, "order": len(term)}
    if j not in keep:
        entry.update(estimate=None, stderr=None, ci_low=None, ci_high=None, p_value=None, estimable=False,
                     note="not estimable: the present cells cannot separate it from the other terms")
        return entry
    k = keep.index(j)
    entry.update(estimate=float(np.asarray(res.params)[k]), estimable=True, note="", stderr=None, ci_low=None,
                 ci_high=None, p_value=None)
    if with_interval:
        ci = np.asarray(res.conf_int(0.05))
        entry.update(stderr=float(np.asarray(res.bse)[k]), ci_low=float(ci[k, 0]), ci_high=float(ci[k, 1]),
                     p_value=float(np.asarray(res.pvalues)[k]))
    return entry


def _term_label(term: dict[str, str]) -> str:
    return " × ".join(f"{s}={v}" for s, v in term.items()) if term else "intercept (all stages at reference)"


def _term_tests(res: Any, kept: list[str], stages: list[str], design: Design) -> list[dict[str, Any]]:
    """A joint Wald test per term (all its columns at once) with the fit's covariance (cluster-robust by item)."""
    from scipy import stats as sps

    by_term: dict[str, list[int]] = {}
    for k, name in enumerate(kept):
        levels = _term_of(name, stages, design.stages)
        if levels:
            by_term.setdefault(" × ".join(levels), []).append(k)
    out = []
    cov = np.asarray(res.cov_params())
    params = np.asarray(res.params)
    for term, cols in by_term.items():
        b, v = params[cols], cov[np.ix_(cols, cols)]
        try:
            chi2 = float(b @ np.linalg.solve(v, b))
        except np.linalg.LinAlgError:
            continue
        out.append({"term": term, "df": len(cols), "statistic": chi2, "p_value": float(sps.chi2.sf(chi2, len(cols))),
                    "test": "Wald chi2 (cluster-robust)"})
    return out


def _anova(model: Any) -> list[dict[str, Any]]:
    """Type II ANOVA of the formula model (a full-rank design over the cells)."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sm.stats.anova_lm(model.fit(), typ=2)
    out = []
    for term, row in table.iterrows():
        if term == "Residual" or math.isnan(row["F"]):
            continue
        out.append({"term": str(term), "df": int(row["df"]), "statistic": float(row["F"]),
                    "p_value": float(row["PR(>F)"]), "test": "ANOVA Type II F"})
    return out


# -- one metric over one design ------------------------------------------------------------------------------------
def _metric_effects(design: Design, h: Headline, data: dict[str, PathData]) -> dict[str, Any] | None:
    """The fit of one headline metric over a design's cells, or None when no cell has it."""
    keys_by_cell = {pid: headline_keys(h, data[pid]) for pid in design.cells}
    present = [pid for pid, keys in keys_by_cell.items() if keys]
    if not present:
        return None
    common = sorted(set.intersection(*(set(keys_by_cell[pid]) for pid in present)))
    notes = []
    dropped_keys = sorted(set().union(*(set(keys_by_cell[pid]) for pid in present)) - set(common))
    if dropped_keys:
        notes.append(f"metrics not measured on every cell, left out: {', '.join('/'.join(k) for k in dropped_keys)}")
    if not common:
        return None
    stages = [s for s in design.stages if len({design.cells[pid][s] for pid in present}) > 1]
    constant = [s for s in design.stages if s not in stages]
    if constant:
        notes.append(f"stages with one level in the measured cells, not in the model: {', '.join(constant)}")
    first = data[present[0]].metrics[common[0]]
    out: dict[str, Any] = {"metric": h.name, "label": h.label, "unit": first["unit"] or h.unit,
                           "higher_is_better": bool(first["higher_is_better"]), "keys": ["/".join(k) for k in common],
                           "n_cells": len(present), "missing_cells": _missing(design, present, h.name),
                           "notes": notes}
    if not stages:
        out.update(method="none", terms=[], tests=[], n_obs=len(present))
        notes.append("no stage varies across the measured cells: nothing to estimate")
        return out
    fitted = _item_fit(design, stages, present, common, data) or _value_fit(design, stages, present, common, data)
    for t in fitted["tests"]:
        t["term"] = _rename_test_term(t["term"], stages)
    out.update(fitted)
    return out


def _rename_test_term(term: str, stages: list[str]) -> str:
    for i, stage in enumerate(stages):
        term = term.replace(f"C(s{i}, Treatment(reference='L0'))", stage)
    return term.replace(":", " × ")


def _item_fit(design: Design, stages: list[str], present: list[str], keys: list[Key],
              data: dict[str, PathData]) -> dict[str, Any] | None:
    """Per-item fit (quality, trust): items every cell scored, each metric (task) weighted equally."""
    outcomes = {(pid, k): item_outcomes(k, data[pid]) for pid in present for k in keys}
    if any(not v for v in outcomes.values()):
        return None
    records, weights, groups = [], [], []
    n_items = 0
    for k in keys:
        items = sorted(set.intersection(*(set(outcomes[(pid, k)]) for pid in present)))
        if not items:
            return None
        n_items += len(items)
        for pid in present:
            for item in items:
                records.append({"y": outcomes[(pid, k)][item], **design.cells[pid]})
                weights.append(1.0 / len(items))
                groups.append(f"{'/'.join(k)}/{item}")
    df = _frame(design, stages, records)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    fit = _fit(design, stages, df, np.asarray(weights) / max(weights) if len(keys) > 1 else None, codes)
    fit.update(method=f"OLS on per-item outcomes ({n_items} items x {len(present)} cells"
                      f"{', tasks weighted equally' if len(keys) > 1 else ''}), cluster-robust SE by item",
               n_obs=len(records), n_items=n_items)
    return fit


def _value_fit(design: Design, stages: list[str], present: list[str], keys: list[Key],
               data: dict[str, PathData]) -> dict[str, Any]:
    """Per-cell values (latency, memory, energy): WLS with weights 1/stderr² where every cell has one."""
    records, ses = [], []
    for pid in present:
        ms = [data[pid].metrics[k] for k in keys]
        value = sum(m["value"] for m in ms) / len(ms)
        se_list = [m["stderr"] for m in ms]
        se = math.sqrt(sum(s * s for s in se_list)) / len(ms) if all(s is not None for s in se_list) else None
        records.append({"y": value, **design.cells[pid]})
        ses.append(se)
    weighted = all(s is not None and s > 0 for s in ses)
    weights = np.asarray([1.0 / s**2 for s in ses]) if weighted else None  # type: ignore[operator]
    df = _frame(design, stages, records)
    fit = _fit(design, stages, df, weights, None)
    how = "WLS on cell values, weights 1/stderr²" if weighted else "OLS on cell values (a cell has no stderr)"
    if fit["df_resid"] > 0:
        how += f", residual df {fit['df_resid']}"
    else:
        how += ": no replicates: effect estimates without interval"
    fit.update(method=how, n_obs=len(records))
    return fit


def _missing(design: Design, present: list[str], metric: str) -> list[dict[str, Any]]:
    """The cells of the full factorial with no measurement of ``metric``, and why."""
    have = {tuple(design.cells[pid].values()): pid for pid in present}
    paths = {tuple(c.values()): pid for pid, c in design.cells.items()}
    stages = list(design.stages)
    out = []
    for combo in itertools.product(*design.stages.values()):
        if combo in have:
            continue
        levels = dict(zip(stages, combo, strict=True))
        if combo in paths:
            reason = f"path {design.names[paths[combo]]!r} has no {metric} (its step or suite failed)"
        elif any(all(_level_is(levels.get(k), v) for k, v in r.items()) for r in design.exclude_rules):
            reason = "excluded by the spec's exclude: rules"
        else:
            reason = "no path in the run (the planner dropped it, or it was never planned)"
        out.append({"levels": levels, "reason": reason})
    return out


def _level_is(level: str | None, technique: str) -> bool:
    return level is not None and (level == technique or level.split("(")[0] == technique)


# -- the public data functions -------------------------------------------------------------------------------------
def resolve_run(con: duckdb.DuckDBPyConnection, run: str | None) -> str:
    """A run id by id or unique prefix; None: the latest run that recorded paths."""
    if run is None:
        row = con.execute("SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM run_paths rp WHERE "
                          "rp.run_id = r.run_id) ORDER BY r.started_at DESC LIMIT 1").fetchone()
        if not row:
            raise UsageError("no run with paths in this database yet (run `slm run` first)")
        return str(row[0])
    found = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE run_id = ? OR starts_with(run_id, ?)",
                                       [run, run]).fetchall()]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise UsageError(f"--run {run!r}: no such run (see `slm results --sql \"SELECT run_id FROM runs\"`)")
    raise UsageError(f"--run {run!r} matches {len(found)} runs: {', '.join(found[:5])}; give more of the id")


def select_headlines(metrics: Sequence[str] | None) -> list[Headline]:
    """Headlines by name (all of them when none are named); ``suite/task/metric`` names one metric (e.g.
    ``quality/wikitext/word_perplexity``), its unit and direction then come from the data."""
    if not metrics:
        return list(HEADLINES)
    known = {h.name: h for h in HEADLINES}
    out = []
    for m in metrics:
        parts = m.split("/")
        if m in known:
            out.append(known[m])
        elif len(parts) == 3 and all(parts):
            out.append(Headline(m, m, parts[0], (parts[2],), parts[1], "", True))
        else:
            raise UsageError(f"--metric {m!r} is not a headline metric (allowed: {', '.join(known)}, or "
                             f"suite/task/metric)")
    return out


def _run_paths(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[Any, str | None, list[dict[str, Any]]]:
    spec_row = con.execute("SELECT spec, spec_text FROM runs WHERE run_id = ?", [run_id]).fetchone()
    spec = json.loads(spec_row[0]) if spec_row and spec_row[0] else {}
    text = spec_row[1] if spec_row else None
    paths = rows(con, "SELECT p.path_id, p.name, p.base, p.hardware_profile, p.steps FROM paths p JOIN run_paths rp "
                      "ON rp.path_id = p.path_id WHERE rp.run_id = ? ORDER BY p.name, p.hardware_profile", [run_id])
    for p in paths:
        steps = json.loads(p["steps"]) if isinstance(p["steps"], str) else p["steps"]
        p["steps"] = [s for s in steps or [] if isinstance(s, dict) and s.get("technique")]
    return spec, text, paths


def grid_effects(db: str | Path, run: str | None = None, metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Effects of a run's grid: per (base, hardware profile) group and headline metric, the terms of the fit.

    Returns ``{"run_id", "grid": bool, "reason", "source", "groups": [{"base", "hardware_profile", "stages",
    "cells", "excluded_paths", "metrics": [...]}]}``; ``grid`` is False (with ``reason``) when the run's paths do
    not form a grid.
    """
    headlines = select_headlines(metrics)
    with connect(db, read_only=True) as con:
        run_id = resolve_run(con, run)
        spec, text, paths = _run_paths(con, run_id)
        source, designs = recover_designs(spec, paths, text)
        designs = [d for d in designs if _is_grid(d, source)]
        if not designs:
            return {"run_id": run_id, "grid": False, "source": source, "groups": [],
                    "reason": _no_grid_reason(spec, paths, source)}
        groups = []
        for d in designs:
            data = {pid: load_path_data(con, pid, with_raw=False) for pid in d.cells}
            fits = [f for h in headlines if (f := _metric_effects(d, h, data)) is not None]
            groups.append({"base": d.base, "hardware_profile": d.hardware_profile,
                           "stages": {s: {"levels": lv, "reference": lv[0]} for s, lv in d.stages.items()},
                           "cells": [{"path": d.names[pid], "path_id": pid, "levels": c}
                                     for pid, c in sorted(d.cells.items(), key=lambda kv: d.names[kv[0]])],
                           "excluded_paths": d.excluded, "metrics": fits})
    return {"run_id": run_id, "grid": True, "reason": None, "source": source, "groups": groups}


def _is_grid(d: Design, source: str) -> bool:
    """A spec grid needs one stage with two levels; stages guessed from families need two such stages."""
    varying = sum(len(levels) > 1 for levels in d.stages.values())
    return len(d.cells) > 1 and varying >= (1 if source == "spec grid" else 2)


def _no_grid_reason(spec: Any, paths: list[dict[str, Any]], source: str) -> str:
    if not paths:
        return "the run recorded no paths"
    if source == "spec grid":
        return "its spec's grid: leaves fewer than two cells that differ in a stage"
    return ("its spec has no grid: and its paths do not cross two technique families (a grid needs e.g. "
            "none|prune x none|quant); compare two paths with `slm compare`")


def order_effects(db: str | Path, run: str | None = None, metrics: Sequence[str] | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """Paths of a run that apply the same steps in another order (A>B vs B>A), compared pairwise per metric of the
    selected headlines with the test of ``slm compare`` (McNemar / paired bootstrap / bootstrap of medians).

    Returns ``{"run_id", "pairs": [{"base", "hardware_profile", "path_a", "path_b", "steps", "metrics": [rows of
    results.compare.compare_metric]}]}``.
    """
    headlines = select_headlines(metrics)
    with connect(db, read_only=True) as con:
        run_id = resolve_run(con, run)
        _, _, paths = _run_paths(con, run_id)
        groups: dict[tuple[str, str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for p in paths:
            if len(p["steps"]) < 2:
                continue
            multiset = tuple(sorted(f"{s['technique']}{_canon(s.get('params') or {})}" for s in p["steps"]))
            groups.setdefault((p["base"], p["hardware_profile"], multiset), []).append(p)
        pairs = []
        for (base, hw, _), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
            if len(members) < 2:
                continue
            data = {p["path_id"]: load_path_data(con, p["path_id"]) for p in members}
            for a, b in itertools.combinations(members, 2):
                da, db_ = data[a["path_id"]], data[b["path_id"]]
                keys = sorted({k for h in headlines for k in headline_keys(h, da)}
                              & {k for h in headlines for k in headline_keys(h, db_)})
                pairs.append({"base": base, "hardware_profile": hw, "path_a": a["name"], "path_b": b["name"],
                              "steps": sorted({s["technique"] for s in a["steps"]}),
                              "metrics": [compare_metric(k, da, db_, seed) for k in keys]})
    return {"run_id": run_id, "pairs": pairs}
