"""Issue 18's acceptance tables, read from a results database (no torch; DuckDB only).

Usage::

    for part in alignment reasoning rag; do
        SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/general_$part.yaml --workspace .slm-general
    done
    python benchmarks/general_table.py --db .slm-general/results.duckdb

Three tables, one per spec, each row a path against ``base`` (the same untouched SmolLM2 path in all three specs):
every quality metric of the spec's tasks as value ± stderr (n), and the paired test of the path against the base on
the same items, as ``slm compare`` runs it (exact McNemar on per-item 0/1 outcomes, a paired bootstrap on per-item
scores such as SQuAD's F1 or TruthfulQA MC2's probability). The alignment table adds what DPO and KTO reported about
their own training (trl's reward margins and accuracies, the model's preference on the held-out pairs before and
after) and the reasoning and RAG tables what the inference steps set up. Failed steps and suites are listed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.compare import compare  # noqa: E402
from results.queries import rows  # noqa: E402
from results.stats import BOOTSTRAP_RESAMPLES  # noqa: E402
from results.store import connect  # noqa: E402

#: spec name -> (title, tasks, metrics shown in this order)
SECTIONS: dict[str, tuple[str, list[str], list[str]]] = {
    "general-alignment": ("Preference alignment: TruthfulQA on questions held out from the preference pairs",
                          ["truthfulqa_mc1_heldout", "truthfulqa_mc2_heldout"], ["acc"]),
    "general-reasoning": ("Reasoning at inference time: GSM8K (first 16 test problems)", ["gsm8k"],
                          ["exact_match_strict-match", "exact_match_flexible-extract", "exact_match_strict-match-maj@5",
                           "exact_match_flexible-extract-maj@5"]),
    "general-rag": ("Retrieval augmentation and best-of-4: SQuAD v1.1 dev (first 100 questions), chat template", ["squad_openbook"],
                    ["exact_match", "f1", "recall_at_1", "recall_at_3"]),
}
BASE = "base"


def _num(v: Any, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(p: float | None, test: str) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p —"
    if p == 0 and "bootstrap" in test:  # no resample crossed zero: the bootstrap's resolution is the bound
        return f"p<{2 / BOOTSTRAP_RESAMPLES:.0e}"
    return f"p={p:.3g}"


def _paths(con: Any, spec: str) -> list[dict[str, Any]]:
    """The paths of the latest run of ``spec``, base first, then in the spec's order, with their chains."""
    run = rows(con, "SELECT run_id, spec_text FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1", [spec])
    if not run:
        return []
    found = rows(con, "SELECT p.path_id, p.name, p.chain FROM run_paths rp JOIN paths p USING (path_id) "
                      "WHERE rp.run_id = ?", [run[0]["run_id"]])
    text = run[0]["spec_text"] or ""
    return sorted(found, key=lambda p: (p["name"] != BASE, text.find(f"name: {p['name']}"), p["name"]))


def _reports(con: Any, chain: Any) -> list[tuple[str, dict[str, Any]]]:
    hashes = json.loads(chain) if isinstance(chain, str) else (chain or [])
    out = []
    for h in hashes[1:]:
        found = rows(con, "SELECT technique, report FROM nodes WHERE node_hash = ?", [h])
        if found and found[0]["technique"]:
            rep = found[0]["report"]
            out.append((found[0]["technique"], (json.loads(rep) if isinstance(rep, str) else rep) or {}))
    return out


def step_summary(technique: str, r: dict[str, Any]) -> str:
    """One short phrase of what a step reported about itself."""
    if technique in ("tune.dpo", "tune.kto"):
        parts = [f"{r.get('method')}, {r.get('steps')} steps on {r.get('train_records')} records"]
        if r.get("final_reward_margin") is not None:
            parts.append(f"trl reward margin {_num(r.get('first_reward_margin'))}→{_num(r.get('final_reward_margin'))}")
        if r.get("final_reward_accuracy") is not None:
            parts.append(f"trl reward acc {_num(r.get('first_reward_accuracy'), 2)}→"
                         f"{_num(r.get('final_reward_accuracy'), 2)}")
        if r.get("heldout_pairs"):
            parts.append(f"held-out pairs (n={r['heldout_pairs']}): chosen preferred "
                         f"{_num(r.get('heldout_accuracy_before'), 3)}→{_num(r.get('heldout_accuracy_after'), 3)}, "
                         f"margin {_num(r.get('heldout_margin_before'))}→{_num(r.get('heldout_margin_after'))} nats, "
                         f"implicit reward acc {_num(r.get('heldout_reward_accuracy'))}")
        return f"{technique}: " + "; ".join(parts)
    if technique == "infer.cot":
        return f"infer.cot: {r.get('mode')}, {r.get('exemplars')} exemplars ({r.get('exemplar_source') or r.get('trigger')})"
    if technique in ("infer.self_consistency", "infer.best_of_n"):
        sampling = {k: v for k, v in (r.get("sampling") or {}).items() if k != "do_sample"}
        scorer = f", scorer {r['scorer']}" if r.get("scorer") else ""
        return f"{technique}: {r.get('samples')} samples {sampling}{scorer}"
    if technique == "infer.rag":
        return f"infer.rag: {r.get('retriever')}, k={r.get('k')} over {r.get('passages')} passages of {r.get('corpus')}"
    return technique


def section(db: str | Path, spec: str) -> list[str]:
    title, tasks, order = SECTIONS[spec]
    with connect(db, read_only=True) as con:
        paths = _paths(con, spec)
        if not paths:
            return [f"## {title}", "", f"no run of spec {spec!r} in {db}", ""]
        reports = {p["name"]: _reports(con, p["chain"]) for p in paths}
        metrics = rows(con, "SELECT path_name, task, metric, value, stderr, n FROM metrics_long "
                            "WHERE suite = 'quality' AND list_contains(?, task) AND list_contains(?, path_id)",
                       [tasks, [p["path_id"] for p in paths]])
    keys = sorted({(m["task"], m["metric"]) for m in metrics},
                  key=lambda k: (tasks.index(k[0]), order.index(k[1]) if k[1] in order else len(order), k[1]))
    base = next((p for p in paths if p["name"] == BASE), None)
    tests: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for p in paths:
        if base is not None and p is not base:
            found = compare(db, base["path_id"], p["path_id"])
            tests[p["name"]] = {(r["task"], r["metric"]): r for r in found if r["suite"] == "quality"}
    by = {(m["path_name"], m["task"], m["metric"]): m for m in metrics}
    head = [f"{t.removeprefix('truthfulqa_').removesuffix('_heldout')} {m}" for t, m in keys]
    out = [f"## {title}", "", "value ± stderr (n); Δ vs base [95% CI] with the paired test on the same items", "",
           "| path | " + " | ".join(head) + " | the steps' own reports |", "|---" * (len(keys) + 2) + "|"]
    for p in paths:
        cells = []
        for task, metric in keys:
            m = by.get((p["name"], task, metric))
            if m is None:
                cells.append("—")
                continue
            cell = f"{_num(m['value'])} ± {_num(m['stderr'])} (n={m['n']})"
            t = tests.get(p["name"], {}).get((task, metric))
            if t is not None and t.get("diff") is not None:
                ci = (f" [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]" if t.get("ci_low") is not None
                      and t.get("ci_high") is not None else "")
                cell += f"; Δ {t['diff']:+.3f}{ci}, {t['test']} {_p(t['p_value'], t['test'])}"
            cells.append(cell)
        steps = " · ".join(step_summary(t, r) for t, r in reports[p["name"]]) or "—"
        out.append(f"| {p['name']} | " + " | ".join(cells) + f" | {steps} |")
    return out + [""]


def failures(db: str | Path) -> list[str]:
    with connect(db, read_only=True) as con:
        failed = rows(con, "SELECT technique AS what, error FROM nodes WHERE status = 'failed'", [])
        failed += rows(con, "SELECT suite AS what, error FROM suite_runs WHERE status = 'failed'", [])
    return (["Failed:"] + [f"- {f['what']}: {(f['error'] or '').strip().splitlines()[-1][:200]}" for f in failed]
            if failed else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=".slm-general/results.duckdb")
    args = parser.parse_args()
    lines: list[str] = []
    for spec in SECTIONS:
        lines += section(args.db, spec)
    print("\n".join(lines + failures(args.db)))


if __name__ == "__main__":
    main()
