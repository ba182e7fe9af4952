"""prune.sparsegpt (llmcompressor's SparseGPTModifier): the sparsity and N:M pattern asked for, and layer outputs on
held-out text reconstructed better than magnitude and Wanda pruning at the same sparsity (its weight update)."""

from __future__ import annotations

import pytest
import torch

from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

pytest.importorskip("llmcompressor")

CHEAP = {"prune.sparsegpt": {"n_samples": 8, "seq_len": 32}, "prune.wanda": {"n_calibration": 8, "seq_len": 32},
         "prune.magnitude": {}}


def pruned(name, handle, tmp_path, **params):
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, {**CHEAP[name], **params})).run(handle, TechniqueContext(seed=0, workdir=tmp_path))


def layer_inputs(handle, layer_name):
    """The inputs of one linear layer of the dense model on held-out text."""
    from adapters.corpus import synthetic_corpus

    seen = []
    layer = dict(handle.model.named_modules())[layer_name]
    hook = layer.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach().reshape(-1, args[0].shape[-1])))
    ids = handle.tokenizer(" ".join(synthetic_corpus(40, seed=7)), return_tensors="pt").input_ids[:, :256]
    with torch.no_grad():
        handle.model(input_ids=ids)
    hook.remove()
    return torch.cat(seen)


def correlated(handle):
    """A copy whose token embeddings share a few directions (as real models' do): the layers' inputs are then
    correlated, the case SparseGPT's inverse-Hessian update is for (the pico model's random inputs are isotropic,
    where every method is about magnitude pruning)."""
    import copy

    model = copy.deepcopy(handle.model)
    gen = torch.Generator().manual_seed(0)
    emb = model.get_input_embeddings().weight
    width = emb.shape[1]
    mixing = torch.randn(width, width, generator=gen) * torch.logspace(0, -2, width)[:, None]
    with torch.no_grad():
        emb.copy_(torch.randn(emb.shape, generator=gen) @ mixing)
    return ModelHandle(model, handle.tokenizer, source="correlated")


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_reconstructs_layer_outputs_better_than_wanda_and_magnitude(pattern, tiny_handle, tmp_path):
    name = "model.layers.0.self_attn.q_proj"
    handle = correlated(tiny_handle)
    x = layer_inputs(handle, name)
    dense = dict(handle.model.named_modules())[name].weight.detach()
    errors = {}
    for method in ("prune.sparsegpt", "prune.wanda", "prune.magnitude"):
        out = pruned(method, handle, tmp_path / method.replace(".", "-") / pattern, sparsity=0.5, pattern=pattern)
        w = dict(out.handle.model.named_modules())[name].weight.detach()
        assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01), method
        if pattern == "2:4":
            assert int((w.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2, method
        errors[method] = float(torch.linalg.norm(x @ (dense - w).T) / torch.linalg.norm(x @ dense.T))
    print(pattern, {k: round(v, 4) for k, v in errors.items()})
    assert errors["prune.sparsegpt"] < errors["prune.wanda"] and errors["prune.sparsegpt"] < errors["prune.magnitude"], errors


def test_sparsegpt_output_is_a_sparse_model_that_reloads(tiny_handle, tmp_path):
    applied = pruned("prune.sparsegpt", tiny_handle, tmp_path / "s", sparsity=0.5)
    out = applied.handle
    assert out.format == "torch-sparse" and applied.report.sparsity == pytest.approx(0.5, abs=0.01)
    back = ModelHandle.load(out.save(tmp_path / "saved"))
    pair = [("The river", " flows")]
    assert back.loglikelihood(pair) == out.loglikelihood(pair)
    assert out.generate(["1 2 3"], max_new_tokens=3) == back.generate(["1 2 3"], max_new_tokens=3)
