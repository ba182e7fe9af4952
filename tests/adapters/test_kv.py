"""kv.quantized and kv.window: the caches every generation gets, the bytes they hold, what they do to the model's
outputs (pico model); on SmolLM2 one slow test: int4 KV perplexity close to fp on long WikiText-2 texts."""

from __future__ import annotations

import pytest
import torch

from adapters.architecture import Architecture
from adapters.errors import UsageError
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques import kv
from adapters.techniques.kv import cached_perplexity, group_size_for


def run(name, params, handle, tmp_path=None):
    cls = get_technique(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext())


def ids(n, start=100):
    return [[(start + 7 * i) % 5000 + 100 for i in range(n)]]


def test_every_generation_path_gets_a_fresh_cache(tiny_handle, monkeypatch):
    out, _ = run("kv.window", {"window": 4, "sink_tokens": 1}, tiny_handle)
    made = []
    make = kv.sink_window_cache

    def spy(model, sinks, window):
        made.append((sinks, window))
        return make(model, sinks, window)

    monkeypatch.setattr(kv, "sink_window_cache", spy)
    out.generate(["1 2 3"], max_new_tokens=3)  # lm-eval's generate_until
    out.generate_ids(ids(5), 3)  # the latency and memory suites
    list(out.stream("1 2 3", max_new_tokens=3))
    assert made == [(1, 4)] * 3


@pytest.mark.parametrize(("nbits", "scale_bytes"), [(2, 8), (4, 8), (8, 4)])
def test_quantized_kv_bytes_are_what_the_cache_holds(tiny_handle, nbits, scale_bytes):
    """Bytes per token = values x (nbits / 8) + groups x (scale + zero point: two fp32 for quanto's asymmetric 2/4
    bits, one fp32 scale for symmetric int8), measured from the cache the prefill filled."""
    out, report = run("kv.quantized", {"nbits": nbits}, tiny_handle)
    arch = Architecture.from_config(tiny_handle.model.config)
    values = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim
    group = group_size_for(tiny_handle.model, None)
    expected = values * nbits / 8 + values / group * scale_bytes
    assert out.measured_kv_bytes(ids(64)) == expected == report.kv_bytes_per_token
    assert report.kv_bytes_per_token_default == tiny_handle.measured_kv_bytes(ids(64)) == values * 4


def test_fewer_bits_move_the_logits_more(tiny_handle):
    """Scored through the cache, int8 stays closest to the fp32 cache's log-probabilities, int2 strays furthest."""
    tokens = ids(96)
    with torch.no_grad():
        reference = tiny_handle.model(input_ids=torch.tensor(tokens)).logits.log_softmax(-1)
    errors = {}
    for nbits in (8, 4, 2):
        out, _ = run("kv.quantized", {"nbits": nbits, "residual_length": 8}, tiny_handle)
        cache = out.inference_hooks[-1].generate_kwargs(out)["past_key_values"]
        logp = []
        with torch.no_grad():
            for start in range(0, 96, 16):
                step = out.model(input_ids=torch.tensor(tokens)[:, start: start + 16], past_key_values=cache,
                                 use_cache=True)
                cache = step.past_key_values
                logp.append(step.logits.log_softmax(-1))
        errors[nbits] = float((torch.cat(logp, 1) - reference)[:, 16:].abs().max())  # the first chunk is exact
    assert 0 < errors[8] < errors[4] < errors[2], errors


def test_cached_perplexity_of_the_default_cache_is_chunk_independent(tiny_handle):
    whole = cached_perplexity(tiny_handle, ids(80), chunk=80)
    chunked = cached_perplexity(tiny_handle, ids(80), chunk=7)
    assert whole.tokens == chunked.tokens == 79
    assert chunked.perplexity == pytest.approx(whole.perplexity, rel=1e-5)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        cached_perplexity(tiny_handle, ids(8), chunk=0)


def test_window_attends_to_sinks_and_recent_tokens_only(tiny_handle):
    """Decoding token by token through a sink + window cache gives, at every position and layer, the attention of
    StreamingLLM: token t sees the sinks and the last `window` tokens before it (and itself), nothing else. The
    reference is one forward pass over the whole text with exactly that attention mask."""
    sinks, window, n = 2, 5, 20
    out, _ = run("kv.window", {"window": window, "sink_tokens": sinks}, tiny_handle)
    tokens = torch.tensor(ids(n))
    cache = out.inference_hooks[-1].generate_kwargs(out)["past_key_values"]
    steps = []
    with torch.no_grad():
        for t in range(n):
            step = out.model(input_ids=tokens[:, t: t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            steps.append(step.logits[:, -1])
        assert all(layer.keys.shape[-2] == sinks + window for layer in cache.layers)
        q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
        mask = (k <= q) & ((k < sinks) | (k >= q - window))
        reference = out.model(input_ids=tokens, attention_mask=mask[None, None]).logits[0]
        full = out.model(input_ids=tokens).logits[0]
    streamed = torch.cat(steps)
    torch.testing.assert_close(streamed, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(streamed[: sinks + window + 1].argmax(-1), full[: sinks + window + 1].argmax(-1))
    assert not torch.allclose(streamed[-1], full[-1], atol=1e-3)  # the evicted tokens are not seen


def test_window_longer_than_the_text_changes_nothing(tiny_handle):
    out, report = run("kv.window", {"window": 64, "sink_tokens": 4}, tiny_handle)
    assert out.generate_ids(ids(12), 8).tolist() == tiny_handle.generate_ids(ids(12), 8).tolist()
    assert cached_perplexity(out, ids(60), chunk=8).perplexity == pytest.approx(
        cached_perplexity(tiny_handle, ids(60), chunk=8).perplexity, rel=1e-5)
    # the report's probe is longer than sinks + window: the cache holds 68 of its tokens
    assert report.kv_bytes_per_token == pytest.approx(report.kv_bytes_per_token_default * 68 / report.probe_tokens)


def test_bad_params_name_field_value_and_allowed(tiny_handle):
    for name, raw, message in [("kv.quantized", {"nbits": 3}, "nbits"), ("kv.quantized", {"axis": -1}, "axis must be 0"),
                               ("kv.quantized", {"residual_length": 0}, "residual_length must be >= 1"),
                               ("kv.window", {"window": 0}, "window must be >= 1"),
                               ("kv.window", {"sink_tokens": -1}, "sink_tokens must be >= 0")]:
        with pytest.raises(UsageError, match=message):
            build_params(get_technique(name), raw)
    width = Architecture.from_config(tiny_handle.model.config).head_dim
    with pytest.raises(ValueError, match=f"q_group_size {width + 1} must divide the head width {width}"):
        run("kv.quantized", {"q_group_size": width + 1}, tiny_handle)


@pytest.mark.slow
def test_smollm2_int4_kv_perplexity_close_to_fp(smollm2, wikitext):
    """On a long WikiText-2 text (768 tokens) scored through the cache (all but the newest 32 tokens quantized), an
    int4 cache stays within 8% of the fp32 cache's perplexity (measured: +5%), and int2 is far worse (measured: 8x)."""
    text = " ".join(wikitext.lines(40))
    segments = [smollm2.tokenizer(text, add_special_tokens=False).input_ids[:768]]
    fp = cached_perplexity(smollm2, segments, chunk=64).perplexity
    ppl = {}
    for nbits in (4, 2):
        out, _ = run("kv.quantized", {"nbits": nbits, "residual_length": 32}, smollm2)
        ppl[nbits] = cached_perplexity(out, segments, chunk=64).perplexity
    assert abs(ppl[4] / fp - 1) < 0.08 and ppl[2] > 2 * ppl[4], (fp, ppl)
