"""The composition matrix: every registered technique x every registered artifact format, on the pico model.

Parametrized over ``TECHNIQUES.names()`` and ``format_names()``, so a technique or a format registered
tomorrow is in the matrix tomorrow. For each cell (technique T, format F):

* T accepts F (``T.output_format(F, params)`` does not raise): T is applied with :meth:`Technique.run` to a
  pico artifact of format F (built once per session by a producer technique), the output's format is the
  declared one, its log-likelihoods of three fixed pairs and a 4-token greedy generation are recorded, and
  it is saved. ONE fresh Python process, started before the first cell, reloads each artifact with
  :meth:`ModelHandle.load` as soon as it is saved (while the next cells are applied) and recomputes the same
  numbers: they must match the in-memory ones, and the reloaded format and lineage must be the declared ones. The planner must also accept the same path.
* T does not accept F: the planner refuses the path ``[<producer of F>, T]`` at plan time with one
  ``SpecError`` line naming T, F and what T accepts (or, for ``data.*``, that T produces a dataset).

A format no known technique produces is skipped as a column, with the reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.errors import BackendUnavailableError, MissingDependencyError, SpecError
from adapters.formats import format_names
from adapters.technique import TECHNIQUES, DataTechnique, FormatMismatch, TechniqueContext, build_params

ROOT = Path(__file__).resolve().parents[1]

#: cheap parameters per technique (budgets of 1-2 steps); a technique not listed runs with its defaults
CHEAP_PARAMS: dict[str, dict[str, Any]] = {
    "peft.lora": {"r": 2, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "tune.sft": {"max_steps": 1, "batch_size": 1, "max_length": 128, "n_examples": 4},
    "tune.dpo": {"max_steps": 1, "batch_size": 2, "max_length": 128, "n_examples": 4, "eval_pairs": 1},
    "tune.kto": {"max_steps": 1, "batch_size": 2, "max_length": 128, "n_examples": 4, "eval_pairs": 1},
    "distill.logit": {"max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16, "eval_blocks": 1},
    "distill.feature": {"max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16, "eval_blocks": 1},
    "distill.blackbox": {"n_prompts": 2, "max_new_tokens": 4, "max_steps": 1, "batch_size": 1, "max_length": 128},
    "init.scratch": {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "max_steps": 1, "batch_size": 1,
                     "seq_len": 16, "n_texts": 16},
    "prune.wanda": {"n_calibration": 2, "seq_len": 16},
    "prune.magnitude": {"sparsity": 0.5},
    "prune.sparsegpt": {"n_samples": 2, "seq_len": 16, "sparsity": 0.5},
    "prune.layers": {"n_calibration": 2, "seq_len": 16},
    "prune.structured": {"mlp_ratio": 0.25, "head_ratio": 0.5},
    "train.continual": {"max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16, "warmup_steps": 0},
    "factorize.svd": {"rank": 4},
    "quant.awq": {"group_size": 32, "n_samples": 2, "seq_len": 32},
    "quant.gptq": {"bits": 3, "group_size": 32, "n_samples": 2, "seq_len": 32},
    "quant.smoothquant": {"n_samples": 2, "seq_len": 32},
    # group 4 divides every input width of the pico model (64, 128) and the low-rank factors' (8, 4)
    "quant.rtn": {"bits": 4, "group_size": 4},
    "quant.qat": {"bits": 4, "group_size": 4, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16,
                  "eval_blocks": 1},
    "quant.int8": {},
    "federated.fedavg": {"clients": 2, "rounds": 1, "local_steps": 1, "r": 2, "batch_size": 1, "seq_len": 16,
                         "n_texts": 16, "eval_blocks": 1},
    "federated.distill": {"clients": 2, "rounds": 1, "local_steps": 1, "distill_steps": 1, "public_blocks": 1, "r": 2,
                          "batch_size": 1, "seq_len": 16, "n_texts": 16, "eval_blocks": 1},
    # a generous budget: the matrix must not depend on this machine's memory (the child measures ~0.7 GB)
    "ondevice.adapt": {"budget_gb": 64, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "ondevice.continual": {"r": 2, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "peft.dora": {"r": 2, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "peft.ia3": {"max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "peft.bitfit": {"max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "peft.qlora": {"r": 2, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "peft.prompt_tuning": {"num_virtual_tokens": 4, "max_steps": 1, "batch_size": 1, "seq_len": 16, "n_texts": 16},
    "init.pretrained": {},
    "deploy.onnxruntime": {},
    "deploy.llamacpp": {"quant": "Q8_0"},  # written by llama.cpp's converter itself (no second quantizing pass)
    "infer.decoding": {},  # greedy by default
    "infer.rag": {"corpus": "synthetic", "k": 2},  # the builtin corpus: no data directory needed
    "infer.cot": {},
    "infer.self_consistency": {"k": 2},
    "infer.best_of_n": {"n": 2},  # scored by the path's own model (no `scorer:` in the matrix's context)
    "deploy.compile": {"backend": "eager", "warmup_tokens": 2},  # dynamo tracing only: inductor takes minutes
    "deploy.speculative": {"probe_prompts": 1, "probe_tokens": 8},  # prompt lookup (no `draft:` in the matrix's context)
    "kv.quantized": {"nbits": 4},
    "kv.window": {"window": 4, "sink_tokens": 1},  # the 4-token generation evicts
}

#: how the pico artifact of each format is made from tiny-llama (None: the model itself)
PRODUCERS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "torch": None,
    "torch-sparse": ("prune.magnitude", {"sparsity": 0.5}),
    "torch-lowrank": ("factorize.svd", {"rank": 8}),
    "torch-int8-dynamic": ("quant.int8", {}),
    "quanto": ("quant.rtn", {"bits": 4, "group_size": 16}),
    "compressed-tensors": ("quant.awq", {"group_size": 32, "n_samples": 2, "seq_len": 32}),
    "onnx": ("deploy.onnxruntime", {}),
    "gguf": ("deploy.llamacpp", {"quant": "Q8_0"}),
    # a soft prompt: the adapter kind whose extra positions every scorer must drop
    "peft-adapter": ("peft.prompt_tuning", {"num_virtual_tokens": 4, "max_steps": 1, "batch_size": 1, "seq_len": 16,
                                            "n_texts": 16}),
}

#: log-likelihood tolerance between the in-memory model and its reload in a fresh process, by output format
#: (the tightest that passes; every format reloads bit-identically on CPU with one thread)
LL_TOL: dict[str, float] = {}
DEFAULT_LL_TOL = 1e-4

#: cells that fail because of a product bug: (technique, format) -> reason (marked xfail(strict=True))
KNOWN_BUGS: dict[tuple[str, str], str] = {}

REQUESTS = [("The river", " flows"), ("Bread is made from", " flour"), ("Alice lives in the", " city")]
#: a prompt whose greedy tokens differ between the pico variants (most prompts make the random model repeat the
#: last word, which would hide a changed model)
PROMPT = "1 2 3"
MAX_NEW_TOKENS = 4

#: ``SLM_MATRIX_TECHNIQUES=quant.gptq,deploy.compile`` limits the matrix to those rows while they are developed (CI
#: sets nothing and runs every row)
_ONLY = [t.strip() for t in os.environ.get("SLM_MATRIX_TECHNIQUES", "").split(",") if t.strip()]
TECHNIQUE_NAMES = [n for n in TECHNIQUES.names() if not _ONLY or n in _ONLY]
FORMAT_NAMES = format_names()


def cheap_params(name: str) -> dict[str, Any]:
    return dict(CHEAP_PARAMS.get(name, {}))


def producer_of(fmt: str) -> tuple[str, dict[str, Any]] | None:
    """(technique, params) that makes a ``fmt`` model from tiny-llama; raises LookupError when none is known."""
    if fmt in PRODUCERS:
        return PRODUCERS[fmt]
    for name in TECHNIQUE_NAMES:
        cls = TECHNIQUES.get(name)
        if cls.produces != fmt:
            continue
        try:
            params = build_params(cls, cheap_params(name))
            if cls.output_format("torch", params) == fmt:
                return name, cheap_params(name)
        except Exception:  # noqa: BLE001 - any technique that cannot make it from torch is no producer
            continue
    raise LookupError(f"no registered technique produces {fmt} from a torch model (none has produces={fmt!r})")


def _context(workdir: Path, base: Any) -> TechniqueContext:
    from adapters.corpus import synthetic_corpus

    return TechniqueContext(seed=0, workdir=workdir, hardware={"device": "cpu", "threads": 1},
                            inputs={"teacher": base, "reference": base, "models": [base], "base": base},
                            datasets={"synthetic": synthetic_corpus(64)}, max_steps=2)


def _outputs(handle: Any) -> dict[str, Any]:
    lls = handle.loglikelihood(REQUESTS)
    return {"ll": [x.logprob for x in lls], "gen": handle.generate([PROMPT], max_new_tokens=MAX_NEW_TOKENS)}


def _step(name: str, params: dict[str, Any], cls: Any) -> Any:
    params = dict(params)
    for role in cls.inputs:  # auxiliary models (the teacher, the models merged) are the spec's base
        if role in cls.list_inputs:
            params.setdefault(role, ["base"])
        elif role != "reference" and role not in cls.defaults_to_base:
            params.setdefault(role, "base")
    return {name: params} if params else name


def path_yaml(fmt: str, technique: str) -> str:
    """A spec with base tiny-llama and one explicit path: the producer of ``fmt``, then ``technique``."""
    steps = []
    producer = producer_of(fmt)
    if producer is not None:
        steps.append(_step(producer[0], producer[1], TECHNIQUES.get(producer[0])))
    steps.append(_step(technique, cheap_params(technique), TECHNIQUES.get(technique)))
    return yaml.safe_dump({"name": "matrix", "base": "tiny-llama", "paths": [steps]}, sort_keys=False)


def plan_path(fmt: str, technique: str) -> Any:
    from harness.plan import make_plan
    from harness.spec import parse_spec

    return make_plan(parse_spec(path_yaml(fmt, technique), file="matrix.yaml"))


# -- the pico artifact of every format, made once per session --------------------------------------------
@pytest.fixture(scope="session")
def format_artifacts(tiny_handle, tmp_path_factory) -> dict[str, Any]:
    """``{format: handle}``, or ``{format: "skip: reason"}`` for a format no technique is known to produce (or
    whose producer's optional dependency is missing here)."""
    out: dict[str, Any] = {}
    for fmt in FORMAT_NAMES:
        try:
            producer = producer_of(fmt)
        except LookupError as exc:
            out[fmt] = f"skip: {exc}"
            continue
        if producer is None:
            assert tiny_handle.format == fmt
            out[fmt] = tiny_handle
            continue
        name, params = producer
        cls = TECHNIQUES.get(name)
        ctx = _context(tmp_path_factory.mktemp(f"produce-{fmt}"), tiny_handle)
        try:
            handle = cls(build_params(cls, params)).run(tiny_handle, ctx).handle
        except (MissingDependencyError, BackendUnavailableError) as exc:
            out[fmt] = f"skip: the producer {name} cannot run here: {exc}"
            continue
        assert handle.format == fmt, f"{name} made a {handle.format} model, not {fmt}"
        out[fmt] = handle
    return out


# -- every cell applied and saved, then reloaded in one fresh process --------------------------------------
RELOAD_SCRIPT = textwrap.dedent("""
    # Reloads each cell named on stdin (one JSON {"key", "path"} per line) while the test process applies the next
    # ones, and appends one JSON result line per cell to argv[2].
    import json, shutil, sys, traceback
    import torch
    torch.set_num_threads(1)  # the other core applies the next cells
    manifest = json.loads(open(sys.argv[1]).read())
    from adapters.handle import ModelHandle
    with open(sys.argv[2], "w") as out:
        for line in sys.stdin:
            cell = json.loads(line)
            key, path = cell["key"], cell["path"]
            try:
                h = ModelHandle.load(path)
                lls = h.loglikelihood([tuple(r) for r in manifest["requests"]])
                last = h.lineage[-1] if h.lineage else None
                result = {
                    "format": h.format,
                    "last_step": None if last is None else {"technique": last.technique,
                                                            "input_format": last.input_format,
                                                            "output_format": last.output_format},
                    "ll": [x.logprob for x in lls],
                    "gen": h.generate([manifest["prompt"]], max_new_tokens=manifest["max_new_tokens"]),
                }
            except Exception:
                result = {"error": traceback.format_exc()}
            h = None
            shutil.rmtree(path, ignore_errors=True)  # the matrix's artifacts would fill the disk (4.5 GB kept)
            out.write(json.dumps({"key": key, "result": result}) + "\\n")
            out.flush()
""")


def _start_reloader(root: Path) -> subprocess.Popen[str]:
    """The fresh process that reloads each saved cell as soon as it is named on its stdin (so reloading overlaps
    applying the next cells)."""
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"requests": REQUESTS, "prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS}))
    script = root / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    env = dict(os.environ)  # OMP_WAIT_POLICY, HF_HUB_OFFLINE, SLM_MODEL_CACHE... as set by conftest
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with (root / "reload.err").open("w") as err:
        return subprocess.Popen([sys.executable, str(script), str(manifest), str(root / "reloaded.jsonl")], cwd=ROOT,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, text=True)


def cell_id(technique: str, fmt: str) -> str:
    return f"{technique}@{fmt}"


@pytest.fixture(scope="module")
def matrix(format_artifacts, tiny_handle, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Every cell's record: ``status`` (``accepted``, ``refused``, ``no-producer``, or ``unavailable`` where an
    optional dependency is missing) and what was observed."""
    root = tmp_path_factory.mktemp("matrix")
    cells: dict[str, dict[str, Any]] = {}
    saved: dict[str, str] = {}
    reloader = _start_reloader(root)
    try:
        started = time.perf_counter()
        for fmt in FORMAT_NAMES:
            artifact = format_artifacts[fmt]
            for name in TECHNIQUE_NAMES:
                key = cell_id(name, fmt)
                rec: dict[str, Any] = {"technique": name, "format": fmt}
                cells[key] = rec
                if isinstance(artifact, str):
                    rec.update(status="no-producer", reason=artifact)
                    continue
                cls = TECHNIQUES.get(name)
                params = build_params(cls, cheap_params(name))
                try:
                    expected = cls.output_format(fmt, params)
                except FormatMismatch:
                    rec["status"] = "refused"
                    try:  # Technique.run refuses too, before applying anything
                        cls(params).run(artifact, _context(root / "refused", tiny_handle))
                        rec["run_refusal"] = None
                    except FormatMismatch as exc:
                        rec["run_refusal"] = str(exc)
                    try:
                        plan_path(fmt, name)
                        rec["plan_error"] = None
                    except SpecError as err:
                        rec["plan_error"] = str(err)
                    continue
                rec.update(status="accepted", expected_format=expected)
                try:
                    plan = plan_path(fmt, name)
                    rec["planned_format"] = plan.paths[0].steps[-1]["format"]
                except Exception as err:  # noqa: BLE001 - recorded, asserted by the cell's test
                    rec["planned_format"] = f"refused: {err}"
                t0 = time.perf_counter()
                workdir = root / f"work-{len(saved):03d}"
                try:
                    out = cls(params).run(artifact, _context(workdir, tiny_handle)).handle
                    last = out.lineage[-1]
                    rec.update(out_format=out.format,
                               last_step={"technique": last.technique, "input_format": last.input_format,
                                          "output_format": last.output_format},
                               memory=_outputs(out))
                    target = root / f"cell-{len(saved):03d}"
                    out.save(target)
                    del out
                    saved[key] = str(target)
                    assert reloader.stdin is not None
                    reloader.stdin.write(json.dumps({"key": key, "path": str(target)}) + "\n")
                    reloader.stdin.flush()
                except (MissingDependencyError, BackendUnavailableError) as exc:
                    rec.update(status="unavailable", reason=f"{name} cannot run here: {exc}")
                except Exception:  # noqa: BLE001 - a run-time failure is recorded and fails the cell's test
                    rec["error"] = traceback.format_exc()
                shutil.rmtree(workdir, ignore_errors=True)  # what the step wrote besides its saved model
                rec["apply_s"] = round(time.perf_counter() - t0, 2)
    except BaseException:  # a broken fixture must not leave the reload process waiting on its stdin
        reloader.kill()
        raise
    applied_s = time.perf_counter() - started

    t0 = time.perf_counter()
    assert reloader.stdin is not None
    reloader.stdin.close()
    returncode = reloader.wait(timeout=900)
    stderr = (root / "reload.err").read_text()
    assert returncode == 0, f"the reload process failed:\n{stderr[-4000:]}"
    reloaded = {r["key"]: r["result"] for r in map(json.loads, (root / "reloaded.jsonl").read_text().splitlines())}
    for key in saved:
        cells[key]["reloaded"] = reloaded.get(key, {"error": "not reloaded"})
    cells["__timing__"] = {"apply_s": round(applied_s, 1), "reload_wait_s": round(time.perf_counter() - t0, 1)}
    return cells


def cell_problems(rec: dict[str, Any]) -> list[str]:
    """What is wrong with an accepted cell (empty: it ran and round-tripped)."""
    name, fmt, expected = rec["technique"], rec["format"], rec["expected_format"]
    if rec.get("planned_format") != expected:
        return [f"the planner disagrees with {name}.output_format({fmt!r}) = {expected}: {rec.get('planned_format')}"]
    if "error" in rec:
        return [f"{name} failed on a {fmt} model:\n{rec['error']}"]
    problems = []
    if rec["out_format"] != expected:
        problems.append(f"in-memory format {rec['out_format']} != declared {expected}")
    want_step = {"technique": name, "input_format": fmt, "output_format": expected}
    if rec["last_step"] != want_step:
        problems.append(f"in-memory lineage step {rec['last_step']} != {want_step}")
    back = rec["reloaded"]
    if "error" in back:
        return [*problems, f"reload of {name}@{fmt} failed in a fresh process:\n{back['error']}"]
    if back["format"] != rec["out_format"]:
        problems.append(f"reloaded format {back['format']} != in-memory {rec['out_format']}")
    if back["last_step"] != want_step:
        problems.append(f"reloaded lineage step {back['last_step']} != {want_step}")
    tol = LL_TOL.get(expected, DEFAULT_LL_TOL)
    mem, rel = rec["memory"], back
    if not all(math.isfinite(x) and x < 0 for x in [*mem["ll"], *rel["ll"]]):
        problems.append(f"log-likelihoods are not finite negative numbers: in memory {mem['ll']}, reloaded {rel['ll']}")
    if not (isinstance(mem["gen"], list) and len(mem["gen"]) == 1 and isinstance(mem["gen"][0], str)):
        problems.append(f"generate returned {mem['gen']!r}, not one string")
    if len(rel["ll"]) != len(mem["ll"]) or any(abs(a - b) > tol for a, b in zip(mem["ll"], rel["ll"], strict=True)):
        problems.append(f"log-likelihoods differ after reload (tol {tol}): in memory {mem['ll']}, reloaded {rel['ll']}")
    if rel["gen"] != mem["gen"]:
        problems.append(f"greedy generation differs after reload: in memory {mem['gen']!r}, reloaded {rel['gen']!r}")
    return problems


def _params(technique: str, fmt: str) -> Any:
    reason = KNOWN_BUGS.get((technique, fmt))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(technique, fmt, marks=marks, id=cell_id(technique, fmt))


@pytest.mark.parametrize(("technique", "fmt"), [_params(t, f) for f in FORMAT_NAMES for t in TECHNIQUE_NAMES])
def test_cell(technique, fmt, matrix):
    rec = matrix[cell_id(technique, fmt)]
    if rec["status"] in ("no-producer", "unavailable"):
        pytest.skip(rec["reason"])
    if rec["status"] == "accepted":
        problems = cell_problems(rec)
        assert not problems, "\n".join(problems)
        return
    # refused: Technique.run refuses the artifact, and the planner says so before anything runs, in one line
    # naming the step and the format
    assert rec["run_refusal"] is not None, f"{technique}.run applied itself to a {fmt} model it does not accept"
    msg = rec["plan_error"]
    assert msg is not None, f"the planner accepted [{fmt} producer, {technique}], which {technique} refuses at run time"
    assert "\n" not in msg, msg
    assert technique in msg, msg
    if issubclass(TECHNIQUES.get(technique), DataTechnique):
        assert "produces a dataset" in msg, msg
    else:
        assert f"does not accept a {fmt} model" in msg and "accepts" in msg, msg


def test_matrix_summary(matrix, record_property):
    """Counts of the matrix; every cell is accepted and round-tripped, or refused at plan time."""
    timing = matrix["__timing__"]
    cells = [r for k, r in matrix.items() if not k.startswith("__")]
    assert {(r["technique"], r["format"]) for r in cells} == {(t, f) for t in TECHNIQUE_NAMES for f in FORMAT_NAMES}
    assert all(r["status"] in ("accepted", "refused", "no-producer", "unavailable") for r in cells)
    accepted = [r for r in cells if r["status"] == "accepted"]
    ok = [r for r in accepted if not cell_problems(r)]
    bad = [r for r in accepted if cell_problems(r)]
    known = [r for r in bad if (r["technique"], r["format"]) in KNOWN_BUGS]
    refused = [r for r in cells if r["status"] == "refused"]
    refused_ok = [r for r in refused if r["plan_error"] and r["technique"] in r["plan_error"]]
    skipped_cols = sorted({r["format"] for r in cells if r["status"] == "no-producer"})
    unavailable = [f"{r['technique']}@{r['format']}" for r in cells if r["status"] == "unavailable"]
    slowest = sorted(accepted, key=lambda r: -r.get("apply_s", 0))[:5]
    drift: dict[str, float] = {}  # largest |in-memory - reloaded| log-likelihood by output format
    for r in ok:
        d = max(abs(a - b) for a, b in zip(r["memory"]["ll"], r["reloaded"]["ll"], strict=True))
        drift[r["expected_format"]] = max(drift.get(r["expected_format"], 0.0), d)
    summary = (f"composition matrix: {len(TECHNIQUE_NAMES)} techniques x {len(FORMAT_NAMES)} formats = {len(cells)} cells; "
               f"{len(accepted)} accepted ({len(ok)} ran and round-tripped, {len(bad)} failed, {len(known)} of them "
               f"known bugs), {len(refused)} refused at plan time ({len(refused_ok)} with the expected message)"
               + (f"; columns skipped (no producer): {', '.join(skipped_cols)}" if skipped_cols else "")
               + (f"; cells skipped (dependency missing): {', '.join(unavailable)}" if unavailable else "")
               + f"; apply {timing['apply_s']} s (reloading alongside), then {timing['reload_wait_s']} s reloading; slowest: "
               + ", ".join(f"{r['technique']}@{r['format']} {r.get('apply_s')} s" for r in slowest)
               + "; max reload drift: " + ", ".join(f"{f} {d:.1e}" for f, d in sorted(drift.items())))
    record_property("summary", summary)  # printed at the end of the run (conftest), with or without xdist
    unexpected = [f"{r['technique']}@{r['format']}" for r in bad if (r["technique"], r["format"]) not in KNOWN_BUGS]
    assert not unexpected, f"cells that failed at run time or on reload: {unexpected}"
    assert len(refused_ok) == len(refused)
    skipped = sum(r["status"] in ("no-producer", "unavailable") for r in cells)
    assert len(ok) + len(known) + len(refused) + skipped == len(cells)
