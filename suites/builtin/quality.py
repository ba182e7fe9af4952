"""The ``quality`` suite: lm-evaluation-harness as the engine, on any :class:`ModelHandle`.

Runs built-in offline probes (:mod:`suites.probes`), the standard benchmarks from local files
(:mod:`suites.localdata`: lm-eval's own task definitions over converted local data), tasks from a user's
``include_path`` and, where their datasets are reachable, any task of lm-eval's index. One
``simple_evaluate`` call scores all of a path's tasks on one loaded model; a ``TaskManager`` over only
the local task directories is built unless a task needs lm-eval's full index.

Profiles subsample every task to a fixed-seed set of document ids (``quick`` 100, ``standard`` 500,
``full`` all), passed to lm-eval as ``samples`` so document ids stay the originals and per-sample
outcomes pair across paths. Few-shot count, chat template, batch size and threads are recorded.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import UsageError
from suites import localdata, probes
from suites.base import Metric, SampleRecord, Suite, SuiteContext, SuiteResult, suite

if TYPE_CHECKING:
    from adapters.handle import ModelHandle

PROFILE_N = {"quick": 50, "standard": 500, "full": None}
# lm-eval batches requests of similar length; on CPU batch 8 scores ~3x faster than batch 1. Results equal
# the lm_eval CLI's at the same batch size, so it is recorded with every result.
DEFAULT_BATCH = 8
DEFAULT_TASKS = tuple(probes.PROBES)
BOOTSTRAP_ITERS = 1000


def _count(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def prepare_tasks(tasks: list[str], workdir: Path, data_dir: Path | None, seed: int) -> dict[str, int | None]:
    """Write the probe and local-benchmark tasks into ``workdir``; returns task -> document count (None: not ours)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int | None] = {}
    for task in tasks:
        if task in probes.PROBES:
            probes.write_task(task, workdir, seed=0)  # probe content is fixed by its version, not the run's seed
        elif task in localdata.BENCHMARKS:
            localdata.write_task(task, data_dir, workdir)
        else:
            sizes[task] = None
            continue
        sizes[task] = _count(workdir / f"{task}.jsonl")
    return sizes


def subsample(sizes: dict[str, int | None], n: int | None, seed: int) -> dict[str, list[int]]:
    """Fixed-seed document ids per task (sorted), for tasks we know the size of and that exceed ``n``."""
    out = {}
    for task, size in sizes.items():
        if size is not None and n is not None and size > n:
            out[task] = sorted(random.Random(f"{task}:{seed}").sample(range(size), n))
    return out


@suite("quality")
class QualitySuite(Suite):
    """Quality via lm-eval: built-in probes, local standard benchmarks, user YAML, any lm-eval task."""

    options = ("tasks", "include_path", "num_fewshot", "apply_chat_template", "batch_size", "limit", "data_dir")

    def run(self, handle: ModelHandle, ctx: SuiteContext) -> SuiteResult:
        opts = ctx.options
        tasks = list(opts.get("tasks") or DEFAULT_TASKS)
        if not all(isinstance(t, str) for t in tasks):
            raise UsageError(f"quality.tasks: {tasks!r} is not allowed (a list of task names)")
        data_dir = localdata.data_dir_for(opts.get("data_dir"), ctx.data_dir)
        workdir = Path(ctx.workdir) / "quality-tasks"
        sizes = prepare_tasks(tasks, workdir, data_dir, ctx.seed)
        n = opts.get("limit") or PROFILE_N[ctx.profile]
        picked = subsample(sizes, n, ctx.seed)
        tm = self._task_manager(workdir, opts.get("include_path"), [t for t, s in sizes.items() if s is None])
        batch = int(opts.get("batch_size") or DEFAULT_BATCH)
        saved = (handle.batch_size, handle._lm)
        handle.batch_size, handle._lm = batch, None  # the lm-eval LM is built for one batch size
        handle.activate()
        try:
            return self._evaluate(handle, ctx, tasks, tm, picked, n)
        finally:
            handle.batch_size, handle._lm = saved

    def _evaluate(self, handle: ModelHandle, ctx: SuiteContext, tasks: list[str], tm: Any,
                  picked: dict[str, list[int]], n: int | None) -> SuiteResult:
        from lm_eval import simple_evaluate

        opts = ctx.options
        settings = {"tasks": tasks, "num_fewshot": opts.get("num_fewshot"), "batch_size": handle.batch_size,
                    "threads": handle.threads, "apply_chat_template": bool(opts.get("apply_chat_template", False)),
                    "subsample": {"n": n, "seed": ctx.seed, "method": "random.sample of doc ids"},
                    "bootstrap_iters": BOOTSTRAP_ITERS}
        out = simple_evaluate(
            model=handle.lm(), tasks=tasks, task_manager=tm, num_fewshot=opts.get("num_fewshot"),
            batch_size=handle.batch_size, apply_chat_template=bool(opts.get("apply_chat_template", False)),
            samples=picked or None, limit=None if picked else n, log_samples=True,
            bootstrap_iters=BOOTSTRAP_ITERS, random_seed=ctx.seed, numpy_random_seed=ctx.seed,
            torch_random_seed=ctx.seed, fewshot_random_seed=ctx.seed,
        )
        if out is None:
            raise RuntimeError("lm-eval returned no results")
        return self._convert(out, picked, settings)

    @staticmethod
    def _task_manager(workdir: Path, include_path: Any, foreign: list[str]) -> Any:
        from lm_eval.tasks import TaskManager

        paths = [str(workdir)] + ([str(Path(include_path).expanduser())] if include_path else [])
        tm = TaskManager(include_path=paths, include_defaults=False)
        unknown = [t for t in foreign if t not in tm.all_tasks]
        if unknown:  # only now pay for lm-eval's full index (~7 s)
            tm = TaskManager(include_path=paths)
            missing = [t for t in unknown if t not in tm.all_tasks]
            if missing:
                raise UsageError(f"quality.tasks: unknown task(s) {missing} (built-in: "
                                 f"{', '.join([*probes.PROBES, *localdata.BENCHMARKS])}; or an lm-eval task name)")
        return tm

    def _convert(self, out: dict[str, Any], picked: dict[str, list[int]], settings: dict[str, Any]) -> SuiteResult:
        import lm_eval

        res = SuiteResult(settings=settings)
        method = f"lm-eval {lm_eval.__version__}"
        for task, values in out["results"].items():
            hib = out.get("higher_is_better", {}).get(task, {})
            n_eff = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
            shots = out.get("n-shot", {}).get(task)
            for key, value in values.items():
                if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                    continue
                metric, filt = key.split(",", 1)
                stderr = values.get(f"{metric}_stderr,{filt}")
                name = metric if filt == "none" else f"{metric}_{filt}"
                res.metrics.append(Metric(
                    "quality", task, name, float(value),
                    float(stderr) if isinstance(stderr, int | float) else None, n_eff, _unit(metric),
                    bool(hib.get(metric, True)), method,
                    {"filter": filt, "num_fewshot": shots, "subsampled": task in picked,
                     "n_docs": len(picked[task]) if task in picked else n_eff}))
            res.samples.extend(_samples(task, out.get("samples", {}).get(task, [])))
        return res


def _unit(metric: str) -> str:
    if "perplexity" in metric:
        return "perplexity"
    if metric == "bits_per_byte":
        return "bits/byte"
    return "fraction"


def _samples(task: str, logged: list[dict[str, Any]]) -> list[SampleRecord]:
    out = []
    for s in logged:
        resps = s.get("filtered_resps") or []
        lls = tuple(float(r[0]) for r in resps if isinstance(r, list | tuple) and r and isinstance(r[0], float))
        score = next((float(s[k]) for k in ("acc", "exact_match", "mc2") if isinstance(s.get(k), int | float)), None)
        pred = None if lls else str(resps[0]) if resps else None
        out.append(SampleRecord("quality", task, str(s["doc_id"]), None if score is None else score >= 1.0,
                                score, lls, pred, str(s.get("target"))))
        # other per-item 0/1 metrics (acc_norm ...) get their own records, "<task>#<metric>", so paired tests
        # of those metrics use their own outcomes
        for key in ("acc_norm", "acc_mutual_info"):
            if isinstance(s.get(key), int | float):
                out.append(SampleRecord("quality", f"{task}#{key}", str(s["doc_id"]), float(s[key]) >= 1.0,
                                        float(s[key])))
    return out
