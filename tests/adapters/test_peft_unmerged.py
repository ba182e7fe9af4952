"""Unmerged peft adapters (the ``peft-adapter`` format) on the pico model: ``peft.prompt_tuning`` trains only its soft
prompt, every scorer drops the soft prompt's positions (checked against the prompt concatenated by hand), greedy
generation follows the same logits; ``merge: false`` on LoRA, DoRA and IA3 gives the merged model's numbers over the
untouched base; every such artifact reloads identically; the plan refuses a weight-changing step after one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adapters.corpus import synthetic_corpus
from adapters.errors import SpecError, UsageError
from adapters.formats import ADAPTER_DIR, PEFT_ADAPTER, virtual_tokens
from adapters.handle import ModelHandle
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

TRAIN = {"dataset": "text", "seq_len": 32, "batch_size": 4, "n_texts": 400}
PAIRS = [("The river", " flows"), ("Bread is made from", " flour and water")]


def run(name, params, handle, workdir, seed=0):
    cls = TECHNIQUES.get(name)
    ctx = TechniqueContext(seed=seed, workdir=workdir, datasets={"text": synthetic_corpus(400)})
    return cls(build_params(cls, params)).run(handle, ctx)


@pytest.fixture(scope="module")
def prompted(tiny_handle, tmp_path_factory):
    return run("peft.prompt_tuning", {**TRAIN, "max_steps": 20, "num_virtual_tokens": 6, "lr": 0.3}, tiny_handle,
               tmp_path_factory.mktemp("pt"))


def by_hand(handle, ids: list[int]) -> torch.Tensor:
    """Log-probabilities at each input position of a prompt-tuned model, with the soft prompt concatenated here (the
    base model's own forward over [soft prompt; token embeddings], the soft prompt's positions cut)."""
    model = handle.model
    soft = model.prompt_encoder[model.active_adapter].embedding.weight
    base = model.get_base_model()
    embeds = torch.cat([soft, base.get_input_embeddings()(torch.tensor(ids))])[None]
    with torch.no_grad():
        logits = base(inputs_embeds=embeds).logits[0, soft.shape[0]:]
    return torch.log_softmax(logits.float(), dim=-1)


def test_prompt_tuning_trains_only_the_soft_prompt(prompted, tiny_handle):
    h, r = prompted.handle, prompted.report
    assert h.format == PEFT_ADAPTER and h.lineage[-1].output_format == PEFT_ADAPTER
    assert virtual_tokens(h.model) == 6 and r.virtual_tokens == 6
    hidden = tiny_handle.model.config.hidden_size
    assert r.trainable_params == 6 * hidden == r.trained["soft_prompt"]
    base = h.model.get_base_model().state_dict()
    for k, w in tiny_handle.model.state_dict().items():  # the frozen base is the input, bit for bit
        assert torch.equal(base[k], w), k
    assert r.steps == 20 and r.final_loss < r.first_loss


def test_the_soft_prompt_lowers_the_held_out_loss(prompted, tiny_handle):
    texts = synthetic_corpus(400, seed=1)[:16]  # another seed's world: same templates, other people
    assert sum(prompted.handle.loglikelihood_rolling(texts)) > sum(tiny_handle.loglikelihood_rolling(texts)) + 1.0


def test_scoring_drops_the_soft_prompt_positions(prompted):
    h = prompted.handle
    tok = h.tokenizer
    for context, continuation in PAIRS:
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
        cont_ids = tok(continuation, add_special_tokens=False)["input_ids"]
        rows = by_hand(h, ctx_ids + cont_ids)
        want = sum(float(rows[len(ctx_ids) - 1 + j, t]) for j, t in enumerate(cont_ids))
        (got,) = h.loglikelihood([(context, continuation)])
        assert got.logprob == pytest.approx(want, abs=1e-4)
    logits = h.forward([ctx_ids])
    assert logits.shape[1] == len(ctx_ids)
    assert torch.allclose(torch.log_softmax(logits[0].float(), -1), by_hand(h, ctx_ids), atol=1e-5)
    assert h.lm()._supports_prefix_cache() is False  # a cached context would get the soft prompt twice


def test_greedy_generation_follows_the_prompted_logits(prompted):
    h = prompted.handle
    ids = h.tokenizer("1 2 3", add_special_tokens=False)["input_ids"]
    start = len(ids)
    for _ in range(5):
        ids.append(int(by_hand(h, ids)[-1].argmax()))
    (text,) = h.generate(["1 2 3"], max_new_tokens=5)
    assert text == h.tokenizer.decode(ids[start:])


def test_a_prompt_tuned_artifact_reloads_identically(prompted, tmp_path):
    path = prompted.handle.save(tmp_path / "a")
    assert json.loads((path / ADAPTER_DIR / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
    back = ModelHandle.load(path)
    assert back.format == PEFT_ADAPTER and virtual_tokens(back.model) == 6
    assert back.loglikelihood(PAIRS) == prompted.handle.loglikelihood(PAIRS)
    assert back.generate(["1 2 3"], max_new_tokens=4) == prompted.handle.generate(["1 2 3"], max_new_tokens=4)


def test_the_soft_prompt_starts_as_the_init_texts_embeddings(tiny_handle, tmp_path):
    out = run("peft.prompt_tuning", {**TRAIN, "max_steps": 0, "num_virtual_tokens": 5, "init_text": "a b"},
              tiny_handle, tmp_path)
    ids = tiny_handle.tokenizer("a b", add_special_tokens=False)["input_ids"]
    want = tiny_handle.model.get_input_embeddings().weight[[ids[i % len(ids)] for i in range(5)]]
    soft = out.handle.model.prompt_encoder[out.handle.model.active_adapter].embedding.weight
    assert torch.equal(soft, want) and out.report.init == "text"


@pytest.mark.parametrize(("name", "params"), [
    ("peft.lora", {"r": 4, "lr": 1e-2}),
    ("peft.dora", {"r": 4, "lr": 1e-2}),
    ("peft.ia3", {"lr": 1e-1}),
])
def test_unmerged_adapters_score_as_the_merged_model(name, params, tiny_handle, tmp_path):
    merged = run(name, {**TRAIN, **params, "max_steps": 5}, tiny_handle, tmp_path / "m").handle
    kept = run(name, {**TRAIN, **params, "max_steps": 5, "merge": False}, tiny_handle, tmp_path / "u").handle
    assert merged.format == "torch" and kept.format == PEFT_ADAPTER
    m, k = merged.loglikelihood(PAIRS), kept.loglikelihood(PAIRS)
    assert m != tiny_handle.loglikelihood(PAIRS)  # trained: the comparison is not of two copies of the input
    assert [x.logprob for x in k] == pytest.approx([x.logprob for x in m], abs=1e-4)
    path = kept.save(tmp_path / "a")
    stored = load_file(str(path / "model.safetensors"))
    assert not any("lora" in key or "ia3" in key or "base_layer" in key for key in stored)  # the base, clean
    back = ModelHandle.load(path)
    assert back.format == PEFT_ADAPTER and back.loglikelihood(PAIRS) == k
    assert back.generate(["1 2 3"], max_new_tokens=4) == kept.generate(["1 2 3"], max_new_tokens=4)


def test_unmerged_lora_on_a_low_rank_model_reloads(tiny_handle, tmp_path):
    lowrank = run("factorize.svd", {"rank": 8}, tiny_handle, tmp_path / "f").handle
    kept = run("peft.lora", {**TRAIN, "r": 2, "max_steps": 2, "merge": False}, lowrank, tmp_path / "t").handle
    back = ModelHandle.load(kept.save(tmp_path / "a"))
    assert back.loglikelihood(PAIRS) == kept.loglikelihood(PAIRS)


def test_qlora_cannot_stay_unmerged():
    with pytest.raises(UsageError, match="merge must be true for peft.qlora"):
        build_params(TECHNIQUES.get("peft.qlora"), {"merge": False})


def plan(steps):
    import yaml

    from harness.plan import make_plan
    from harness.spec import parse_spec

    spec = {"name": "t", "base": "tiny-llama", "paths": [steps]}
    return make_plan(parse_spec(yaml.safe_dump(spec, sort_keys=False), file="spec.yaml"))


def test_the_plan_takes_infer_steps_after_an_adapter_and_refuses_weight_changes():
    ok = plan(["peft.prompt_tuning", "infer.cot"])
    assert [s["format"] for s in ok.paths[0].steps] == [PEFT_ADAPTER, PEFT_ADAPTER]
    with pytest.raises(SpecError) as info:
        plan([{"peft.lora": {"merge": False}}, "quant.int8"])
    message = str(info.value)
    assert "does not accept a peft-adapter model" in message and "merge: true" in message
