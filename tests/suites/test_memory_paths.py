"""The memory suite on every path and source a path can have: a decoding-only leaf after a weight-changing step
(the child loads the nearest stored ancestor and generates with the leaf's settings), a local Hugging Face
directory source (no artifact directory), an ONNX artifact, a GGUF file (slow); and clear refusals where a
fresh process cannot rebuild the model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import duckdb
import pytest

from adapters.errors import UsageError
from adapters.handle import HANDLE_FILE, LineageStep
from harness.runner import Runner
from harness.spec import parse_spec
from suites.base import SUITES, SuiteContext

FAST = {"repeats": 1, "new_tokens": 4, "prompt_tokens": 16}
PEAKS = ("peak_rss_load", "peak_rss_generate", "max_rss_process")


def run_memory(ws: Path, base: str, paths: str) -> dict[str, dict]:
    """Run ``paths`` on ``base`` with the memory suite; returns {path name: {"status", "error", "loaded",
    "metrics"}} read back from the results store."""
    text = f"""
    name: mem
    base: {base}
    suites: {{memory: {{profile: quick, repeats: 1, new_tokens: 4, prompt_tokens: 16}}}}
    paths: {paths}
    """
    Runner(parse_spec(textwrap.dedent(text), file="mem.yaml"), ws, progress=False).run()
    con = duckdb.connect(str(ws / "results.duckdb"), read_only=True)
    try:
        runs = con.execute("SELECT run_key, node_hash, status, error, json_extract(settings, '$.loaded') "
                           "FROM suite_runs WHERE suite = 'memory'").fetchall()
        names = dict(con.execute("SELECT leaf_hash, name FROM paths").fetchall())
        metrics = con.execute("SELECT run_key, metric, value FROM metrics_long WHERE suite = 'memory'").fetchall()
    finally:
        con.close()
    out = {}
    for key, node, status, error, loaded in runs:
        out[names.get(node, node)] = {"status": status, "error": error, "node": node,
                                      "loaded": json.loads(loaded) if loaded else None,
                                      "metrics": {m: v for k, m, v in metrics if k == key}}
    return out


def assert_peaks(result: dict) -> None:
    assert result["status"] == "ok", result["error"]
    assert all(result["metrics"][name] > 0 for name in PEAKS)


def test_a_decoding_leaf_after_pruning_loads_the_stored_ancestor_and_generates_with_its_settings(tmp_path):
    got = run_memory(tmp_path, "tiny-llama", "[[prune.magnitude, {infer.decoding: {strategy: beam, num_beams: 2}}]]")
    (leaf,) = got.values()
    assert_peaks(leaf)
    loaded = leaf["loaded"]
    parent = json.loads((tmp_path / "artifacts" / leaf["node"] / "node.json").read_text())["inputs"]["model"]
    assert loaded["kind"] == "artifact" and Path(loaded["from"]) == tmp_path / "artifacts" / parent
    assert (Path(loaded["from"]) / HANDLE_FILE).is_file() and loaded["format"] == "torch-sparse"
    assert loaded["via"] == [f"{leaf['node']} (infer.decoding)"]
    assert loaded["generation_kwargs"]["num_beams"] == 2 and loaded["generation_kwargs"]["do_sample"] is False
    assert loaded["weight_bytes"] == leaf["metrics"]["weight_bytes"]  # the child loaded the leaf's weights


def test_a_local_hf_directory_source_is_reloaded_with_and_without_an_artifact(tiny_handle, tmp_path):
    hf = tmp_path / "pico-hf"
    tiny_handle.model.save_pretrained(hf)
    tiny_handle.tokenizer.save_pretrained(hf)
    got = run_memory(tmp_path / "ws", str(hf), "[[], [{infer.decoding: {strategy: beam, num_beams: 2}}]]")
    assert set(got) == {"baseline", "infer.decoding(num_beams=2,strategy=beam)"}
    for result in got.values():
        assert_peaks(result)
        loaded = result["loaded"]
        assert loaded == {**loaded, "kind": "source", "from": f"hf_dir:{hf.resolve()}", "format": "torch"}
        assert loaded["weight_bytes"] == result["metrics"]["weight_bytes"]
    assert got["baseline"]["loaded"]["via"] == []
    assert got["infer.decoding(num_beams=2,strategy=beam)"]["loaded"]["generation_kwargs"]["num_beams"] == 2


def test_an_onnx_artifact_is_loaded_by_its_format_and_generates_in_the_child(tmp_path):
    pytest.importorskip("onnxruntime")
    got = run_memory(tmp_path, "tiny-llama",
                     "[[deploy.onnxruntime, {infer.decoding: {strategy: sample, top_k: 5, seed: 3}}]]")
    (leaf,) = got.values()
    assert_peaks(leaf)
    loaded = leaf["loaded"]
    assert loaded["kind"] == "artifact" and loaded["format"] == "onnx"
    assert (Path(loaded["from"]) / "model.onnx").is_file()
    assert loaded["generation_kwargs"]["do_sample"] is True and loaded["generation_kwargs"]["seed"] == 3
    assert loaded["weight_bytes"] == leaf["metrics"]["weight_bytes"] > 0
    assert leaf["metrics"]["kv_bytes_per_token"] > 0


def test_the_handles_generation_settings_reach_the_childs_generate(tiny_handle, tmp_path):
    """An argument generate() does not know fails in the child: the settings are passed, not dropped."""
    odd = tiny_handle.derive(generation_kwargs={"num_beams": 2, "no_such_generate_knob": 7})
    with pytest.raises(RuntimeError, match="no_such_generate_knob"):
        SUITES.get("memory")().run(odd, SuiteContext(workdir=tmp_path, options=dict(FAST)))


def test_the_child_loads_float_weights_in_the_profiles_dtype(tiny_handle, tmp_path):
    ctx = SuiteContext(workdir=tmp_path, options=dict(FAST), hardware={"device": "cpu", "dtype": "bfloat16"})
    res = SUITES.get("memory")().run(tiny_handle, ctx)
    loaded = res.settings["loaded"]
    assert loaded["dtype_applied"] == "bfloat16" and set(loaded["weights_by_dtype"]) == {"bfloat16"}
    assert loaded["weight_bytes"] * 2 == sum(tiny_handle.weight_footprint().values())  # fp32 in the parent


def _step(technique: str) -> LineageStep:
    return LineageStep(technique, output_format="torch")


def test_models_a_fresh_process_cannot_rebuild_are_refused_with_the_reason(tiny_handle, tmp_path):
    suite = SUITES.get("memory")()
    scratch = tiny_handle.derive(source="scratch:0123456789ab")
    with pytest.raises(UsageError, match="scratch:0123456789ab.*config or the seed"):
        suite.run(scratch, SuiteContext(workdir=tmp_path, options=dict(FAST)))
    gone = tiny_handle.derive(source=f"hf_dir:{tmp_path / 'deleted-dir'}")
    with pytest.raises(UsageError, match="deleted-dir no longer exists"):
        suite.run(gone, SuiteContext(workdir=tmp_path, options=dict(FAST)))
    pruned = tiny_handle.derive(_step("prune.magnitude"))
    with pytest.raises(UsageError, match="after prune.magnitude .*no stored artifact was given"):
        suite.run(pruned, SuiteContext(workdir=tmp_path, options=dict(FAST)))
    # a decoding leaf whose stored parent was removed from the artifact cache
    leaf_dir = tmp_path / "artifacts" / "leafhash"
    leaf_dir.mkdir(parents=True)
    (leaf_dir / "node.json").write_text(json.dumps({"technique": "infer.decoding", "reapply": True,
                                                    "inputs": {"model": "gonehash"}}))
    leaf = pruned.derive(_step("infer.decoding"), generation_kwargs={"num_beams": 2})
    with pytest.raises(UsageError, match="stored ancestor gonehash is not in"):
        suite.run(leaf, SuiteContext(workdir=tmp_path, options={**FAST, "artifact_dir": str(leaf_dir)}))
    # a weight-changing node whose directory lost its model
    broken = tmp_path / "artifacts" / "brokenhash"
    broken.mkdir()
    (broken / "node.json").write_text(json.dumps({"technique": "prune.magnitude", "inputs": {"model": "x"}}))
    with pytest.raises(UsageError, match="changes weights"):
        suite.run(pruned, SuiteContext(workdir=tmp_path, options={**FAST, "artifact_dir": str(broken)}))


def test_a_hand_laid_cache_walks_past_stacked_decoding_nodes_to_the_source(tiny_handle, tmp_path):
    """Two inference-time nodes over a builtin source (which has no artifact directory): the source is loaded."""
    from suites.builtin.memory import origin

    root = tmp_path / "artifacts"
    for name, parent in (("outer", "inner"), ("inner", "sourcehash")):
        (root / name).mkdir(parents=True)
        (root / name / "node.json").write_text(json.dumps({"technique": "infer.decoding", "reapply": True,
                                                           "inputs": {"model": parent}}))
    leaf = tiny_handle.derive(_step("infer.decoding")).derive(_step("infer.decoding"))
    found = origin(leaf, SuiteContext(workdir=tmp_path, options={"artifact_dir": str(root / "outer")}))
    assert found == {"kind": "source", "from": "builtin:tiny-llama", "ref": "tiny-llama",
                     "via": ["outer (infer.decoding)", "inner (infer.decoding)"]}


@pytest.mark.slow
def test_a_gguf_file_source_is_reloaded_in_the_child(tmp_path):
    """The embedded SmolLM2 Q4_1 GGUF (100 MB) as a ``.gguf`` source, dequantized by transformers in the child."""
    from adapters.sources import load_source, smollm2_gguf_path

    gguf = smollm2_gguf_path()
    handle = load_source(str(gguf), threads=1)
    res = SUITES.get("memory")().run(handle, SuiteContext(workdir=tmp_path, options={**FAST, "new_tokens": 2}))
    assert res.settings["loaded"]["kind"] == "source" and res.settings["loaded_from"] == f"gguf:{gguf.resolve()}"
    by = {m.name: m.value for m in res.metrics}
    assert all(by[name] > 0 for name in PEAKS)
    assert res.settings["loaded"]["weight_bytes"] == by["weight_bytes"]
