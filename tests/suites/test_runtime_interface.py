"""The suites speak only to the handle's runtime interface, never to ``handle.model``.

Three checks: no suite module's source reaches into the model object; the torch and ONNX Runtime handles
report the same architecture facts for the same model; and a fake backend, whose ``model`` raises on any
attribute access and whose runtime methods delegate to a real pico handle, runs the suites.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from adapters.handle import ModelHandle
from suites.base import SUITES, SuiteContext

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
# ``handle.model`` / ``h.model`` (any use), ``<anything>.model.<attr>`` and ``getattr(x, "model"...)``
MODEL_ACCESS = re.compile(r"\b(?:handle|h)\.model\b|\.model\.|getattr\(\s*\w+\s*,\s*[\"']model[\"']")


def test_no_suite_reaches_into_the_model_object():
    offending = []
    for path in sorted(SUITES_DIR.rglob("*.py")):
        if "tasks" in path.relative_to(SUITES_DIR).parts:
            continue  # lm-eval task helpers, not suites
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if MODEL_ACCESS.search(line):
                offending.append(f"{path.relative_to(SUITES_DIR.parent)}:{no}: {line.strip()}")
    assert offending == []


def test_the_pattern_catches_the_accesses_it_forbids():
    for line in ("handle.model(input_ids=x)", "if not hasattr(handle.model, 'generate'):", "h.model.to(dev)",
                 "cfg = self.inner.model.config", "getattr(handle, 'model', None)"):
        assert MODEL_ACCESS.search(line), line
    for line in ("``inputs.model`` names its parent", "(meta.get('inputs') or {}).get('model')",
                 "from adapters.handle import ModelHandle"):
        assert not MODEL_ACCESS.search(line), line


@pytest.fixture(scope="module")
def ort_pair(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from adapters.sources import load_source
    from adapters.technique import TECHNIQUES, TechniqueContext, build_params

    torch_handle = load_source("tiny-llama", threads=1)
    cls = TECHNIQUES.get("deploy.onnxruntime")
    ctx = TechniqueContext(seed=0, workdir=tmp_path_factory.mktemp("ort"))
    return torch_handle, cls(build_params(cls, {})).run(torch_handle, ctx).handle


def test_torch_and_onnxruntime_report_the_same_architecture(ort_pair):
    from adapters.architecture import Architecture

    torch_handle, ort = ort_pair
    assert ort.backend == "onnxruntime" and type(ort).__name__ == "OrtHandle"
    arch = torch_handle.architecture()
    assert isinstance(arch, Architecture) and ort.architecture() == arch
    assert arch.num_layers > 0 and arch.vocab_size == torch_handle.model.config.vocab_size
    assert ort.activation_bytes() == torch_handle.activation_bytes() == 4
    expected = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * 4
    assert ort.kv_bytes_per_token() == torch_handle.kv_bytes_per_token() == expected
    assert ort.embedding_facts().tied == torch_handle.embedding_facts().tied
    ids = [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert ort.measured_kv_bytes(ids) == torch_handle.measured_kv_bytes(ids) == expected
    assert ort.forward(ids).shape == torch_handle.forward(ids).shape == (1, 8, arch.vocab_size)
    assert ort.can_generate() and torch_handle.can_generate()
    assert ort.generate_ids(ids, 4).tolist() == torch_handle.generate_ids(ids, 4).tolist()
    assert ort.place("cpu", "bfloat16") is ort  # the session keeps its float32 graph
    assert ort.move(device="cpu", dtype="bfloat16") == {"device": None, "dtype": None}


def test_roofline_inputs_unchanged_by_the_interface(tiny_handle):
    """RooflineInputs.of, now over the interface, equals the old computation from the model object."""
    from suites.ceilings import RooflineInputs

    model, r = tiny_handle.model, RooflineInputs.of(tiny_handle)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert r.kv_bytes_per_token == 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    assert r.layers == config.num_hidden_layers and r.attn_dim == config.num_attention_heads * head_dim
    assert r.head_params == config.vocab_size * config.hidden_size
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert r.tied == tied
    assert r.body_params == tiny_handle.num_parameters() - (1 if tied else 2) * r.head_params


class _NoModel:
    """Stands for a runtime with no transformers model: any attribute access fails."""

    def __getattribute__(self, name: str) -> Any:
        raise AttributeError(f"a suite touched handle.model.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError("a suite called handle.model(...)")


class FakeBackend(ModelHandle):
    """A backend whose model object is opaque: only the runtime interface works, delegated to ``inner``."""

    def __init__(self, inner: ModelHandle, **kwargs: Any):
        self.inner = inner
        super().__init__(_NoModel(), inner.tokenizer, source=inner.source, backend="fake",
                         threads=inner.threads, batch_size=inner.batch_size, format="fake")

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.inner.settings, "backend": "fake"}

    def lm(self, max_length: int | None = None) -> Any:
        if self._lm is None or self.inner.batch_size != self.batch_size:  # a suite reset it for a batch size
            self.inner.batch_size, self.inner._lm = self.batch_size, None
        self._lm = self.inner.lm(max_length)
        return self._lm

    def stream(self, prompt: Any, max_new_tokens: int = 32, **kwargs: Any) -> Any:
        return self.inner.stream(prompt, max_new_tokens, **kwargs)

    def weight_footprint(self) -> dict[str, int]:
        return self.inner.weight_footprint()

    def num_parameters(self) -> int:
        return self.inner.num_parameters()

    def architecture(self) -> Any:
        return self.inner.architecture()

    def activation_bytes(self) -> int:
        return self.inner.activation_bytes()

    def embedding_facts(self) -> Any:
        return self.inner.embedding_facts()

    def forward(self, input_ids: Any) -> Any:
        return self.inner.forward(input_ids)

    def measured_kv_bytes(self, input_ids: Any) -> float | None:
        return self.inner.measured_kv_bytes(input_ids)

    def can_generate(self) -> bool:
        return self.inner.can_generate()

    def generate_ids(self, input_ids: Any, max_new_tokens: int, **kwargs: Any) -> Any:
        self.inner.generation_kwargs = dict(self.generation_kwargs)
        return self.inner.generate_ids(input_ids, max_new_tokens, **kwargs)

    def place(self, device: str = "cpu", dtype: str = "float32") -> ModelHandle:
        return self

    def move(self, device: str | None = None, dtype: str | None = None) -> dict[str, str | None]:
        return {"device": None, "dtype": None}


@pytest.fixture()
def fake(tiny):
    return FakeBackend(tiny)


def test_the_fake_backend_really_has_no_model(fake):
    with pytest.raises(AttributeError):
        fake.model.config  # noqa: B018
    with pytest.raises(AttributeError):
        fake.model(input_ids=None)


FAST = {
    "latency": {"prompt_lengths": [8], "batch_sizes": [1, 2], "new_tokens": 3, "min_repeats": 2,
                "min_duration_s": 0.0, "warmup": 0},
    "energy": {"windows": 2, "window_s": 0.2, "prompt_tokens": 8, "new_tokens": 3},
    "quality": {"limit": 2},
    # the child process reloads the pico source and generates through the interface (ModelHandle.load_source,
    # move, seed_sampling, generate_ids); the parent's static metrics come from the fake
    "memory": {"repeats": 1, "new_tokens": 4, "prompt_tokens": 16},
    "trust": {"n": 2},
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_a_suite_runs_on_the_runtime_interface_alone(name, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    ctx = SuiteContext(profile="quick", options=FAST[name], seed=0, workdir=tmp_path,
                       hardware={"device": "cpu", "threads": 1})
    result = SUITES.get(name)().run(fake, ctx)
    assert result.metrics
    assert all(m.suite == name and m.n >= 1 for m in result.metrics)
    assert "errors" not in result.settings, result.settings.get("errors")  # trust records failures as data
    if name == "latency":
        assert {"decode_tokens_per_s", "roofline_fraction"} <= {m.name for m in result.metrics}
    if name == "memory":
        by = {m.name: m.value for m in result.metrics}
        assert by["kv_bytes_per_token"] == by["kv_bytes_per_token_measured"] == fake.inner.kv_bytes_per_token()
        assert by["weight_bytes"] == sum(fake.inner.weight_footprint().values())
