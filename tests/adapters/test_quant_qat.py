"""quant.qat on the pico model: with no training it is exactly quant.rtn's model (the PTQ baseline); training against
the fake-quantized weights brings the converted int4 model closer to the float one on held-out text than PTQ;
conversion loses nothing (the fake-quantized and the frozen model agree); the artifact is quant.rtn's format."""

from __future__ import annotations

import pytest
import torch

from adapters.corpus import synthetic_corpus
from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params
from adapters.techniques.distill import mean_kl
from adapters.techniques.quant import quanto_layers

pytest.importorskip("optimum.quanto")

PAIR = [("The river near the old mill", " flows east"), ("She sold", " apples at the market")]
QAT = {"bits": 4, "group_size": 64, "seq_len": 32, "batch_size": 4, "n_texts": 400, "eval_blocks": 4, "lr": 1e-4}


def run(name, params, handle, workdir):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=0, workdir=workdir, datasets={"text": synthetic_corpus(400)})
    return cls(build_params(cls, params)).run(handle, ctx)


def lls(handle):
    return [x.logprob for x in handle.loglikelihood(PAIR)]


@pytest.fixture(scope="module")
def qat_tiny(tiny_handle, tmp_path_factory):
    return run("quant.qat", {**QAT, "dataset": "text", "max_steps": 40}, tiny_handle, tmp_path_factory.mktemp("qat"))


def test_qat_without_training_is_round_to_nearest(tiny_handle, tmp_path):
    ptq = run("quant.qat", {**QAT, "dataset": "text", "max_steps": 0}, tiny_handle, tmp_path / "q").handle
    rtn = run("quant.rtn", {"bits": 4, "group_size": 64}, tiny_handle, tmp_path / "r").handle
    a, b = ptq.model.state_dict(), rtn.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert ptq.format == rtn.format == "quanto"


def test_qat_beats_ptq_on_held_out_text_and_converts_exactly(qat_tiny, tiny_handle):
    r = qat_tiny.report
    print({k: getattr(r, k) for k in ("kl_ptq", "kl_qat", "perplexity_float", "perplexity_ptq", "perplexity_qat")})
    assert r.steps == 40 and r.layers == 14 and r.loss == "kd" and r.held_out_blocks == 4
    assert r.kl_qat < 0.8 * r.kl_ptq
    assert r.perplexity_qat < r.perplexity_ptq
    # the report's KL was measured on the fake-quantized model before conversion; the frozen model gives the same
    held = [torch.tensor([b]) for b in _held_out(tiny_handle)]
    assert mean_kl(qat_tiny.handle.model, tiny_handle.model, held) == pytest.approx(r.kl_qat, rel=1e-4)
    layers = quanto_layers(qat_tiny.handle.model)
    assert len(layers) == 14 and all(lin.weight_group_size == 64 and "qint4" in str(lin.weight_qtype)
                                     for lin in layers.values())


def _held_out(tiny_handle):
    from adapters.techniques._training import token_blocks

    return token_blocks(tiny_handle.tokenizer, synthetic_corpus(400), QAT["seq_len"])[: QAT["eval_blocks"]]


def test_qat_artifact_reloads_as_quanto(qat_tiny, tmp_path):
    path = qat_tiny.handle.save(tmp_path / "a")
    back = ModelHandle.load(path)
    assert back.format == "quanto" and lls(back) == lls(qat_tiny.handle)


def test_qat_checks_its_parameters(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="group_size 48 does not divide the 64"):
        run("quant.qat", {"group_size": 48, "max_steps": 0}, tiny_handle, tmp_path)
    for bad in ({"loss": "mse"}, {"lr": 0}, {"temperature": 0}, {"max_steps": -1}, {"eval_blocks": 0}):
        with pytest.raises(UsageError):
            build_params(TECHNIQUES.get("quant.qat"), bad)
