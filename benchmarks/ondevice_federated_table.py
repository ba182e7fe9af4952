"""Issue 20's on-device and federated tables, read from a results database (no torch; DuckDB only).

Usage::

    python benchmarks/selection_data.py --data-dir ../shared/benchmarks --out .slm-issue20/data
    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/ondevice_federated.yaml --workspace .slm-odf
    python benchmarks/ondevice_federated_table.py --db .slm-odf/results.duckdb

Three tables of the latest ``ondevice-federated`` run, every WikiText-2 word perplexity from lm-eval's ``wikitext``
(3 seeded test documents, 1024-token windows; lm-eval gives no stderr for a perplexity), every other number from the
step's own report or its node record (wall time; the peak RSS of the process that ran the step):

* ``ondevice.adapt`` per budget: the configuration chosen, its estimated and measured peak (the training child's
  ``VmHWM``) against the budget, trained parameters, local perplexity on held-out GSM8K blocks before → after; or
  the refusal, when no configuration fits.
* ``ondevice.continual``, one row per chunk (every chunk's model is a node measured with ``evaluate: all``): the
  chunk's held-out perplexity before → after (local gain), the earlier chunks' held-out perplexity before → after
  (forgetting; replayed or not), WikiText-2 (forgetting on general text).
* federated: FedAvg IID / Dirichlet, centralized LoRA and federated distillation: optimizer steps, partition sizes,
  the global model's validation loss per round (held-out blocks of the corpus), bytes sent per round, WikiText-2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.general_table import _num, _paths, failures  # noqa: E402
from results.queries import rows  # noqa: E402
from results.store import connect  # noqa: E402

SPEC = "ondevice-federated"
GB = 1e9
CHUNK_DOMAINS = {"chunk1": "GSM8K", "chunk2": "HellaSwag", "chunk3": "PIQA"}


def node(con: Any, h: str) -> dict[str, Any]:
    """A node's record with its report parsed (``{}`` when the node is not in the database)."""
    found = rows(con, "SELECT node_hash, technique, params, status, error, wall_time_s, peak_rss_bytes, report "
                      "FROM nodes WHERE node_hash = ?", [h])
    if not found:
        return {}
    n = found[0]
    for key in ("report", "params"):
        n[key] = (json.loads(n[key]) if isinstance(n[key], str) else n[key]) or {}
    return n


def wikitext(con: Any, h: str) -> str:
    """The node's latest WikiText-2 word perplexity with its n (suite runs on intermediate nodes included)."""
    found = rows(con, "SELECT m.value, m.n FROM suite_runs sr JOIN metrics m USING (run_key) WHERE sr.node_hash = ? "
                      "AND sr.status = 'ok' AND m.task = 'wikitext' AND m.metric = 'word_perplexity' "
                      "ORDER BY sr.recorded_at DESC LIMIT 1", [h])
    return f"{found[0]['value']:.2f} (n={found[0]['n']})" if found else "—"


def _chain(p: dict[str, Any]) -> list[str]:
    return json.loads(p["chain"]) if isinstance(p["chain"], str) else list(p["chain"] or [])


def _refusal(n: dict[str, Any]) -> str:
    last = (n.get("error") or "").strip().splitlines()
    return (last[-1] if last else "failed").replace("|", "/")


def _arrow(a: Any, b: Any, digits: int = 2) -> str:
    return f"{_num(a, digits)} → {_num(b, digits)}"


def adapt_table(con: Any, paths: list[dict[str, Any]]) -> list[str]:
    out = ["## ondevice.adapt: local adaptation under a memory budget (GSM8K local data, batches of 4 x 128 tokens)",
           "", "| path | budget GB | configuration (steps) | estimated peak GB | measured peak GB (child VmHWM) | trained params "
           "| local ppl before → after (held-out blocks) | WikiText-2 word ppl ↓ | step s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        chain = _chain(p)
        n = node(con, chain[-1]) if len(chain) > 1 else {}
        if n.get("technique") != "ondevice.adapt":
            continue
        budget = n["params"].get("budget_gb")
        if n["status"] != "ok":
            # a failed node's cost is not measured (the database holds 0 s): no time shown
            out.append(f"| {p['name']} | {budget} | refused: {_refusal(n)} | — | — | — | — | — | — |")
            continue
        r = n["report"]
        under = "under" if r["measured_peak_bytes"] <= r["budget_bytes"] else "OVER"
        out.append(f"| {p['name']} | {r['budget_bytes'] / GB:.1f} | {r['configuration']} ({r['steps']}) | "
                   f"{r['estimated_peak_bytes'] / GB:.3f} | {r['measured_peak_bytes'] / GB:.3f} ({under} the budget) | "
                   f"{r['trainable_params']:,} | {_arrow(r['perplexity_before'], r['perplexity_after'])} "
                   f"({r['held_out_blocks']}) | {wikitext(con, chain[-1])} | {_num(n['wall_time_s'], 0)} |")
        tried = [f"{a['configuration']}: {a['outcome']}" for a in r.get("attempts", []) if a["outcome"] != "chosen"]
        if tried:
            out.append(f"| ↳ rejected first | | {'; '.join(tried)} | | | | | | |")
    return out + [""]


def continual_table(con: Any, paths: list[dict[str, Any]]) -> list[str]:
    out = ["## ondevice.continual: three chunks of local data (GSM8K → HellaSwag → PIQA), LoRA merged after each", "",
           "| path | after chunk | steps | train blocks (+ replayed) | chunk's held-out ppl before → after (gain) "
           "| earlier chunks' held-out ppl before → after (forgetting) | WikiText-2 word ppl ↓ | step s |",
           "|---|---|---|---|---|---|---|---|"]
    base_done = False
    for p in paths:
        chain = _chain(p)
        nodes = [node(con, h) for h in chain[1:]]
        if not nodes or any(n.get("technique") != "ondevice.continual" for n in nodes):
            continue
        if not base_done:
            out.append(f"| (base) | 0 | — | — | — | — | {wikitext(con, chain[0])} | — |")
            base_done = True
        for h, n in zip(chain[1:], nodes, strict=True):
            ds = n["params"].get("dataset")
            where = f"{n['report'].get('chunk_index', '?') + 1}: {ds} ({CHUNK_DOMAINS.get(ds, '?')})" if n["report"] else ds
            if n["status"] != "ok":
                out.append(f"| {p['name']} | {where} | — | failed: {_refusal(n)} | — | — | — | — |")
                continue
            r = n["report"]
            replay = (f"{r['train_blocks']} + {r['replay_blocks']} of {n['params'].get('replay_from')}"
                      if n["params"].get("replay_from") else f"{r['train_blocks']}")
            forgot = (_arrow(r["forgetting_before"], r["forgetting_after"]) if r.get("forgetting_before") is not None
                      else "—")
            out.append(f"| {p['name']} | {where} | {r['steps']} | {replay} | {_arrow(r['perplexity_before'], r['perplexity_after'])} "
                       f"| {forgot} | {wikitext(con, h)} | {_num(n['wall_time_s'], 0)} |")
    return out + [""]


def _mb(n: Any) -> str:
    return "—" if n is None else f"{n / 2**20:.2f}"


def federated_table(con: Any, paths: list[dict[str, Any]]) -> list[str]:
    out = ["## Federated learning vs centralized LoRA: the same four-domain corpus, batches of 4 x 128 tokens",
           "", "| path | method | clients: blocks | steps (clients x rounds x local) | global val loss before → "
           "round 1, 2, 3 ↓ | MiB up / down per round | WikiText-2 word ppl ↓ | step s | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        chain = _chain(p)
        n = node(con, chain[-1]) if len(chain) > 1 else {}
        tech = n.get("technique")
        if tech not in ("federated.fedavg", "federated.distill", "peft.lora"):
            continue
        pr, r = n["params"], n["report"]
        if n["status"] != "ok":
            out.append(f"| {p['name']} | {tech} | failed: {_refusal(n)} | — | — | — | — | — | — |")
            continue
        cost = f"{_num(n['wall_time_s'], 0)} | {_mb(n['peak_rss_bytes']).split('.')[0]}"
        if tech == "peft.lora":
            out.append(f"| {p['name']} | peft.lora (centralized), loss {_arrow(r.get('first_loss'), r.get('final_loss'), 3)} "
                       f"| 1: all | {r.get('steps')} | — | 0 | {wikitext(con, chain[-1])} | {cost} |")
            continue
        rounds = r.get("rounds") or []
        steps = f"{len(r['client_examples'])} x {len(rounds)} x {r['local_steps']}"
        if tech == "federated.distill":
            steps += f" + {pr.get('distill_steps')} server distillation"
            kl = "; ".join(f"KL {_num(x.get('kl_before'), 3)}→{_num(x.get('kl_after'), 3)}" for x in rounds)
            method = f"{r['strategy']}, {r['partition']}, public set {pr.get('public_blocks')} blocks; {kl}"
        else:
            method = f"{r['strategy']}, {r['partition']}" + (
                f" (alpha {pr.get('dirichlet_alpha', 0.5)}, by {pr.get('partition_key')})" if r["partition"] == "dirichlet" else "")
        vals = ", ".join(_num(x.get("val_loss"), 3) for x in rounds)
        traffic = ", ".join(f"{_mb(x['bytes_up'])} / {_mb(x['bytes_down'])}" for x in rounds)
        out.append(f"| {p['name']} | {method} | {', '.join(str(c) for c in r['client_examples'])} | {steps} | "
                   f"{_num(r.get('val_loss_before'), 3)} → {vals} | {traffic} | {wikitext(con, chain[-1])} | {cost} |")
    base = next((p for p in paths if len(_chain(p)) == 1), None)
    if base is not None:
        out.append(f"| {base['name']} | (no training) | — | 0 | — | — | {wikitext(con, _chain(base)[0])} | — | — |")
    return out + [""]


def table(db: str | Path) -> str:
    with connect(db, read_only=True) as con:
        paths = _paths(con, SPEC)
        if not paths:
            raise SystemExit(f"{db}: no run of spec {SPEC!r}")
        run = rows(con, "SELECT run_id FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1", [SPEC])
        lines = [f"run {run[0]['run_id']} (spec {SPEC})", ""]
        lines += adapt_table(con, paths) + continual_table(con, paths) + federated_table(con, paths)
    return "\n".join(lines + failures(db))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=".slm-odf/results.duckdb")
    print(table(p.parse_args(argv).db))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
