"""Shared fixtures: the pico random model for fast tests, the embedded SmolLM2 for slow ones, and
the benchmark data directory (tests that need it skip cleanly where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SLM_MODEL_CACHE", str(ROOT / ".slm" / "models"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def data_dir() -> Path | None:
    """``$SLM_DATA_DIR`` or ``../shared/benchmarks`` next to the repository, if present."""
    candidate = Path(os.environ.get("SLM_DATA_DIR", ROOT.parent / "shared" / "benchmarks"))
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    found = data_dir()
    if found is None:
        pytest.skip("benchmark data not found (set SLM_DATA_DIR or place ../shared/benchmarks)")
    return found


class WikiText:
    """WikiText-2 test lines (no headings) and the token-level perplexity of a handle on them (remembered per live
    handle and lines: the session's SmolLM2 is scored once, not in every slow test that compares against it)."""

    def __init__(self, root: Path):
        import weakref

        self.root = root
        self._scored: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], float]] = weakref.WeakKeyDictionary()

    def lines(self, n: int = 8) -> list[str]:
        from adapters.corpus import read_texts

        texts = read_texts(self.root / "wikitext2" / "wiki.test.raw", min_chars=200)
        return [t for t in texts if not t.startswith("=")][:n]

    def ppl(self, handle, lines: list[str]) -> float:
        import torch

        known = self._scored.setdefault(handle, {})
        if tuple(lines) not in known:
            lls = handle.loglikelihood_rolling(lines)
            n = sum(len(handle.tokenizer(t, add_special_tokens=False).input_ids) for t in lines)
            known[tuple(lines)] = float(torch.tensor(-sum(lls) / n).exp())
        return known[tuple(lines)]


@pytest.fixture(scope="session")
def wikitext(benchmarks_dir) -> WikiText:
    return WikiText(benchmarks_dir)


@pytest.fixture(scope="session")
def tiny_handle():
    """The pico random Llama (seeded), shared by the session: do not mutate it; derive instead."""
    from adapters.sources import load_source

    return load_source("tiny-llama", threads=1)


@pytest.fixture()
def tiny(tiny_handle):
    """A fresh deep copy of the pico model that a test may change."""
    import copy

    from adapters.handle import ModelHandle

    h = tiny_handle
    return ModelHandle(copy.deepcopy(h.model), h.tokenizer, source=h.source, threads=h.threads, batch_size=h.batch_size)


#: threads of the real-model (slow) tests: both cores of a CI machine (with OMP_WAIT_POLICY=PASSIVE, as tox sets, two
#: threads pay off, DESIGN.md); a test whose numbers must equal a one-thread reference uses ``smollm2_1t``
SLOW_THREADS = min(2, os.cpu_count() or 1)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (slow tests only), on :data:`SLOW_THREADS` threads."""
    from adapters.sources import load_source

    return load_source("smollm2-135m-instruct", threads=SLOW_THREADS)


@pytest.fixture()
def smollm2_1t(smollm2):
    """The same model on one thread: lm-eval's numbers are bit-identical to the CLI's only at equal thread counts."""
    from adapters.handle import ModelHandle

    return ModelHandle(smollm2.model, smollm2.tokenizer, source=smollm2.source, threads=1,
                       batch_size=smollm2.batch_size)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA device."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    try:
        import torch

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if available:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """Print what tests recorded as ``record_property("summary", ...)`` (the composition matrix's counts) at the end of
    the run: the controller receives the properties from xdist workers, whose own output is not shown."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "summary":
                    terminalreporter.write_line(str(value))
