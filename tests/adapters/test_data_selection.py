"""data.dedup, data.dsir and data.diversity: what each keeps, measured independently of its own report where that
is cheap, determinism, and refusals (bad parameters, a missing or unusable reference, an unknown target)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
import sys
import textwrap

import numpy as np
import pytest

from adapters.corpus import synthetic_corpus
from adapters.errors import MissingDependencyError, SpecError, UsageError
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques.data_selection import (
    covering_radius,
    embed,
    gumbel_top_k,
    k_center,
    kl_divergence,
    unit_rows,
)

needs_datasketch = pytest.mark.skipif(importlib.util.find_spec("datasketch") is None,
                                      reason="data.dedup needs the `data` extra: pip install -e '.[data]'")
needs_dsir = pytest.mark.skipif(importlib.util.find_spec("data_selection") is None,
                                reason="data.dsir needs the `data` extra: pip install -e '.[data]'")


def _select(name, params, texts, tmp_path, **ctx):
    cls = get_technique(name)
    kept, report = cls(build_params(cls, params)).select(texts, TechniqueContext(workdir=tmp_path, **ctx))
    return kept, dataclasses.asdict(report)


PARAGRAPH = ("The old mill on the river Esk was built of grey stone in the spring of the year the bridge fell, and for "
             "a century it ground the barley of every farm between the hills and the sea, until the great flood of "
             "the autumn carried away its wheel, its stores and half of the miller's house, leaving only the tower.")


# -- data.dedup -------------------------------------------------------------------------------------------------
@needs_datasketch
def test_dedup_removes_planted_exact_and_near_duplicates(tmp_path):
    distinct = synthetic_corpus(6, seed=4)
    distinct = [t for i, t in enumerate(distinct) if t not in distinct[:i]]
    near = PARAGRAPH.replace("grey stone", "red stone")  # one word changed
    texts = [PARAGRAPH, *distinct[:3], "  " + PARAGRAPH.upper() + " ", near, *distinct[3:], distinct[0], ""]
    kept, report = _select("data.dedup", {}, texts, tmp_path)
    assert kept == [PARAGRAPH, *distinct]  # the first of each cluster, in order; every distinct text stays
    assert (report["exact_duplicates"], report["near_duplicates"], report["empty"]) == (2, 1, 1)
    assert report["n_in"] == len(texts) and report["n_kept"] == len(kept) and report["threshold"] == 0.8
    kinds = {e["kind"]: e for e in report["examples"]}
    assert kinds["near"]["dropped"].startswith("The old mill") and "red stone" in kinds["near"]["dropped"]
    assert 0.8 <= kinds["near"]["similarity"] < 1
    again, _ = _select("data.dedup", {}, texts, tmp_path)
    assert again == kept


@needs_datasketch
def test_dedup_threshold_and_character_shingles(tmp_path):
    near = PARAGRAPH.replace("grey stone", "red stone")
    kept, _ = _select("data.dedup", {"threshold": 0.99}, [PARAGRAPH, near], tmp_path)
    assert kept == [PARAGRAPH, near]  # not similar enough for a 0.99 threshold
    kept, report = _select("data.dedup", {"shingle": "char", "ngram": 5}, [PARAGRAPH, near, "Bread is baked."],
                           tmp_path)
    assert kept == [PARAGRAPH, "Bread is baked."] and report["near_duplicates"] == 1
    assert report["method"].startswith("MinHash of char 5-grams")


@needs_datasketch
def test_dedup_keeps_records_whole(tmp_path):
    records = [{"prompt": "Q: where?", "completion": " here"}, {"prompt": "Q: where?", "completion": " here"},
               {"prompt": "Q: who?", "completion": " Ada"}]
    kept, report = _select("data.dedup", {}, records, tmp_path)
    assert kept == [records[0], records[2]] and report["exact_duplicates"] == 1


# -- data.dsir --------------------------------------------------------------------------------------------------
_INGREDIENTS = ["flour", "butter", "sugar", "eggs", "milk", "onions", "garlic", "carrots", "rice", "beans", "salt",
                "pepper", "honey", "lemon"]
_VERBS = ["Stir", "Whisk", "Chop", "Fry", "Bake", "Simmer", "Roast", "Knead", "Boil", "Slice"]
_RECIPE = ["{v} the {a} with the {b} for {m} minutes.", "Add a spoon of {a} and {w} until the {b} is soft.",
           "Heat the pan, then {w} the {a} and season with {b}.", "Serve the {a} warm with {b} on the side."]


def recipes(n: int, seed: int) -> list[str]:
    """Seeded kitchen instructions: a domain the synthetic world's encyclopedic sentences do not share."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_RECIPE).format(v=rng.choice(_VERBS), w=rng.choice(_VERBS).lower(),
                                                a=rng.choice(_INGREDIENTS), b=rng.choice(_INGREDIENTS),
                                                m=rng.randint(2, 60)) for _ in range(rng.randint(2, 4)))
            for _ in range(n)]


def _pool() -> tuple[list[str], set[str]]:
    kitchen = recipes(40, seed=2)
    pool = synthetic_corpus(120, seed=1) + kitchen
    random.Random(0).shuffle(pool)
    return pool, set(kitchen)


def _hashed_counts(texts, num_buckets=10000):
    """Hashed unigram+bigram counts with data-selection's own featurizer (the package's definition of the features)."""
    from data_selection.hashed_ngram_dsir import get_ngram_counts

    total = np.zeros(num_buckets)
    for t in texts:
        total += get_ngram_counts(t, n=2, num_buckets=num_buckets)
    return total


@needs_dsir
def test_dsir_moves_the_selection_toward_the_target(tmp_path):
    pool, kitchen = _pool()
    target = recipes(30, seed=3)  # the same domain, other texts
    kept, report = _select("data.dsir", {"target": "kitchen", "k": 40}, pool, tmp_path, seed=0,
                           datasets={"kitchen": target})
    assert len(kept) == 40 and kept == [t for t in pool if t in kept]  # original order
    assert sum(t in kitchen for t in kept) >= 36  # the pool holds 40 kitchen texts among 160
    t_counts = _hashed_counts(target)
    kl_kept, kl_pool = kl_divergence(t_counts, _hashed_counts(kept)), kl_divergence(t_counts, _hashed_counts(pool))
    randoms = [kl_divergence(t_counts, _hashed_counts(random.Random(s).sample(pool, 40))) for s in range(3)]
    assert kl_kept < 0.5 * kl_pool and kl_kept < min(randoms)
    assert report["kl_kept"] == pytest.approx(kl_kept, rel=1e-6)  # the report measures the same thing
    assert report["kl_kept"] < report["kl_random"] and report["kl_kept"] < report["kl_pool"]
    assert report["cosine_kept"] > report["cosine_pool"]
    assert report["mean_log_weight_kept"] > report["mean_log_weight_dropped"]
    assert (report["n_in"], report["n_target"], report["n_kept"]) == (160, 30, 40)


@needs_dsir
def test_dsir_is_seeded(tmp_path):
    pool = recipes(60, seed=5)  # one domain: the weights are close, so the draw depends on the seed
    def run(seed):
        return _select("data.dsir", {"target": "kitchen", "keep": 0.5}, pool, tmp_path, seed=seed,
                       datasets={"kitchen": recipes(20, seed=6)})

    (first, report), (again, _) = run(0), run(0)
    assert first == again and len(first) == 30
    assert any(run(s)[0] != first for s in (1, 2, 3))
    assert report["mean_log_weight_kept"] > report["mean_log_weight_dropped"]
    assert get_technique("data.dsir").seed_dependent(build_params(get_technique("data.dsir"), {}))


def test_gumbel_top_k_samples_without_replacement_in_proportion():
    draws = [gumbel_top_k(np.log([1.0, 9.0]), 1, np.random.default_rng(s))[0] for s in range(2000)]
    assert 0.87 < sum(draws) / len(draws) < 0.93  # index 1 holds 90% of the weight
    picked = gumbel_top_k(np.zeros(10), 4, np.random.default_rng(0))
    assert len(set(picked)) == 4 and picked == sorted(picked)
    assert gumbel_top_k(np.zeros(10), 4, np.random.default_rng(0)) == picked
    assert any(gumbel_top_k(np.zeros(10), 4, np.random.default_rng(s)) != picked for s in range(1, 5))


@needs_dsir
def test_dsir_target_from_a_builtin_and_unknown_target(tmp_path):
    kept, report = _select("data.dsir", {"target": "synthetic", "k": 5}, recipes(10, 1) + synthetic_corpus(10, 9),
                           tmp_path)
    assert report["n_target"] == 1000 and len(kept) == 5
    with pytest.raises(UsageError, match=r"data.dsir.target: 'nowhere' names no dataset"):
        _select("data.dsir", {"target": "nowhere"}, ["a text"], tmp_path)


# -- data.diversity ---------------------------------------------------------------------------------------------
ODD = ["1 2 3 4 5 6 7 8 9 10", "def f(x): return x * 2", "SELECT name FROM towns WHERE river = 'Esk';",
       "!!! ??? ... ---", "zq xv jj kk qq"]


def test_diversity_covers_better_than_random_and_is_deterministic(tiny_handle, tmp_path):
    texts = synthetic_corpus(30, seed=2) + recipes(15, seed=1) + ODD  # two large groups and a few rare texts
    kept, report = _select("data.diversity", {"keep": 0.2}, texts, tmp_path, inputs={"reference": tiny_handle})
    assert len(kept) == 10 and kept == [t for t in texts if t in kept]
    x = unit_rows(embed(tiny_handle, texts))
    chosen = [texts.index(t) for t in kept]
    radius = covering_radius(x, chosen)
    assert report["covering_radius"] == pytest.approx(radius, abs=1e-9)
    for s in range(5):  # independent random subsets of the same size
        assert radius <= covering_radius(x, random.Random(s).sample(range(len(texts)), 10)) + 1e-9
    assert report["covering_radius"] <= report["random_covering_radius"]
    assert "tiny-llama" in report["embedding_model"]
    again, _ = _select("data.diversity", {"k": 10}, texts, tmp_path, inputs={"reference": tiny_handle})
    assert again == kept


def test_embeddings_do_not_depend_on_batching(tiny_handle):
    texts = ["A short one.", synthetic_corpus(1, seed=3)[0], "Bread is baked in Ashford every morning."]
    one = embed(tiny_handle, texts, batch_size=1)
    batched = embed(tiny_handle, texts, batch_size=3)  # padded to the longest
    assert np.allclose(one, batched, atol=1e-4)


def test_k_center_is_greedy_farthest_point():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 4.0], [5.0, 4.0]])
    assert k_center(x, 1) == [1]  # nearest the mean (2.02, 1.6)
    assert k_center(x, 3) == [1, 3, 4]  # then the farthest from it (4), then the farthest from both (3: 4.0012 > 4)
    assert math.isclose(covering_radius(x, [0, 2, 3, 4]), 0.1)


def test_diversity_needs_a_torch_reference(tiny_handle, tmp_path):
    with pytest.raises(UsageError, match="needs a reference model"):
        _select("data.diversity", {}, ["a text", "another"], tmp_path)
    other = tiny_handle.derive(backend="onnxruntime", format="onnx")
    with pytest.raises(UsageError, match="torch model's hidden states.*onnx model on onnxruntime"):
        _select("data.diversity", {}, ["a text", "another"], tmp_path, inputs={"reference": other})


@pytest.mark.parametrize("name, module, package", [("data.dedup", "datasketch", "datasketch"),
                                                   ("data.dsir", "data_selection", "data-selection")])
def test_a_missing_library_names_the_extra(name, module, package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(MissingDependencyError, match=f"{name} needs the package '{package}'.*\\[data\\]"):
        _select(name, {}, ["a text", "another text"], tmp_path)


# -- parameters -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, raw, fragment", [
    ("data.dedup", {"threshold": 0}, "threshold must be in (0, 1], got 0"),
    ("data.dedup", {"threshold": 1.5}, "threshold must be in (0, 1], got 1.5"),
    ("data.dedup", {"num_perm": 8}, "num_perm must be >= 16, got 8"),
    ("data.dedup", {"ngram": 0}, "ngram must be >= 1, got 0"),
    ("data.dedup", {"shingle": "token"}, "'token' is not allowed"),
    ("data.dsir", {"keep": 0}, "keep must be in (0, 1], got 0"),
    ("data.dsir", {"k": 0}, "k must be >= 1"),
    ("data.dsir", {"target": ""}, "target must name the dataset"),
    ("data.dsir", {"num_buckets": 1}, "num_buckets must be >= 2, got 1"),
    ("data.dsir", {"ngrams": 4}, "ngrams must be 1, 2 or 3, got 4"),
    ("data.diversity", {"keep": 1.5}, "keep must be in (0, 1], got 1.5"),
    ("data.diversity", {"k": -2}, "k must be >= 1"),
    ("data.diversity", {"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ("data.diversity", {"max_length": 0}, "max_length must be >= 1, got 0"),
])
def test_bad_params_are_usage_errors(name, raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique(name), raw, where="spec.yaml: datasets.clean.steps[0]")
    assert fragment in str(info.value) and str(info.value).startswith("spec.yaml: datasets.clean.steps[0]")


# -- planning ---------------------------------------------------------------------------------------------------
DSIR_SPEC = """
name: dsir
base: tiny-llama
datasets:
  pool: {{builtin: synthetic, n: 50}}
  kitchen: {{builtin: instructions, n: 20}}
  picked: {{from: pool, steps: [{{data.dsir: {{target: {target}, k: 10}}}}, data.dedup]}}
paths:
  - [{{peft.lora: {{dataset: picked, max_steps: 1}}}}]
"""


def _plan(target: str):
    from harness.plan import make_plan
    from harness.spec import parse_spec

    return make_plan(parse_spec(textwrap.dedent(DSIR_SPEC.format(target=target)), file="spec.yaml"))


def test_dsir_before_lora_plans_with_its_target_as_an_input():
    import yaml

    plan = _plan("kitchen")
    (dsir,) = [n for n in plan.nodes.values() if n.technique == "data.dsir"]
    (dedup,) = [n for n in plan.nodes.values() if n.technique == "data.dedup"]
    (lora,) = [n for n in plan.nodes.values() if n.technique == "peft.lora"]
    assert plan.nodes[dsir.inputs["target"]].label == "kitchen" and plan.nodes[dsir.inputs["texts"]].label == "pool"
    assert dedup.inputs["texts"] == dsir.hash and lora.inputs["dataset"] == dedup.hash
    other = _plan("pool")  # another target is another dataset node, and so another model
    assert lora.hash not in other.nodes and dsir.hash not in other.nodes
    snippet = yaml.safe_load(plan.paths[0].spec_snippet)  # the reproduce snippet carries the target dataset
    assert {"pool", "kitchen", "picked"} <= set(snippet["datasets"])


def test_selections_that_read_no_model_get_none():
    plan = _plan("kitchen")
    for name in ("data.dsir", "data.dedup"):
        (node,) = [n for n in plan.nodes.values() if n.technique == name]
        assert "reference" not in node.inputs  # no model loaded, none in the node's identity
    other = textwrap.dedent(DSIR_SPEC.format(target="kitchen")).replace("base: tiny-llama", "base: smollm2-135m-instruct")
    from harness.plan import make_plan
    from harness.spec import parse_spec

    switched = make_plan(parse_spec(other, file="spec.yaml"))  # the same selection whatever the base
    assert {n.hash for n in plan.nodes.values() if n.technique == "data.dsir"} == \
        {n.hash for n in switched.nodes.values() if n.technique == "data.dsir"}
    refused = textwrap.dedent(DSIR_SPEC.format(target="kitchen")).replace("data.dedup]", "{data.dedup: {reference: base}}]")
    with pytest.raises(SpecError, match=r"datasets.picked.steps\[1\].reference: data.dedup reads no model"):
        make_plan(parse_spec(refused, file="spec.yaml"))


def test_an_undefined_dsir_target_is_a_plan_time_error():
    with pytest.raises(SpecError) as err:
        _plan("nowhere")
    message = str(err.value)
    assert "datasets.picked.steps[0]" in message and "data.dsir.target: 'nowhere' names no dataset" in message
    assert "\n" not in message


def test_a_dataset_made_from_itself_is_refused():
    with pytest.raises(SpecError, match=r"datasets.picked: the dataset is made from itself \(picked -> picked\)"):
        _plan("picked")


# -- data.random ------------------------------------------------------------------------------------------------------
def test_random_selection_is_a_seeded_uniform_subset_in_order(tmp_path):
    texts = [f"text number {i}" for i in range(200)] + ["   "]
    kept, report = _select("data.random", {"keep": 0.25}, texts, tmp_path)
    again, _ = _select("data.random", {"keep": 0.25}, texts, tmp_path)
    other, _ = _select("data.random", {"keep": 0.25}, texts, tmp_path, seed=1)
    assert len(kept) == 50 and kept == again and kept != other
    assert kept == [t for t in texts if t in set(kept)]  # original order, blank text never drawn
    assert report["n_in"] == 200 and report["n_kept"] == 50
    records = [{"text": f"record {i}", "id": i} for i in range(10)]
    picked, _ = _select("data.random", {"k": 3}, records, tmp_path)
    assert len(picked) == 3 and all(isinstance(r, dict) and "id" in r for r in picked)
    for bad in ({"keep": 0}, {"k": 0}):
        with pytest.raises(UsageError):
            build_params(get_technique("data.random"), bad)
