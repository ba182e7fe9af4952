"""Inference hooks: how an inference-time technique changes what evaluation asks of a handle, weights untouched.

A hook sits on :attr:`ModelHandle.inference_hooks` (set by ``infer.cot``, ``infer.self_consistency``,
``infer.best_of_n``) and may do two things:

- :meth:`InferenceHook.adapt_task`: rewrite an lm-eval task's config (the YAML as a dict) before the quality suite
  builds the task: its prompt and few-shot exemplars, its answer-extraction filters, its ``repeats`` and generation
  settings. The task keeps its name and documents, so its per-sample outcomes pair with those of other paths.
- :meth:`InferenceHook.wrap_generate`: wrap lm-eval's ``generate_until`` on the handle (every generation through
  :meth:`ModelHandle.generate` and lm-eval takes this route).
- :meth:`InferenceHook.generate_kwargs`: add arguments to every transformers ``generate`` call the handle makes (lm-eval's,
  :meth:`ModelHandle.generate_ids`, :meth:`ModelHandle.stream`), built afresh for each call: runtime settings that are
  objects rather than JSON (a compile config, a draft model, a new KV cache), set by ``deploy.compile``,
  ``deploy.speculative`` and ``kv.*``. :meth:`ModelHandle.measured_kv_bytes` measures the cache such a hook makes.

Hooks apply in ``phase`` order (the prompt format first, then sampling and voting), whatever the order of their
steps in the path. A hook is plain data: :meth:`ModelHandle.save` writes :meth:`InferenceHook.to_dict` into
``handle.json`` and :meth:`ModelHandle.load` rebuilds it with :func:`restore_hook`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

Generate = Callable[[list[Any]], list[str]]


class TaskChange(NamedTuple):
    """What a hook did to one task.

    Attributes:
        config: the task's new config, or None when the hook does not apply to it.
        note: one line for the results: what changed, or why nothing did.
    """

    config: dict[str, Any] | None
    note: str


@dataclasses.dataclass(frozen=True)
class InferenceHook:
    """Base of every hook (a frozen dataclass of JSON-able fields). Subclasses set ``technique`` (the registry name
    that restores them) and ``phase``, and override one or both stages."""

    technique: ClassVar[str] = ""
    phase: ClassVar[int] = 0
    #: True when generation drafts several tokens and verifies them in one model step (speculative decoding): it then
    #: runs one sequence at a time, and a step can emit several tokens (timing counts the tokens emitted)
    drafts_tokens: ClassVar[bool] = False

    def adapt_task(self, name: str, config: dict[str, Any]) -> TaskChange | None:
        """The task ``name`` with ``config`` as this hook poses it (None: the hook has nothing to do with tasks)."""
        return None

    def wrap_generate(self, handle: ModelHandle, generate: Generate) -> Generate:
        """``generate`` (lm-eval ``generate_until`` requests -> texts) as this hook runs it on ``handle``."""
        return generate

    def generate_kwargs(self, handle: ModelHandle) -> dict[str, Any]:
        """Arguments this hook adds to each transformers ``generate`` call on ``handle``, made for that call (a cache
        object must not outlive it); {} by default. A call's own arguments override them."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The hook as JSON-able data (``technique`` plus its fields)."""
        return {"technique": self.technique, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceHook:
        """The hook :meth:`to_dict` wrote."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def ordered(hooks: Sequence[InferenceHook]) -> list[InferenceHook]:
    """``hooks`` in phase order (stable: equal phases keep the path's order)."""
    return sorted(hooks, key=lambda h: h.phase)


def adapt_config(hooks: Sequence[InferenceHook], name: str, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``config`` of task ``name`` passed through every hook in phase order, and one note per hook that spoke."""
    notes = []
    for hook in ordered(hooks):
        change = hook.adapt_task(name, config)
        if change is None:
            continue
        notes.append(f"{hook.technique}: {change.note}")
        if change.config is not None:
            config = change.config
    return config, notes


def wrapped_generate(handle: ModelHandle, generate: Generate) -> Generate:
    """``generate`` wrapped by the handle's hooks (the first in phase order innermost)."""
    for hook in ordered(handle.inference_hooks):
        generate = hook.wrap_generate(handle, generate)
    return generate


def runtime_kwargs(handle: ModelHandle) -> dict[str, Any]:
    """The ``generate`` arguments of the handle's hooks (:meth:`InferenceHook.generate_kwargs`), in phase order."""
    out: dict[str, Any] = {}
    for hook in ordered(handle.inference_hooks):
        out.update(hook.generate_kwargs(handle))
    return out


def drafts_tokens(handle: ModelHandle) -> bool:
    """Whether the handle decodes speculatively (:attr:`InferenceHook.drafts_tokens`): one sequence at a time, several
    tokens per model step."""
    return any(hook.drafts_tokens for hook in handle.inference_hooks)


def restore_hook(data: dict[str, Any]) -> InferenceHook:
    """A hook from :meth:`InferenceHook.to_dict`'s data, rebuilt by the technique that made it.

    Raises:
        ModelLoadError: the technique has no hook (a file from another version).
    """
    from adapters.errors import ModelLoadError
    from adapters.technique import get_technique

    cls = getattr(get_technique(str(data.get("technique"))), "Hook", None)
    if cls is None:
        raise ModelLoadError(f"{data.get('technique')} has no inference hook to restore from {data}")
    hook: InferenceHook = cls.from_dict(data)
    return hook
