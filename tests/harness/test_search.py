"""``search:`` on the pico model: Optuna picks grid paths, each trial a path the normal runner executes and stores;
constraints decide the best feasible path; the study resumes without repeating a trial; bad fields fail in one line."""

from __future__ import annotations

import textwrap

import optuna
import pytest
from run_helpers import rows

from adapters.errors import SpecError, UsageError
from harness.plan import make_plan
from harness.runner import Runner
from harness.search import Measured, Search, Value, check_metrics, describe, open_study, storage_path
from harness.spec import parse_spec

# 2 x 2 x 2 cheap steps; the seeded noise of stage b raises the NLL far more than a's or c's, so the constraint
# `nll >= 11.3` holds exactly on the four combinations with b (about 11.4-11.9 nats) and fails on the others
# (about 10.7-11.1): the unconstrained best (the baseline) is infeasible.
SPEC = """
name: search-pico
base: tiny-llama
hardware: cpu-1t
suites: {test_nll: {}}
grid:
  a: [none, {tune.test_noise: {scale: 0.05}}]
  b: [none, {tune.test_noise: {scale: 0.1}}]
  c: [none, {tune.test_noise: {scale: 0.02}}]
search:
  objective: {metric: nll, direction: minimize}
  constraints: [{metric: test_nll/fixed3/nll, '>=': 11.3}]
  trials: TRIALS
  sampler: tpe
  seed: 3
"""
BOUND = 11.3


def _spec(text: str, **subs: object):
    for key, value in subs.items():
        text = text.replace(key, str(value))
    return parse_spec(textwrap.dedent(text), file="spec.yaml")


def _search(text: str, ws, **subs: object):
    lines: list[str] = []
    out = Search(Runner(_spec(text, **subs), ws, progress=False), echo=lines.append).run()
    return out, lines


def _nll_by_path(ws) -> dict[str, float]:
    return dict(rows(ws, "SELECT path_name, value FROM metrics_long WHERE suite = 'test_nll'"))


def test_search_runs_trials_as_paths_and_reports_the_best_feasible(test_components, tmp_path):
    out, lines = _search(SPEC, tmp_path, TRIALS=4)
    ran = [t for t in out.trials if t.repeat_of is None]
    assert out.paths_run == len(ran) == 4 and out.grid_paths == out.space_size == 8
    # the trials are ordinary paths of this run, measured like any path
    stored = rows(tmp_path, f"SELECT p.name FROM paths p JOIN run_paths r USING (path_id) "
                            f"WHERE r.run_id = '{out.run.run_id}'")
    assert sorted(n for (n,) in stored) == sorted(t.path for t in ran)
    nll = _nll_by_path(tmp_path)
    assert len(nll) == 4
    for t in out.trials:  # what Optuna was told is what the database holds (repeats included)
        assert t.objective == pytest.approx(nll[t.path])
        assert t.feasible == (nll[t.path] >= BOUND)
    assert any(not t.feasible for t in ran) and any(t.feasible for t in ran)  # the constraint splits the trials
    best = out.best
    assert best is not None and best.feasible and nll[best.path] >= BOUND
    assert best.objective == pytest.approx(min(v for v in nll.values() if v >= BOUND))
    assert min(nll.values()) < best.objective  # a better but infeasible path was run and not chosen
    assert out.run.suite_runs_executed == 4
    # Optuna's own view of the study agrees: constraints stored on the trials, same best feasible trial
    study = optuna.load_study(study_name=out.study_name, storage=f"sqlite:///{out.storage}")
    assert study.best_trial.value == pytest.approx(best.objective)
    assert all(len(t.constraints) == 1 for t in study.trials if t.state.name == "COMPLETE")
    assert sum(line.startswith("trial ") for line in lines) == len(out.trials)


def test_search_resumes_without_repeating_trials(test_components, tmp_path):
    first, _ = _search(SPEC, tmp_path, TRIALS=3)
    done = {t.path_id for t in first.trials}
    # an interrupted search leaves a trial running on a path: the next run fails it, does not count it, and goes on
    study, _ = open_study(_spec(SPEC, TRIALS=3), tmp_path)
    left = study.ask()
    left.set_user_attr("path", "interrupted")
    left.set_user_attr("path_id", "0" * 16)
    second, lines = _search(SPEC, tmp_path, TRIALS=5)  # a larger budget continues the same study
    assert storage_path(_spec(SPEC, TRIALS=5), tmp_path) == first.storage
    assert any(line.startswith("search: resuming") for line in lines)
    assert second.paths_run == 5
    assert second.run.suite_runs_executed == 2  # only the two new paths were measured
    new = [t for t in second.trials if t.repeat_of is None and t.number > max(x.number for x in first.trials)]
    assert len(new) == 2 and not {t.path_id for t in new} & done
    study = optuna.load_study(study_name=second.study_name, storage=f"sqlite:///{second.storage}")
    assert study.trials[left.number].state.name == "FAIL"
    assert left.number not in {t.number for t in second.trials} and "interrupted" not in {t.path for t in second.trials}
    third, _ = _search(SPEC, tmp_path, TRIALS=5)  # the same spec again: nothing left to do
    assert (third.run.suite_runs_executed, third.run.steps_executed) == (0, 0)
    assert len(third.trials) == len(second.trials) and third.best == second.best


def test_tpe_finds_the_optimum_of_a_4x4_space_in_fewer_trials_than_paths(test_components, tmp_path, monkeypatch):
    """A synthetic objective (evaluation monkeypatched): separable, peaked at (a=2, b=3) among 0..3 x 0..3."""
    scales = [0.01, 0.02, 0.03, 0.04]
    spec = f"""
    name: synthetic
    base: tiny-llama
    suites: {{test_nll: {{}}}}
    grid:
      a: [{{tune.test_noise: {{scale: {scales}}}}}]
      b: [{{tune.test_noise: {{scale: {scales}}}}}]
    search: {{objective: {{metric: nll, direction: maximize}}, trials: 8, sampler: tpe, seed: 0}}
    """
    calls: list[tuple[int, int]] = []

    def synthetic(self, trial, path):
        ia, ib = (self.search.stages[k].choices.index(trial.params[s]) for k, s in enumerate(("a", "b")))
        calls.append((ia, ib))
        return Measured("complete", Value(-float((ia - 2) ** 2 + (ib - 3) ** 2), None, 1, "score", "synthetic"))

    monkeypatch.setattr(Search, "measure", synthetic)
    out, _ = _search(spec, tmp_path)
    assert out.grid_paths == 16 and out.paths_run == len(calls) == 8 < 16
    assert out.best is not None and out.best.objective == 0.0
    assert calls.index((2, 3)) < 8
    assert len(set(calls)) == len(calls)  # each path measured once


def test_median_pruner_stops_a_path_after_a_bad_intermediate_node(test_components, tmp_path):
    spec = """
    name: pruned
    base: tiny-llama
    suites: {test_nll: {}}
    evaluate: all
    grid:
      a: [{tune.test_noise: {scale: 0.01}}, {tune.test_noise: {scale: 0.3}}]
      b: [{tune.test_noise: {scale: 0.02}}, {tune.test_noise: {scale: 0.03}}]
    search: {objective: {metric: nll, direction: minimize}, trials: 4, sampler: random, seed: 1, pruner: median,
             startup_trials: 1}
    """
    out, lines = _search(spec, tmp_path)
    pruned = [t for t in out.trials if t.state == "pruned"]
    assert pruned, lines
    study = optuna.load_study(study_name=out.study_name, storage=f"sqlite:///{out.storage}")
    plan = make_plan(_spec(spec))
    for t in pruned:
        frozen = study.trials[t.number]
        assert list(frozen.intermediate_values) == [0] and "scale=0.3" in frozen.params["a"]
        leaf = next(p.leaf for p in plan.paths if p.path_id == t.path_id)
        assert not (tmp_path / "artifacts" / leaf).exists()  # the last step never ran
        assert not rows(tmp_path, f"SELECT 1 FROM suite_runs WHERE node_hash = '{leaf}'")
    assert out.best is not None and "scale=0.01" in out.best.path


BAD = [
    ("search: {objective: {metric: nll}}", "search.objective.direction"),
    ("search: {objective: {metric: nll, direction: up}}", "search.objective.direction"),
    ("search: {objective: {metric: nll, direction: maximize}, sampler: cmaes}", "search.sampler"),
    ("search: {objective: {metric: nll, direction: maximize}, trials: 0}", "search.trials"),
    ("search: {objective: {metric: nll, direction: maximize}, budget: 3}", "search.budget"),
    ("search: {objective: {metric: nll, direction: maximize}, constraints: [{metric: nll, '>=': 1, '<=': 2}]}",
     "search.constraints[0]"),
    ("search: {objective: {metric: nll, direction: maximize}, constraints: [{metric: nll, '<=': fast}]}",
     "search.constraints[0].<="),
    ("search: {objective: {metric: nll, direction: maximize}, pruner: median}", "search.pruner"),
    ("search: {objective: {metric: a/b/c/d, direction: maximize}}", "search.objective.metric"),
]


@pytest.mark.parametrize(("field", "where"), BAD)
def test_a_bad_search_field_is_one_line_naming_it(field, where):
    text = f"base: tiny-llama\nsuites: {{test_nll: {{}}}}\ngrid: {{a: [none, quant.int8]}}\n{field}\n"
    with pytest.raises(SpecError) as err:
        parse_spec(text, file="s.yaml")
    assert f"s.yaml: {where}:" in str(err.value) and "\n" not in str(err.value)


def test_search_needs_a_grid_and_a_suite_that_measures_its_metric():
    with pytest.raises(SpecError, match="search: a search needs a `grid:`"):
        parse_spec("base: tiny-llama\npaths: [[quant.int8]]\nsearch: {objective: {metric: q, direction: maximize}}")
    spec = parse_spec("base: tiny-llama\nsuites: {test_nll: {}}\ngrid: {a: [none, quant.int8]}\n"
                      "search: {objective: {metric: nll, direction: minimize}, "
                      "constraints: [{metric: decode_tps, '>=': 20}]}", file="s.yaml")
    with pytest.raises(SpecError) as err:
        check_metrics(spec)
    assert "s.yaml: search.constraints[0].metric: the headline 'decode_tps' comes from the latency suite" in str(err.value)


def test_plan_describes_the_search(test_components):
    spec = _spec(SPEC, TRIALS=4)
    lines = describe(spec, make_plan(spec))
    assert lines[0].startswith("search: 8 combinations (a (2) x b (2) x c (2)), 8 of them grid paths")
    assert "budget 4 trials" in lines[0]
    assert any("constraint: test_nll/fixed3/nll >= 11.3" in line for line in lines)
    assert any("sampler: tpe (random for the first 2 trials), seed 3; pruner: none" in line for line in lines)


def test_an_unknown_metric_fails_clearly_at_the_first_trial(test_components, tmp_path):
    spec = """
    base: tiny-llama
    suites: {test_nll: {}}
    grid: {a: [none]}
    search: {objective: {metric: accuracy, direction: maximize}, trials: 1}
    """
    with pytest.raises(UsageError) as err:
        _search(spec, tmp_path)
    message = str(err.value)
    assert "search.objective.metric: 'accuracy' matches no metric" in message and "test_nll/fixed3/nll" in message
    assert "\n" not in message
