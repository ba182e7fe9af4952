"""data.generate and distill.blackbox: the teacher's own generations become a dataset node, and the student learns
them, whatever its tokenizer."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest
import torch

from adapters.errors import UsageError
from adapters.handle import ModelHandle
from adapters.technique import TechniqueContext, build_params, get_technique

PROMPTS = ["1 2 3", "The river", "Question: Where does Ada live?\nAnswer:", "Bread is made from"]


def generate(params, records, teacher, seed=0):
    cls = get_technique("data.generate")
    made = cls(build_params(cls, params)).select(records, TechniqueContext(seed=seed, inputs={"reference": teacher}))
    return made.texts, made.report


def distill(params, student, teacher, tmp_path, prompts=PROMPTS, seed=0):
    cls = get_technique("distill.blackbox")
    ctx = TechniqueContext(seed=seed, workdir=tmp_path, inputs={"teacher": teacher}, datasets={"qs": prompts})
    return cls(build_params(cls, {"prompts": "qs", **params})).run(student, ctx).handle


def completion_nll(handle, pairs):
    scores = handle.loglikelihood([(r["prompt"], r["completion"]) for r in pairs])
    return -sum(s.logprob for s in scores) / len(scores)


@pytest.fixture(scope="module")
def bpe_pico():
    """A pico Llama with its own byte-level BPE tokenizer (400 tokens, trained here on the synthetic corpus): a
    different vocabulary and architecture from tiny-llama's (49,152 SmolLM2 tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from adapters.corpus import synthetic_corpus

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(synthetic_corpus(200), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return ModelHandle(model, tok, source="pico-bpe")


def fresh(handle):
    return ModelHandle(copy.deepcopy(handle.model), handle.tokenizer, source=handle.source)


# -- data.generate --------------------------------------------------------------------------------------
def test_greedy_pairs_are_the_teachers_own_generations(tiny_handle):
    records = [*PROMPTS[:2], {"prompt": PROMPTS[2], "completion": " an old answer"}, {"question": PROMPTS[3]}, "  "]
    pairs, report = generate({"max_new_tokens": 6, "n_prompts": 4}, records, tiny_handle)
    direct = tiny_handle.generate(PROMPTS, max_new_tokens=6)
    assert pairs == [{"prompt": q, "completion": r} for q, r in zip(PROMPTS, direct, strict=True)]
    assert report.decoding == {"do_sample": False, "max_new_tokens": 6}
    assert report.decoding_from == {"do_sample": "default", "max_new_tokens": "params"}
    assert report.prompts == 4 and report.seed is None and report.teacher == tiny_handle.source
    cut, _ = generate({"max_new_tokens": 6, "n_prompts": 2}, records, tiny_handle)
    assert cut == pairs[:2]


def test_sampling_is_seeded_per_prompt_and_honours_the_settings(tiny_handle):
    params = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.8, "top_p": 0.9}
    state = torch.random.get_rng_state()
    a, report = generate({**params, "seed": 5}, PROMPTS, tiny_handle)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    b, _ = generate({**params, "seed": 5}, PROMPTS, tiny_handle, seed=9)
    c, _ = generate(params, PROMPTS, tiny_handle, seed=6)  # no seed of its own: the context's
    greedy, _ = generate({"max_new_tokens": 8}, PROMPTS, tiny_handle)
    assert a == b and a != c and a != greedy
    assert report.decoding == {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 8}
    assert report.seed == 5 and set(report.decoding_from.values()) == {"params"}
    for i, (q, pair) in enumerate(zip(PROMPTS, a, strict=True)):
        (direct,) = tiny_handle.generate([q], max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9, seed=5 + i)
        assert pair["completion"] == direct
    tail, _ = generate({**params, "seed": 6}, PROMPTS[1:], tiny_handle)
    assert tail[0] == a[1]  # a response depends on its own seed only, not on the other prompts


def test_the_teachers_decoding_settings_are_the_default(tiny_handle, tmp_path):
    decoding = get_technique("infer.decoding")
    sampler = decoding(build_params(decoding, {"strategy": "sample", "temperature": 0.7, "seed": 11})).run(
        tiny_handle, TechniqueContext(workdir=tmp_path)).handle
    pairs, report = generate({"max_new_tokens": 6}, PROMPTS, sampler)
    assert report.decoding_from["do_sample"] == report.decoding_from["temperature"] == "teacher generation_kwargs"
    assert report.decoding["temperature"] == 0.7 and report.seed == 11
    assert [p["completion"] for p in pairs] == [sampler.generate([q], max_new_tokens=6, seed=11 + i)[0]
                                                for i, q in enumerate(PROMPTS)]
    greedy, _ = generate({"max_new_tokens": 6, "do_sample": False}, PROMPTS, sampler)  # the step's own setting wins
    assert greedy == generate({"max_new_tokens": 6}, PROMPTS, tiny_handle)[0]

    configured = fresh(tiny_handle)  # a checkpoint whose generation_config.json asks for sampling
    configured.model.generation_config.do_sample = True
    configured.model.generation_config.temperature = 0.5
    configured.model.generation_config.max_new_tokens = 5
    pairs, report = generate({}, PROMPTS, configured, seed=3)
    assert report.decoding == {"do_sample": True, "temperature": 0.5, "max_new_tokens": 5}
    assert set(report.decoding_from.values()) == {"teacher generation_config"} and report.seed == 3
    assert pairs[0]["completion"] == configured.generate([PROMPTS[0]], max_new_tokens=5, do_sample=True,
                                                         temperature=0.5, seed=3)[0]


def test_chat_prompts_go_through_the_teachers_chat_template(tiny_handle, bpe_pico):
    params = {"max_new_tokens": 6, "chat": True, "do_sample": True, "seed": 1}
    pairs, report = generate(params, [{"prompt": PROMPTS[0]}, {"messages": [{"role": "user", "content": PROMPTS[1]}]}],
                             tiny_handle)
    tok = tiny_handle.tokenizer
    assert report.chat and [p["prompt"] for p in pairs] == [[{"role": "user", "content": q}] for q in PROMPTS[:2]]
    for i, (q, pair) in enumerate(zip(PROMPTS[:2], pairs, strict=True)):
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        (direct,) = tiny_handle.generate([text], max_new_tokens=6, do_sample=True, temperature=1.0, seed=1 + i)
        assert pair["completion"] == [{"role": "assistant", "content": direct.strip()}]
    with pytest.raises(UsageError, match="chat: true needs a teacher whose tokenizer has a chat template"):
        generate({"chat": True}, PROMPTS, bpe_pico)


def test_generate_needs_a_model_and_prompts(tiny_handle):
    cls = get_technique("data.generate")
    with pytest.raises(UsageError, match="needs a model to answer the prompts as input `reference:`"):
        cls(build_params(cls, {})).select(PROMPTS, TechniqueContext())
    with pytest.raises(UsageError, match="no non-empty prompts"):
        generate({}, ["", "  "], tiny_handle)


@pytest.mark.parametrize("raw, fragment", [
    ({"temperature": 0}, "temperature must be > 0, got 0"),
    ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"n_prompts": 0}, "n_prompts must be >= 1"),
])
def test_bad_generation_params_are_usage_errors(raw, fragment):
    for name in ("data.generate", "distill.blackbox"):
        with pytest.raises(UsageError) as info:
            build_params(get_technique(name), raw)
        assert fragment in str(info.value)


def test_bad_training_params_are_checked_by_tune_sft_rules():
    with pytest.raises(UsageError, match="lr must be in"):
        build_params(get_technique("distill.blackbox"), {"lr": 2})


# -- distill.blackbox -----------------------------------------------------------------------------------
FAST = {"n_prompts": 4, "max_new_tokens": 8, "do_sample": True, "seed": 0, "peft": "none", "lr": 2e-2,
        "max_steps": 12, "batch_size": 2, "max_length": 64}


def test_the_student_learns_the_teachers_responses(tiny_handle, tmp_path):
    from adapters.sources import TINY_LLAMA_CONFIG, build_scratch

    model, tok = build_scratch(TINY_LLAMA_CONFIG, seed=1)  # same tokenizer, other weights
    student = ModelHandle(model.eval(), tok, source="student")
    pairs, _ = generate({k: FAST[k] for k in ("n_prompts", "max_new_tokens", "do_sample", "seed")}, PROMPTS, tiny_handle)
    before = copy.deepcopy(student.model.state_dict())
    out = distill(FAST, student, tiny_handle, tmp_path)
    rec = out.lineage[-1].report
    assert out.lineage[-1].technique == "distill.blackbox" and rec["steps"] == 12 and rec["pairs"] == 4
    assert rec["generation"]["seed"] == 0 and rec["generation"]["decoding"]["do_sample"] is True
    assert rec["final_loss"] < 0.5 * rec["first_loss"], rec
    assert completion_nll(out, pairs) < 0.5 * completion_nll(student, pairs)
    for key, value in student.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the input is left alone


@pytest.mark.parametrize("direction", ["bpe-student", "bpe-teacher"])
def test_teacher_and_student_may_have_different_tokenizers(direction, tiny_handle, bpe_pico, tmp_path):
    student, teacher = (fresh(bpe_pico), tiny_handle) if direction == "bpe-student" else (fresh(tiny_handle), bpe_pico)
    assert student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab()
    pairs, _ = generate({k: FAST[k] for k in ("n_prompts", "max_new_tokens", "do_sample", "seed")}, PROMPTS, teacher)
    out = distill({**FAST, "max_length": 128}, student, teacher, tmp_path)
    rec = out.lineage[-1].report
    assert rec["steps"] == 12 and rec["final_loss"] < rec["first_loss"], rec
    assert completion_nll(out, pairs) < completion_nll(student, pairs)
    assert out.tokenizer is student.tokenizer


def test_given_pairs_are_trained_on_without_a_teacher(tiny, tmp_path):
    """In a spec the harness hands the step its data.generate node's records; the teacher is not loaded."""
    cls = get_technique("distill.blackbox")
    pairs = [{"prompt": q, "completion": " flour and water."} for q in PROMPTS]
    ctx = TechniqueContext(workdir=tmp_path, inputs={"dataset": pairs})
    out = cls(build_params(cls, {**FAST, "max_steps": 2})).run(tiny, ctx).handle
    rec = out.lineage[-1].report
    assert rec["pairs"] == 4 and rec["generation"] is None and rec["steps"] == 2
    with pytest.raises(UsageError, match="needs a teacher model as input `teacher:`"):
        cls(build_params(cls, FAST)).run(tiny, TechniqueContext(workdir=tmp_path))
    with pytest.raises(UsageError, match="prompts 'nope' names no dataset"):
        distill({"prompts": "nope"}, tiny, tiny, tmp_path)


# -- in a spec ------------------------------------------------------------------------------------------
SPEC = """
name: bb
seed: {seed}
max_steps: 1
bases: {{student: tiny-llama, teacher: tiny-llama}}
datasets:
  questions: {{path: {questions}}}
  answers: {{from: questions, steps: [{{data.generate: {{reference: teacher, max_new_tokens: 4, n_prompts: 2{sample}}}}}]}}
  sampled: {{from: questions, steps: [{{data.generate: {{reference: sampler, max_new_tokens: 4}}}}]}}
paths:
  - {{name: sampler, base: teacher, steps: [{{infer.decoding: {{strategy: sample}}}}]}}
  - {{name: a, base: student, steps: [{{distill.blackbox: {{teacher: teacher, prompts: questions, max_new_tokens: 4, n_prompts: 2, batch_size: 1{sample}}}}}]}}
  - {{name: b, base: student, steps: [{{distill.blackbox: {{teacher: teacher, prompts: questions, max_new_tokens: 4, n_prompts: 2, batch_size: 1, lr: 0.001{sample}}}}}]}}
  - {{name: c, base: student, steps: [{{tune.sft: {{dataset: answers, batch_size: 1}}}}]}}
  - {{name: d, base: student, steps: [{{distill.blackbox: {{teacher: sampler, n_prompts: 2, max_new_tokens: 4}}}}]}}
  - {{name: e, base: student, steps: [{{tune.sft: {{dataset: sampled}}}}]}}
"""


@pytest.fixture()
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": "?"}) + "\n" for q in PROMPTS))
    return path


def plan_of(text, file="spec.yaml"):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    return make_plan(parse_spec(textwrap.dedent(text), file=file))


def test_the_responses_are_a_dataset_node_of_their_own(questions):
    plan = plan_of(SPEC.format(seed=0, questions=questions, sample=", do_sample: false"))
    nodes = plan.nodes.values()
    teacher = next(n.hash for n in nodes if n.kind == "source")
    by_path = {p.name: plan.nodes[p.leaf] for p in plan.paths}
    generated = plan.nodes[by_path["a"].inputs["dataset"]]
    assert generated.kind == "dataset" and generated.technique == "data.generate"
    assert generated.inputs == {"texts": next(n.hash for n in nodes if n.label == "questions"), "reference": teacher}
    assert generated.params["max_new_tokens"] == 4 and generated.params["do_sample"] is False
    assert set(by_path["a"].inputs) == {"model", "dataset"}  # the teacher is the dataset node's input only
    # two students of the same teacher on the same prompts, and the spelled-out dataset, share the node
    assert by_path["b"].inputs["dataset"] == by_path["c"].inputs["dataset"] == generated.hash != by_path["b"].hash
    # a teacher that is a path: its leaf answers the builtin instruction prompts
    d_data = plan.nodes[by_path["d"].inputs["dataset"]]
    assert d_data.inputs["reference"] == by_path["sampler"].hash
    assert plan.nodes[d_data.inputs["texts"]].params["builtin"] == "instructions"
    e_data = plan.nodes[by_path["e"].inputs["dataset"]]  # spelled out under `datasets:`, answered by a path
    assert e_data.technique == "data.generate" and e_data.inputs["reference"] == by_path["sampler"].hash
    assert [n.technique for n in nodes].count("data.generate") == 3


def test_the_seed_reaches_the_dataset_node_only_when_it_may_sample(questions):
    def data_hash(seed, sample):
        plan = plan_of(SPEC.format(seed=seed, questions=questions, sample=sample))
        (a,) = [p for p in plan.paths if p.name == "a"]
        return plan.nodes[a.leaf].inputs["dataset"]

    assert data_hash(0, ", do_sample: false") == data_hash(1, ", do_sample: false")  # greedy
    assert data_hash(0, "") != data_hash(1, "")  # the teacher's own settings may sample
    assert data_hash(0, ", do_sample: true") != data_hash(1, ", do_sample: true")
    assert data_hash(0, ", do_sample: true, seed: 3") == data_hash(1, ", do_sample: true, seed: 3")


def test_each_paths_snippet_replans_to_the_same_leaf(questions):
    plan = plan_of(SPEC.format(seed=0, questions=questions, sample=""))
    for p in plan.paths:
        again = plan_of(p.spec_snippet, file="snippet.yaml")
        (same,) = [q for q in again.paths if q.name == p.name]
        assert same.leaf == p.leaf, p.spec_snippet


@pytest.mark.parametrize("step, fragment", [
    ("{distill.blackbox: {prompts: questions}}",
     "spec.yaml: paths[0][0].teacher: distill.blackbox needs `teacher:` naming a base (base) or a path"),
    ("{distill.blackbox: {teacher: base, prompts: nope}}",
     "spec.yaml: paths[0][0].prompts: 'nope' names no dataset (defined: questions; builtin: synthetic, instructions"),
    ("{distill.blackbox: {teacher: base, temperature: 0}}", "temperature must be > 0, got 0"),
    ("[deploy.onnxruntime, {distill.blackbox: {teacher: base}}]", "distill.blackbox does not accept a onnx model"),
])
def test_bad_input_fails_at_plan_time_in_one_line(step, fragment, questions):
    steps = step if step.startswith("[") else f"[{step}]"
    with pytest.raises(UsageError) as err:  # a SpecError, or build_params' UsageError naming the file and step
        plan_of(f"name: x\nbase: tiny-llama\ndatasets: {{questions: {{path: {questions}}}}}\npaths: [{steps}]\n")
    assert "\n" not in str(err.value) and str(err.value).startswith("spec.yaml: paths[0]"), str(err.value)
    assert fragment in str(err.value), str(err.value)


def test_a_run_caches_the_generated_dataset_and_shows_it(questions, tiny_handle, tmp_path, capsys):
    from harness.commands import cache_show
    from harness.runner import Runner
    from harness.spec import parse_spec

    text = textwrap.dedent(f"""
    name: bb
    max_steps: 1
    base: tiny-llama
    datasets: {{questions: {{path: {questions}}}}}
    paths:
      - [{{distill.blackbox: {{teacher: base, prompts: questions, n_prompts: 2, max_new_tokens: 4, batch_size: 1}}}}]
      - [{{distill.blackbox: {{teacher: base, prompts: questions, n_prompts: 2, max_new_tokens: 4, batch_size: 1, peft: none}}}}]
    """)
    ws = tmp_path / "ws"
    first = Runner(parse_spec(text, file="spec.yaml"), ws, progress=False).run()
    assert (first.status, first.steps_executed, first.steps_cached) == ("ok", 3, 0), first.failures
    again = Runner(parse_spec(text, file="spec.yaml"), ws, progress=False).run()
    assert (again.steps_executed, again.steps_cached) == (0, 3)
    plan = plan_of(text)
    (data,) = [n for n in plan.nodes.values() if n.technique == "data.generate"]
    capsys.readouterr()
    cache_show(data.hash[:12], workspace=str(ws), records=5)
    shown = capsys.readouterr().out.splitlines()
    assert '"technique": "data.generate",' in [line.strip() for line in shown]
    assert any(line.startswith("2 records in ") for line in shown)
    greedy = tiny_handle.generate(PROMPTS[:2], max_new_tokens=4)
    assert [json.loads(line) for line in shown[-2:]] == [{"prompt": q, "completion": r}
                                                         for q, r in zip(PROMPTS[:2], greedy, strict=True)]


# -- a real teacher ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_answers_gsm8k_and_a_pico_student_learns_its_answers(smollm2, benchmarks_dir, tmp_path):
    from adapters.corpus import read_records
    from adapters.sources import load_source

    questions = read_records(benchmarks_dir / "gsm8k" / "test.jsonl", limit=6)
    params = {"n_prompts": 6, "max_new_tokens": 32, "chat": True, "peft": "none", "lr": 2e-3, "max_steps": 30,
              "batch_size": 4, "max_length": 256}
    student = load_source("tiny-llama")
    pairs, report = generate({k: params[k] for k in ("n_prompts", "max_new_tokens", "chat")}, questions, smollm2)
    cls = get_technique("distill.blackbox")  # as in a spec: the generated dataset node's records are handed over
    out = cls(build_params(cls, params)).run(student, TechniqueContext(workdir=tmp_path, inputs={"dataset": pairs})).handle
    rec = out.lineage[-1].report
    plain = [{"prompt": p["prompt"][0]["content"], "completion": p["completion"][0]["content"]} for p in pairs]
    before, after = completion_nll(student, plain), completion_nll(out, plain)
    print(f"SmolLM2 on gsm8k: {report.mean_response_chars:.0f} chars per answer, e.g. "
          f"{plain[0]['completion'][:120]!r}; pico student completion NLL {before:.2f} -> {after:.2f}, "
          f"loss {rec['first_loss']:.2f} -> {rec['final_loss']:.2f}")
    assert report.empty_responses == 0 and sum(any(c.isdigit() for c in p["completion"]) for p in plain) >= 3
    assert after < 0.8 * before
