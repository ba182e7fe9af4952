"""Inference-time decoding strategies: change how a handle generates, never its weights.

Greedy and beam search (deterministic), and sampling with temperature, top-k (Fan et al., 2018) and
nucleus / top-p (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration"), seeded. The
settings become the handle's ``generation_kwargs``: every generation through the handle (its own
``generate``/``stream`` and lm-eval's ``generate_until``) uses them; log-likelihood scoring does not
change. The harness re-applies the step instead of storing a copy of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from adapters import formats as F
from adapters.handle import ModelHandle
from adapters.technique import Applied, Technique, TechniqueContext, technique


@dataclass(frozen=True)
class DecodingParams:
    """Params of ``infer.decoding``.

    Attributes:
        strategy: ``greedy``, ``beam`` or ``sample``.
        num_beams: beams for ``beam`` (>= 2).
        temperature: softmax temperature for ``sample`` (> 0).
        top_k: keep the k most likely tokens for ``sample`` (0: no top-k filter).
        top_p: keep the smallest set of tokens with this cumulative probability for ``sample`` (1.0: off).
        repetition_penalty: > 1 discourages repeated tokens (Keskar et al., 2019); 1.0: off.
        seed: sampling seed; None uses the spec's seed.
    """

    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    num_beams: int = 4
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.strategy == "beam" and self.num_beams < 2:
            raise ValueError(f"num_beams must be >= 2 for beam search, got {self.num_beams}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def generation_kwargs(p: DecodingParams, seed: int) -> dict[str, Any]:
    """The transformers ``generate`` arguments of a decoding strategy (plus ``seed`` for sampling)."""
    kw: dict[str, Any] = {"do_sample": p.strategy == "sample", "num_beams": p.num_beams if p.strategy == "beam" else 1,
                          "repetition_penalty": p.repetition_penalty}
    if p.strategy == "sample":
        kw.update(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, seed=p.seed if p.seed is not None else seed)
    return kw


@technique("infer.decoding")
class Decoding(Technique):
    """Decoding strategy: greedy, beam search, or seeded sampling with temperature / top-k / top-p."""

    Params = DecodingParams
    requires = ("transformers",)
    inference_time = True
    accepts = F.EVALUABLE

    @classmethod
    def seed_dependent(cls, params: Any) -> bool:
        return params.strategy == "sample" and params.seed is None

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        kwargs = {**handle.generation_kwargs, **generation_kwargs(self.params, ctx.seed)}
        return Applied(handle.derive(generation_kwargs=kwargs))
