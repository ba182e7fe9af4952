"""The prefix-sharing log-likelihood engine (``HandleHFLM(prefix_cache=True)``) against lm-eval's own path on
the pico model: same answers in the same order, one-token continuations bit-identical, multi-token ones
within float re-association, and lm-eval's path wherever there is nothing to share."""

from __future__ import annotations

import pytest

from adapters.lm import HandleHFLM, shared_context_groups

CONTEXT = "Question: which of these is a colour?\nAnswer:"
CHOICES = [" red", " a very long and winding road", " seven", " the number of the beast is six six six"]


def _instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


def _score(handle, pairs, prefix_cache, max_length=None):
    lm = HandleHFLM(handle, max_length=max_length, prefix_cache=prefix_cache)
    return lm.loglikelihood(_instances(pairs), disable_tqdm=True), lm.prefix_stats


def test_groups_are_shared_contexts_that_lm_eval_would_not_truncate():
    reqs = [(None, [1, 2], [3]), (None, [5], [6]), (None, [1, 2], [4, 4]), (None, [7, 7], [1] * 9),
            (None, [7, 7], [2]), (None, [5, 5], [1])]
    assert shared_context_groups(reqs, max_length=16) == [[0, 2], [3, 4]]
    assert shared_context_groups(reqs, max_length=8) == [[0, 2]]  # 2 + 9 tokens > 8 + 1: lm-eval truncates


def test_shared_context_answers_equal_lm_evals_own(tiny_handle):
    pairs = [(CONTEXT, c) for c in CHOICES] + [("An unrelated context", " alone"), (CONTEXT + " x", " y")]
    pairs += [("Another question?\nAnswer:", c) for c in (" yes", " no", " maybe so")]
    exact, _ = _score(tiny_handle, pairs, prefix_cache=False)
    shared, stats = _score(tiny_handle, pairs, prefix_cache=True)
    assert stats == {"groups": 2, "requests": 7, "fallback": 2}
    assert [g for _, g in shared] == [g for _, g in exact]
    tok = tiny_handle.tokenizer
    for (ctx, cont), (a, _), (b, _) in zip(pairs, exact, shared, strict=True):
        one_token = len(tok(ctx + cont).input_ids) - len(tok(ctx).input_ids) == 1
        if one_token:  # the very logits lm-eval computes: bit-identical
            assert a == b, (cont, a, b)
        else:
            assert b == pytest.approx(a, rel=1e-5, abs=1e-4), (cont, a, b)
    again, _ = _score(tiny_handle, pairs, prefix_cache=True)
    assert again == shared  # deterministic


def test_long_requests_and_lone_contexts_take_lm_evals_path(tiny_handle):
    pairs = [(CONTEXT, c) for c in CHOICES]
    exact, _ = _score(tiny_handle, pairs, prefix_cache=False, max_length=16)
    shared, stats = _score(tiny_handle, pairs, prefix_cache=True, max_length=16)
    assert stats["groups"] == 0 and stats["fallback"] == len(pairs)  # every pair exceeds the 16-token window
    assert shared == exact


def test_greedy_flag_is_true_for_the_models_own_greedy_continuation(tiny_handle):
    import torch

    ctx = tiny_handle.tokenizer(CONTEXT).input_ids
    with torch.no_grad():
        out = tiny_handle.model.generate(torch.tensor([ctx]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    greedy = out[0, len(ctx):].tolist()
    other = [*greedy[:2], (greedy[2] + 1) % len(tiny_handle.tokenizer)]
    requests = [(None, ctx, greedy), (None, ctx, other), (None, ctx, greedy[:1])]
    exact = HandleHFLM(tiny_handle)._loglikelihood_tokens(requests, disable_tqdm=True)
    lm = HandleHFLM(tiny_handle, prefix_cache=True)
    shared = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert lm.prefix_stats["groups"] == 1
    assert [g for _, g in exact] == [g for _, g in shared] == [True, False, True]
    assert shared[2][0] == exact[2][0]


def test_a_cache_that_cannot_be_repeated_falls_back_to_lm_eval(tiny_handle, monkeypatch):
    from transformers import DynamicCache

    owner = next(k for k in DynamicCache.__mro__ if "batch_repeat_interleave" in vars(k))
    monkeypatch.delattr(owner, "batch_repeat_interleave")
    pairs = [(CONTEXT, c) for c in CHOICES]
    exact, _ = _score(tiny_handle, pairs, prefix_cache=False)
    shared, stats = _score(tiny_handle, pairs, prefix_cache=True)
    assert stats == {"groups": 0, "requests": 0, "fallback": len(pairs)} and shared == exact


def test_rolling_scoring_draws_no_library_progress_bar(tiny_handle, capfd):
    """lm-eval's rolling scorer asks for its "Running loglikelihood requests" bar explicitly (disable_tqdm=False): it
    showed in `slm run` under the harness's own progress; the handle's LM never draws it."""
    from adapters.handle import ModelHandle

    h = ModelHandle(tiny_handle.model, tiny_handle.tokenizer, source=tiny_handle.source)
    capfd.readouterr()
    h.loglikelihood_rolling(["The river flows into the sea. " * 4, "Bread is made from flour."])
    h.loglikelihood([("The river", " flows")])
    out, err = capfd.readouterr()
    assert "Running loglikelihood requests" not in out + err and "%|" not in out + err
