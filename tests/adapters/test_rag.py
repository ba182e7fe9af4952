"""infer.rag: BM25 retrieval (bm25s) over a named corpus, its passages in every generation prompt, the cached index."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("bm25s")

from adapters.errors import SpecError  # noqa: E402
from adapters.handle import ModelHandle  # noqa: E402
from adapters.retrieval import BM25Index, BM25Settings, recall_at_k  # noqa: E402
from adapters.technique import TechniqueContext, build_params, get_technique  # noqa: E402

# Four passages; bm25s (lower-cased, English stopwords such as is/the/of/and removed) indexes these terms:
CORPUS = ["Paris is the capital of France.", "Berlin is the capital of Germany.",
          "The Thames flows through London.", "The Seine flows through Paris."]
DOC_TERMS = [["paris", "capital", "france"], ["berlin", "capital", "germany"], ["thames", "flows", "through", "london"],
             ["seine", "flows", "through", "paris"]]
# (query, its terms, gold passage, the ranking worked out by hand)
QUERIES = [
    # capital (df 2) + france (df 1) only in 0; capital alone in 1; 2 and 3 share nothing (score 0: left out)
    ("What is the capital of France?", ["what", "capital", "france"], 0, [0, 1]),
    # 3 has flows + through + paris; 2 has flows + through; 0 has paris only
    ("Which river flows through Paris?", ["which", "river", "flows", "through", "paris"], 3, [3, 2, 0]),
    # 2 and 3 both match three terms of the same length, but london (df 1) outweighs paris (df 2): the gold 3 is second
    ("What flows through London and Paris?", ["what", "flows", "through", "london", "paris"], 3, [2, 3, 0]),
]


def bm25_lucene(query_terms: list[str], doc_terms: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene's BM25 by its formula: sum over query terms of idf * tf / (tf + k1 (1 - b + b dl / avgdl)),
    idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene >= 8 drops the constant factor k1 + 1, as bm25s does)."""
    n = len(doc_terms)
    avgdl = sum(map(len, doc_terms)) / n
    out = []
    for doc in doc_terms:
        score = 0.0
        for term in set(query_terms):
            df = sum(term in d for d in doc_terms)
            tf = doc.count(term)
            if df == 0 or tf == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(score)
    return out


def test_bm25_ranks_a_hand_checked_corpus_and_recall_is_exact():
    from adapters.retrieval import _tokens

    index = BM25Index.build(CORPUS, BM25Settings())
    assert _tokens(CORPUS, index.settings) == DOC_TERMS
    for query, terms, _, ranking in QUERIES:
        assert _tokens([query], index.settings) == [terms]
        scores = [float(x) for x in index.retriever.get_scores(terms)]
        assert scores == pytest.approx(bm25_lucene(terms, DOC_TERMS), rel=1e-5)  # bm25s computes Lucene's BM25
        assert index.search(query, 3) == ranking
    assert index.search("Which capital?", 2) == [0, 1]  # an exact tie (same term, same length): corpus order
    assert index.search("zebra quantum", 3) == []  # no shared term: nothing retrieved
    ranked = index.search_many([q for q, _, _, _ in QUERIES], 3)
    gold = [g for _, _, g, _ in QUERIES]
    assert recall_at_k(ranked, gold, 1) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, gold, 2) == 1.0


def _rag(handle: ModelHandle, workdir: Path, **params):
    cls = get_technique("infer.rag")
    ctx = TechniqueContext(workdir=workdir, datasets={"cities": CORPUS})
    return cls(build_params(cls, {"corpus": "cities", "k": 1, **params})).run(handle, ctx)


def test_the_retrieved_passage_is_in_the_prompt_the_model_receives(tiny, tmp_path):
    out = _rag(tiny, tmp_path).handle
    seen: list[str] = []
    original = out.model.generate

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.extend(out.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return original(*args, **kwargs)

    out.model.generate = spy  # `tiny` is this test's own copy of the pico model
    prompt = "Some preamble.\nQuestion: Which river flows through Paris?\nAnswer:"
    out.generate([prompt], max_new_tokens=2)  # lm-eval's generate_until path
    assert seen == ["Some preamble.\nContext: The Seine flows through Paris.\n\nQuestion: Which river flows through "
                    "Paris?\nAnswer:"]
    seen.clear()
    list(out.stream(prompt, max_new_tokens=2))  # the streaming path
    assert len(seen) == 1 and "Context: The Seine flows through Paris." in seen[0]
    # scoring is not rewritten, and the input handle has no hook
    assert tiny.prompt_hooks == () and tiny.prompt(prompt) == prompt
    assert out.loglikelihood([("Question: x", " y")])[0].logprob == pytest.approx(
        tiny.loglikelihood([("Question: x", " y")])[0].logprob)


def test_the_index_is_cached_and_not_rebuilt(tiny_handle, tmp_path, monkeypatch):
    first = _rag(tiny_handle, tmp_path)
    assert first.report.index_built is True and first.report.passages == 4

    def no_build(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(BM25Index, "build", no_build)
    second = _rag(tiny_handle, tmp_path)
    assert second.report.index_built is False and second.report.index_key == first.report.index_key
    prompt = "Question: What is the capital of France?\nAnswer:"
    assert second.handle.prompt(prompt) == first.handle.prompt(prompt)
    monkeypatch.undo()
    other = _rag(tiny_handle, tmp_path, k1=0.9)  # other settings: another key, built
    assert other.report.index_built is True and other.report.index_key != first.report.index_key


def test_saved_handle_restores_the_retriever(tiny_handle, tmp_path):
    out = _rag(tiny_handle, tmp_path / "work", k=2).handle
    out.save(tmp_path / "saved")
    back = ModelHandle.load(tmp_path / "saved")
    prompt = "Question: What flows through London and Paris?\nAnswer:"
    assert back.prompt(prompt) == out.prompt(prompt)
    assert back.prompt(prompt).startswith("Context: The Thames flows through London.\nThe Seine flows through Paris.")
    assert back.generate([prompt], max_new_tokens=3) == out.generate([prompt], max_new_tokens=3)


def test_composes_after_decoding_and_after_a_weight_change(tiny, tmp_path):
    from adapters.techniques.rag import RetrievalHook

    ctx = TechniqueContext(workdir=tmp_path, datasets={"cities": CORPUS})

    def run(handle, name, **params):
        cls = get_technique(name)
        return cls(build_params(cls, params)).run(handle, ctx).handle

    prompt = "Question: Which river flows through Paris?\nAnswer:"
    beam = run(tiny, "infer.decoding", strategy="beam", num_beams=2)
    after_decoding = run(beam, "infer.rag", corpus="cities", k=1)
    assert after_decoding.generation_kwargs["num_beams"] == 2
    assert "The Seine flows through Paris." in after_decoding.prompt(prompt)
    pruned = run(tiny, "prune.magnitude", sparsity=0.5)
    after_prune = run(pruned, "infer.rag", corpus="cities", k=1)
    assert after_prune.format == "torch-sparse" and after_prune.model is pruned.model  # the weights stay as they were
    assert [s.technique for s in after_prune.lineage] == ["prune.magnitude", "infer.rag"]
    assert isinstance(after_prune.generate([prompt], max_new_tokens=2)[0], str)
    # and an infer.decoding after it keeps the retriever
    greedy_after = run(after_prune, "infer.decoding")
    assert len(greedy_after.prompt_hooks) == 1 and isinstance(greedy_after.prompt_hooks[0], RetrievalHook)


# -- the plan -----------------------------------------------------------------------------------------------------
def _plan(steps, datasets=None):
    import yaml

    from harness.plan import make_plan
    from harness.spec import parse_spec

    doc = {"name": "rag", "base": "tiny-llama", "paths": [steps]}
    if datasets:
        doc["datasets"] = datasets
    return make_plan(parse_spec(yaml.safe_dump(doc), file="rag.yaml"))


def test_the_plan_refuses_an_unknown_corpus():
    with pytest.raises(SpecError) as err:
        _plan([{"infer.rag": {"corpus": "wikipedia"}}])
    msg = str(err.value)
    assert "\n" not in msg and "unknown corpus 'wikipedia'" in msg and "squad" in msg and "synthetic" in msg, msg


def test_the_plan_refuses_squad_without_data(monkeypatch, tmp_path):
    monkeypatch.delenv("SLM_DATA_DIR", raising=False)
    with pytest.raises(SpecError, match="set the step's data_dir or SLM_DATA_DIR"):
        _plan([{"infer.rag": {"corpus": "squad"}}])
    with pytest.raises(SpecError, match="not found"):
        _plan([{"infer.rag": {"corpus": "squad", "data_dir": str(tmp_path)}}])


def test_a_spec_dataset_is_the_corpus_input_and_its_content_is_the_identity(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(CORPUS) + "\n")
    steps = ["infer.decoding", {"infer.rag": {"corpus": "docs", "k": 2}}]
    plan = _plan(steps, {"docs": {"path": str(docs)}})
    leaf = plan.nodes[plan.paths[0].leaf]
    assert leaf.technique == "infer.rag" and plan.nodes[leaf.inputs["corpus"]].kind == "dataset"
    from harness.plan import make_plan
    from harness.spec import parse_spec

    snippet = plan.paths[0].spec_snippet  # the path's own spec carries the dataset and plans to the same node
    assert make_plan(parse_spec(snippet, file="snippet.yaml")).paths[0].leaf == leaf.hash
    docs.write_text("\n".join(reversed(CORPUS)) + "\n")
    assert _plan(steps, {"docs": {"path": str(docs)}}).paths[0].leaf != leaf.hash
    builtin = _plan([{"infer.rag": {"corpus": "synthetic"}}])  # a builtin dataset is a dataset node too
    assert "corpus" in builtin.nodes[builtin.paths[0].leaf].inputs


def test_squad_corpus_identity_and_recall_report(benchmarks_dir, tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_DATA_DIR", str(benchmarks_dir))
    plan = _plan(["prune.magnitude", {"infer.rag": {"corpus": "squad", "k": 3}}])
    leaf = plan.nodes[plan.paths[0].leaf]
    assert leaf.format == "torch-sparse" and "corpus" not in leaf.inputs
    cls = get_technique("infer.rag")
    out = cls(build_params(cls, {"corpus": "squad", "k": 3})).run(tiny_handle, TechniqueContext(workdir=tmp_path))
    rep = out.report
    assert rep.passages == 2067 and rep.questions == 10570
    assert set(rep.recall) == {"recall_at_1", "recall_at_3", "recall_at_5", "recall_at_10"}
    r1, r3, r10 = rep.recall["recall_at_1"], rep.recall["recall_at_3"], rep.recall["recall_at_10"]
    assert 0.5 < r1 <= r3 <= r10 <= 1.0  # BM25 on SQuAD dev: about 0.75 / 0.87 / 0.94
    prompt = "Question: Which NFL team represented the AFC at Super Bowl 50?\nAnswer:"
    assert "Denver Broncos" in out.handle.prompt(prompt).split("Question:")[0]


# -- the real model -----------------------------------------------------------------------------------------------
# Made-up facts, so the model cannot know them closed-book.
FACTS = ["Ada Alder lives in Bellmere, a town on the river Esk.", "The door of Bram Brook's house is painted green.",
         "Cora Crane works as a potter in Dunmoor.", "Dain Dale keeps eleven goats on a farm near Fernhill."]
FACT_QUESTIONS = [("Where does Ada Alder live?", 0, "Bellmere"),
                  ("What color is the door of Bram Brook's house?", 1, "green"),
                  ("What does Cora Crane work as?", 2, "potter")]


@pytest.mark.slow
def test_rag_answers_from_the_retrieved_passage_on_smollm2(smollm2, tmp_path):
    from suites.tasks.squad import f1_score

    cls = get_technique("infer.rag")
    ctx = TechniqueContext(workdir=tmp_path, datasets={"facts": FACTS})
    rag = cls(build_params(cls, {"corpus": "facts", "k": 1})).run(smollm2, ctx).handle
    hook = rag.prompt_hooks[0]
    # recall@1 on the tiny corpus is exact: every question retrieves its own fact first
    ranked = [hook.index.search(q, 1) for q, _, _ in FACT_QUESTIONS]
    assert recall_at_k(ranked, [g for _, g, _ in FACT_QUESTIONS], 1) == 1.0
    prompts = [f"Question: {q}\nAnswer:" for q, _, _ in FACT_QUESTIONS]
    seen: list[str] = []
    original = smollm2.model.generate

    def spy(*args, **kwargs):
        seen.extend(rag.tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True))
        return original(*args, **kwargs)

    rag.model.generate = spy  # the shared model object: restored below
    try:
        opened = rag.generate(prompts, max_new_tokens=12, stop=["\n"])
    finally:
        del rag.model.generate
    assert sorted(seen) == sorted(f"Context: {FACTS[g]}\n\n{p}" for p, (_, g, _) in zip(prompts, FACT_QUESTIONS,
                                                                                          strict=True))
    closed = smollm2.generate(prompts, max_new_tokens=12, stop=["\n"])
    f1_open = [f1_score(o, a) for o, (_, _, a) in zip(opened, FACT_QUESTIONS, strict=True)]
    f1_closed = [f1_score(c, a) for c, (_, _, a) in zip(closed, FACT_QUESTIONS, strict=True)]
    # here: "green" and "potter" found open-book (Bellmere missed), nothing closed-book
    assert any(a.lower() in o.lower() for o, (_, _, a) in zip(opened, FACT_QUESTIONS, strict=True)), opened
    assert sum(f1_open) > sum(f1_closed), (opened, closed)
