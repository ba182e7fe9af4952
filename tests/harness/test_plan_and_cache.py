"""Planner sharing, `slm plan` output, the artifact cache's atomic writes and pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from harness.cache import TMP_PREFIX, ArtifactCache
from harness.plan import content_hash, make_plan
from harness.spec import parse_spec

GRID = """
name: g
base: tiny-llama
suites: {test_nll: {}}
grid:
  prune: [none, {tune.test_noise: {scale: 0.01}}, {tune.test_noise: {scale: 0.02}}]
  quantize: [none, {tune.test_noise: {scale: 0.03}}, {tune.test_noise: {scale: 0.04}}]
"""


def test_shared_prefixes_share_nodes(test_components):
    plan = make_plan(parse_spec(GRID, file="g.yaml"))
    assert len(plan.paths) == 9
    assert len(plan.technique_nodes()) == 8  # 2 pruned + 3 x 2 quantized
    assert len({p.chain[0] for p in plan.paths}) == 1  # one source node
    assert len(plan.suite_runs) == 9


def test_node_hash_covers_defaults_and_inputs(test_components):
    a = make_plan(parse_spec("name: a\nbase: tiny-llama\npaths: [[tune.test_noise]]\n"))
    b = make_plan(parse_spec("name: b\nbase: tiny-llama\npaths: [[{tune.test_noise: {scale: 0.01}}]]\n"))
    c = make_plan(parse_spec("name: c\nbase: tiny-llama\npaths: [[{tune.test_noise: {scale: 0.02}}]]\n"))
    (na,), (nb,), (nc,) = a.technique_nodes(), b.technique_nodes(), c.technique_nodes()
    assert na.hash == nb.hash != nc.hash  # the default written out or not is the same step
    assert na.params == {"scale": 0.01}


def test_hardware_profiles_multiply_paths_not_nodes(test_components):
    plan = make_plan(parse_spec("name: h\nbase: tiny-llama\nhardware: [cpu-1t, cpu-2t]\nsuites: {test_nll: {}}\n"
                                "paths: [[tune.test_noise]]\n"))
    assert len(plan.paths) == 2 and len(plan.technique_nodes()) == 1 and len(plan.suite_runs) == 2
    assert plan.paths[0].path_id != plan.paths[1].path_id


def test_content_hash_is_canonical():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})


def test_plan_command_reports_work(test_components, tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(textwrap.dedent(GRID))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "plan", str(spec), "-w", str(tmp_path / "ws")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "9 paths" in out.stdout and "would execute 8 technique steps and 9 suite runs" in out.stdout


def test_cache_write_is_atomic(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(d):
        (d / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        cache.write("abc", broken, {"kind": "model"})
    assert not cache.has("abc") and list(tmp_path.iterdir()) == []
    cache.write("abc", lambda d: (d / "x").write_text("ok"), {"kind": "model", "label": "x"})
    assert cache.has("abc") and cache.meta("abc")["label"] == "x"
    (tmp_path / f"{TMP_PREFIX}zzz").mkdir()
    assert [e["hash"] for e in cache.entries()] == ["abc"]
    assert cache.prune() == [f"{TMP_PREFIX}zzz"]
    assert cache.prune(keep=set()) == ["abc"] and not cache.has("abc")


def test_two_runs_finishing_the_same_node_keep_the_first(tmp_path, monkeypatch):
    """The race seen: the other run renames the same node into place after this one checked for it (the rename
    then meets a non-empty directory): the first copy is kept, no error, no stray temporary folder."""
    import harness.cache as cache_module

    cache = ArtifactCache(tmp_path)
    real_rename = os.rename

    def rename_after_the_other_run(src, dst):
        monkeypatch.setattr(cache_module.os, "rename", real_rename)
        cache.write("abc", lambda d: (d / "x").write_text("first"), {"kind": "model", "label": "first"})
        real_rename(src, dst)

    monkeypatch.setattr(cache_module.os, "rename", rename_after_the_other_run)
    assert cache.write("abc", lambda d: (d / "x").write_text("second"), {"label": "second"}) == tmp_path / "abc"
    assert cache.meta("abc")["label"] == "first" and (tmp_path / "abc" / "x").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["abc"]
