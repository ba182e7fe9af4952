"""The quality suite on the pico model: probes are seeded and sized, local tasks prompt exactly as lm-eval's own
YAMLs, a random model sits at chance, runs are bit-identical, and bad input fails with one clear line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import pytest

from adapters.errors import UsageError
from suites import probes
from suites.base import SUITES, SuiteContext
from suites.tasks import TASKS_DIR
from suites.tasks.data import BENCHMARKS, load_docs

LM_EVAL_YAML = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml", "piqa": "piqa/piqa.yaml",
                "hellaswag": "hellaswag/hellaswag.yaml", "lambada_openai": "lambada/lambada_openai.yaml",
                "wikitext": "wikitext/wikitext.yaml", "gsm8k": "gsm8k/gsm8k.yaml",
                "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml", "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml",
                # the questions held out from the truthfulqa_pairs preference data, prompted as lm-eval's own tasks
                "truthfulqa_mc1_heldout": "truthfulqa/truthfulqa_mc1.yaml",
                "truthfulqa_mc2_heldout": "truthfulqa/truthfulqa_mc2.yaml"}
#: local tasks of our own, with no lm-eval YAML to match (lm-eval's squadv2 scores through the hub's `evaluate`)
OWN_TASKS = {"squad_openbook"}


def _run(handle, tmp_path, profile="quick", data_dir=None, **options):
    ctx = SuiteContext(profile=profile, workdir=tmp_path, options=options, data_dir=data_dir)
    return SUITES.get("quality")().run(handle, ctx)


def test_probes_have_200_seeded_items_with_valid_gold_and_versioned_yaml():
    for task in probes.PROBES:
        items = probes.items(task)
        assert len(items) >= 200 and items == probes.items(task)
        assert all(0 <= it["gold"] < len(it["choices"]) for it in items)
        assert len({it["query"] for it in items}) > 100  # not a handful of repeated items
        golds = [it["gold"] for it in items]
        assert max(golds.count(g) for g in set(golds)) < 0.7 * len(golds)  # the answer position is not a give-away
        yaml = (TASKS_DIR / f"{task}.yaml").read_text()
        assert f"version: {probes.VERSION}.0" in yaml


def test_every_local_task_prompts_exactly_as_lm_evals_own_yaml(tmp_path, benchmarks_dir):
    """Our YAML and lm-eval's installed YAML (dataset pointed at the same converted docs) give the same
    prompts, choices and targets for every document (the first 300 of each)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    for task, rel in LM_EVAL_YAML.items():
        data = theirs_dir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in load_docs(task, benchmarks_dir)[:300]))
        (theirs_dir / f"{task}_ref.yaml").write_text("\n".join([
            f"include: {json.dumps(str(Path(lm_eval.tasks.__file__).parent / rel))}", f"task: {task}_ref",
            "dataset_path: json", "dataset_name: null", "dataset_kwargs:", f"  data_files: {{test: {json.dumps(str(data))}}}",
            "training_split: null", "validation_split: null", "test_split: test", "fewshot_split: null"]))
    ours = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(benchmarks_dir)})
    ref = TaskManager(include_path=str(theirs_dir), include_defaults=False)
    assert set(LM_EVAL_YAML) == set(BENCHMARKS) - OWN_TASKS
    for task in LM_EVAL_YAML:
        mine = ours.load([task])["tasks"][task]
        other = ref.load([f"{task}_ref"])["tasks"][f"{task}_ref"]
        assert mine.OUTPUT_TYPE == other.OUTPUT_TYPE and mine.config.metric_list == other.config.metric_list
        for a, b in zip(list(mine.eval_docs)[:300], other.eval_docs, strict=True):
            assert mine.doc_to_text(a) == other.doc_to_text(b), task
            assert mine.doc_to_target(a) == other.doc_to_target(b), task
            if mine.OUTPUT_TYPE == "multiple_choice":
                assert mine.doc_to_choice(a) == other.doc_to_choice(b), task


def test_random_model_is_at_chance_and_runs_are_bit_identical(tiny_handle, tmp_path):
    res = _run(tiny_handle, tmp_path / "a")
    accs = {m.task: m for m in res.metrics if m.name == "acc"}
    assert set(accs) == set(probes.PROBES)
    for task, m in accs.items():
        chance = probes.PROBES[task][1]
        assert m.n == 100 and m.method.startswith("lm-eval") and m.unit == "fraction" and m.higher_is_better
        assert m.details["subsample"] == {"n": 100, "of": 200, "seed": 0}
        # 99.9% two-sided binomial bound around chance
        assert abs(m.value - chance) < 3.3 * math.sqrt(chance * (1 - chance) / m.n), (task, m.value)
    assert res.settings["batch_size"] == 8 and res.settings["threads"] == 1
    assert res.settings["subsample"]["n"] == 100
    agreement = [s for s in res.samples if s.task == "slm_agreement"]
    assert len(agreement) == 100 and all(len(s.loglikelihoods) == 2 for s in agreement)
    assert sum(s.correct for s in agreement) / 100 == accs["slm_agreement"].value
    norm = {s.sample_id: s.correct for s in res.samples if s.task == "slm_agreement#acc_norm"}
    acc_norm = next(m for m in res.metrics if (m.task, m.name) == ("slm_agreement", "acc_norm"))
    assert sum(norm.values()) / 100 == pytest.approx(acc_norm.value)
    again = _run(tiny_handle, tmp_path / "b")
    assert [(m.key, m.value, m.stderr, m.n) for m in again.metrics] == [(m.key, m.value, m.stderr, m.n)
                                                                      for m in res.metrics]
    assert [(s.task, s.sample_id, s.loglikelihoods) for s in again.samples] == \
           [(s.task, s.sample_id, s.loglikelihoods) for s in res.samples]


def test_subsample_is_recorded_and_ids_are_original_doc_ids(tiny_handle, tmp_path, benchmarks_dir):
    res = _run(tiny_handle, tmp_path, data_dir=benchmarks_dir, tasks=["arc_easy", "lambada_openai"], limit=6)
    metrics = {(m.task, m.name): m for m in res.metrics}
    assert {"acc", "acc_norm"} <= {n for t, n in metrics if t == "arc_easy"}
    assert metrics[("arc_easy", "acc")].details["subsample"] == {"n": 6, "of": 570, "seed": 0}
    ppl = metrics[("lambada_openai", "perplexity")]
    assert ppl.unit == "perplexity" and not ppl.higher_is_better and ppl.n == 6 and ppl.value > 1000  # random model
    ids = sorted(int(s.sample_id) for s in res.samples if s.task == "arc_easy")
    assert len(ids) == 6 and max(ids) > 6  # a seeded sample over all 570, not the first six
    records = [s for s in res.samples if s.task == "arc_easy"]
    assert all(len(s.loglikelihoods) >= 3 and s.target is not None for s in records)


def test_limit_per_task(tiny_handle, tmp_path, benchmarks_dir):
    """``limit: {task: n}`` sizes each named task (the others follow the profile): a perplexity task on a few long
    documents next to multiple-choice tasks on a hundred items, in one suite."""
    res = _run(tiny_handle, tmp_path, data_dir=benchmarks_dir, tasks=["arc_easy", "lambada_openai"],
               limit={"arc_easy": 5, "lambada_openai": 3})
    n = {m.task: m.details["subsample"]["n"] for m in res.metrics if m.details.get("subsample")}
    assert n == {"arc_easy": 5, "lambada_openai": 3}
    assert res.settings["subsample"]["per_task"] == {"arc_easy": 5, "lambada_openai": 3}
    with pytest.raises(UsageError, match=r"quality.limit: \['piqa'\] not among the tasks run"):
        _run(tiny_handle, tmp_path / "x", data_dir=benchmarks_dir, tasks=["arc_easy"], limit={"piqa": 5})
    for bad in ({"arc_easy": 0}, {"arc_easy": "5"}, {}):
        with pytest.raises(UsageError, match="quality.limit: .* is not allowed"):
            _run(tiny_handle, tmp_path / "y", data_dir=benchmarks_dir, tasks=["arc_easy"], limit=bad)


def test_data_dir_from_environment_and_user_include_path(tiny_handle, tmp_path, benchmarks_dir, monkeypatch):
    monkeypatch.setenv("SLM_DATA_DIR", str(benchmarks_dir))
    user = tmp_path / "yaml"
    user.mkdir()
    (user / "mini.jsonl").write_text("".join(json.dumps({"q": f"{i} plus one is", "c": [" one", " two"], "g": 1})
                                             + "\n" for i in range(4)))
    (user / "mini.yaml").write_text(f"task: my_mini\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
                                    f"{json.dumps(str(user / 'mini.jsonl'))}\ntest_split: test\noutput_type: "
                                    "multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\ndoc_to_target: g\n"
                                    "metric_list:\n  - metric: acc\n")
    res = _run(tiny_handle, tmp_path / "w", tasks=["piqa", "my_mini"], include_path=str(user), limit=4)
    assert {(m.task, m.name, m.n) for m in res.metrics if m.name == "acc"} == {("piqa", "acc", 4),
                                                                               ("my_mini", "acc", 4)}


@pytest.mark.parametrize(("options", "message"), [
    ({"tasks": ["arc_easy"], "data_dir": "/nowhere"}, r"/nowhere/arc_easy/ARC-Easy-Dev\.jsonl not found"),
    ({"tasks": ["no_such_task_xyz"]}, r"unknown task\(s\) \['no_such_task_xyz'\]"),
    ({"tasks": "slm_agreement", "num_fewshot": -1}, r"quality\.num_fewshot: -1 is not allowed"),
    ({"batch_size": "8"}, r"quality\.batch_size: '8' is not allowed \(an integer >= 1\)"),
    ({"apply_chat_template": "yes"}, r"quality\.apply_chat_template: 'yes' is not allowed"),
    ({"include_path": "/nowhere/yaml"}, r"quality\.include_path: '/nowhere/yaml' is not a directory"),
    ({"tasks": [3]}, r"quality\.tasks: \[3\] is not allowed"),
    ({"prefix_cache": 1}, r"quality\.prefix_cache: 1 is not allowed \(true or false\)"),
])
def test_bad_options_fail_with_one_clear_line(tiny_handle, tmp_path, options, message):
    with pytest.raises(UsageError, match=message) as err:
        _run(tiny_handle, tmp_path, **options)
    assert "\n" not in str(err.value)


def test_missing_data_dir_names_every_expected_file(tiny_handle, tmp_path, monkeypatch):
    monkeypatch.delenv("SLM_DATA_DIR", raising=False)
    with pytest.raises(UsageError, match=re.escape("piqa/valid.jsonl, piqa/valid-labels.lst")):
        _run(tiny_handle, tmp_path, tasks=["piqa"])
    with pytest.raises(UsageError, match="quality.profile: 'huge'"):
        _run(tiny_handle, tmp_path, profile="huge")


def test_hub_task_offline_fails_with_a_clear_message(tiny_handle, tmp_path, monkeypatch):
    """A task only in lm-eval's index (its dataset on the hub) cannot load offline: say so and what to use."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"task 'sciq' could not load its dataset .*HF_HUB_OFFLINE"):
        _run(tiny_handle, tmp_path, tasks=["sciq"])


def test_rolling_batch_is_cut_to_what_fits_in_memory():
    from suites.builtin.quality import ROLLING_COPIES, rolling_batch_limit

    per_window = ROLLING_COPIES * 8192 * 49152 * 4  # SmolLM2: ~4.8 GB of logits copies per 8192-token window
    assert rolling_batch_limit(8, 8192, 49152, 24 * 2**30) == 2  # 12 GiB share / 4.8 GB: batch 8 was an OOM kill
    assert rolling_batch_limit(8, 8192, 49152, 2 * 8 * per_window) == 8
    assert rolling_batch_limit(8, 8192, 49152, 2**30) == 1  # never below one window


def test_rolling_task_records_the_batch_it_used(tiny_handle, tmp_path, benchmarks_dir, monkeypatch):
    import psutil

    from suites.builtin.quality import ROLLING_COPIES

    window = tiny_handle.lm().max_length
    per_window = ROLLING_COPIES * window * tiny_handle.model.config.vocab_size * 4
    real = psutil.virtual_memory

    class Tight(NamedTuple):
        available: int

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight(4 * per_window))  # the share fits two windows
    res = _run(tiny_handle, tmp_path, data_dir=benchmarks_dir, tasks=["wikitext"], limit=2)
    assert (res.settings["batch_size"], res.settings["batch_size_requested"]) == (2, 8)
    assert {m.name for m in res.metrics} >= {"word_perplexity", "bits_per_byte"}
    assert tiny_handle.batch_size != 2  # the handle's own setting is restored
    assert res.settings["max_length"] == window == 2048  # the pico model's config
    short = _run(tiny_handle, tmp_path / "s", data_dir=benchmarks_dir, tasks=["wikitext"], limit=2, max_length=256)
    assert short.settings["max_length"] == 256 and short.settings["batch_size"] == 8  # 8 short windows fit
    ppl = {m.name: m.value for m in short.metrics}["word_perplexity"]
    assert ppl != {m.name: m.value for m in res.metrics}["word_perplexity"]  # shorter windows, other contexts
    monkeypatch.setattr(psutil, "virtual_memory", real)
    mc = _run(tiny_handle, tmp_path / "mc", data_dir=benchmarks_dir, tasks=["arc_easy"], limit=2)
    assert mc.settings["batch_size"] == mc.settings["batch_size_requested"] == 8  # no rolling task: untouched


def test_prefix_cache_is_recorded_and_gives_lm_evals_accuracies(tiny_handle, tmp_path):
    shared = _run(tiny_handle, tmp_path / "a", tasks=["slm_arithmetic", "slm_agreement"], limit=40)
    exact = _run(tiny_handle, tmp_path / "b", tasks=["slm_arithmetic", "slm_agreement"], limit=40, prefix_cache=False)
    stats = shared.settings["prefix_cache"]  # 40 x 4 arithmetic + 40 x 2 agreement choices; docs may share a context
    assert stats["enabled"] and stats["requests"] == 240 and stats["fallback"] == 0 and 40 < stats["groups"] <= 80
    assert exact.settings["prefix_cache"] == {"enabled": False, "groups": 0, "requests": 0, "fallback": 0}
    assert [(m.key, m.value, m.n) for m in shared.metrics] == [(m.key, m.value, m.n) for m in exact.metrics]
    pairs = [(a.loglikelihoods, b.loglikelihoods) for a, b in zip(shared.samples, exact.samples, strict=True)]
    assert all(a == pytest.approx(b, rel=1e-5, abs=1e-4) for a, b in pairs)


def test_a_run_outside_a_git_repository_keeps_the_console_clean(tmp_path):
    """No lm-eval progress bars and no git error on the console (the run directory is not a git repository)."""
    import subprocess
    import sys

    code = ("from adapters.runtime import prepare_process; prepare_process()\n"
            "from adapters.sources import load_source\n"
            "from suites.base import SuiteContext\n"
            "from suites.builtin.quality import QualitySuite\n"
            "h = load_source('tiny-llama')\n"
            "ctx = SuiteContext(profile='quick', options={'tasks': ['slm_agreement'], 'limit': 5}, seed=0,"
            " workdir=__import__('pathlib').Path('.'))\n"
            "print(len(QualitySuite().run(h, ctx).metrics))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fatal: not a git repository" not in out.stderr and "Tokenizing inputs" not in out.stderr, out.stderr
