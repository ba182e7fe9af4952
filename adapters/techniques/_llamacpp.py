"""The llama.cpp side of ``deploy.llamacpp``: a GGUF file loaded in ``llama_cpp.Llama`` and the handle that runs it.

:class:`LlamaCppModel` does the token-level work with llama.cpp's own decode and samplers (through llama-cpp-python's
``Llama`` and its ``_internals`` wrappers of ``llama_batch`` and ``llama_sampler``): log-probabilities of target tokens
(only the rows asked for leave llama.cpp, a batch of ``n_batch`` rows at a time, so a 2048-token window never holds a
2048 x vocabulary array), full logits for a prefill, and generation one token at a time, greedy or sampled. The KV
cache is reused across calls for the longest common token prefix (the choices of a multiple-choice question share
their context; a prompt timed again reuses nothing it should not: timing prompts differ, and a stream starts cold).

:class:`LlamaCppHandle` is the runtime interface over it: scoring through the lm-eval ``LM`` of
:mod:`adapters.llamacpp_lm`, streaming with per-token timestamps taken inside the decode loop, footprint and
architecture from the GGUF file. Imported lazily; the registry skips ``_`` modules.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from adapters.architecture import Architecture, EmbeddingFacts
from adapters.errors import BackendUnavailableError
from adapters.handle import ModelHandle, TokenEvent

#: tokens per llama_decode call when prefilling and scoring (llama.cpp's default batch)
N_BATCH = 512
#: generation arguments the backend implements (transformers' names); any other is refused rather than ignored
SUPPORTED_GENERATION = {"do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams", "seed",
                        "min_new_tokens"}


def quiet_llama_cpp() -> None:
    """llama.cpp logs every load and quantization step to stderr through llama-cpp-python's logger: errors only."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


class TokenScores(NamedTuple):
    """Per target token: its log-probability and whether it is the most likely token at its position."""

    logprobs: np.ndarray
    greedy: np.ndarray


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen, in transformers' terms (what ``infer.decoding`` and lm-eval ask for).

    Attributes:
        greedy: argmax (``do_sample`` false, or a temperature of 0).
        temperature: softmax temperature when sampling.
        top_k: keep the k most likely tokens (0: off); transformers' default 50 when sampling.
        top_p: nucleus threshold (1.0: off).
        repetition_penalty: CTRL-style penalty over the prompt and the generated tokens (1.0: off).
        seed: the sampler's seed (None: drawn from torch's generator, so ``torch.manual_seed`` fixes it).
    """

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Sampling:
        """The sampling of transformers-style generation arguments.

        Raises:
            BackendUnavailableError: beam search, or an argument llama.cpp is not asked to honour here.
        """
        unknown = sorted(set(kwargs) - SUPPORTED_GENERATION)
        if unknown:
            raise BackendUnavailableError(f"the llama.cpp backend does not implement the generation arguments "
                                          f"{unknown} (it implements {sorted(SUPPORTED_GENERATION)})")
        if int(kwargs.get("num_beams", 1) or 1) > 1:
            raise BackendUnavailableError("llama.cpp has no beam search: use greedy or sampling (infer.decoding)")
        temperature = float(kwargs.get("temperature", 1.0) if kwargs.get("temperature") is not None else 1.0)
        greedy = not kwargs.get("do_sample", False) or temperature == 0.0
        seed = kwargs.get("seed")
        return cls(greedy=greedy, temperature=temperature, top_k=int(kwargs.get("top_k", 50) or 0),
                   top_p=float(kwargs.get("top_p", 1.0) or 1.0),
                   repetition_penalty=float(kwargs.get("repetition_penalty", 1.0) or 1.0),
                   seed=None if seed is None else int(seed))


def draw_seed(seed: int | None) -> int:
    """``seed``, or a 31-bit seed drawn from torch's generator (seeded by ``torch.manual_seed`` as the torch backend is)."""
    if seed is not None:
        return int(seed)
    import torch

    return int(torch.randint(0, 2**31 - 1, (1,)).item())


class LlamaCppModel:
    """A GGUF file loaded in llama.cpp (CPU), with the token-level operations the handle needs.

    Args:
        gguf_file: the model.
        threads: llama.cpp's threads for decoding and for batches (``n_threads``, ``n_threads_batch``).
        n_ctx: the context window (KV-cache cells), at most the model's training context; 0 takes the training
            context.
        kv_cache: the type of the cached keys and values, ``f16`` (llama.cpp's default) or ``f32``.
    """

    def __init__(self, gguf_file: Path, threads: int = 1, n_ctx: int = 0, kv_cache: str = "f16"):
        import llama_cpp

        quiet_llama_cpp()
        self.gguf_file = Path(gguf_file)
        self.threads = int(threads)
        self.kv_cache = kv_cache
        kv_type = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}[kv_cache]
        trained = file_stats(self.gguf_file).context_length
        n_ctx = min(int(n_ctx), trained) if n_ctx and trained else int(n_ctx)
        self.llm = llama_cpp.Llama(str(self.gguf_file), n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH,
                                   n_threads=self.threads, n_threads_batch=self.threads, logits_all=False,
                                   type_k=kv_type, type_v=kv_type, verbose=False)
        self.n_ctx = int(self.llm.n_ctx())
        self.n_vocab = int(self.llm.n_vocab())
        self._lock = threading.RLock()

    def set_threads(self, threads: int) -> None:
        """Decode with ``threads`` threads from now on."""
        if int(threads) != self.threads:
            self.threads = int(threads)
            self.llm._ctx.set_n_threads(self.threads, self.threads)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization of ``text`` (no BOS; special tokens parsed, as Hugging Face tokenizers do), from
        the vocabulary stored in the GGUF file."""
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    # -- decoding ---------------------------------------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], want: int) -> Iterator[tuple[int, np.ndarray]]:
        """Put ``tokens`` in the KV cache (reusing the longest prefix already there) and yield, batch by batch, the
        first position and the logits rows of every position ``>= want`` (views, valid until the next decode)."""
        llm, n = self.llm, len(tokens)
        if n > self.n_ctx:
            raise BackendUnavailableError(f"{n} tokens do not fit llama.cpp's context of {self.n_ctx} (n_ctx)")
        cached = np.asarray(llm.input_ids[: llm.n_tokens])
        ids = np.asarray(tokens[: len(cached)], dtype=cached.dtype)
        differ = np.flatnonzero(cached[: len(ids)] != ids)
        common = int(differ[0]) if len(differ) else len(ids)
        start = min(common, want, n - 1)  # logits of cached positions are not kept: decode from the first one wanted
        if not llm._ctx.kv_cache_seq_rm(-1, start, -1):
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            start = 0
        llm.n_tokens = start
        for first in range(start, n, N_BATCH):
            chunk = [int(t) for t in tokens[first: first + N_BATCH]]
            llm._batch.set_batch(batch=chunk, n_past=first, logits_all=False)
            flags = [first + j >= want for j in range(len(chunk))]
            for j, flag in enumerate(flags):
                llm._batch.batch.logits[j] = flag
            llm._ctx.decode(llm._batch)
            llm.input_ids[first: first + len(chunk)] = chunk
            llm.n_tokens = first + len(chunk)
            rows = sum(flags)
            if rows:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows * self.n_vocab,))
                yield max(first, want), logits.reshape(rows, self.n_vocab)
        llm._requires_eval = True  # Llama.generate must not sample from these logits

    def token_scores(self, inputs: Sequence[int], targets: Sequence[int]) -> TokenScores:
        """Log-probabilities of ``targets``, predicted by the last ``len(targets)`` positions of ``inputs``."""
        with self._lock:
            want = len(inputs) - len(targets)
            logprobs, greedy = np.empty(len(targets)), np.empty(len(targets), dtype=bool)
            for pos, rows in self._decode(inputs, want):
                k = pos - want
                t = np.asarray(targets[k: k + len(rows)])
                top = rows.max(axis=1)
                lse = np.log(np.exp(rows - top[:, None]).sum(axis=1, dtype=np.float64)) + top
                logprobs[k: k + len(rows)] = rows[np.arange(len(rows)), t] - lse
                greedy[k: k + len(rows)] = rows.argmax(axis=1) == t
            return TokenScores(logprobs, greedy)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """The logits of every position of ``tokens`` (a prefill from an empty cache), shape ``(len, vocab)``."""
        with self._lock:
            self.llm.n_tokens = 0
            return np.concatenate([rows.copy() for _, rows in self._decode(tokens, 0)])

    def _chain(self, sampling: Sampling, seed: int, banned: Sequence[int] = ()) -> Any:
        """A llama.cpp sampler chain in transformers' order: bans, repetition penalty, temperature, top-k, top-p, draw."""
        from llama_cpp._internals import LlamaSampler

        chain = LlamaSampler()
        if banned:
            chain.add_logit_bias(self.n_vocab, {int(t): float("-inf") for t in banned})
        if sampling.repetition_penalty != 1.0:
            chain.add_penalties(self.n_vocab, -1, sampling.repetition_penalty, 0.0, 0.0)
        if sampling.greedy:
            chain.add_greedy()
            return chain
        chain.add_temp(sampling.temperature)
        if sampling.top_k > 0:
            chain.add_top_k(sampling.top_k)
        if sampling.top_p < 1.0:
            chain.add_top_p(sampling.top_p, 1)
        chain.add_dist(seed)
        return chain

    def generate(self, prompt: Sequence[int], max_new_tokens: int, sampling: Sampling, stop_ids: Sequence[int], *,
                 seed: int = 0, min_new_tokens: int = 0, should_stop: Callable[[list[int]], bool] | None = None,
                 on_token: Callable[[int], None] | None = None, cold: bool = False) -> list[int]:
        """Generate up to ``max_new_tokens`` after ``prompt``; a token of ``stop_ids`` ends it (and is kept) once
        ``min_new_tokens`` are out (before that, those tokens are banned, as transformers' ``min_new_tokens`` does).

        ``on_token`` is called with each token as soon as it is chosen (before the next decode); ``should_stop`` with
        the tokens so far after each one (stop strings). ``cold``: reuse nothing from the KV cache.
        """
        if not prompt:
            raise ValueError("llama.cpp generation needs a non-empty prompt")
        if len(prompt) + max_new_tokens > self.n_ctx:
            raise BackendUnavailableError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed llama.cpp's "
                                          f"context of {self.n_ctx} (n_ctx)")
        with self._lock:
            if cold:
                self.llm.n_tokens = 0
            rng = random.Random(seed)
            free = self._chain(sampling, rng.getrandbits(31))
            banned = self._chain(sampling, rng.getrandbits(31), stop_ids) if min_new_tokens > 0 else None
            if sampling.repetition_penalty != 1.0:
                for chain in filter(None, (free, banned)):
                    for t in prompt:
                        chain.accept(int(t))
            for _ in self._decode(prompt, len(prompt) - 1):
                pass
            out: list[int] = []
            stops = {int(t) for t in stop_ids}
            while True:
                chain, other = (banned, free) if banned is not None and len(out) < min_new_tokens else (free, banned)
                token = int(chain.sample(self.llm._ctx, -1))
                if other is not None:
                    other.accept(token)
                out.append(token)
                if on_token is not None:
                    on_token(token)
                if len(out) >= max_new_tokens or token in stops or (should_stop is not None and should_stop(out)):
                    return out
                self._append(token)

    def _append(self, token: int) -> None:
        """Decode one token after what the cache holds (its logits are the next ones sampled)."""
        llm, pos = self.llm, self.llm.n_tokens
        llm._batch.set_batch(batch=[token], n_past=pos, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[pos] = token
        llm.n_tokens = pos + 1

    # -- the file -------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        """The GGUF key/values as llama.cpp read them."""
        return dict(self.llm.metadata)


class LlamaCppHandle(ModelHandle):
    """A handle on the ``llama.cpp`` backend (``model`` is a :class:`LlamaCppModel`).

    Scoring, rolling scoring and generation go through :class:`adapters.llamacpp_lm.LlamaCppLM` (an lm-eval ``LM``);
    :meth:`stream` timestamps each token inside the decode loop; there is no batched generation
    (:meth:`can_generate` is False: the latency suite streams one prompt at a time, and :meth:`generate_ids` runs
    rows one after the other). Weights keep their GGUF types: :meth:`place` and :meth:`move` change nothing.
    """

    _pending_seed: int | None = None

    @property
    def gguf_file(self) -> Path:
        """The GGUF file llama.cpp runs."""
        return Path(self.model.gguf_file)

    def activate(self) -> None:
        """Apply the handle's thread count to torch (tokenization helpers) and to llama.cpp's context."""
        super().activate()
        self.model.set_threads(self.threads)

    @property
    def settings(self) -> dict[str, Any]:
        from importlib import metadata

        out = {**super().settings, "dtype": "+".join(sorted(file_stats(self.gguf_file).by_type)),
               "n_ctx": self.model.n_ctx, "n_batch": N_BATCH, "kv_cache_type": self.model.kv_cache,
               "llama_cpp_python": metadata.version("llama-cpp-python")}
        return out

    # -- scoring and generation ---------------------------------------------------------------------------
    def lm(self, max_length: int | None = None) -> Any:
        """This handle as an lm-eval ``LM`` over llama.cpp (cached), with ``max_length`` tokens per window (default:
        the context window, ``n_ctx``)."""
        if self._lm is None or (max_length is not None and self._lm.max_length != max_length):
            from adapters.llamacpp_lm import LlamaCppLM

            self.activate()
            self._lm = LlamaCppLM(self, max_length=max_length)
        return self._lm

    def stop_ids(self) -> list[int]:
        """The tokens that end a generation: the tokenizer's EOS (as transformers' ``generate`` stops)."""
        eos = self.tokenizer.eos_token_id
        return [] if eos is None else [int(eos)]

    def sampling(self, **kwargs: Any) -> Sampling:
        """The handle's decoding settings (``generation_kwargs``) with ``kwargs`` over them, as a :class:`Sampling`."""
        gen = {**self.generation_kwargs, **kwargs}
        gen.pop("min_new_tokens", None)
        return Sampling.from_kwargs(gen)

    def seed_sampling(self, seed: int | None = None) -> None:
        """Seed the next sampled generation (``seed``, else ``generation_kwargs["seed"]``; nothing when both unset)."""
        if seed is None:
            seed = self.generation_kwargs.get("seed")
        self._pending_seed = None if seed is None else int(seed)

    def _take_seed(self, sampling: Sampling) -> int:
        seed, self._pending_seed = (self._pending_seed if self._pending_seed is not None else sampling.seed), None
        return draw_seed(seed)

    def stream(self, prompt: str | Sequence[int], max_new_tokens: int = 32, **kwargs: Any) -> Iterator[TokenEvent]:
        """Generate and yield each new token with the time it was chosen (``time.perf_counter()`` seconds since the
        call), from a worker thread so that the consumer's speed does not shift the times. ``min_new_tokens``
        defaults to ``max_new_tokens`` (a fixed token count, as the torch backend does); a text prompt goes through
        the handle's prompt hooks. The KV cache starts empty: the prompt is prefilled whole, so the first token's
        time is a cold prefill."""
        self.activate()
        ids = (self.tokenizer(self.prompt(prompt), add_special_tokens=False).input_ids if isinstance(prompt, str)
               else [int(t) for t in prompt])
        min_new = int(kwargs.pop("min_new_tokens", max_new_tokens))
        sampling = self.sampling(**kwargs)
        seed = self._take_seed(sampling)
        events: queue.Queue[Any] = queue.Queue()
        start = time.perf_counter()
        n = [0]
        tok = self.tokenizer

        def on_token(token: int) -> None:  # the text is decoded by the consumer, off the timed loop
            events.put((n[0], token, time.perf_counter() - start))
            n[0] += 1

        errors: list[BaseException] = []

        def work() -> None:
            try:
                self.model.generate(ids, max_new_tokens, sampling, self.stop_ids(), seed=seed, min_new_tokens=min_new,
                                    on_token=on_token, cold=True)
            except BaseException as exc:  # re-raised in the consumer's thread
                errors.append(exc)
            finally:
                events.put(None)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while (event := events.get()) is not None:
            index, token, when = event
            yield TokenEvent(index, token, tok.decode([token]), when)
        worker.join()
        if errors:
            raise errors[0]

    def can_generate(self) -> bool:
        """False: llama.cpp generates one sequence at a time here (the latency suite streams, batch 1)."""
        return False

    def generate_ids(self, input_ids: Any, max_new_tokens: int, **kwargs: Any) -> Any:
        """Generate from each row of token ids in turn with the handle's decoding settings (seeded by
        :meth:`seed_sampling`); rows that stop early are padded with the tokenizer's pad token (EOS when none).

        Returns:
            A ``torch.LongTensor`` ``(batch, length + generated)``, prompt included, as transformers returns it.
        """
        import torch

        self.activate()
        rows = input_ids.tolist() if hasattr(input_ids, "tolist") else [list(r) for r in input_ids]
        min_new = int(kwargs.pop("min_new_tokens", 0))
        sampling = self.sampling(**kwargs)
        seed = self._take_seed(sampling)
        outs = [self.model.generate(row, max_new_tokens, sampling, self.stop_ids(), seed=seed + i,
                                    min_new_tokens=min_new) for i, row in enumerate(rows)]
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(o) for o in outs)
        return torch.tensor([row + out + [pad] * (width - len(out)) for row, out in zip(rows, outs, strict=True)])

    def forward(self, input_ids: Any) -> Any:
        """A prefill of each row from an empty cache; the logits as a float32 tensor ``(batch, length, vocab)``."""
        import torch

        self.activate()
        rows = input_ids.tolist() if hasattr(input_ids, "tolist") else [list(r) for r in input_ids]
        return torch.from_numpy(np.stack([self.model.logits(row) for row in rows]))

    def measured_kv_bytes(self, input_ids: Any) -> float | None:
        """None: llama.cpp reports no per-sequence byte count of its KV cache (``llama_state_seq_get_size`` is the size
        of a serialized state, with per-cell bookkeeping); :meth:`kv_bytes_per_token` gives the cache's bytes."""
        return None

    # -- architecture and footprint, from the GGUF file ---------------------------------------------------------
    def architecture(self) -> Architecture:
        """Sizes from the GGUF metadata as llama.cpp read it (``<arch>.block_count``, ``embedding_length``,
        ``attention.head_count``...); tied when the file stores no separate ``output.weight``."""
        meta = self.model.metadata()
        arch = meta["general.architecture"]
        hidden, heads = int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.attention.head_count"])
        return Architecture(vocab_size=self.model.n_vocab, hidden_size=hidden, num_layers=int(meta[f"{arch}.block_count"]),
                            num_heads=heads, num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
                            head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
                            tied_embeddings="output.weight" not in file_stats(self.gguf_file).names)

    def activation_bytes(self) -> int:
        """Bytes of one KV-cache value: 2 for the F16 cache (llama.cpp's default), 4 for F32 (it computes in F32)."""
        return 2 if self.model.kv_cache == "f16" else 4

    def weight_footprint(self) -> dict[str, int]:
        """Bytes of the GGUF tensors by ggml type (``{"Q4_K": ..., "Q6_K": ..., "F32": ...}``): what llama.cpp maps."""
        return {k: v["bytes"] for k, v in file_stats(self.gguf_file).by_type.items()}

    def num_parameters(self) -> int:
        """Elements of the GGUF tensors (a tied output head is stored once)."""
        return int(sum(v["elements"] for v in file_stats(self.gguf_file).by_type.values()))

    def embedding_facts(self) -> EmbeddingFacts:
        """The token embedding table's stored bytes (its own ggml type) and whether the output head reuses it."""
        arch, stats = self.architecture(), file_stats(self.gguf_file)
        table = stats.token_embd_bytes
        return EmbeddingFacts(0 if arch.tied_embeddings else table, table // max(1, arch.vocab_size), arch.tied_embeddings)


class TensorStats(NamedTuple):
    """What a GGUF file stores, read by ggml's own GGUF reader (tensor metadata only, no data).

    Attributes:
        by_type: per ggml type name (``Q4_K``, ``F32``...): ``{"tensors", "elements", "bytes"}``.
        names: every tensor name.
        token_embd_bytes: bytes of ``token_embd.weight``.
        context_length: the training context ``<architecture>.context_length`` (0 when the file has none).
    """

    by_type: dict[str, dict[str, int]]
    names: frozenset[str]
    token_embd_bytes: int
    context_length: int


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.lru_cache(maxsize=1)
def _ggml_base() -> Any:
    """ggml's base library as llama-cpp-python ships it, with the GGUF reader's signatures."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.gguf_init_from_file.argtypes, lib.gguf_init_from_file.restype = [ctypes.c_char_p, _GgufInitParams], ctypes.c_void_p
    lib.gguf_get_n_tensors.argtypes, lib.gguf_get_n_tensors.restype = [ctypes.c_void_p], ctypes.c_int64
    lib.gguf_get_tensor_name.argtypes, lib.gguf_get_tensor_name.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_char_p
    lib.gguf_get_tensor_type.argtypes, lib.gguf_get_tensor_type.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_int
    lib.gguf_get_tensor_size.argtypes, lib.gguf_get_tensor_size.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t
    lib.gguf_free.argtypes, lib.gguf_free.restype = [ctypes.c_void_p], None
    lib.gguf_find_key.argtypes, lib.gguf_find_key.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int64
    lib.gguf_get_val_str.argtypes, lib.gguf_get_val_str.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_char_p
    lib.gguf_get_val_u32.argtypes, lib.gguf_get_val_u32.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_uint32
    lib.ggml_type_name.argtypes, lib.ggml_type_name.restype = [ctypes.c_int], ctypes.c_char_p
    lib.ggml_type_size.argtypes, lib.ggml_type_size.restype = [ctypes.c_int], ctypes.c_size_t
    lib.ggml_blck_size.argtypes, lib.ggml_blck_size.restype = [ctypes.c_int], ctypes.c_int64
    return lib


@functools.lru_cache(maxsize=16)
def tensor_stats(path: str, size: int = 0, mtime_ns: int = 0) -> TensorStats:
    """The tensors of the GGUF file ``path`` by ggml type, read with ggml's ``gguf_init_from_file`` (milliseconds,
    where the ``gguf`` Python reader takes seconds over a 49k-token vocabulary); cached by path, size and mtime."""
    lib = _ggml_base()
    ctx = lib.gguf_init_from_file(path.encode(), _GgufInitParams(True, None))
    if not ctx:
        raise BackendUnavailableError(f"ggml cannot read the GGUF file {path}")
    try:
        by_type: dict[str, dict[str, int]] = {}
        names, embd = set(), 0
        for i in range(lib.gguf_get_n_tensors(ctx)):
            name, kind = lib.gguf_get_tensor_name(ctx, i).decode(), lib.gguf_get_tensor_type(ctx, i)
            nbytes = int(lib.gguf_get_tensor_size(ctx, i))
            row = by_type.setdefault(lib.ggml_type_name(kind).decode().upper(), {"tensors": 0, "elements": 0, "bytes": 0})
            row["tensors"] += 1
            row["elements"] += nbytes // int(lib.ggml_type_size(kind)) * int(lib.ggml_blck_size(kind))
            row["bytes"] += nbytes
            names.add(name)
            embd = nbytes if name == "token_embd.weight" else embd
        arch_key = lib.gguf_find_key(ctx, b"general.architecture")
        arch = lib.gguf_get_val_str(ctx, arch_key).decode() if arch_key >= 0 else ""
        ctx_key = lib.gguf_find_key(ctx, f"{arch}.context_length".encode())
        return TensorStats(by_type, frozenset(names), embd, int(lib.gguf_get_val_u32(ctx, ctx_key)) if ctx_key >= 0 else 0)
    finally:
        lib.gguf_free(ctx)


def file_stats(path: Path) -> TensorStats:
    """:func:`tensor_stats` of ``path`` (keyed by its size and modification time)."""
    stat = Path(path).stat()
    return tensor_stats(str(path), stat.st_size, stat.st_mtime_ns)
