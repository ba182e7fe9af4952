"""federated.fedavg and federated.distill on the pico model: FedAvg of identical clients is centralized LoRA, the
global adapter is the example-weighted average of the clients' (Flower's aggregation), partitions have the sizes and
skew asked for under the seed, the bytes counted are the tensors that travel, the validation loss falls, federated
distillation moves the global model towards the clients' averaged logits, results reload identically, and bad
parameters are refused."""

from __future__ import annotations

import logging

import pytest
import torch

from adapters.corpus import synthetic_corpus
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques import federated as fed

pytest.importorskip("flwr")

BASE = {"dataset": "text", "seq_len": 32, "batch_size": 4, "n_texts": 400, "r": 4, "lr": 1e-2, "eval_blocks": 4}
PAIR = [("The river", " flows")]


def run(name, params, handle, workdir, seed=0, texts=None):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=seed, workdir=workdir, datasets={"text": texts or synthetic_corpus(400)})
    return cls(build_params(cls, params)).run(handle, ctx)


@pytest.fixture(scope="module")
def fedavg(tiny_handle, tmp_path_factory):
    """3 rounds of FedAvg over 2 Dirichlet clients, 4 local steps each."""
    params = {**BASE, "clients": 2, "rounds": 3, "local_steps": 4, "partition": "dirichlet"}
    return run("federated.fedavg", params, tiny_handle, tmp_path_factory.mktemp("fedavg"))


def test_identical_clients_equal_one_client_trained_alone(tiny_handle, tmp_path):
    params = {**BASE, "eval_blocks": 0, "n_texts": 200}
    out = run("federated.fedavg", {**params, "clients": 2, "rounds": 1, "local_steps": 5, "partition": "replicate"},
              tiny_handle, tmp_path / "f")
    alone = run("peft.lora", {k: params[k] for k in ("dataset", "seq_len", "batch_size", "n_texts", "r", "lr")}
                | {"max_steps": 5}, tiny_handle, tmp_path / "l")
    a, b = out.handle.model.state_dict(), alone.handle.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], tiny_handle.model.state_dict()[k]) for k in a)


def test_global_adapter_is_the_example_weighted_average(tiny_handle):
    """One round by hand with Flower's strategy over the in-process grid: the aggregate equals sum_k n_k w_k / n."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    sizes, states = [3, 7], [{"a": torch.randn(4, 2)}, {"a": torch.randn(4, 2)}]
    app = ClientApp()

    @app.train()
    def fit(msg, context):
        i = int(context.node_config["partition-id"])
        return Message(RecordDict({"arrays": ArrayRecord(torch_state_dict=states[i]),
                                   "metrics": MetricRecord({"num-examples": sizes[i]})}), reply_to=msg)

    p = fed.FedAvgParams(clients=2)
    grid = fed.local_grid(app, 2)
    with fed.flower_session(0):
        strategy = fed.flower_strategy(p)
        replies = grid.send_and_receive(strategy.configure_train(1, ArrayRecord(torch_state_dict={"a": torch.zeros(4, 2)}),
                                                                 ConfigRecord(), grid))
        averaged, _ = strategy.aggregate_train(1, replies)
    expected = (3 * states[0]["a"] + 7 * states[1]["a"]) / 10
    assert torch.allclose(averaged.to_torch_state_dict()["a"], expected, atol=1e-6)
    assert grid.exchanges == [fed.Exchange((0, 1), 2 * 32, 2 * 32)]


def test_fedavg_two_clients_on_different_data_average_their_adapters(tiny_handle, tmp_path):
    """After one round the merged model equals the model merged with the weighted average of the adapters each
    client would have trained alone from the same start."""
    params = fed.FedAvgParams(**{**BASE, "clients": 2, "rounds": 1, "local_steps": 2})
    ctx = TechniqueContext(seed=0, workdir=tmp_path, datasets={"text": synthetic_corpus(400)})
    out = TECHNIQUES.get("federated.fedavg")(params).run(tiny_handle, ctx)
    s = fed.setup(tiny_handle, ctx, params)
    start = fed.adapter_state(s.model)
    trained = []
    for blocks in s.client_blocks:
        fed.load_adapter(s.model, start)
        fed.local_train(s.model, blocks, 2, params, 0)
        trained.append(fed.adapter_state(s.model))
    n = [len(b) for b in s.client_blocks]
    assert n[0] != n[1] and out.report.client_examples == tuple(n)
    average = {k: (n[0] * trained[0][k] + n[1] * trained[1][k]) / sum(n) for k in start}
    merged = fed.finished(s, average).state_dict()
    got = out.handle.model.state_dict()
    assert all(torch.allclose(got[k], merged[k], atol=1e-6) for k in got)


def test_partitions_have_the_intended_sizes_and_skew():
    iid = fed.partition_indices(103, 4, "iid", seed=0)
    assert sorted(len(p) for p in iid) == [25, 26, 26, 26]
    assert sorted(i for p in iid for i in p) == list(range(103))
    assert iid == fed.partition_indices(103, 4, "iid", seed=0) != fed.partition_indices(103, 4, "iid", seed=1)
    labels = [str(i % 4) for i in range(400)]

    def label_share(parts):  # mean over clients of the share of its largest label
        return sum(max(sum(labels[i] == lab for i in p) for lab in "0123") / len(p) for p in parts) / len(parts)

    skewed = fed.partition_indices(400, 4, "dirichlet", seed=0, labels=labels, alpha=0.1)
    mild = fed.partition_indices(400, 4, "dirichlet", seed=0, labels=labels, alpha=100.0)
    assert sorted(i for p in skewed for i in p) == list(range(400)) and all(skewed)
    assert label_share(skewed) > 0.7 and label_share(mild) < 0.4
    assert skewed == fed.partition_indices(400, 4, "dirichlet", seed=0, labels=labels, alpha=0.1)
    assert fed.partition_indices(5, 3, "replicate", seed=0) == [[0, 1, 2, 3, 4]] * 3


def test_dirichlet_labels_come_from_a_record_field_or_the_hashed_first_word():
    records = [{"text": "x y", "key": "a"}, {"text": "z", "key": "b"}]
    assert fed.text_labels(records, "key", 8, 0) == ["a", "b"]
    texts = synthetic_corpus(200)
    labels = fed.text_labels(texts, None, 8, 0)
    assert len(set(labels)) > 1 and labels == fed.text_labels(texts, None, 8, 0)
    with pytest.raises(UsageError, match="partition_key"):
        fed.text_labels(records, "topic", 8, 0)


def test_a_labelled_text_file_keeps_its_labels_for_partition_key(tmp_path):
    from adapters.corpus import read_records, record_text

    path = tmp_path / "mixture.jsonl"
    path.write_text('{"text": "Question: two plus two", "label": "math"}\n{"text": "A camel walks", "label": "video"}\n'
                    '{"text": "no label here"}\n')
    records = read_records(path)
    assert fed.text_labels(records[:2], "label", 8, 0) == ["math", "video"]
    assert [record_text(r) for r in records] == ["Question: two plus two", "A camel walks", "no label here"]


def test_bytes_selection_and_validation_loss_per_round(fedavg):
    r = fedavg.report
    assert r.strategy.startswith("FedAvg (flwr ")
    assert len(r.rounds) == 3 and all(x.clients == (0, 1) for x in r.rounds)
    assert r.bytes_up == r.bytes_down == r.adapter_bytes * 2 * 3
    assert all(x.bytes_up == x.bytes_down == 2 * r.adapter_bytes for x in r.rounds)
    losses = [r.val_loss_before] + [x.val_loss for x in r.rounds]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses
    assert r.val_loss_after == r.rounds[-1].val_loss


def test_adapter_bytes_are_the_lora_tensors(fedavg, tiny_handle):
    model = tiny_handle.model
    layers = len(model.model.layers)
    per_layer = 0
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        lin = getattr(model.model.layers[0].self_attn, name, None) or getattr(model.model.layers[0].mlp, name)
        per_layer += 4 * (lin.in_features + lin.out_features)
    assert fedavg.report.adapter_bytes == layers * per_layer * 4
    assert fedavg.report.trainable_params == layers * per_layer


def test_client_fraction_samples_clients_under_the_seed(tiny_handle, tmp_path):
    params = {**BASE, "clients": 4, "rounds": 2, "local_steps": 1, "client_fraction": 0.5, "eval_blocks": 0}
    a = run("federated.fedavg", params, tiny_handle, tmp_path / "a")
    b = run("federated.fedavg", params, tiny_handle, tmp_path / "b")
    assert all(len(x.clients) == 2 for x in a.report.rounds)
    assert a.report.rounds == b.report.rounds
    assert a.report.bytes_up == 2 * 2 * a.report.adapter_bytes
    assert a.handle.loglikelihood(PAIR) == b.handle.loglikelihood(PAIR)


def test_fedprox_runs_flowers_fedprox(tiny_handle, tmp_path):
    out = run("federated.fedavg", {**BASE, "clients": 2, "rounds": 1, "local_steps": 2, "proximal_mu": 0.1},
              tiny_handle, tmp_path)
    assert out.report.strategy.startswith("FedProx")


def test_flower_logs_nothing(tiny_handle, tmp_path, capfd, caplog):
    with caplog.at_level(logging.DEBUG):
        run("federated.fedavg", {**BASE, "clients": 2, "rounds": 1, "local_steps": 1, "eval_blocks": 0}, tiny_handle,
            tmp_path)
    out, err = capfd.readouterr()
    assert "flwr" not in out + err and "WARNING" not in out + err and "ROUND" not in out + err
    assert not [r for r in caplog.records if r.name.startswith("flwr")]


@pytest.fixture(scope="module")
def distilled(tiny_handle, tmp_path_factory):
    params = {**BASE, "clients": 2, "rounds": 2, "local_steps": 3, "distill_steps": 10, "public_blocks": 4}
    return run("federated.distill", params, tiny_handle, tmp_path_factory.mktemp("distill"))


def test_distill_sends_the_public_logits_and_approaches_their_average(distilled, tiny_handle):
    r = distilled.report
    vocab = tiny_handle.model.config.vocab_size
    assert all(x.bytes_up == 2 * 4 * 32 * vocab * 4 and x.bytes_down == 0 for x in r.rounds)
    assert r.bytes_up == 2 * r.rounds[0].bytes_up and r.bytes_down == 0
    assert r.fedavg_bytes == 2 * 2 * 2 * r.adapter_bytes
    assert all(x.kl_after < x.kl_before for x in r.rounds)
    assert r.val_loss_before is not None and r.val_loss_after is not None


def test_results_reload_identically(fedavg, distilled, tmp_path):
    for name, out in (("a", fedavg), ("d", distilled)):
        back = ModelHandle.load(out.handle.save(tmp_path / name))
        assert back.loglikelihood(PAIR) == out.handle.loglikelihood(PAIR)


def test_pruned_input_stays_pruned(tiny, tmp_path):
    w = tiny.model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w[:, ::2] = 0
    out = run("federated.fedavg", {**BASE, "clients": 2, "rounds": 1, "local_steps": 1, "eval_blocks": 0}, tiny,
              tmp_path)
    assert out.report.sparsity_kept
    assert bool((out.handle.model.model.layers[0].mlp.up_proj.weight[:, ::2] == 0).all())


@pytest.mark.parametrize("name", ["federated.fedavg", "federated.distill"])
@pytest.mark.parametrize("bad", [{"clients": 0}, {"rounds": 0}, {"client_fraction": 0}, {"client_fraction": 1.5},
                                 {"partition": "shards"}, {"dirichlet_alpha": 0}, {"local_steps": 0}, {"lr": 2},
                                 {"eval_blocks": -1}, {"target_modules": []}])
def test_bad_params_are_refused(name, bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
        build_params(TECHNIQUES.get(name), bad)


@pytest.mark.parametrize("bad", [{"proximal_mu": -1}])
def test_bad_fedavg_params(bad):
    with pytest.raises(UsageError, match="proximal_mu"):
        build_params(TECHNIQUES.get("federated.fedavg"), bad)


@pytest.mark.parametrize("bad", [{"distill_steps": 0}, {"public_blocks": 0}, {"temperature": 0}, {"distill_lr": 0}])
def test_bad_distill_params(bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
        build_params(TECHNIQUES.get("federated.distill"), bad)


def test_too_many_held_out_blocks_are_refused(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="eval_blocks"):
        run("federated.fedavg", {**BASE, "n_texts": 10, "eval_blocks": 100, "local_steps": 1}, tiny_handle, tmp_path)


def test_missing_flower_names_the_install_command(tiny_handle, tmp_path, monkeypatch):
    from adapters.errors import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "flwr", None)
    with pytest.raises(MissingDependencyError, match=r"flwr==1\.42\.0"):
        run("federated.fedavg", {**BASE, "clients": 2, "rounds": 1, "local_steps": 1}, tiny_handle, tmp_path)
