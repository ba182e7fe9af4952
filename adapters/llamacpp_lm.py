"""lm-eval ``LM`` over a llama.cpp handle (:class:`adapters.techniques._llamacpp.LlamaCppHandle`).

lm-eval's own ``gguf`` model talks to a llama.cpp *server*; this one calls llama.cpp in process. It follows
``HFLM``'s semantics so that a GGUF model and its torch source are scored on the same tokens: the handle's Hugging
Face tokenizer (``add_special_tokens=False``, the BOS token, else EOS, as the prefix of an empty context), lm-eval's
``TemplateLM`` for splitting context and continuation, left truncation to ``max_length + 1`` tokens, lm-eval's rolling
windows (``get_rolling_token_windows`` / ``make_disjoint_window``, context length 1) and its ``until`` handling in
generation (the EOS text added as a stop string, the context cut to ``max_length - max_gen_toks``). Log-softmax is
taken in float64 over llama.cpp's float32 logits.

Requests are scored in the order of their token sequences, so those that share a context follow one another and
llama.cpp's KV cache holds the shared prefix once (``prefix_stats`` counts the tokens reused); results come back in
the requests' order. Generation merges the handle's ``generation_kwargs`` under each request's own, applies its prompt
hooks to the context and its inference hooks around the call, as :class:`adapters.lm.HandleHFLM` does.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from lm_eval import utils
from lm_eval.api.model import TemplateLM

if TYPE_CHECKING:
    from adapters.techniques._llamacpp import LlamaCppHandle

Request = tuple[Any, list[int], list[int]]  # (request strings or None, context tokens, continuation tokens)
#: lm-eval's default generation budget when a task names none (``HFLM.max_gen_toks``)
MAX_GEN_TOKS = 256


class LlamaCppLM(TemplateLM):  # type: ignore[misc]
    """lm-eval's three request types on llama.cpp, with ``HFLM``'s tokenization and windowing."""

    def __init__(self, handle: LlamaCppHandle, max_length: int | None = None):
        super().__init__()
        self.handle = handle
        self.tokenizer = handle.tokenizer
        if max_length is not None and max_length > handle.model.n_ctx:
            raise ValueError(f"max_length {max_length} exceeds the llama.cpp context of {handle.model.n_ctx} tokens "
                             "(raise deploy.llamacpp's n_ctx)")
        self._max_length = int(max_length or handle.model.n_ctx)
        self.batch_size = handle.batch_size
        self.prefix_cache = True  # the suites set it; llama.cpp's KV cache always reuses shared prefixes here
        self.prefix_stats = {"requests": 0, "reused_tokens": 0, "scored_tokens": 0}

    # -- what lm-eval asks of a model ----------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.tokenizer.eos_token_id)

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens))

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt))

    # -- scoring -----------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)  # type: ignore[no-any-return]

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """``(log P(continuation | context), greedy)`` per request, scored in token order (shared prefixes adjacent)."""
        model = self.handle.model
        self.handle.activate()
        order = sorted(range(len(requests)), key=lambda i: requests[i][1] + requests[i][2])
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        previous: list[int] = []
        for i in order:
            key, context, continuation = requests[i]
            whole = (context + continuation)[-(self.max_length + 1):]  # HFLM: left-truncate, then drop the last token
            inputs = whole[:-1]
            if not 0 < len(continuation) <= len(inputs):
                raise ValueError(f"a continuation of {len(continuation)} tokens cannot be scored in a window of "
                                 f"{self.max_length} tokens")
            scores = model.token_scores(inputs, continuation)
            answer = (float(scores.logprobs.sum()), bool(scores.greedy.all()))
            self.prefix_stats["requests"] += 1
            self.prefix_stats["reused_tokens"] += _common_prefix(previous, inputs)
            self.prefix_stats["scored_tokens"] += len(inputs)
            previous = inputs
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
            out[i] = answer
        return [a for a in out if a is not None]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood of each text over lm-eval's disjoint rolling windows of ``max_length`` tokens."""
        totals = []
        for (string,) in [r.args for r in requests]:
            windows = map(utils.make_disjoint_window,
                          utils.get_rolling_token_windows(token_list=self.tok_encode(string),
                                                          prefix_token=self.prefix_token_id,
                                                          max_seq_len=self.max_length, context_len=1))
            scored = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            total = sum(lp for lp, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            totals.append(total)
        return totals

    # -- generation ----------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from adapters.inference import wrapped_generate
        from adapters.lm import _with_context

        if self.handle.prompt_hooks:  # e.g. infer.rag: the model receives the rewritten prompt
            requests = [_with_context(r, self.handle.prompt(r.args[0])) for r in requests]
        return wrapped_generate(self.handle, self._generate)(requests)

    def _generate(self, requests: list[Any]) -> list[str]:
        """Each request in turn; one sampling seed per call (the handle's, else torch's generator), from which every
        request draws its own, so repeated requests differ and the call as a whole is reproducible."""
        from adapters.techniques._llamacpp import draw_seed

        self.handle.activate()
        first = {**self.handle.generation_kwargs, **(dict(requests[0].args[1]) if requests else {})}
        rng = random.Random(draw_seed(first.get("seed")))
        return [self._generate_one(context, dict(gen_kwargs), rng.getrandbits(31))
                for context, gen_kwargs in [r.args for r in requests]]

    def _generate_one(self, context: str, gen_kwargs: dict[str, Any], seed: int) -> str:
        kwargs = {**self.handle.generation_kwargs, **gen_kwargs}
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = int(kwargs.pop("max_gen_toks", MAX_GEN_TOKS))
        kwargs.pop("seed", None)
        min_new = int(kwargs.pop("min_new_tokens", 0) or 0)
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        until.append(eos)
        prompt = self.tok_encode(context)[-max(1, self.max_length - max_gen):]
        sampling = self.handle.sampling(**kwargs)

        def hit(tokens: list[int]) -> bool:
            text = self.tok_decode(tokens[-64:], skip_special_tokens=False)
            return any(stop in text for stop in until)

        tokens = self.handle.model.generate(prompt, max_gen, sampling, self.handle.stop_ids(), seed=seed,
                                            min_new_tokens=min_new, should_stop=hit)
        text = self.tok_decode(tokens)
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return text


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
