"""lm-eval ``LM`` over a :class:`~adapters.handle.ModelHandle` on the torch backend.

It *is* lm-eval's ``HFLM`` given the handle's model object, so log-likelihoods, rolling windows and
batching are lm-eval's own code and scores equal ``lm_eval --model hf`` on the same checkpoint,
batch size and thread count. Two additions:

- the handle's generation defaults (set by ``infer.*`` techniques) are merged under each request's own
  generation arguments, and its prompt hooks (``infer.rag``) rewrite each generation request's context;
  its inference hooks (``infer.best_of_n``) wrap generation; a sampling seed seeds the generator once per
  ``generate_until`` call, so repeated requests (lm-eval's ``repeats``, best-of-n candidates) draw different samples
  and the call as a whole is reproducible;
- ``prefix_cache``: log-likelihood requests that share a context (the choices of a multiple-choice
  question) run the context once and score every continuation from its key/value cache, instead of one
  full forward pass per choice (lm-eval only shares logits for one-token continuations; its source has a
  TODO for this): the context goes through the model once instead of once per choice. One-token continuations are
  scored from the very logits lm-eval would compute (bit-identical); multi-token ones differ from
  lm-eval's full pass only by float re-association (at most 4e-5 in a log-likelihood sum measured), which leaves
  argmax metrics (acc, acc_norm) unchanged unless two choices tie to that precision. Requests that share
  no context, exceed the window, or run on a model without a KV cache take lm-eval's own path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lm_eval.models.huggingface import HFLM

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

Request = tuple[Any, list[int], list[int]]  # (request strings or None, context tokens, continuation tokens)


def shared_context_groups(requests: Sequence[Request], max_length: int) -> list[list[int]]:
    """Indices of ``requests`` grouped by identical context tokens, for the groups worth sharing: two or more
    requests, none of which lm-eval would truncate (context + continuation <= ``max_length`` + 1)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (_, ctx, _cont) in enumerate(requests):
        groups.setdefault(tuple(ctx), []).append(i)
    return [idx for ctx, idx in groups.items()
            if len(idx) > 1 and len(ctx) > 0 and all(len(ctx) + len(requests[i][2]) <= max_length + 1 for i in idx)]


def _with_context(request: Any, context: str) -> Any:
    """A copy of an lm-eval request with another context (its first argument); the original is left as it was."""
    out = copy.copy(request)
    out.arguments = (context, *request.arguments[1:])
    return out


class HandleHFLM(HFLM):  # type: ignore[misc]
    """``HFLM`` bound to a handle. ``max_length`` comes from the model config when it has one."""

    def __init__(self, handle: ModelHandle, max_length: int | None = None, prefix_cache: bool = False):
        self.handle = handle
        self.prefix_cache = prefix_cache
        self.prefix_stats = {"groups": 0, "requests": 0, "fallback": 0}
        device = str(getattr(handle.model, "device", "cpu"))
        super().__init__(
            pretrained=handle.model,
            tokenizer=handle.tokenizer,
            backend="causal",
            batch_size=handle.batch_size,
            device=device,
            max_length=max_length,
        )

    # The harness draws its own progress: lm-eval's per-request bars ("Tokenizing inputs", "Running
    # loglikelihood requests") would only clutter the console, so they are always off here.
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)  # type: ignore[no-any-return]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return super().loglikelihood_rolling(requests, disable_tqdm=True)  # type: ignore[no-any-return]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        if self.handle.prompt_hooks:  # e.g. infer.rag: the model receives the rewritten prompt, lm-eval keeps its own
            requests = [_with_context(r, self.handle.prompt(r.args[0])) for r in requests]
        from adapters.inference import wrapped_generate

        return wrapped_generate(self.handle, self._generate_seeded)(requests)

    def _generate_seeded(self, requests: list[Any]) -> list[str]:
        """lm-eval's ``generate_until``, with each sampling seed applied once (at its first batch)."""
        self._seeded: set[int] = set()
        return super().generate_until(requests, disable_tqdm=True)  # type: ignore[no-any-return]

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        from adapters.inference import runtime_kwargs

        merged = {**self.handle.generation_kwargs, **runtime_kwargs(self.handle), **generation_kwargs}
        seed = merged.pop("seed", None)
        seeded: set[int] = getattr(self, "_seeded", set())
        if seed is not None and int(seed) not in seeded:  # sampling strategies carry a seed: each call is reproducible
            import torch

            torch.manual_seed(int(seed))
            seeded.add(int(seed))
        return super()._model_generate(context, max_length, stop, **merged)

    def _model_call(self, inps: Any, attn_mask: Any = None, labels: Any = None) -> Any:
        from adapters.formats import virtual_tokens

        logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        skip = virtual_tokens(self.model)  # a soft prompt (peft prompt tuning) adds its positions' logits in front
        return logits[:, skip:] if skip else logits

    def _supports_prefix_cache(self) -> bool:
        import torch

        from adapters.formats import virtual_tokens

        model = self.model
        return (self.backend == "causal" and isinstance(model, torch.nn.Module) and not virtual_tokens(model)
                and bool(getattr(getattr(model, "config", None), "use_cache", False))
                and getattr(model, "_supports_cache_class", True) is not False)

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        disable_tqdm = True  # lm-eval's rolling scorer asks for its "Running loglikelihood requests" bar explicitly
        if not self.prefix_cache or not self._supports_prefix_cache():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        groups = shared_context_groups(requests, int(self.max_length))
        shared = {i for g in groups for i in g}
        rest = [i for i in range(len(requests)) if i not in shared]
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        if rest:
            scored = super()._loglikelihood_tokens([requests[i] for i in rest], disable_tqdm=disable_tqdm,
                                                   override_bs=override_bs)
            for i, answer in zip(rest, scored, strict=True):
                out[i] = answer
        # longest contexts first, as lm-eval orders its requests
        fallback = len(rest)
        for group in sorted(groups, key=lambda g: -len(requests[g[0]][1])):
            subset = [requests[i] for i in group]
            answers = self._score_group(subset)
            if answers is None:  # this model's cache cannot be shared across a batch: lm-eval's own path
                answers = super()._loglikelihood_tokens(subset, disable_tqdm=True, override_bs=override_bs)
                fallback += len(group)
            else:
                self.prefix_stats["groups"] += 1
                self.prefix_stats["requests"] += len(group)
                for req, answer in zip(subset, answers, strict=True):
                    if req[0] is not None:
                        self.cache_hook.add_partial("loglikelihood", req[0], answer)
            for i, answer in zip(group, answers, strict=True):
                out[i] = answer
        self.prefix_stats["fallback"] += fallback
        missing = [i for i, a in enumerate(out) if a is None]
        if missing:
            raise RuntimeError(f"prefix cache: no answer for requests {missing[:5]}")
        return [a for a in out if a is not None]

    def _score_group(self, group: list[Request]) -> list[tuple[float, bool]] | None:
        """One forward pass over the shared context (with cache), one batched pass over the continuations;
        None when the model's cache cannot be repeated across the batch."""
        import torch
        import torch.nn.functional as F

        context = group[0][1]
        conts = [cont for _, _, cont in group]
        with torch.no_grad():
            first = self.model(torch.tensor([context], device=self.device), use_cache=True)
            # the context's last position predicts every continuation's first token
            head = F.log_softmax(first.logits[0, -1:], dim=-1, dtype=self.softmax_dtype)  # [1, vocab]
            longest = max(len(c) for c in conts)
            tails = None
            if longest > 1:
                cache = first.past_key_values
                if not hasattr(cache, "batch_repeat_interleave"):
                    return None
                cache.batch_repeat_interleave(len(conts))
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                # right padding: causal attention keeps the padded tail from touching earlier positions
                inp = torch.tensor([c[:-1] + [pad] * (longest - len(c)) for c in conts], device=self.device)
                tails = F.log_softmax(self.model(inp, past_key_values=cache, use_cache=False).logits, dim=-1,
                                      dtype=self.softmax_dtype)  # [n, longest - 1, vocab]
        answers = []
        for j, cont in enumerate(conts):
            rows = head if tails is None or len(cont) == 1 else torch.cat([head, tails[j, : len(cont) - 1]])
            toks = torch.tensor(cont, dtype=torch.long, device=self.device)
            greedy = bool((rows.argmax(dim=-1) == toks).all())
            answers.append((float(torch.gather(rows, 1, toks.unsqueeze(-1)).sum()), greedy))
        return answers
