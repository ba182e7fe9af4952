"""The ``quality`` suite: lm-evaluation-harness as the engine, on any :class:`ModelHandle`.

Stages: read the options, build the task manager, load the tasks, pick the fixed-seed subsample, evaluate
with ``simple_evaluate`` (one call for all of a path's tasks on the one loaded model), convert lm-eval's
results to metrics and per-sample records.

Tasks come from the package's task directory (:mod:`suites.tasks`: the built-in probes and the standard
benchmarks over local files, as lm-eval YAMLs), a user's ``include_path`` and, only when a task is found in
neither, lm-eval's full index (whose hub datasets fail with a clear message when offline). Profiles
subsample every task to a fixed-seed set of document ids (``quick`` 100, ``standard`` 500, ``full`` all),
passed to lm-eval as ``samples`` so document ids stay the originals and per-sample outcomes pair across
paths. Few-shot count, chat template, batch size, threads and the subsample are recorded.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from adapters.errors import UsageError
from suites import probes
from suites.base import PROFILES, Metric, SampleRecord, Suite, SuiteContext, SuiteResult, suite
from suites.retrieval import retrieval_recall
from suites.tasks import TASKS_DIR
from suites.tasks.data import BENCHMARKS, resolve_data_dir

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILE_N = {"quick": 100, "standard": 500, "full": None}
# On CPU lm-eval scores ~3x faster at batch 8 than at 1. Scores equal the lm_eval CLI's at the *same* batch
# size (padding changes the float sums), so the batch size is recorded with every result.
DEFAULT_BATCH = 8
DEFAULT_TASKS = tuple(probes.PROBES)
# Multiple-choice requests sharing a context run it once (adapters.lm.HandleHFLM.prefix_cache); false gives
# lm-eval's own one-pass-per-choice scoring.
DEFAULT_PREFIX_CACHE = True
BOOTSTRAP_ITERS = 1000
BUILTIN_TASKS = (*probes.PROBES, *BENCHMARKS)
# Rolling log-likelihood (wikitext) scores whole windows of the model's max length: fp32 logits, their
# log-softmax and lm-eval's gather copy, i.e. ~3 x window x vocab x 4 bytes per window in a batch. SmolLM2's
# 8192-token windows at batch 8 need ~39 GB (an OOM kill of the whole run on 24 GiB), so the batch is cut to
# what fits in this share of the available memory, and the batch actually used is recorded.
ROLLING_MEMORY_SHARE = 0.5
ROLLING_COPIES = 3


class Options(NamedTuple):
    """The suite's validated options."""

    tasks: list[str]
    include_path: Path | None
    num_fewshot: int | None
    apply_chat_template: bool
    batch_size: int
    n: int | None
    data_dir: Path | None
    max_length: int | None
    prefix_cache: bool
    limits: dict[str, int] = {}  # noqa: RUF012 - a NamedTuple default, never mutated


def _int_option(opts: dict[str, Any], name: str, minimum: int) -> int | None:
    value = opts.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"quality.{name}: {value!r} is not allowed (an integer >= {minimum})")
    return value


def read_options(ctx: SuiteContext) -> Options:
    """Validate ``ctx.options`` and the profile; every bad value names the field and what is allowed."""
    opts = ctx.options
    if ctx.profile not in PROFILE_N:
        raise UsageError(f"quality.profile: {ctx.profile!r} is not allowed (one of {', '.join(PROFILES)})")
    tasks = opts.get("tasks") or list(DEFAULT_TASKS)
    tasks = [tasks] if isinstance(tasks, str) else tasks
    if not isinstance(tasks, list | tuple) or not all(isinstance(t, str) and t for t in tasks):
        raise UsageError(f"quality.tasks: {tasks!r} is not allowed (a list of task names)")
    chat = opts.get("apply_chat_template", False)
    if not isinstance(chat, bool):
        raise UsageError(f"quality.apply_chat_template: {chat!r} is not allowed (true or false)")
    include = opts.get("include_path")
    if include is not None and not Path(str(include)).expanduser().is_dir():
        raise UsageError(f"quality.include_path: {include!r} is not a directory (a folder of lm-eval task YAMLs)")
    limits = opts.get("limit")
    if isinstance(limits, dict):  # per task: {wikitext: 3, arc_easy: 100}; the others follow the profile
        bad = {k: v for k, v in limits.items()
               if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad or not limits:
            raise UsageError(f"quality.limit: {bad or limits!r} is not allowed (an integer >= 1, or a mapping of task "
                             "names to integers >= 1)")
        limit = None
    else:
        limit, limits = _int_option(opts, "limit", 1), {}
    prefix = opts.get("prefix_cache", DEFAULT_PREFIX_CACHE)
    if not isinstance(prefix, bool):
        raise UsageError(f"quality.prefix_cache: {prefix!r} is not allowed (true or false)")
    return Options(list(dict.fromkeys(tasks)), Path(str(include)).expanduser() if include else None,
                   _int_option(opts, "num_fewshot", 0), chat, _int_option(opts, "batch_size", 1) or DEFAULT_BATCH,
                   limit or PROFILE_N[ctx.profile], resolve_data_dir(opts.get("data_dir"), ctx.data_dir),
                   _int_option(opts, "max_length", 16), prefix, dict(limits))


def load_tasks(names: list[str], include_path: Path | None, data_dir: Path | None) -> tuple[Any, list[Any]]:
    """lm-eval task objects for ``names``: local YAMLs first; lm-eval's full index (~7 s) only if needed.

    Returns the local task manager and the objects (a Group for a group name, else its leaf tasks).
    """
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + ([str(include_path)] if include_path else [])
    meta = {"data_dir": str(data_dir)} if data_dir else {}
    local = TaskManager(include_path=paths, include_defaults=False, metadata=meta)
    foreign = [t for t in names if t not in local.all_tasks]
    index = TaskManager(include_path=paths, metadata=meta) if foreign else local
    missing = [t for t in foreign if t not in index.all_tasks]
    if missing:
        raise UsageError(f"quality.tasks: unknown task(s) {missing} (built-in: {', '.join(BUILTIN_TASKS)}; "
                         "or a task of lm-eval's index, or of a YAML in include_path)")
    objects: list[Any] = []
    for name in names:
        loaded = _load_one(local if name not in foreign else index, name)
        objects += [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    return local, objects


def _load_one(tm: Any, name: str) -> dict[str, Any]:
    try:
        return tm.load([name])
    except UsageError:
        raise
    except Exception as exc:  # a dataset that cannot be read: say which task and why
        offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v) not in (None, "0", "")]
        hint = (f"; {'/'.join(offline)} is set, so datasets on the Hugging Face hub are unreachable: use a built-in "
                f"task ({', '.join(BUILTIN_TASKS)}) with data_dir, or a task YAML over local files in include_path"
                if offline else "")
        raise UsageError(f"quality.tasks: task {name!r} could not load its dataset "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}){hint}") from exc


def adapt_tasks(tm: Any, objects: list[Any], hooks: Sequence[Any]) -> tuple[list[Any], dict[str, list[str]]]:
    """The tasks as the handle's inference hooks pose them (:mod:`adapters.inference`: chain-of-thought prompts and
    answer filters, self-consistency repeats and votes), and per task one note per hook. A changed task is rebuilt
    from its YAML config by lm-eval's loader: it keeps its name, documents and document ids. A group's tasks keep
    their configs (name the tasks to adapt them)."""
    if not hooks:
        return objects, {}
    from lm_eval.api.group import Group
    from lm_eval.tasks._yaml_loader import load_yaml

    from adapters.inference import adapt_config

    out, notes = [], {}
    for obj in objects:
        name = obj.name if isinstance(obj, Group) else obj.task_name
        source = None if isinstance(obj, Group) else (obj.config.metadata or {}).get("config_source")
        if source is None or not Path(source).is_file():
            notes[name] = ["not adapted: a group, or a task without a YAML config (name its tasks one by one)"]
            out.append(obj)
            continue
        raw = {**load_yaml(source, resolve_func=True), "task": name}
        config, notes[name] = adapt_config(hooks, name, raw)
        if config is raw:
            out.append(obj)
            continue
        try:
            out.append(tm.load([config])["tasks"][name])
        except Exception as exc:
            raise UsageError(f"quality.tasks: task {name!r} as the path's inference steps pose it could not be built "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return out, notes


def leaf_tasks(objects: list[Any]) -> dict[str, Any]:
    """Every leaf task among ``objects`` (groups expanded), by task name."""
    from lm_eval.api.group import Group

    out: dict[str, Any] = {}
    for obj in objects:
        for task in obj.get_all_tasks() if isinstance(obj, Group) else [obj]:
            out[task.task_name] = task
    return out


def rolling_batch_limit(batch: int, window: int, vocab: int, available_bytes: int) -> int:
    """The largest batch <= ``batch`` (at least 1) whose rolling windows' logits fit the memory share."""
    per_window = ROLLING_COPIES * window * vocab * 4
    return max(1, min(batch, int(ROLLING_MEMORY_SHARE * available_bytes) // per_window))


def pick_samples(tasks: dict[str, Any], n: int | None, seed: int,
                 limits: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Fixed-seed document ids (sorted) for each task with more than its limit of documents (``limits[task]``, else
    ``n``); others run whole."""
    unknown = sorted(set(limits or {}) - set(tasks))
    if unknown:
        raise UsageError(f"quality.limit: {unknown} not among the tasks run (their leaf task names: "
                         f"{', '.join(sorted(tasks))})")
    picked = {}
    for name, task in tasks.items():
        size = len(task.eval_docs)
        keep = (limits or {}).get(name, n)
        if keep is not None and size > keep:
            picked[name] = sorted(random.Random(f"{name}:{seed}").sample(range(size), keep))
    return picked


@contextlib.contextmanager
def quiet_git_hash() -> Iterator[None]:
    """lm-eval records ``git describe`` of the current directory, and git prints "fatal: not a git repository"
    on the console when it is not one: ask git with its error output silenced instead (same value)."""
    import subprocess

    from lm_eval import evaluator

    def git_hash() -> str | None:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    original = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


@suite("quality")
class QualitySuite(Suite):
    """Quality via lm-eval: built-in probes, local standard benchmarks, user YAML, any lm-eval task."""

    options = ("tasks", "include_path", "num_fewshot", "apply_chat_template", "batch_size", "limit", "data_dir",
               "max_length", "prefix_cache")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        opts = read_options(ctx)
        tm, objects = load_tasks(opts.tasks, opts.include_path, opts.data_dir)
        objects, adapted = adapt_tasks(tm, objects, handle.inference_hooks)
        tasks = leaf_tasks(objects)
        picked = pick_samples(tasks, opts.n, ctx.seed, opts.limits)
        saved = (handle.batch_size, handle._lm)
        handle.batch_size, handle._lm = opts.batch_size, None  # the lm-eval LM is built for one batch size
        handle.activate()
        try:
            batch = self._fit_batch(handle, tasks, opts.batch_size, opts.max_length)
            if batch != opts.batch_size:
                handle.batch_size, handle._lm = batch, None
            out = self._evaluate(handle, tm, objects, picked, opts._replace(batch_size=batch), ctx.seed)
            lm = handle.lm(opts.max_length)
            window, shared = int(lm.max_length), dict(lm.prefix_stats)
        finally:
            handle.batch_size, handle._lm = saved
        sizes = {name: len(task.eval_docs) for name, task in tasks.items()}
        settings = self._settings(handle, opts._replace(batch_size=batch), ctx, picked)
        if adapted:  # what each inference step (infer.cot, infer.self_consistency) did to each task
            settings["inference"] = {"hooks": handle.settings["inference_hooks"], "tasks": adapted}
        result = to_result(out, picked, sizes, {**settings, "batch_size_requested": opts.batch_size,
                                                 "max_length": window,
                                                 "prefix_cache": {"enabled": opts.prefix_cache, **shared}})
        recall, recall_samples = retrieval_recall(handle, out)  # infer.rag: recall@k on the tasks' own questions
        result.metrics.extend(recall)
        result.samples.extend(recall_samples)
        return result

    @staticmethod
    def _fit_batch(handle: ModelHandle, tasks: dict[str, Any], batch: int, max_length: int | None) -> int:
        """``batch``, or less where a rolling task's windows would not fit in memory (see ROLLING_COPIES)."""
        if not any(getattr(t, "OUTPUT_TYPE", None) == "loglikelihood_rolling" for t in tasks.values()):
            return batch
        import psutil

        lm = handle.lm(max_length)
        vocab = handle.architecture().vocab_size or len(handle.tokenizer)
        return rolling_batch_limit(batch, int(lm.max_length), int(vocab), psutil.virtual_memory().available)

    @staticmethod
    def _evaluate(handle: ModelHandle, tm: Any, objects: list[Any], picked: dict[str, list[int]],
                  opts: Options, seed: int) -> dict[str, Any]:
        from lm_eval import simple_evaluate

        lm = handle.lm(opts.max_length)
        lm.prefix_cache = opts.prefix_cache
        with quiet_git_hash():
            out = simple_evaluate(
                model=lm, tasks=objects, task_manager=tm, num_fewshot=opts.num_fewshot,
                batch_size=opts.batch_size, apply_chat_template=opts.apply_chat_template,
                samples=picked or None, log_samples=True, bootstrap_iters=BOOTSTRAP_ITERS, random_seed=seed,
                numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            )
        if out is None:
            raise RuntimeError("lm-eval returned no results")
        return dict(out)

    @staticmethod
    def _settings(handle: ModelHandle, opts: Options, ctx: SuiteContext,
                  picked: dict[str, list[int]]) -> dict[str, Any]:
        import lm_eval

        return {"tasks": opts.tasks, "num_fewshot": opts.num_fewshot, "apply_chat_template": opts.apply_chat_template,
                "batch_size": opts.batch_size, "threads": handle.threads, "profile": ctx.profile,
                "subsample": {"n": opts.n, "per_task": opts.limits or None, "seed": ctx.seed, "method": "random.Random(f'{task}:{seed}').sample",
                              "tasks": sorted(picked)},
                "include_path": str(opts.include_path) if opts.include_path else None,
                "data_dir": str(opts.data_dir) if opts.data_dir else None,
                "bootstrap_iters": BOOTSTRAP_ITERS, "lm_eval": lm_eval.__version__}


def to_result(out: dict[str, Any], picked: dict[str, list[int]], sizes: dict[str, int],
              settings: dict[str, Any]) -> SuiteResult:
    """lm-eval's output as metrics (with stderr, n, unit, direction, method) and per-sample records."""
    import lm_eval

    res = SuiteResult(settings={**settings, "task_versions": dict(out.get("versions", {}))})
    method = f"lm-eval {lm_eval.__version__}"
    for task, values in out["results"].items():
        hib = out.get("higher_is_better", {}).get(task, {})
        n_eff = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
        details = {"num_fewshot": out.get("n-shot", {}).get(task), "version": out.get("versions", {}).get(task),
                   "subsample": {"n": len(picked[task]), "of": sizes.get(task), "seed": settings["subsample"]["seed"]}
                   if task in picked else None}
        for key, value in values.items():
            if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{filt}")
            res.metrics.append(Metric(
                "quality", task, metric if filt == "none" else f"{metric}_{filt}", float(value),
                float(stderr) if isinstance(stderr, int | float) else None, n_eff, _unit(metric),
                bool(hib.get(metric, True)), method, {**details, "filter": filt}))
        res.samples.extend(_samples(task, out.get("samples", {}).get(task, [])))
    return res


def _unit(metric: str) -> str:
    if "perplexity" in metric:
        return "perplexity"
    if metric == "bits_per_byte":
        return "bits/byte"
    return "fraction"


def _samples(task: str, logged: list[dict[str, Any]]) -> list[SampleRecord]:
    """Per-item outcomes, so that paired tests compare the same items.

    One record per document under ``task`` (its first filter's ``acc`` / ``exact_match``, per-choice log-likelihoods
    or the generation, target). Every other metric of every filter gets its own records under ``<task>#<metric>``,
    named as the suite's metric is (``exact_match_strict-match``, ``acc_norm``, ``f1``), with ``correct`` for an
    accuracy whose items are all 0/1 and only the ``score`` otherwise (SQuAD's F1)."""
    out = []
    seen: set[str] = set()
    others: dict[str, list[tuple[str, float]]] = {}
    for s in logged:
        doc_id, resps = str(s["doc_id"]), s.get("filtered_resps") or []
        filt = str(s.get("filter", "none"))
        if doc_id not in seen:  # lm-eval logs a document once per filter: the first one is the task's record
            seen.add(doc_id)
            lls = tuple(float(r[0]) for r in resps if isinstance(r, list | tuple) and r and isinstance(r[0], float))
            score = next((float(s[k]) for k in ("acc", "exact_match") if _number(s.get(k))), None)
            pred = None if lls else str(resps[0]) if resps else None
            correct = score == 1.0 if score in (0.0, 1.0) else None  # truthfulqa_mc2's acc is a probability
            out.append(SampleRecord("quality", task, doc_id, correct, score, lls, pred, str(s.get("target"))))
        for metric in s.get("metrics") or [k for k in ("acc_norm", "acc_mutual_info") if k in s]:
            if _number(s.get(metric)) and not (filt == "none" and metric in ("acc", "exact_match")):
                name = metric if filt == "none" else f"{metric}_{filt}"
                others.setdefault(name, []).append((doc_id, float(s[metric])))
    for name, values in others.items():
        binary = name.startswith(_ACCURACIES) and all(v in (0.0, 1.0) for _, v in values)
        out.extend(SampleRecord("quality", f"{task}#{name}", doc_id, value == 1.0 if binary else None, value)
                   for doc_id, value in values)
    return out


#: lm-eval metrics whose per-item value is a 0/1 outcome (TruthfulQA MC2's ``acc`` is a probability: checked by value)
_ACCURACIES = ("acc", "exact_match")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
