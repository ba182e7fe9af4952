"""Data selection: choose which texts a training or calibration step consumes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from adapters.corpus import record_text
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import DataTechnique, Selected, TechniqueContext, technique


@dataclass(frozen=True)
class PerplexityFilterParams:
    """Params of ``data.perplexity_filter``.

    Attributes:
        keep: fraction of the texts kept (at least one text is always kept).
        mode: keep the ``lowest``-perplexity texts (the reference model finds them most likely) or the
            ``highest``.
    """

    keep: float = 0.5
    mode: Literal["lowest", "highest"] = "lowest"

    def __post_init__(self) -> None:
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")


def perplexities(reference: ModelHandle, texts: Sequence[str]) -> list[float]:
    """Per-token perplexity of each text under ``reference``: exp(-log-likelihood / tokens), with the
    log-likelihood from lm-eval's rolling windows (so it works on every backend)."""
    lls = reference.loglikelihood_rolling(list(texts))
    out = []
    for text, ll in zip(texts, lls, strict=True):
        n = max(1, len(reference.tokenizer(text, add_special_tokens=False).input_ids))
        out.append(math.exp(min(-ll / n, 700.0)))
    return out


def selected(scores: Sequence[float], keep: float, mode: str) -> list[int]:
    """Indices (in the original order) of the ``keep`` fraction with the lowest (or highest) scores;
    ties are broken by position, so the choice is deterministic."""
    n_keep = max(1, int(round(len(scores) * keep)))
    sign = 1.0 if mode == "lowest" else -1.0
    ranked = sorted(range(len(scores)), key=lambda i: (sign * scores[i], i))
    return sorted(ranked[:n_keep])


@dataclass(frozen=True)
class FilterReport:
    """What the filter kept.

    Attributes:
        n_in: non-empty texts scored.
        n_kept: texts kept.
        mean_ppl_kept: mean perplexity of the kept texts under the reference model.
        mean_ppl_dropped: mean perplexity of the dropped ones (None when nothing was dropped).
    """

    n_in: int
    n_kept: int
    mean_ppl_kept: float
    mean_ppl_dropped: float | None


@technique("data.perplexity_filter")
class PerplexityFilter(DataTechnique):
    """Perplexity-based data pruning (Marion et al., 2023, "When Less is More: Investigating Data
    Pruning for Pretraining LLMs at Scale"): score every text's perplexity under a reference model and
    keep the ``keep`` fraction with the lowest (or highest) perplexity.

    The reference model is ``ctx.inputs["reference"]`` (the path's base model by default). Texts are
    returned in their original order; the perplexities of the kept and dropped parts are the report.
    """

    Params = PerplexityFilterParams
    requires = ("torch", "transformers", "lm-eval")

    def select(self, texts: list[str], ctx: TechniqueContext) -> Selected:
        reference = ctx.inputs.get("reference")
        if not isinstance(reference, ModelHandle):
            raise UsageError("data.perplexity_filter needs a reference model as input `reference:`")
        texts = [t for t in texts if record_text(t).strip()]
        if not texts:
            raise UsageError("data.perplexity_filter got no non-empty texts to select from")
        scores = perplexities(reference, [record_text(t) for t in texts])
        kept = selected(scores, self.params.keep, self.params.mode)
        chosen = set(kept)
        dropped = [scores[i] for i in range(len(texts)) if i not in chosen]
        report = FilterReport(len(texts), len(kept), sum(scores[i] for i in kept) / len(kept),
                              sum(dropped) / len(dropped) if dropped else None)
        return Selected([texts[i] for i in kept], report)
