"""init.scratch with MobileLLM's immediate block-wise layer sharing: the weights are shared (counted and saved
once) while the full depth runs, each depth has its own KV-cache slot, the artifact reloads shared with the same
logits, and the techniques that walk decoder blocks see a shared part once."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from adapters.handle import ModelHandle
from adapters.sources import BLOCK_PARTS, block_counts, build_scratch, estimated_weight_bytes, load_source
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques._training import decoder_linears

SMALL = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 1, "intermediate": 128, "seq_len": 32, "batch_size": 4,
         "n_texts": 40, "lr": 3e-3}
SHARED = {**SMALL, "layer_sharing": "immediate"}
IDS = torch.tensor([[1, 57, 903, 4, 2210, 88, 17, 42, 311, 9, 5000, 73]])


def _run(name, params, handle, tmp_path, **ctx):
    cls = get_technique(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(workdir=tmp_path, **ctx))


@pytest.fixture(scope="module")
def shared(tiny_handle, tmp_path_factory):
    """init.scratch with 2 unique blocks run twice each (depth 4), trained 2 steps."""
    return _run("init.scratch", {**SHARED, "max_steps": 2}, tiny_handle, tmp_path_factory.mktemp("scratch"))


def _params(model):
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _incremental_logits(model, ids=IDS, prompt=4):
    """Logits of positions prompt-1.. from the prompt then one token at a time through the KV cache."""
    with torch.no_grad():
        out = model(input_ids=ids[:, :prompt], use_cache=True)
        cache, steps = out.past_key_values, [out.logits[:, -1]]
        for t in range(prompt, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits[:, -1])
    return torch.stack(steps, 1), cache


def _assert_shared(model, depth=4, repeat=2):
    layers = model.model.layers
    assert len(layers) == depth == model.config.num_hidden_layers
    for j, block in enumerate(layers):
        owner = layers[j - j % repeat]
        assert all(getattr(block, p) is getattr(owner, p) for p in BLOCK_PARTS), j
        assert block is not owner or j % repeat == 0
    assert layers[repeat].self_attn is not layers[0].self_attn


def _assert_cache_matches_full_forward(model):
    cached, cache = _incremental_logits(model)
    assert len(cache.layers) == model.config.num_hidden_layers  # one slot per depth, not per unique block
    torch.testing.assert_close(cached, _logits(model)[:, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("raw, fragment", [
    ({"layer_sharing": "immediate", "share_repeat": 1}, "share_repeat must be >= 2"),
    ({"share_repeat": 3}, "share_repeat (3) needs layer_sharing: immediate"),
    ({"layer_sharing": "cyclic"}, "'cyclic' is not allowed"),
])
def test_sharing_params_are_validated(raw, fragment):
    from adapters.errors import UsageError

    with pytest.raises(UsageError) as info:
        build_params(get_technique("init.scratch"), raw)
    assert fragment in str(info.value)


def test_a_scratch_source_with_a_bad_sharing_fails_clearly():
    from adapters.errors import ModelLoadError

    config = {**build_params(get_technique("init.scratch"), SHARED).config(), "share_repeat": 3}
    with pytest.raises(ModelLoadError, match=r"share_repeat must be an int >= 2 dividing num_hidden_layers \(4"):
        build_scratch(config)


def test_sharing_adds_depth_not_parameters(shared):
    model, report = shared.handle.model, shared.report
    _assert_shared(model)
    cls = get_technique("init.scratch")
    unshared_same_weights = build_scratch(build_params(cls, SMALL).config())[0]  # 2 blocks
    unshared_same_depth = build_scratch(build_params(cls, {**SMALL, "layers": 4}).config())[0]
    assert _params(model) == _params(unshared_same_weights) < _params(unshared_same_depth)
    assert shared.handle.num_parameters() == report.total_params == _params(model)
    assert (report.unique_blocks, report.depth) == (2, 4) == block_counts(model)
    assert report.config["num_hidden_layers"] == 4 and report.config["layer_sharing"] == "immediate"
    assert estimated_weight_bytes({"scratch": report.config}) == {"float32": 4 * _params(model)}

    calls = []  # the full depth runs: each unique attention is called twice per forward
    hook = model.model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = model(input_ids=IDS, output_hidden_states=True)
    finally:
        hook.remove()
    assert len(calls) == 2 and len(out.hidden_states) == 5


def test_training_updates_the_shared_weights_once(tiny_handle, tmp_path):
    a = _run("init.scratch", {**SHARED, "max_steps": 3}, tiny_handle, tmp_path, seed=1).handle.model
    b = _run("init.scratch", {**SHARED, "max_steps": 0}, tiny_handle, tmp_path, seed=1).handle.model
    _assert_shared(a)
    assert not torch.equal(a.model.layers[1].mlp.up_proj.weight, b.model.layers[1].mlp.up_proj.weight)


def test_each_depth_has_its_own_kv_cache_slot(shared):
    model = copy.deepcopy(shared.handle.model)
    _assert_cache_matches_full_forward(model)
    generated = model.generate(IDS[:, :4], max_new_tokens=8, do_sample=False, use_cache=True)
    greedy = IDS[:, :4]
    for _ in range(8):
        greedy = torch.cat([greedy, _logits(model, greedy)[:, -1:].argmax(-1)], 1)
    assert torch.equal(generated, greedy)

    for block in model.model.layers:  # without the per-depth slot, shared blocks overwrite each other's cache
        block._forward_pre_hooks.clear()
    cached, _ = _incremental_logits(model)
    assert not torch.allclose(cached, _logits(model)[:, 3:], atol=1e-3)


def test_the_artifact_stores_shared_weights_once_and_reloads_shared(shared, tmp_path):
    from safetensors import safe_open

    handle = shared.handle
    path = handle.save(tmp_path / "art")
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        blocks = {k.split(".")[2] for k in f.keys() if k.startswith("model.layers.")}
    assert blocks == {"0", "2"}  # the first block of each run holds the weights
    config = json.loads((path / "config.json").read_text())
    assert (config["num_hidden_layers"], config["layer_sharing"], config["share_repeat"]) == (4, "immediate", 2)

    back = ModelHandle.load(path)
    assert back.format == "torch" and back.num_parameters() == handle.num_parameters()
    _assert_shared(back.model)
    assert torch.equal(_logits(back.model), _logits(handle.model))
    _assert_cache_matches_full_forward(back.model)


def test_a_hugging_face_directory_of_a_shared_model_loads_shared(shared, tmp_path):
    shared.handle.model.save_pretrained(tmp_path / "hf")
    shared.handle.tokenizer.save_pretrained(tmp_path / "hf")
    back = load_source(str(tmp_path / "hf"))
    _assert_shared(back.model)
    assert torch.equal(_logits(back.model), _logits(shared.handle.model))


def test_decoder_linears_and_magnitude_pruning_see_a_shared_linear_once(shared, tmp_path):
    found = decoder_linears(shared.handle.model)
    assert len(found) == 14 and {n.split(".")[2] for n in found} == {"0", "2"}  # 7 linears x 2 unique blocks
    out = _run("prune.magnitude", {"sparsity": 0.5}, shared.handle, tmp_path)
    assert out.report.layers == 14 and out.report.pruned_weights == sum(m.weight.numel() for m in found.values())
    model = out.handle.model
    _assert_shared(model)
    for name in found:  # pruned once, to exactly the sparsity asked, at both depths that run it
        assert (model.get_submodule(name).weight == 0).float().mean().item() == 0.5
    back = ModelHandle.load(out.handle.save(tmp_path / "pruned"))
    assert back.format == "torch-sparse" and torch.equal(_logits(back.model), _logits(model))


def test_factorizing_a_shared_linear_replaces_it_at_every_depth(shared, tmp_path):
    from adapters.lowrank import LowRankLinear

    out = _run("factorize.svd", {"rank": 8, "targets": ["mlp"]}, shared.handle, tmp_path).handle
    layers = out.model.model.layers
    assert isinstance(layers[1].mlp.up_proj, LowRankLinear) and layers[1].mlp is layers[0].mlp
    back = ModelHandle.load(out.save(tmp_path / "lowrank"))
    _assert_shared(back.model)
    assert back.num_parameters() == out.num_parameters()
    assert torch.equal(_logits(back.model), _logits(out.model))


def test_layer_dropping_a_shared_model_keeps_it_consistent(shared, tmp_path):
    out = _run("prune.layers", {"n_layers": 1, "n_calibration": 2, "seq_len": 16}, shared.handle, tmp_path)
    model, report = out.handle.model, out.report
    assert report.layers_after == 3 == len(model.model.layers) == model.config.num_hidden_layers
    assert report.params_after == _params(model) <= report.params_before  # a dropped depth frees its weights
    _assert_cache_matches_full_forward(model)  # cache slots renumbered
    back = ModelHandle.load(out.handle.save(tmp_path / "dropped"))
    assert back.num_parameters() == out.handle.num_parameters()
    assert torch.equal(_logits(back.model), _logits(model))


def test_dropping_the_first_block_of_a_run_saves_and_reloads_the_rest_shared(tiny_handle, tmp_path):
    from adapters.techniques.layers import drop_blocks

    model = _run("init.scratch", {**SHARED, "share_repeat": 3, "max_steps": 0}, tiny_handle, tmp_path).handle.model
    _assert_shared(model, depth=6, repeat=3)
    before = _params(model)
    drop_blocks(model, [3])  # the block holding unique block 1's weights; depths 4 and 5 still run them
    layers = model.model.layers
    assert layers[3].mlp is layers[4].mlp and _params(model) == before
    handle = ModelHandle(model, tiny_handle.tokenizer, source="dropped")
    back = ModelHandle.load(handle.save(tmp_path / "art")).model
    assert back.model.layers[3].mlp is back.model.layers[4].mlp and back.model.layers[2].mlp is back.model.layers[0].mlp
    assert _params(back) == before
    assert torch.equal(_logits(back), _logits(model))
    _assert_cache_matches_full_forward(back)


@pytest.mark.parametrize("name, params, bits", [("quant.int8", {}, 8), ("quant.rtn", {}, 4)])
def test_a_quantized_shared_model_stores_shared_weights_once_and_reloads_shared(shared, tiny_handle, tmp_path,
                                                                               name, params, bits):
    from safetensors import safe_open

    from adapters.footprint import unique_state_dict

    out = _run(name, params, shared.handle, tmp_path).handle
    _assert_shared(out.model)  # each shared part quantized once, still shared
    path = out.save(tmp_path / "q")
    stored = {}
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            stored.update({k: f.get_tensor(k) for k in f.keys()})
    assert {k.split(".")[2] for k in stored if k.startswith("model.layers.")} == {"0", "2"}  # under first names
    unique_weights = sum(m.weight.numel() for m in decoder_linears(shared.handle.model).values())
    int_bytes = sum(t.numel() * t.element_size() for t in stored.values() if t.dtype in (torch.int8, torch.uint8))
    assert int_bytes == unique_weights * bits // 8  # the integer weights of each shared linear, once
    if name == "quant.int8":  # the footprint counts each shared int8 linear once too
        assert out.weight_footprint()["int8"] == unique_weights

    back = ModelHandle.load(path)
    assert back.format == out.format
    _assert_shared(back.model)
    assert back.num_parameters() == out.num_parameters() and back.weight_footprint() == out.weight_footprint()
    assert torch.equal(_logits(back.model), _logits(out.model))

    plain = _run(name, params, tiny_handle, tmp_path).handle.model  # no shared modules: the whole state dict
    assert list(unique_state_dict(plain)) == list(plain.state_dict())
