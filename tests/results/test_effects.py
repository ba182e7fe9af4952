"""Effects of a grid (OLS over items x cells, WLS over cell values) and order effects, on synthetic runs whose
per-item outcomes come from known effects."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from results_builders import latencies, metric, slm

from results.effects import grid_effects, order_effects, recover_designs
from results.store import ResultStore

PRUNE = {"technique": "prune.magnitude", "params": {"sparsity": 0.3}}
LORA = {"technique": "peft.lora", "params": {"r": 8}}
INT8 = {"technique": "quant.int8", "params": {}}
SPEC = {"name": "g", "grid": {"prune": ["none", {"prune.magnitude": {"sparsity": 0.3}}],
                              "recover": ["none", {"peft.lora": {"r": 8}}],
                              "quantize": ["none", "quant.int8"]}}
# true effects on P(correct), Treatment-coded against none: main effects and one interaction (prune x recover)
TRUE = {"prune": -0.25, "recover": 0.05, "quantize": -0.02, "prune:recover": 0.20}
TRUE_TPS = {"base": 20.0, "prune": 1.0, "recover": -2.0, "quantize": 6.0}


def _cells() -> list[tuple[bool, bool, bool]]:
    return [(p, r, q) for p in (False, True) for r in (False, True) for q in (False, True)]


def _p_correct(base: float, cell: tuple[bool, bool, bool]) -> float:
    p, r, q = cell
    return base + TRUE["prune"] * p + TRUE["recover"] * r + TRUE["quantize"] * q + TRUE["prune:recover"] * (p and r)


def _steps(cell: tuple[bool, bool, bool]) -> list[dict[str, Any]]:
    return [s for s, on in zip((PRUNE, LORA, INT8), cell, strict=True) if on]


def _name(steps: list[dict[str, Any]]) -> str:
    return " > ".join(s["technique"] for s in steps) or "baseline"


class Run:
    """A results database written through the store, as the runner writes it."""

    def __init__(self, db: Path, run_id: str, spec: dict[str, Any]) -> None:
        self.store, self.run_id = ResultStore(db), run_id
        self.store.start_run(run_id=run_id, spec_name="g", spec=spec, spec_text="", environment={"cpu_model": "x"},
                             hardware={}, git_commit=None)
        self.store.record_node(run_id, dict(node_hash="src", kind="source", technique=None,
                                            source="builtin:tiny-llama", status="ok"))

    def path(self, steps: list[dict[str, Any]], tasks: dict[str, list[bool]] | None = None,
             tps: tuple[float, float] | None = None, raw: list[float] | None = None,
             bpb: float | None = None) -> None:
        """A path with per-item outcomes per quality task, a decode tokens/s value±stderr, raw ITLs and a
        WikiText bits per byte (no stderr, as lm-eval reports a corpus perplexity)."""
        name = _name(steps)
        leaf = f"n-{name}"
        self.store.record_node(self.run_id, dict(node_hash=leaf, kind="model", technique=steps[-1]["technique"]
                                                 if steps else None, params={}, inputs={"model": "src"}, status="ok"))
        self.store.record_path(self.run_id, dict(path_id=f"p-{name}", name=name, base="builtin:tiny-llama",
                                                 hardware_profile="cpu-1t", leaf_hash=leaf, chain=["src", leaf],
                                                 steps=steps, spec_snippet=""))
        if tasks or bpb is not None:
            metrics, samples = [], []
            if bpb is not None:
                metrics.append(metric("quality", "wikitext", "bits_per_byte", bpb, None, 3, "bits/byte", False,
                                      "lm-eval"))
            for task, correct in (tasks or {}).items():
                acc = sum(correct) / len(correct)
                metrics.append(metric("quality", task, "acc", acc, (acc * (1 - acc) / len(correct)) ** 0.5,
                                      len(correct), "fraction", True, "lm-eval"))
                samples += [dict(suite="quality", task=task, sample_id=str(i), correct=c, score=float(c),
                                 loglikelihoods=(-1.0,), prediction="a", target="a") for i, c in enumerate(correct)]
            self.store.record_suite_run(self.run_id, dict(
                run_key=f"q-{name}", node_hash=leaf, suite="quality", profile="quick", hardware_profile="cpu-1t",
                settings={}, status="ok", wall_time_s=1.0, metrics=metrics, samples=samples, raw=[]))
        if tps:
            rows = [dict(suite="latency", task="p16b1", name="itl_s", index=i, value=v, unit="s")
                    for i, v in enumerate(raw or [])]
            self.store.record_suite_run(self.run_id, dict(
                run_key=f"l-{name}", node_hash=leaf, suite="latency", profile="quick", hardware_profile="cpu-1t",
                settings={}, status="ok", wall_time_s=1.0, raw=rows, samples=[], metrics=[
                    metric("latency", "p16b1", "decode_tokens_per_s", tps[0], tps[1], 20, "tokens/s", True,
                           "measured:perf_counter"),
                    metric("latency", "p16b1", "itl_s", 1 / tps[0], 0.001, 20, "s", False,
                           "measured:perf_counter")]))

    def finish(self) -> None:
        self.store.finish_run(self.run_id, "ok")


def write_grid(db: Path, n_items: int = 600, seed: int = 7, skip: tuple[tuple[bool, bool, bool], ...] = (),
               fail: tuple[tuple[bool, bool, bool], ...] = (), spec: dict[str, Any] | None = None) -> None:
    """The 2x2x2 grid: outcomes Bernoulli(item difficulty + the cell's true effects); ``skip``: cells with no path,
    ``fail``: cells whose path has no measurement."""
    rng = random.Random(seed)
    difficulty = [rng.uniform(0.45, 0.75) for _ in range(n_items)]
    run = Run(db, "grid1", SPEC if spec is None else spec)
    for cell in _cells():
        if cell in skip:
            continue
        if cell in fail:
            run.path(_steps(cell))
            continue
        correct = [rng.random() < _p_correct(b, cell) for b in difficulty]
        p, r, q = cell
        tps = TRUE_TPS["base"] + TRUE_TPS["prune"] * p + TRUE_TPS["recover"] * r + TRUE_TPS["quantize"] * q
        run.path(_steps(cell), {"probe": correct}, (tps + rng.gauss(0, 0.1), 0.1))
    run.finish()


def _terms(fit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["term"]: t for t in fit["terms"]}


PR = "prune=prune.magnitude × recover=peft.lora"


def test_grid_recovers_known_interaction_with_item_level_interval(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    write_grid(db)
    res = grid_effects(db)
    assert res["grid"] and res["source"] == "spec grid"
    (group,) = res["groups"]
    assert group["stages"]["prune"] == {"levels": ["none", "prune.magnitude"], "reference": "none"}
    assert len(group["cells"]) == 8 and not group["excluded_paths"]
    quality = next(m for m in group["metrics"] if m["metric"] == "quality")
    assert "per-item" in quality["method"] and "cluster-robust" in quality["method"]
    assert quality["n_items"] == 600 and quality["n_obs"] == 4800 and quality["missing_cells"] == []
    terms = _terms(quality)
    inter = terms[PR]
    assert inter["ci_low"] < TRUE["prune:recover"] < inter["ci_high"] and inter["p_value"] < 0.001
    prune = terms["prune=prune.magnitude"]
    assert prune["ci_low"] < TRUE["prune"] < prune["ci_high"] and prune["p_value"] < 0.001
    # interactions that are truly zero: intervals cover 0
    for name in ("prune=prune.magnitude × quantize=quant.int8", "recover=peft.lora × quantize=quant.int8"):
        assert terms[name]["ci_low"] < 0 < terms[name]["ci_high"]
    assert len(terms) == 7  # intercept, 3 main effects, 3 pairwise interactions (no 3-way term)
    assert {t["term"] for t in quality["tests"]} >= {"prune", "prune × recover"}


def test_value_only_metric_uses_wls_with_residual_df(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    write_grid(db, n_items=50)
    (group,) = grid_effects(db, metrics=["decode_tps"])["groups"]
    (tps,) = group["metrics"]
    assert tps["metric"] == "decode_tps" and tps["method"].startswith("WLS on cell values, weights 1/stderr²")
    assert tps["df_resid"] == 1 and "residual df 1" in tps["method"]
    q = _terms(tps)["quantize=quant.int8"]
    assert q["estimate"] == pytest.approx(TRUE_TPS["quantize"], abs=0.5) and q["ci_low"] is not None
    assert tps["tests"] and tps["tests"][0]["test"] == "ANOVA Type II F"
    (itl,) = grid_effects(db, metrics=["latency/p16b1/itl_s"])["groups"][0]["metrics"]  # one metric by its key
    assert itl["keys"] == ["latency/p16b1/itl_s"] and itl["unit"] == "s" and itl["higher_is_better"] is False
    assert _terms(itl)["quantize=quant.int8"]["estimate"] < 0  # faster decoding: shorter inter-token latency


def test_language_modelling_headline_shows_recovery_as_an_interaction(tmp_path: Path):
    """The ``lm_bpb`` headline (WikiText bits per byte, lower is better) is analysed by default: pruning adds bits,
    LoRA after pruning takes most of them back (a negative prune x recover interaction), from cell values."""
    db = tmp_path / "r.duckdb"
    run = Run(db, "grid1", SPEC)
    rng = random.Random(3)
    for p, r, q in _cells():
        bpb = 0.94 + 1.0 * p + 0.0 * r + 0.3 * q - 0.5 * (p and r) + rng.gauss(0, 0.01)
        run.path(_steps((p, r, q)), bpb=bpb)
    run.finish()
    (group,) = grid_effects(db)["groups"]
    (lm,) = [m for m in group["metrics"] if m["metric"] == "lm_bpb"]
    assert lm["higher_is_better"] is False and lm["unit"] == "bits/byte" and "OLS on cell values" in lm["method"]
    terms = _terms(lm)
    assert terms[PR]["estimate"] == pytest.approx(-0.5, abs=0.05) and terms[PR]["ci_high"] < 0
    assert terms["prune=prune.magnitude"]["estimate"] == pytest.approx(1.0, abs=0.05)


def test_value_only_metric_without_replicates_gives_no_interval(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    write_grid(db, n_items=50, skip=((True, True, True),))  # 7 cells, 7 terms: no residual df
    (group,) = grid_effects(db, metrics=["decode_tps"])["groups"]
    (tps,) = group["metrics"]
    assert "no replicates" in tps["method"] and tps["df_resid"] == 0
    assert all(t["ci_low"] is None and t["p_value"] is None and t["estimate"] is not None for t in tps["terms"])


def test_missing_cells_are_named_and_unidentifiable_terms_refused(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    # no prune x recover cell at all: one never planned, the other's path failed
    write_grid(db, skip=((True, True, False),), fail=((True, True, True),))
    (group,) = grid_effects(db, metrics=["quality"])["groups"]
    (quality,) = group["metrics"]
    missing = {tuple(c["levels"].values()): c["reason"] for c in quality["missing_cells"]}
    assert set(missing) == {("prune.magnitude", "peft.lora", "none"), ("prune.magnitude", "peft.lora", "quant.int8")}
    assert "no path in the run" in missing[("prune.magnitude", "peft.lora", "none")]
    assert "has no quality" in missing[("prune.magnitude", "peft.lora", "quant.int8")]
    terms = _terms(quality)
    assert terms[PR]["estimable"] is False and terms[PR]["estimate"] is None and "not estimable" in terms[PR]["note"]
    assert terms["prune=prune.magnitude"]["estimable"] and terms["prune=prune.magnitude"]["ci_low"] is not None


def test_one_missing_cell_still_fits_every_term(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    write_grid(db, fail=((True, False, True),))
    (group,) = grid_effects(db, metrics=["quality"])["groups"]
    (quality,) = group["metrics"]
    assert [c["levels"] for c in quality["missing_cells"]] == [
        {"prune": "prune.magnitude", "recover": "none", "quantize": "quant.int8"}]
    inter = _terms(quality)[PR]
    assert inter["estimable"] and inter["ci_low"] < TRUE["prune:recover"] < inter["ci_high"]
    assert inter["p_value"] < 0.001
    out = slm("analyze", "effects", "--db", str(db), "--metric", "quality")
    assert out.returncode == 0, out.stderr
    assert "missing cell prune=prune.magnitude, recover=none, quantize=quant.int8" in out.stdout
    assert PR in out.stdout and "cluster-robust SE by item" in out.stdout and out.stderr == ""


def test_tasks_are_weighted_equally_like_the_headline(tmp_path: Path):
    """Two tasks of unequal size: the effect is the mean of the per-task differences, as the headline averages."""
    db = tmp_path / "r.duckdb"
    run = Run(db, "w", {"grid": {"prune": ["none", "prune.magnitude"]}})
    a0, a1 = [True] * 80 + [False] * 20, [True] * 60 + [False] * 40  # task a: -0.2 (100 items)
    b0, b1 = [True] * 150 + [False] * 150, [True] * 150 + [False] * 150  # task b: 0 (300 items)
    run.path([], {"a": a0, "b": b0})
    run.path([{"technique": "prune.magnitude", "params": {}}], {"a": a1, "b": b1})
    run.finish()
    (group,) = grid_effects(db, metrics=["quality"])["groups"]
    term = _terms(group["metrics"][0])["prune=prune.magnitude"]
    assert term["estimate"] == pytest.approx(-0.1)  # pooled over items it would be -0.05
    assert "tasks weighted equally" in group["metrics"][0]["method"]


def test_stages_fall_back_to_technique_families_and_sweeps_are_labelled():
    paths = [{"path_id": f"p{i}", "name": f"p{i}", "base": "b", "hardware_profile": "h", "steps": steps}
             for i, steps in enumerate([
                 [], [{"technique": "prune.magnitude", "params": {"sparsity": 0.3}}],
                 [{"technique": "prune.magnitude", "params": {"sparsity": 0.5}}],
                 [{"technique": "quant.int8", "params": {}}],
                 [{"technique": "prune.magnitude", "params": {"sparsity": 0.3}}, {"technique": "quant.int8"}],
                 [{"technique": "quant.int8"}, {"technique": "prune.magnitude", "params": {"sparsity": 0.3}}]])]
    source, (design,) = recover_designs({}, paths)
    assert source == "technique families"
    assert design.stages == {"prune": ["none", "prune.magnitude(sparsity=0.3)", "prune.magnitude(sparsity=0.5)"],
                             "quant": ["none", "quant.int8"]}
    assert design.cells["p4"] == {"prune": "prune.magnitude(sparsity=0.3)", "quant": "quant.int8"}
    assert design.excluded == [{"path": "p5", "reason": "its steps do not fit the grid's stages in order"}]


def test_order_pair_gets_the_paired_test(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    spec = {"paths": [["prune.magnitude", "quant.int8"], ["quant.int8", "prune.magnitude"]]}
    run = Run(db, "o", spec)
    rng = random.Random(3)
    good = [rng.random() < 0.8 for _ in range(300)]
    run.path([PRUNE, INT8], {"probe": good}, (20.0, 0.1), latencies(60, 0.05, 1))
    run.path([INT8, PRUNE], {"probe": [c and i % 3 != 0 for i, c in enumerate(good)]}, (20.0, 0.1),
             latencies(60, 0.05, 2))
    run.path([PRUNE], {"probe": good})  # another multiset: not an order pair
    run.finish()
    res = order_effects(db)
    (pair,) = res["pairs"]
    assert (pair["path_a"], pair["path_b"]) == ("prune.magnitude > quant.int8", "quant.int8 > prune.magnitude")
    rows = {(r["suite"], r["metric"]): r for r in pair["metrics"]}
    acc = rows[("quality", "acc")]
    assert acc["test"] == "mcnemar-exact" and acc["p_value"] < 1e-6 and acc["better"] == "A"
    assert rows[("latency", "decode_tokens_per_s")]["test"] == "z-test"
    out = slm("analyze", "order", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    (listed,) = json.loads(out.stdout)["pairs"]
    assert {r["metric"]: r["test"] for r in listed["metrics"]} == {"acc": "mcnemar-exact",
                                                                   "decode_tokens_per_s": "z-test"}


def test_run_without_grid_says_so_in_one_line(two_path_db: Path):
    res = grid_effects(two_path_db)
    assert res["grid"] is False and "no grid" in res["reason"]
    out = slm("analyze", "effects", "--db", str(two_path_db))
    assert out.returncode == 0, out.stderr
    first, *rest = out.stdout.splitlines()
    assert first.startswith("run run1 has no grid:") and out.stderr == ""


def test_bad_metric_and_run_are_one_line_usage_errors(two_path_db: Path):
    out = slm("analyze", "effects", "--db", str(two_path_db), "--metric", "speed")
    assert out.returncode == 2 and "'speed' is not a headline metric (allowed: quality" in out.stderr
    assert "Traceback" not in out.stderr
    out = slm("analyze", "effects", "--db", str(two_path_db), "--run", "nope")
    assert out.returncode == 2 and "--run 'nope': no such run" in out.stderr
