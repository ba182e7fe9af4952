"""infer.cot, infer.self_consistency and infer.best_of_n on the pico model: the chain-of-thought prompt reaches the
model and answers are extracted by lm-eval's own GSM8K chain-of-thought filters, the self-consistency vote is the
majority of its samples, best-of-n returns the candidate its scorer finds most likely, the hooks compose with other
steps and survive save/load, and bad combinations are refused at plan time in one line."""

from __future__ import annotations

import json
import math
import textwrap
from collections import Counter

import pytest

from adapters.errors import UsageError
from adapters.technique import TECHNIQUES, TechniqueContext, build_params

GSM8K_COT = "gsm8k/gsm8k-cot.yaml"
GSM8K_COT_ZEROSHOT = "gsm8k/gsm8k-cot-zeroshot.yaml"


def apply(name, params, handle, tmp_path, **inputs):
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext(seed=0, workdir=tmp_path, inputs=inputs))


def quality(handle, tmp_path, benchmarks_dir, **options):
    from suites.base import SUITES, SuiteContext

    ctx = SuiteContext(profile="quick", workdir=tmp_path, options=options, data_dir=benchmarks_dir)
    return SUITES.get("quality")().run(handle, ctx)


def evaluate(handle, benchmarks_dir, doc_ids):
    """lm-eval's own output (with every raw response logged) for gsm8k documents, as the quality suite poses them."""
    from lm_eval import simple_evaluate

    from suites.builtin.quality import adapt_tasks, load_tasks

    tm, objects = load_tasks(["gsm8k"], None, benchmarks_dir)
    objects, _ = adapt_tasks(tm, objects, handle.inference_hooks)
    handle._lm = None
    return simple_evaluate(model=handle.lm(), tasks=objects, task_manager=tm, samples={"gsm8k": doc_ids},
                           log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)


def gold(doc):
    return doc["answer"].split("####")[-1].strip()


#: a small model of another seed and shape, with the same tokenizer (a scorer that is not the path's model)
OTHER = {"scratch": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1}}


class ScriptedModel:
    """Replaces ``model.generate``: records every prompt and answers each row with ``respond(question, i)`` for
    the i-th generation of that question (the tokens a model would have produced), so lm-eval's decoding, stop
    sequences, filters and metric all run on known outputs."""

    def __init__(self, handle, respond):
        self.handle, self.respond, self.prompts, self.calls = handle, respond, [], Counter()

    def __call__(self, input_ids, **kwargs):
        import torch

        tok = self.handle.tokenizer
        rows = []
        for ids in input_ids.tolist():
            prompt = tok.decode([t for t in ids if t != tok.pad_token_id])
            self.prompts.append(prompt)
            question = prompt.rsplit("Q: ", 1)[-1].split("\nA:")[0]
            text = self.respond(question, self.calls[question])
            self.calls[question] += 1
            rows.append(ids + tok(text, add_special_tokens=False).input_ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


@pytest.fixture()
def docs(benchmarks_dir):
    from suites.tasks.data import load_docs

    return load_docs("gsm8k", benchmarks_dir)


# -- chain of thought ----------------------------------------------------------------------------------------------
def test_cot_prompt_reaches_the_model_and_the_answer_is_extracted_as_lm_evals_filter_does(
        tiny, tmp_path, benchmarks_dir, docs, monkeypatch):
    from lm_eval.api.instance import Instance
    from lm_eval.filters import build_filter_ensemble

    from adapters.techniques.reasoning import lm_eval_config

    handle = apply("infer.cot", {}, tiny, tmp_path).handle
    assert handle.model is tiny.model and handle.inference_hooks[0].technique == "infer.cot"
    golds = {d["question"]: gold(d) for d in docs}
    # a worked answer, then the model running on into a new question (lm-eval's "Q:" stop cuts it)
    model = ScriptedModel(handle, lambda q, i: f" 3 + 4 = 7. The answer is {golds[q]}.\n\nQ: What is 2 + 2?")
    monkeypatch.setattr(tiny.model, "generate", model)
    res = quality(handle, tmp_path, benchmarks_dir, tasks=["gsm8k", "slm_agreement"], limit=3)
    metrics = {m.name: m.value for m in res.metrics if m.task == "gsm8k"}
    assert metrics == {"exact_match_strict-match": 1.0, "exact_match_flexible-extract": 1.0}
    assert len(model.prompts) == 3  # the model saw exactly lm-eval's gsm8k-cot-zeroshot prompt for each question
    template = lm_eval_config(GSM8K_COT_ZEROSHOT)["doc_to_text"]
    assert all(p == template.replace("{{question}}", q) for p, q in zip(model.prompts, model.calls, strict=True))
    notes = res.settings["inference"]["tasks"]
    assert notes["gsm8k"][0].startswith(f"infer.cot: lm-eval's {GSM8K_COT_ZEROSHOT}") and "0-shot" in notes["gsm8k"][0]
    assert "not applied" in notes["slm_agreement"][0]
    # the strict-match filter applied is lm-eval's own: "The answer is N." parses to N
    steps = lm_eval_config(GSM8K_COT_ZEROSHOT)["filter_list"][0]["filter"]
    ensemble = build_filter_ensemble("strict-match", [[f["function"], {k: v for k, v in f.items() if k != "function"}]
                                                      for f in steps])
    outputs = [" The answer is 42.", "so 12 - 15 = -3. The answer is -3.\nThe answer is 9.",
               "1,000 + 234 = 1,234. The answer is 1,234.", "I do not know"]
    inst = [Instance("generate_until", {}, ("", {}), i, resps=[text]) for i, text in enumerate(outputs)]
    ensemble.apply(inst)
    assert [i.filtered_resps["strict-match"] for i in inst] == ["42", "-3", "1,234", "[invalid]"]


def test_cot_takes_lm_evals_config_over_the_local_documents_and_rationales_from_a_file(tmp_path, benchmarks_dir):
    from lm_eval.tasks._yaml_loader import load_yaml

    from adapters.inference import adapt_config
    from adapters.techniques.reasoning import LM_EVAL_EXEMPLARS, PROMPT_FIELDS, CoTHook, lm_eval_config
    from suites.tasks import TASKS_DIR

    local = load_yaml(TASKS_DIR / "gsm8k.yaml")
    few, notes = adapt_config([CoTHook(mode="fewshot")], "gsm8k", local)
    theirs = lm_eval_config(GSM8K_COT)
    assert {k: few.get(k) for k in PROMPT_FIELDS} == {k: theirs.get(k) for k in PROMPT_FIELDS}
    assert few["custom_dataset"] is local["custom_dataset"] and few["test_split"] == "test"
    assert few["num_fewshot"] == LM_EVAL_EXEMPLARS == len(theirs["fewshot_config"]["samples"])
    assert "8-shot" in notes[0]
    rationales = tmp_path / "r.jsonl"
    records = [{"question": f"What is {i} + 1?", "target": f"{i} + 1 = {i + 1}. The answer is {i + 1}."}
               for i in range(3)]
    rationales.write_text("".join(json.dumps(r) + "\n" for r in records))
    handle_hook = apply_hook("infer.cot", {"mode": "fewshot", "rationales": str(rationales), "num_fewshot": 2})
    mine, _ = adapt_config([handle_hook], "gsm8k", local)
    assert mine["num_fewshot"] == 2 and mine["fewshot_config"]["samples"][1]["question"] == "What is 1 + 1?"
    # a generation task without a CoT config of its own: the trigger appended, a one-line stop (which would cut the
    # chain) replaced by a blank line, an answer filter added
    generic = {"task": "mine", "output_type": "generate_until", "doc_to_text": "Question: {{q}}\nAnswer:",
               "generation_kwargs": {"until": ["\n", "Question:"]}}
    zero, notes = adapt_config([CoTHook()], "mine", generic)
    assert zero["doc_to_text"] == "Question: {{q}}\nAnswer: Let's think step by step."
    assert zero["generation_kwargs"]["until"] == ["Question:", "\n\n"]
    assert generic["generation_kwargs"]["until"] == ["\n", "Question:"]  # the caller's config is left as it was
    assert [f["name"] for f in zero["filter_list"]] == ["none", "cot-answer"]
    mc, notes = adapt_config([CoTHook()], "arc", {"task": "arc", "output_type": "multiple_choice"})
    assert "not applied" in notes[0] and mc["output_type"] == "multiple_choice"


def apply_hook(name, params):
    from adapters.sources import load_source

    handle = load_source("tiny-llama", threads=1)
    cls = TECHNIQUES.get(name)
    return cls(build_params(cls, params)).run(handle, TechniqueContext()).handle.inference_hooks[-1]


# -- self-consistency ----------------------------------------------------------------------------------------------
def test_self_consistency_votes_the_majority_of_its_samples(tiny, tmp_path, benchmarks_dir, docs, monkeypatch):
    cot = apply("infer.cot", {}, tiny, tmp_path).handle
    handle = apply("infer.self_consistency", {"k": 3}, cot, tmp_path).handle
    right, wrong = gold(docs[0]), str(int(gold(docs[0])) + 1)
    # the first sampled path is wrong, the other two agree on the right answer
    paths = [f" The answer is {wrong}.", f" 2 + 2 = 4. The answer is {right}.", f" The answer is {right}."]
    model = ScriptedModel(handle, lambda q, i: paths[i])
    monkeypatch.setattr(tiny.model, "generate", model)
    out = evaluate(handle, benchmarks_dir, [0])
    (sample, *_) = [s for s in out["samples"]["gsm8k"] if s["filter"] == "strict-match-maj@3"]
    assert len(sample["resps"][0]) == 3 and sample["filtered_resps"] == [right]
    results = out["results"]["gsm8k"]
    assert results["exact_match,strict-match"] == 0.0  # the first path alone
    assert results["exact_match,strict-match-maj@3"] == 1.0
    assert model.calls[docs[0]["question"]] == 3
    config = out["configs"]["gsm8k"]
    assert config["repeats"] == 3 and config["generation_kwargs"]["do_sample"] is True
    assert config["generation_kwargs"]["temperature"] == 0.7 and config["generation_kwargs"]["top_k"] == 40


def test_self_consistency_samples_differ_are_seeded_and_the_vote_is_their_majority(tiny_handle, tmp_path,
                                                                                   benchmarks_dir, monkeypatch):
    from lm_eval.filters.extraction import RegexFilter

    from adapters.lm import HandleHFLM

    monkeypatch.setattr(HandleHFLM, "max_gen_toks", property(lambda self: 24))  # lm-eval's 256 is slow on CPU

    handle = apply("infer.self_consistency", {"k": 3, "seed": 5}, tiny_handle, tmp_path).handle
    first = evaluate(handle, benchmarks_dir, [3])
    again = evaluate(handle, benchmarks_dir, [3])
    by_filter = {s["filter"]: s for s in first["samples"]["gsm8k"]}
    resps = by_filter["flexible-extract-maj@3"]["resps"][0]
    assert len(resps) == 3 and len(set(resps)) == 3  # seeded once per call: the k paths are k different samples
    assert [s["resps"] for s in again["samples"]["gsm8k"]] == [s["resps"] for s in first["samples"]["gsm8k"]]
    pattern = next(f for f in first["configs"]["gsm8k"]["filter_list"] if f["name"] == "flexible-extract")
    regex = {k: v for k, v in pattern["filter"][0].items() if k != "function"}
    answers = list(RegexFilter(**regex).apply([resps], [{}]))[0]
    assert by_filter["flexible-extract-maj@3"]["filtered_resps"] == [Counter(answers).most_common(1)[0][0]]
    assert by_filter["flexible-extract"]["filtered_resps"] == [answers[0]]


# -- best-of-n -----------------------------------------------------------------------------------------------------
def direct_mean_logprob(handle, prompt: str, candidate: str) -> float:
    """Mean log-probability of the candidate's tokens given the prompt, by a forward pass of the model itself."""
    import torch

    tok = handle.tokenizer
    context = tok(prompt, add_special_tokens=False).input_ids
    whole = tok(prompt + candidate, add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(handle.model(torch.tensor([whole])).logits[0].float(), dim=-1)
    cont = range(len(context), len(whole))
    return float(sum(logp[i - 1, whole[i]] for i in cont)) / len(cont)


@pytest.mark.parametrize("scorer", ["self", "other"])
def test_best_of_n_returns_the_candidate_with_the_highest_scorer_log_likelihood(tiny_handle, tmp_path, monkeypatch,
                                                                                 scorer):
    from adapters.lm import HandleHFLM
    from adapters.sources import load_source

    other = load_source(OTHER, threads=1, seed=7) if scorer == "other" else None
    inputs = {"scorer": other} if other is not None else {}
    applied = apply("infer.best_of_n", {"n": 4, "seed": 1}, tiny_handle, tmp_path, **inputs)
    handle = applied.handle
    assert applied.report.scorer == ("self" if other is None else other.source)
    candidates = []
    inner = HandleHFLM._generate_seeded

    def spy(self, requests):
        texts = inner(self, requests)
        candidates.append([(r.args[0], t) for r, t in zip(requests, texts, strict=True)])
        return texts

    monkeypatch.setattr(HandleHFLM, "_generate_seeded", spy)
    prompts = ["1 2 3", "The river"]
    picked = handle.generate(prompts, max_new_tokens=6)
    (pairs,) = candidates
    assert len(pairs) == 8 and all(p[0] == prompts[i // 4] for i, p in enumerate(pairs))
    judge = other or tiny_handle
    for i, prompt in enumerate(prompts):
        block = [t for _, t in pairs[4 * i: 4 * i + 4]]
        assert len(set(block)) > 1  # sampled: the candidates differ
        scores = [direct_mean_logprob(judge, prompt, t) for t in block]
        assert picked[i] == block[max(range(4), key=lambda j: scores[j])]
    assert handle.generate(prompts, max_new_tokens=6) == picked  # seeded


def test_candidate_scores_are_the_scorers_log_likelihoods(tiny_handle):
    from adapters.techniques.reasoning import candidate_scores

    pairs = [("The river", " flows into the sea"), ("The river", " is"), ("The river", "")]
    mean = candidate_scores(tiny_handle, pairs, "mean")
    total = candidate_scores(tiny_handle, pairs, "sum")
    for (prompt, cand), m, s in zip(pairs[:2], mean, total, strict=False):
        n = len(tiny_handle.tokenizer(prompt + cand).input_ids) - len(tiny_handle.tokenizer(prompt).input_ids)
        assert m == pytest.approx(direct_mean_logprob(tiny_handle, prompt, cand), abs=1e-4)
        assert s == pytest.approx(m * n, abs=1e-3)
    assert mean[2] == -math.inf


# -- composition ---------------------------------------------------------------------------------------------------
def test_hooks_compose_with_weight_changing_steps_and_decoding_and_survive_save_and_load(tiny_handle, tmp_path):
    from adapters.handle import ModelHandle

    sampled = apply("infer.decoding", {"strategy": "sample", "temperature": 0.5, "top_p": 0.9, "seed": 3},
                    tiny_handle, tmp_path).handle
    sc = apply("infer.self_consistency", {"k": 4, "top_k": 10}, sampled, tmp_path)
    assert sc.report.sampling == {"do_sample": True, "temperature": 0.5, "top_k": 10, "top_p": 0.9, "seed": 3}
    assert sc.report.origins == {"temperature": "infer.decoding", "top_k": "params", "top_p": "infer.decoding",
                                 "seed": "infer.decoding"}
    cot = apply("infer.cot", {"mode": "fewshot"}, sc.handle, tmp_path).handle
    best = apply("infer.best_of_n", {"n": 2}, cot, tmp_path).handle
    pruned = apply("prune.magnitude", {"sparsity": 0.5}, best, tmp_path).handle
    assert [h.technique for h in pruned.inference_hooks] == ["infer.self_consistency", "infer.cot", "infer.best_of_n"]
    assert pruned.model is not tiny_handle.model and pruned.generation_kwargs["temperature"] == 0.5
    before = pruned.generate(["1 2 3"], max_new_tokens=4)
    pruned.save(tmp_path / "saved")
    back = ModelHandle.load(tmp_path / "saved")
    assert [h.to_dict() for h in back.inference_hooks] == [h.to_dict() for h in pruned.inference_hooks]
    assert back.generate(["1 2 3"], max_new_tokens=4) == before
    # the quality suite adapts in phase order (prompt, then votes) whatever the order of the steps
    from adapters.inference import adapt_config
    from adapters.techniques.reasoning import lm_eval_config

    config, notes = adapt_config(back.inference_hooks, "gsm8k", lm_eval_config(GSM8K_COT_ZEROSHOT))
    assert [n.split(":")[0] for n in notes] == ["infer.cot", "infer.self_consistency"]
    assert config["repeats"] == 4 and config["num_fewshot"] == 8
    assert [f["name"] for f in config["filter_list"]] == ["strict-match", "flexible-extract", "strict-match-maj@4",
                                                          "flexible-extract-maj@4"]


# -- the plan ------------------------------------------------------------------------------------------------------
def plan(steps: str, extra: str = ""):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    text = f"name: r\nbases: {{base: tiny-llama, judge: {json.dumps(OTHER)}}}\n{extra}paths:\n  - {steps}\n"
    return make_plan(parse_spec(text, file="spec.yaml"))


def test_the_planner_accepts_the_reasoning_steps_with_and_without_a_scorer():
    p = plan("[prune.magnitude, infer.cot, {infer.self_consistency: {k: 4}}, infer.best_of_n]")
    (best,) = [n for n in p.nodes.values() if n.technique == "infer.best_of_n"]
    assert set(best.inputs) == {"model"}  # no scorer: the path's own model
    p = plan("[infer.cot, {infer.best_of_n: {scorer: judge}}]")
    (best,) = [n for n in p.nodes.values() if n.technique == "infer.best_of_n"]
    assert set(best.inputs) == {"model", "scorer"}


@pytest.mark.parametrize("steps,expected", [
    ("[{infer.decoding: {strategy: greedy}}, infer.self_consistency]",
     "step 2 infer.self_consistency: it samples its k reasoning paths, and step 1 infer.decoding decodes by greedy: "
     "drop that step or set its strategy: sample"),
    ("[infer.best_of_n, {infer.decoding: {strategy: beam}}]",
     "step 1 infer.best_of_n: it samples its n candidates, and step 2 infer.decoding decodes by beam"),
    ("[infer.cot, prune.magnitude, infer.cot]",
     "step 1 infer.cot: it appears more than once in the path (steps 1 and 3)"),
    ("[{infer.best_of_n: {scorer: judge}}, prune.magnitude]",
     "its `scorer:` model is not saved with the weights that step 2 prune.magnitude writes: put infer.best_of_n "
     "after that step"),
    ("[{infer.self_consistency: {k: 1}}]", "k must be >= 2"),
    ("[{infer.best_of_n: {n: 1}}]", "n must be >= 2"),
    ("[{infer.cot: {rationales: r.jsonl}}]", "rationales and num_fewshot are few-shot exemplars: set mode: fewshot"),
    ("[{infer.cot: {mode: fewshot, rationales: /nonexistent/r.jsonl}}]", "'/nonexistent/r.jsonl' is not a file"),
    ("[{infer.cot: {answer_pattern: 'The answer is'}}]", "needs a group (the answer)"),
    ("[{infer.self_consistency: {temperature: 0}}]", "temperature must be > 0"),
])
def test_bad_combinations_are_refused_at_plan_time_in_one_line(steps, expected):
    with pytest.raises(UsageError) as err:  # a SpecError for a path, a UsageError naming the step for a parameter
        plan(steps)
    message = str(err.value)
    assert "\n" not in message and message.startswith("spec.yaml: paths[0]"), message
    assert expected in message, message


def test_a_grid_drops_self_consistency_under_greedy_decoding():
    from harness.plan import make_plan
    from harness.spec import parse_spec

    p = make_plan(parse_spec(textwrap.dedent("""
    name: g
    base: tiny-llama
    grid:
      decode: [none, {infer.decoding: {strategy: greedy}}, {infer.decoding: {strategy: sample}}]
      vote: [infer.self_consistency]
    """), file="g.yaml"))
    assert len(p.paths) == 2 and len(p.dropped) == 1 and "decodes by greedy" in p.dropped[0].reason


def test_the_rationales_file_content_is_part_of_the_node_identity(tmp_path):
    def cot_hash(text: str) -> str:
        from harness.plan import make_plan
        from harness.spec import parse_spec

        (tmp_path / "r.jsonl").write_text(text)
        step = {"infer.cot": {"mode": "fewshot", "rationales": str(tmp_path / "r.jsonl")}}
        spec = f"name: r\nbase: tiny-llama\npaths: [[{json.dumps(step)}]]\n"
        p = make_plan(parse_spec(spec, file="spec.yaml"))
        return next(n.hash for n in p.nodes.values() if n.technique == "infer.cot")

    one = json.dumps({"question": "1 + 1?", "target": "1 + 1 = 2. The answer is 2."}) + "\n"
    assert cot_hash(one) == cot_hash(one)
    assert cot_hash(one) != cot_hash(one + one)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    from adapters.techniques.reasoning import CoTParams

    with pytest.raises(ValueError, match="bad.jsonl:1 needs string fields `question` and `target`"):
        CoTParams(mode="fewshot", rationales=str(bad))


def test_hooks_do_not_change_log_likelihood_scoring(tiny_handle, tmp_path):
    handle = tiny_handle
    for name, params in (("infer.cot", {}), ("infer.self_consistency", {"k": 2}), ("infer.best_of_n", {"n": 2})):
        handle = apply(name, params, handle, tmp_path).handle
    pairs = [("The river", " flows"), ("Bread is made from", " flour")]
    assert [x.logprob for x in handle.loglikelihood(pairs)] == [x.logprob for x in tiny_handle.loglikelihood(pairs)]
    assert handle.model is tiny_handle.model
