"""Retrieval recall of a retrieval-augmented handle (``infer.rag``) on the questions a quality task evaluated.

A task whose documents name their gold passage (its YAML's ``metadata.gold_passage``: the document field holding
it, e.g. ``context`` in ``squad_openbook``) gets ``recall_at_<k>``: the share of its evaluated documents whose gold
passage is among the ``k`` passages the handle's retriever put into that document's prompt. The retrieval is
redone from the very prompt lm-eval built (the retriever is deterministic), so the number describes the prompts the
model received. A handle without a retriever, or a task without a gold passage, gets nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from suites.base import Metric, SampleRecord

if TYPE_CHECKING:
    from adapters.handle import ModelHandle


def retriever_of(handle: ModelHandle) -> Any:
    """The handle's first prompt hook that retrieves (has ``retrieve`` and ``k``), or None."""
    return next((h for h in handle.prompt_hooks if hasattr(h, "retrieve") and hasattr(h, "k")), None)


def gold_field(out: dict[str, Any], task: str) -> str | None:
    """The document field that holds the gold passage of ``task`` (its config's ``metadata.gold_passage``)."""
    meta = (out.get("configs", {}).get(task) or {}).get("metadata") or {}
    field = meta.get("gold_passage") if isinstance(meta, dict) else None
    return str(field) if field else None


def retrieval_recall(handle: ModelHandle, out: dict[str, Any]) -> tuple[list[Metric], list[SampleRecord]]:
    """``recall_at_<k>`` per task with a gold passage, and one sample record per document (``<task>#recall_at_<k>``),
    for a handle with a retriever; nothing otherwise."""
    hook = retriever_of(handle)
    if hook is None:
        return [], []
    metrics: list[Metric] = []
    samples: list[SampleRecord] = []
    name = f"recall_at_{hook.k}"
    for task, logged in out.get("samples", {}).items():
        field = gold_field(out, task)
        if field is None or not logged:
            continue
        hits = []
        for s in logged:
            found = hook.retrieve(str(s["arguments"][0][0]))
            hit = s["doc"][field] in found.passages
            hits.append(hit)
            samples.append(SampleRecord("quality", f"{task}#{name}", str(s["doc_id"]), hit, float(hit),
                                        prediction=" | ".join(map(str, found.ids))))
        n = len(hits)
        mean = sum(hits) / n
        stderr = math.sqrt(mean * (1 - mean) / (n - 1)) if n > 1 else None
        metrics.append(Metric("quality", task, name, mean, stderr, n, "fraction", True,
                              f"retrieval: {hook.describe()['retriever']} (bm25s {_version('bm25s')}), gold passage "
                              f"in the top {hook.k}",
                              {"k": hook.k, "gold_field": field, "corpus": hook.corpus,
                               "passages": len(hook.index.passages)}))
    return metrics, samples


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"
