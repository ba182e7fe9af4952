"""lm-eval ``LM`` over a :class:`~adapters.handle.ModelHandle` on the torch backend.

It *is* lm-eval's ``HFLM`` given the handle's model object, so log-likelihoods, rolling windows and
batching are lm-eval's own code and scores equal ``lm_eval --model hf`` on the same checkpoint,
batch size and thread count. The one addition: the handle's generation defaults (set by ``infer.*``
techniques) are merged under each request's own generation arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_eval.models.huggingface import HFLM

if TYPE_CHECKING:
    from adapters.handle import ModelHandle


class HandleHFLM(HFLM):  # type: ignore[misc]
    """``HFLM`` bound to a handle. ``max_length`` comes from the model config when it has one."""

    def __init__(self, handle: ModelHandle, max_length: int | None = None):
        self.handle = handle
        device = str(getattr(handle.model, "device", "cpu"))
        super().__init__(
            pretrained=handle.model,
            tokenizer=handle.tokenizer,
            backend="causal",
            batch_size=handle.batch_size,
            device=device,
            max_length=max_length,
        )

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        merged = {**self.handle.generation_kwargs, **generation_kwargs}
        seed = merged.pop("seed", None)
        if seed is not None:  # sampling strategies carry a seed: each call is reproducible
            import torch

            torch.manual_seed(int(seed))
        return super()._model_generate(context, max_length, stop, **merged)
