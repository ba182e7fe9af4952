"""The squad_openbook task: SQuAD v1.1 dev from the local file, official EM/F1, closed-book vs infer.rag."""

from __future__ import annotations

from pathlib import Path

import pytest

from suites.tasks.squad import (
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
    process_results,
)


@pytest.mark.parametrize(("text", "normalized"), [
    ("The Denver Broncos", "denver broncos"),          # lower-cased, article dropped
    ("  Denver   Broncos. ", "denver broncos"),        # punctuation and extra whitespace
    ("a theater, an apple and the end", "theater apple and end"),  # only whole-word articles go
    ("U.S. Army's 1st", "us armys 1st"),               # punctuation inside words is deleted, not spaced
    ("The", ""),
])
def test_normalize_answer_is_the_official_one(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_and_f1_follow_the_official_script():
    assert exact_match_score("the Broncos!", "Broncos") == 1.0
    assert exact_match_score("Denver Broncos team", "Denver Broncos") == 0.0
    # 2 common tokens: precision 2/3, recall 1 -> F1 0.8
    assert f1_score("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    assert f1_score("", "Denver Broncos") == 0.0
    # a repeated token counts as often as both sides have it: [cat, cat] vs [cat] share 1 -> P 1/2, R 1
    assert f1_score("cat cat", "the cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    golds = ["Denver Broncos", "Broncos", "the Denver Broncos team"]
    assert metric_max_over_ground_truths(exact_match_score, "broncos", golds) == 1.0
    assert metric_max_over_ground_truths(f1_score, "Denver", golds) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert process_results({"answers": golds}, [" Denver Broncos\n"]) == {"exact_match": 1.0, "f1": 1.0}


@pytest.fixture(scope="module")
def squad_task(benchmarks_dir):
    from suites.builtin.quality import leaf_tasks, load_tasks

    _, objects = load_tasks(["squad_openbook"], None, benchmarks_dir)
    return leaf_tasks(objects)["squad_openbook"]


def test_the_task_loads_from_local_data(squad_task):
    docs = squad_task.eval_docs
    assert len(docs) == 10570
    doc = docs[0]
    assert doc["id"] == "56be4db0acb8001400a502ec" and doc["title"] == "Super_Bowl_50" and doc["paragraph"] == 0
    assert squad_task.doc_to_text(doc) == "Question: Which NFL team represented the AFC at Super Bowl 50?\nAnswer:"
    assert "Denver Broncos" in doc["answers"] and doc["answers"][0] in doc["context"]
    assert len({d["context"] for d in docs}) == 2067
    assert squad_task.config.metadata["gold_passage"] == "context"
    assert squad_task.process_results(doc, ["Denver Broncos"]) == {"exact_match": 1.0, "f1": 1.0}


def test_closed_book_and_rag_on_the_same_questions(benchmarks_dir, tiny_handle, tmp_path, monkeypatch):
    pytest.importorskip("bm25s")
    from adapters.retrieval import read_squad
    from adapters.technique import TechniqueContext, build_params, get_technique
    from suites.base import SUITES, SuiteContext

    monkeypatch.setenv("SLM_DATA_DIR", str(benchmarks_dir))
    cls = get_technique("infer.rag")
    rag = cls(build_params(cls, {"corpus": "squad", "k": 2})).run(tiny_handle, TechniqueContext(workdir=tmp_path)).handle
    ctx = SuiteContext(options={"tasks": ["squad_openbook"], "limit": 3, "batch_size": 3}, workdir=tmp_path,
                       data_dir=benchmarks_dir)
    closed = SUITES.get("quality")().run(tiny_handle, ctx)
    opened = SUITES.get("quality")().run(rag, ctx)
    names = {m.name for m in closed.metrics}
    assert names == {"exact_match", "f1"}
    assert {m.name for m in opened.metrics} == {"exact_match", "f1", "recall_at_2"}
    ids = sorted(s.sample_id for s in closed.samples if s.task == "squad_openbook")
    assert len(ids) == 3 and ids == sorted(s.sample_id for s in opened.samples if s.task == "squad_openbook")
    # F1 has per-question records of its own (scores, no 0/1 outcome), so paired tests compare F1 item by item
    f1 = {s.sample_id: s.score for s in closed.samples if s.task == "squad_openbook#f1"}
    assert sorted(f1) == ids and all(s.correct is None for s in closed.samples if s.task == "squad_openbook#f1")
    assert sum(f1.values()) / 3 == pytest.approx(next(m.value for m in closed.metrics if m.name == "f1"))
    # recall@2 is exactly what the retriever gives for these questions
    squad = read_squad(Path(benchmarks_dir) / "squad" / "dev-v1.1.json")
    hook = rag.prompt_hooks[0]
    want = [squad.questions[int(i)].paragraph in hook.index.search(squad.questions[int(i)].question, 2) for i in ids]
    recall = next(m for m in opened.metrics if m.name == "recall_at_2")
    assert recall.n == 3 and recall.value == pytest.approx(sum(want) / 3) and recall.higher_is_better
    per_doc = {s.sample_id: s.correct for s in opened.samples if s.task == "squad_openbook#recall_at_2"}
    assert [per_doc[i] for i in ids] == want
