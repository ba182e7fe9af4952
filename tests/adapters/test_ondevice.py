"""ondevice.adapt and ondevice.continual on the pico model: the adaptation trains in a child process whose measured
peak RSS stays under the budget, a budget too small is refused naming it, a larger budget picks a configuration that
trains more, every configuration of the ladder trains what its estimate counts and finishes as a plain float model,
the local held-out perplexity goes down, the result reloads with identical log-likelihoods; continual steps chain,
report their chunk's gain and the forgetting of replayed data; a path of three continual steps with ``evaluate: all``
plans a suite run on every intermediate model; bad parameters are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from adapters.corpus import synthetic_corpus
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques._training import batches, causal_lm_loss, train
from adapters.techniques.ondevice import (
    GB,
    choose,
    estimate_peak,
    finish,
    ladder,
    load_quantized_base,
    prepare,
    rung_trainable,
)
from adapters.techniques.peft_family import quantize_base

DATA = {"local": synthetic_corpus(200), "c1": synthetic_corpus(120, seed=1), "c2": synthetic_corpus(120, seed=2),
        "c3": synthetic_corpus(120, seed=3)}
ADAPT = {"budget_gb": 4.0, "max_steps": 15, "lr": 1e-2, "dataset": "local", "seq_len": 32, "batch_size": 4,
         "n_texts": 200}
CONTINUAL = {"max_steps": 15, "lr": 1e-2, "r": 4, "seq_len": 32, "batch_size": 4, "n_texts": 120}
REQUESTS = [("The river", " flows"), ("Alice lives in the", " city")]


def run(name, params, handle, workdir, hardware=None):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=0, workdir=workdir, datasets=DATA, hardware=hardware or {"device": "cpu", "threads": 1})
    return cls(build_params(cls, params)).run(handle, ctx)


def test_the_int8_base_loaded_a_tensor_at_a_time_equals_the_quantized_float_model(tiny_handle, tmp_path):
    tiny_handle.save(tmp_path / "m")
    direct = load_quantized_base(tmp_path / "m")
    reference = copy.deepcopy(tiny_handle.model)
    quantize_base(reference)
    assert set(direct.state_dict()) == set(reference.state_dict())
    assert direct.lm_head.weight is direct.model.embed_tokens.weight  # tied as in the float model
    assert type(direct.model.layers[0].mlp.up_proj.weight).__name__ == type(reference.model.layers[0].mlp.up_proj
                                                                              .weight).__name__ != "Parameter"
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        assert torch.equal(direct(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch(tiny_handle):
    blocks = [[(7 * i + j) % 50 + 3 for j in range(12)] for i in range(8)]
    trained = []
    for micro in (0, 1, 3):
        model = copy.deepcopy(tiny_handle.model)
        result = train(model, batches(blocks, 4, 0), 2, causal_lm_loss, lr=1e-2, micro_batch=micro)
        trained.append((result, model.state_dict()))
    (whole, w0), *parts = trained
    for result, state in parts:
        assert result.first_loss == pytest.approx(whole.first_loss, rel=1e-5)
        assert all(torch.allclose(state[k], w0[k], atol=1e-5) for k in w0)
    assert not torch.equal(w0["model.layers.0.mlp.up_proj.weight"],
                           tiny_handle.model.state_dict()["model.layers.0.mlp.up_proj.weight"])


@pytest.fixture(scope="module")
def adapted(tiny_handle, tmp_path_factory):
    return run("ondevice.adapt", ADAPT, tiny_handle, tmp_path_factory.mktemp("adapt"))


def test_adapt_trains_in_a_child_under_the_budget(adapted, tiny_handle):
    r = adapted.report
    assert r.budget_bytes == 4 * GB and r.budget_from == "budget_gb"
    assert 0 < r.measured_peak_bytes <= r.budget_bytes
    assert r.runtime_rss_bytes < r.measured_peak_bytes  # the child measured itself: libraries, then the model
    assert r.configuration == "lora-r16-all" and r.attempts[-1].outcome == "chosen"
    assert r.steps == 15 and r.trainable_params == rung_trainable(tiny_handle.model, ladder(2)[0]) > 0
    assert r.final_loss < r.first_loss
    assert r.perplexity_after < r.perplexity_before  # the local gain on held-out local blocks
    assert adapted.handle.format == "torch"
    assert all(p.dtype == torch.float32 for p in adapted.handle.model.parameters())


def test_adapt_result_reloads_identically(adapted, tmp_path):
    back = ModelHandle.load(adapted.handle.save(tmp_path / "a"))
    a = [x.logprob for x in adapted.handle.loglikelihood(REQUESTS)]
    b = [x.logprob for x in back.loglikelihood(REQUESTS)]
    assert a == b


def test_a_budget_too_small_is_refused_naming_it(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match=r"memory budget of 0\.050 GB.*norm-last2-ckpt-int8-mb1, needs"):
        run("ondevice.adapt", {**ADAPT, "budget_gb": 0.05}, tiny_handle, tmp_path)


def test_a_measured_peak_over_the_budget_is_refused(tiny_handle, tmp_path):
    # no runtime allowance: every estimate fits 0.3 GB, but the child (torch alone is ~0.5 GB) measures over it
    with pytest.raises(UsageError, match=r"0\.300 GB.*corrected by the .* measured over.*ran lora-r16-all: measured"):
        run("ondevice.adapt", {**ADAPT, "budget_gb": 0.3, "runtime_overhead_gb": 0.0, "max_steps": 1}, tiny_handle,
            tmp_path)


def test_the_profile_memory_cap_is_the_default_budget(tiny_handle, tmp_path):
    params = {k: v for k, v in ADAPT.items() if k != "budget_gb"}
    with pytest.raises(UsageError, match="budget_gb"):
        run("ondevice.adapt", params, tiny_handle, tmp_path)
    with pytest.raises(UsageError, match=r"memory budget of 0\.010 GB"):  # refused by estimate: no child started
        run("ondevice.adapt", params, tiny_handle, tmp_path, {"device": "cpu", "threads": 1, "memory_cap_gb": 0.01})


def test_a_larger_budget_picks_a_larger_configuration(tiny_handle):
    model = tiny_handle.model
    rungs = {r.name: r for r in ladder(1)}
    est = {n: estimate_peak(model, r, 4, 128, int(0.6 * GB)) for n, r in rungs.items()}
    totals = [e.total for e in est.values()]
    assert totals == sorted(totals, reverse=True)  # the ladder goes down in memory
    small = choose(est, est["lora-r8-attn-last1-ckpt"].total)
    large = choose(est, est["lora-r16-all"].total)
    assert (small, large) == ("lora-r8-attn-last1-ckpt", "lora-r16-all")
    assert est[large].trainable_params > est[small].trainable_params
    assert choose(est, est["norm-last1-ckpt-int8-mb1"].total - 1) is None
    # a bigger batch needs more activation memory
    assert estimate_peak(model, rungs["lora-r16-all"], 8, 128, 0).activations > est["lora-r16-all"].activations


@pytest.mark.parametrize("rung", ladder(1), ids=lambda r: r.name)
def test_every_rung_trains_what_its_estimate_counts(rung, tiny_handle):
    model = copy.deepcopy(tiny_handle.model)
    prepared = prepare(model, rung)
    trained = {n for n, w in prepared.named_parameters() if w.requires_grad}
    assert sum(w.numel() for w in prepared.parameters() if w.requires_grad) == rung_trainable(tiny_handle.model, rung)
    if rung.last_blocks:  # nothing trains in the frozen first block
        assert not any(".layers.0." in n for n in trained)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    prepared.train()
    prepared(input_ids=ids, labels=ids).loss.backward()
    assert all(w.grad is not None for w in prepared.parameters() if w.requires_grad)
    plain = finish(prepared, rung)
    assert set(plain.state_dict()) == set(tiny_handle.model.state_dict())
    assert all(type(w) is torch.nn.Parameter and w.dtype == torch.float32 for w in plain.parameters())


@pytest.fixture(scope="module")
def chain(tiny_handle, tmp_path_factory):
    """Three chunks applied one after another; from the second on, replaying c1."""
    out, h = [], tiny_handle
    for i, chunk in enumerate(("c1", "c2", "c3")):
        extra = {"replay": 0.25, "replay_from": "c1"} if i else {}
        applied = run("ondevice.continual", {**CONTINUAL, "dataset": chunk, **extra}, h,
                      tmp_path_factory.mktemp(chunk))
        out.append(applied)
        h = applied.handle
    return out


def test_continual_steps_chain_and_gain_locally(chain):
    reports = [a.report for a in chain]
    assert [r.chunk_index for r in reports] == [0, 1, 2]
    assert [s.technique for s in chain[-1].handle.lineage] == ["ondevice.continual"] * 3
    for r in reports:
        assert r.perplexity_after < r.perplexity_before and r.steps == 15
    assert reports[0].forgetting_before is None and reports[0].replay_blocks == 0
    for r in reports[1:]:
        assert r.forgetting_before is not None and r.forgetting_after is not None and r.replay_blocks > 0
    # c1's held-out perplexity before step 2 is what step 1 left
    assert reports[1].forgetting_before == pytest.approx(perplexity_of(chain[0].handle, "c1"), rel=1e-6)


def perplexity_of(handle, name):
    from adapters.techniques._training import token_blocks
    from adapters.techniques.train import perplexity

    blocks = token_blocks(handle.tokenizer, DATA[name], 32)
    return perplexity(handle.model, blocks[-max(1, int(len(blocks) * 0.2)):])


def test_three_continual_steps_with_evaluate_all_plan_every_node():
    from harness.plan import make_plan
    from harness.spec import parse_spec

    spec = ("name: stream\nbase: tiny-llama\nevaluate: all\nsuites: {memory: {}}\n"
            "datasets: {c1: {builtin: synthetic, n: 40}, c2: {builtin: synthetic, n: 50}, "
            "c3: {builtin: synthetic, n: 60}}\n"
            "paths: [[{ondevice.continual: {dataset: c1}}, {ondevice.continual: {dataset: c2, replay: 0.2, "
            "replay_from: c1}}, {ondevice.continual: {dataset: c3}}]]\n")
    plan = make_plan(parse_spec(spec, file="s.yaml"))
    (path,) = plan.paths
    assert len(path.chain) == 4  # the source and one node per chunk
    assert [plan.nodes[h].technique for h in path.chain[1:]] == ["ondevice.continual"] * 3
    assert {s.node for s in plan.suite_runs} == set(path.chain)  # every chunk's model is measured
    assert "replay_from" in plan.nodes[path.chain[2]].inputs  # the replay data reaches the step as an input


@pytest.mark.parametrize(("name", "bad", "fragment"), [
    ("ondevice.adapt", {"budget_gb": 0}, "budget_gb"),
    ("ondevice.adapt", {"last_blocks": 0}, "last_blocks"),
    ("ondevice.adapt", {"eval_fraction": 1.0}, "eval_fraction"),
    ("ondevice.adapt", {"runtime_overhead_gb": -1}, "runtime_overhead_gb"),
    ("ondevice.continual", {"replay": 0.5}, "replay"),
    ("ondevice.continual", {"replay": 1.0, "replay_from": "c1"}, "replay"),
    ("ondevice.continual", {"r": 0}, "r"),
    ("ondevice.continual", {"lr": 2}, "lr"),
])
def test_bad_params_are_refused(name, bad, fragment):
    with pytest.raises(UsageError, match=fragment):
        build_params(TECHNIQUES.get(name), bad)


def test_an_unknown_replay_dataset_is_refused(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="replay_from.*nope"):
        run("ondevice.continual", {**CONTINUAL, "dataset": "c1", "replay_from": "nope"}, tiny_handle, tmp_path)
