"""Issue 20's data-selection table, read from a results database (no torch; DuckDB only).

Usage::

    python benchmarks/selection_data.py --data-dir ../shared/benchmarks --out .slm-issue20/data
    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/data_selection.yaml --workspace .slm-select
    python benchmarks/data_selection_table.py --db .slm-select/results.duckdb

One row per path of the latest ``data-selection`` run: WikiText-2 word perplexity (lm-eval ``wikitext``, 3 seeded
test documents, 1024-token windows; lm-eval gives no stderr for a perplexity) of the dense model, the 50%-pruned one
and the pruned one after the same LoRA recovery on each selection; for each selection what its step reported about
itself (kept / pool, and the perplexities, KL divergences, duplicates or covering radii it measured), the LoRA's first
and final training loss and the wall times of the selection and the recovery.

With ``--labels`` (``pool_labels.jsonl`` of ``benchmarks/selection_data.py``) and the workspace's dataset artifacts
(``artifacts/<hash>/dataset.jsonl``, next to the database), the table also shows what each selection kept: its mix of
the pool's domains and how many planted duplicate pairs survived in it (both copies kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.general_table import _num, _paths, failures  # noqa: E402
from benchmarks.ondevice_federated_table import _arrow, _chain, _refusal, node, wikitext  # noqa: E402
from results.queries import rows  # noqa: E402
from results.store import connect  # noqa: E402

SPEC = "data-selection"
DOMAINS = ("wikipedia", "gsm8k", "hellaswag")


def selection_summary(technique: str, r: dict[str, Any]) -> str:
    """What a selection reported about its own work, in one phrase."""
    if not r:
        return "—"
    kept = f"{r.get('n_kept')}/{r.get('n_in')} kept"
    if technique == "data.perplexity_filter":
        return f"{kept}; mean ppl kept {_num(r.get('mean_ppl_kept'), 1)} vs dropped {_num(r.get('mean_ppl_dropped'), 1)}"
    if technique == "data.dsir":
        return (f"{kept}; KL(target‖·) pool {_num(r.get('kl_pool'))}, kept {_num(r.get('kl_kept'))}, random subset "
                f"{_num(r.get('kl_random'))}; cosine pool {_num(r.get('cosine_pool'))} → kept {_num(r.get('cosine_kept'))}")
    if technique == "data.dedup":
        return f"{kept}; dropped {r.get('exact_duplicates')} exact + {r.get('near_duplicates')} near duplicates"
    if technique == "data.diversity":
        return (f"{kept}; covering radius {_num(r.get('covering_radius'))} vs random subsets "
                f"{_num(r.get('random_covering_radius'))}")
    return kept


class Labels:
    """The pool's domain and planted-duplicate labels, and the selections' kept texts from the artifacts."""

    def __init__(self, labels: Path | None, artifacts: Path):
        self.artifacts = artifacts
        self.lines: list[dict[str, Any]] = []
        if labels is not None and labels.exists():
            self.lines = [json.loads(x) for x in labels.read_text(encoding="utf-8").splitlines() if x.strip()]
        self.domain = {x["text"]: x["domain"] for x in self.lines}

    def kept(self, h: str) -> list[str] | None:
        f = self.artifacts / h / "dataset.jsonl"
        if not self.lines or not f.exists():
            return None
        return [json.loads(x)["text"] for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]

    def mix(self, kept: list[str]) -> str:
        c = Counter(self.domain.get(t, "?") for t in kept)
        return " / ".join(f"{100 * c[d] / len(kept):.0f}" for d in DOMAINS) + (f" (+{c['?']} unlabeled)" if c["?"] else "")

    def planted_left(self, kept: list[str]) -> str:
        """Planted pairs with both copies in ``kept``: exact (the text at least twice), near (copy and original)."""
        have = Counter(kept)
        text = [x["text"] for x in self.lines]
        exact = sum(1 for x in self.lines if x["planted"] == "exact" and have[x["text"]] >= 2)
        near = sum(1 for x in self.lines if x["planted"] == "near" and have[x["text"]] and have[text[x["copy_of"]]])
        planted = Counter(x["planted"] for x in self.lines if x["planted"])
        return f"{exact}/{planted['exact']} exact, {near}/{planted['near']} near"


def table(db: str | Path, labels: Path | None = None) -> str:
    artifacts = Path(db).resolve().parent / "artifacts"
    lab = Labels(labels, artifacts)
    with connect(db, read_only=True) as con:
        paths = _paths(con, SPEC)
        if not paths:
            raise SystemExit(f"{db}: no run of spec {SPEC!r}")
        run = rows(con, "SELECT run_id FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1", [SPEC])
        out = [f"run {run[0]['run_id']} (spec {SPEC})", ""]
        if lab.lines:
            out += [f"pool: {len(lab.lines)} texts, domain mix wikipedia / gsm8k / hellaswag % = "
                    f"{lab.mix([x['text'] for x in lab.lines])}; planted pairs {lab.planted_left([x['text'] for x in lab.lines])}",
                    ""]
        out += ["| path | selection: what it reported | kept mix % wiki / gsm8k / hellaswag | planted duplicate pairs "
                "left | LoRA loss first → final | WikiText-2 word ppl ↓ | Δ vs random | selection s | LoRA s |",
                "|---|---|---|---|---|---|---|---|---|"]
        ppl: dict[str, float] = {}
        lines: list[tuple[dict[str, Any], list[str]]] = []
        for p in paths:
            chain = _chain(p)
            leaf = node(con, chain[-1]) if len(chain) > 1 else {}
            cells = ["—"] * 4
            if leaf.get("technique") == "peft.lora":
                inputs = rows(con, "SELECT inputs FROM nodes WHERE node_hash = ?", [chain[-1]])[0]["inputs"]
                ds = node(con, (json.loads(inputs) if isinstance(inputs, str) else inputs)["dataset"])
                kept = lab.kept(ds["node_hash"]) if ds else None
                sel = (f"{ds['technique']}: {selection_summary(ds['technique'], ds['report'])}" if ds.get("status") == "ok"
                       else f"{ds.get('technique')}: failed: {_refusal(ds)}")
                cells = [sel, lab.mix(kept) if kept else "—", lab.planted_left(kept) if kept else "—",
                         _arrow(leaf["report"].get("first_loss"), leaf["report"].get("final_loss"), 3)
                         if leaf.get("status") == "ok" else f"failed: {_refusal(leaf)}"]
                cost = f"{_num(ds.get('wall_time_s'), 0)} | {_num(leaf.get('wall_time_s'), 0)}"
            else:
                cost = "— | —"
                if leaf:
                    cells[0] = f"(no selection: {leaf['technique']} only, {_num(leaf.get('wall_time_s'), 0)} s)"
            value = rows(con, "SELECT value FROM metrics_long WHERE path_id = ? AND task = 'wikitext' "
                              "AND metric = 'word_perplexity'", [p["path_id"]])
            if value:
                ppl[p["name"]] = value[0]["value"]
            lines.append((p, cells + [wikitext(con, chain[-1]), cost]))
        ref = next((v for k, v in ppl.items() if k.endswith("/random")), None)
        for p, c in lines:
            delta = (f"{ppl[p['name']] - ref:+.2f}" if ref is not None and p["name"] in ppl and "+lora/" in p["name"]
                     else "—")
            out.append(f"| {p['name']} | " + " | ".join(c[:5]) + f" | {delta} | {c[5]} |")
    return "\n".join(out + [""] + failures(db))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=".slm-select/results.duckdb")
    p.add_argument("--labels", type=Path, default=Path(".slm-issue20/data/pool_labels.jsonl"))
    args = p.parse_args(argv)
    print(table(args.db, args.labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
