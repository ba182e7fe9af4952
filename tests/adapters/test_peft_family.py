"""peft.dora, peft.ia3, peft.bitfit and peft.qlora on the pico model: each changes exactly the weights its method
reaches (and in the form the method allows: IA3 a per-row / per-column rescaling, QLoRA a rank-r update over the int8
base), lowers the loss over 20 steps, is deterministic under the seed, round-trips, keeps a pruned model pruned and a
low-rank one low-rank, and refuses bad parameters."""

from __future__ import annotations

import pytest
import torch

from adapters.corpus import synthetic_corpus
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques._training import token_blocks

TRAIN = {"max_steps": 20, "dataset": "text", "seq_len": 32, "batch_size": 4, "n_texts": 400}
#: learning rates that move the random pico model within 20 steps (its logits are near uniform, so the few gains
#: and scales of IA3 and BitFit need a large step)
RUNS = {
    "peft.dora": {"r": 4, "lr": 1e-2},
    "peft.ia3": {"lr": 1e-1},
    "peft.bitfit": {"lr": 1e-1},
    "peft.qlora": {"r": 4, "lr": 1e-2, "target_modules": ["q_proj", "v_proj", "down_proj"]},
}
NAMES = list(RUNS)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PAIR = [("The river", " flows")]


def run(name, params, handle, workdir, seed=0):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=seed, workdir=workdir, datasets={"text": synthetic_corpus(400)})
    return cls(build_params(cls, params)).run(handle, ctx)


def held_out_loss(handle) -> float:
    """Mean next-token loss on 16 blocks of another seed's synthetic world (same templates, other people)."""
    ids = torch.tensor(token_blocks(handle.tokenizer, synthetic_corpus(400, seed=1), 32)[:16])
    with torch.no_grad():
        return float(handle.model(input_ids=ids, labels=ids).loss)


@pytest.fixture(scope="module")
def trained(tiny_handle, tmp_path_factory):
    """Each technique applied once for 20 steps: ``{name: Applied}``."""
    return {name: run(name, {**TRAIN, **extra}, tiny_handle, tmp_path_factory.mktemp(name)) for name, extra in RUNS.items()}


def changed(before, after) -> set[str]:
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def weights_of(model, names) -> set[str]:
    return {k for k in model.state_dict() if any(f".{n}." in f".{k}" for n in names)}


def int8_roundtrip(w):
    """What torchao's int8 weight-only quantization makes of ``w`` (the QLoRA base)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    quantize_(lin, Int8WeightOnlyConfig())
    return lin.weight.dequantize()


def test_bitfit_trains_only_the_norm_weights(trained, tiny_handle):
    out = trained["peft.bitfit"]
    norms = {k for k in tiny_handle.model.state_dict() if "norm" in k}
    assert len(norms) == 5 and changed(tiny_handle.model, out.handle.model) == norms
    r = out.report
    assert r.trained == {"norm_weight": 5 * 64} and r.trainable_params == 320
    assert r.targets == ("input_layernorm", "norm", "post_attention_layernorm")


def test_ia3_rescales_rows_of_k_v_and_columns_of_down(trained, tiny_handle):
    out = trained["peft.ia3"]
    before, after = tiny_handle.model, out.handle.model
    assert changed(before, after) == weights_of(before, ("k_proj", "v_proj", "down_proj"))
    for layer_before, layer_after in zip(before.model.layers, after.model.layers, strict=True):
        for lin, dim in ((("self_attn", "k_proj"), 1), (("self_attn", "v_proj"), 1), (("mlp", "down_proj"), 0)):
            w0 = getattr(getattr(layer_before, lin[0]), lin[1]).weight
            w1 = getattr(getattr(layer_after, lin[0]), lin[1]).weight
            ratio = w1 / w0  # one learned scale per output row (k, v) or per input column (down)
            assert torch.allclose(ratio, ratio.mean(dim=dim, keepdim=True), atol=1e-5), lin
    assert out.report.trained == {"ia3_scaling": 2 * (32 + 32 + 128)}


def test_dora_changes_the_targeted_weights_only(trained, tiny_handle):
    out = trained["peft.dora"]
    assert changed(tiny_handle.model, out.handle.model) == weights_of(tiny_handle.model, LINEARS)
    r = out.report
    # r * (in + out) per LoRA pair, one magnitude per output row
    assert r.trained["dora_magnitude"] == 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    assert r.trained["lora_A"] == 2 * 4 * (64 * 6 + 128) and 0 < r.trainable_params < r.total_params / 100
    assert not any("lora" in n for n, _ in out.handle.model.named_parameters())


def test_qlora_adds_a_rank_r_update_to_the_int8_base(trained, tiny_handle):
    out = trained["peft.qlora"]
    before, after = tiny_handle.model, out.handle.model
    assert changed(before, after) == weights_of(before, LINEARS)  # the whole base was quantized
    sd0, sd1 = before.state_dict(), after.state_dict()
    for key in weights_of(before, LINEARS):
        update = sd1[key] - int8_roundtrip(sd0[key])
        if any(t in key for t in ("q_proj", "v_proj", "down_proj")):
            assert 0 < torch.linalg.matrix_rank(update) <= 4, key
        else:
            assert torch.equal(update, torch.zeros_like(update)), key
    r = out.report
    assert r.quantized_layers == 14 and "int8" in r.base_quantization and set(r.trained) == {"lora_A", "lora_B"}
    assert all(not isinstance(m.weight, torch.Tensor) or type(m.weight) is torch.nn.Parameter
               for m in after.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("name", NAMES)
def test_loss_goes_down_and_reloads_identically(name, trained, tiny_handle, tmp_path):
    out = trained[name]
    r = out.report
    assert r.steps == 20 and r.first_loss is not None and r.final_loss < r.first_loss
    assert held_out_loss(out.handle) < held_out_loss(tiny_handle) - 0.01
    assert out.handle.format == "torch" and out.handle.lineage[-1].technique == name
    back = ModelHandle.load(out.handle.save(tmp_path / "a"))
    assert back.loglikelihood(PAIR) == out.handle.loglikelihood(PAIR)
    assert back.format == "torch"


def test_same_seed_same_model(trained, tiny_handle, tmp_path):
    again = run("peft.dora", {**TRAIN, **RUNS["peft.dora"]}, tiny_handle, tmp_path)
    assert changed(trained["peft.dora"].handle.model, again.handle.model) == set()


@pytest.mark.parametrize("name", NAMES)
def test_a_pruned_input_stays_pruned(name, tiny_handle, tmp_path):
    sparse = run("prune.magnitude", {"sparsity": 0.5}, tiny_handle, tmp_path / "p").handle
    params = {**TRAIN, **RUNS[name], "max_steps": 3}
    out = run(name, params, sparse, tmp_path / "t")
    assert out.handle.format == "torch-sparse" and out.report.sparsity_kept
    w0, w1 = sparse.model.state_dict(), out.handle.model.state_dict()
    for key in weights_of(sparse.model, LINEARS):
        assert torch.equal(w0[key] == 0, w1[key] == 0), key
    assert changed(sparse.model, out.handle.model)
    loose = run(name, {**params, "keep_sparsity": False}, sparse, tmp_path / "l")
    assert loose.handle.format == "torch" and not loose.report.sparsity_kept
    zeros = (loose.handle.model.model.layers[0].self_attn.v_proj.weight == 0).float().mean()
    if name in ("peft.dora", "peft.qlora"):  # an additive update fills the zeros when told it may
        assert zeros < 0.1
    else:  # BitFit leaves linears alone and IA3 only rescales them: zeros stay zeros either way
        assert zeros == 0.5


@pytest.mark.parametrize("name", NAMES)
def test_a_low_rank_input_stays_low_rank(name, tiny_handle, tmp_path):
    from adapters.lowrank import LowRankLinear

    lowrank = run("factorize.svd", {"rank": 8}, tiny_handle, tmp_path / "f").handle
    out = run(name, {**TRAIN, **RUNS[name], "max_steps": 3}, lowrank, tmp_path / "t")
    assert out.handle.format == "torch-lowrank"
    pairs = [m for m in out.handle.model.modules() if isinstance(m, LowRankLinear)]
    assert len(pairs) == 14 and all(type(m[0]) is torch.nn.Linear for m in pairs)
    moved = changed(lowrank.model, out.handle.model)
    if name == "peft.ia3":  # the output factor of k and v, the input factor of down
        assert moved == weights_of(lowrank.model, ("k_proj.1", "v_proj.1", "down_proj.0"))
        assert out.report.targets == ("k_proj.1", "v_proj.1", "down_proj.0")
    elif name == "peft.bitfit":
        assert all("norm" in k for k in moved)
    else:
        assert moved == weights_of(lowrank.model, LINEARS)
    back = ModelHandle.load(out.handle.save(tmp_path / "a"))
    assert back.loglikelihood(PAIR) == out.handle.loglikelihood(PAIR)


@pytest.mark.parametrize(("name", "bad", "fragment"), [
    ("peft.dora", {"r": 0}, "r must be >= 1"),
    ("peft.qlora", {"lr": 0}, "lr must be in"),
    ("peft.ia3", {"feedforward_modules": ["up_proj"]}, "feedforward_modules ['up_proj'] are not in target_modules"),
    ("peft.ia3", {"target_modules": []}, "target_modules must name"),
    ("peft.bitfit", {"batch_size": 0}, "batch_size must be >= 1"),
    ("peft.bitfit", {"max_steps": -1}, "max_steps must be >= 0"),
    ("peft.bitfit", {"rank": 4}, "unknown parameter 'rank'"),
])
def test_bad_params_are_refused(name, bad, fragment):
    with pytest.raises(UsageError) as info:
        build_params(TECHNIQUES.get(name), bad)
    assert fragment in str(info.value)


def test_an_unknown_target_is_refused(tiny_handle, tmp_path):
    with pytest.raises(ValueError, match="not modules of this model"):
        run("peft.ia3", {"max_steps": 1, "target_modules": ["nope_proj"], "feedforward_modules": []}, tiny_handle,
            tmp_path)
