"""Functions the task YAMLs of this directory name with ``!function utils.<name>``.

lm-eval imports this file by path. Dataset loaders (``custom_dataset``) receive the task's metadata as
keyword arguments: ``data_dir`` comes from the quality suite (or ``lm_eval --metadata``), else
``$SLM_DATA_DIR`` is used. Document processing and scoring functions are lm-eval's own, imported from its
installed task folders, so prompts and metrics equal lm-eval's task definitions.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from suites import probes
from suites.tasks import squad
from suites.tasks.data import load_docs


@cache
def _lm_eval_module(relative: str) -> ModuleType:
    """A module of lm-eval's task folder (``hellaswag/utils.py`` ...), loaded by path as lm-eval does."""
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).parent / relative
    spec = importlib.util.spec_from_file_location(f"lm_eval_task_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(docs: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def _local(task: str, kwargs: dict[str, Any]) -> Any:
    return _split(load_docs(task, kwargs.get("data_dir")))


def arc_easy(**kwargs: Any) -> Any:
    return _local("arc_easy", kwargs)


def arc_challenge(**kwargs: Any) -> Any:
    return _local("arc_challenge", kwargs)


def piqa(**kwargs: Any) -> Any:
    return _local("piqa", kwargs)


def hellaswag(**kwargs: Any) -> Any:
    return _local("hellaswag", kwargs)


def lambada_openai(**kwargs: Any) -> Any:
    return _local("lambada_openai", kwargs)


def wikitext(**kwargs: Any) -> Any:
    return _local("wikitext", kwargs)


def gsm8k(**kwargs: Any) -> Any:
    return _local("gsm8k", kwargs)


def truthfulqa(**kwargs: Any) -> Any:
    return _local("truthfulqa_mc1", kwargs)


def truthfulqa_heldout(**kwargs: Any) -> Any:
    return _local("truthfulqa_mc1_heldout", kwargs)


def squad_openbook(**kwargs: Any) -> Any:
    return _local("squad_openbook", kwargs)


def probe(name: str) -> Any:
    """The built-in probe ``name``'s items (fixed by the probe version, not by any run seed)."""
    return _split(probes.items(name))


def slm_arithmetic(**kwargs: Any) -> Any:
    return probe("slm_arithmetic")


def slm_world_facts(**kwargs: Any) -> Any:
    return probe("slm_world_facts")


def slm_agreement(**kwargs: Any) -> Any:
    return probe("slm_agreement")


def slm_sequence(**kwargs: Any) -> Any:
    return probe("slm_sequence")


def hellaswag_process_docs(dataset: Any) -> Any:
    return _lm_eval_module("hellaswag/utils.py").process_docs(dataset)


def wikitext_detokenizer(doc: dict[str, Any]) -> str:
    return _lm_eval_module("wikitext/preprocess_wikitext.py").wikitext_detokenizer(doc)


def wikitext_process_results(doc: dict[str, Any], results: Any) -> dict[str, Any]:
    return _lm_eval_module("wikitext/preprocess_wikitext.py").process_results(doc, results)


def truthfulqa_process_results_mc2(doc: dict[str, Any], results: Any) -> dict[str, Any]:
    return _lm_eval_module("truthfulqa/utils.py").process_results_mc2(doc, results)


def squad_process_results(doc: dict[str, Any], results: Any) -> dict[str, float]:
    return squad.process_results(doc, results)
