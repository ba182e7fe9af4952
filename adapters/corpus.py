"""Offline text for training, calibration and data selection.

The project never downloads data: it generates seeded corpora itself and reads local files.

* :func:`synthetic_corpus`: encyclopedic sentences about a seeded synthetic world (people, towns,
  trades, rivers), grammatical English with real regularities a model can learn.
* :func:`instruction_pairs`: seeded (prompt, response) pairs for supervised fine-tuning.
* :func:`world_preferences`: seeded (prompt, chosen, rejected) pairs for preference alignment.
* :func:`read_texts`: a local ``.txt`` (one document per non-empty line) or ``.jsonl`` (field
  ``text``, or the first string field) file.
* :func:`read_records`: the same, but JSONL prompt/completion (or chat ``messages``) records stay whole.
* :func:`resolve_texts` / :func:`resolve_records`: what a training technique should train on, given its
  context (texts for language modelling; records where the technique can use them, e.g. SFT).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

_FIRST = ["Ada", "Bram", "Cora", "Dain", "Elin", "Faro", "Greta", "Hugo", "Ines", "Joren", "Kira", "Lio",
          "Mara", "Nils", "Olga", "Piet", "Rhea", "Sven", "Tova", "Ulla", "Vera", "Wim", "Yara", "Zeno"]
_LAST = ["Alder", "Brook", "Crane", "Dale", "Ember", "Frost", "Grove", "Heath", "Isle", "Jett", "Knoll", "Lark"]
_TOWNS = ["Ashford", "Bellmere", "Corrin", "Dunmoor", "Elmstead", "Fernhill", "Glenwick", "Harrow", "Ivybridge",
          "Juniper", "Kestrel", "Lowmarsh", "Millbrook", "Northwold", "Oakhaven", "Pinecrest"]
_TRADES = ["baker", "weaver", "potter", "smith", "carpenter", "fisher", "miller", "teacher", "healer", "mason"]
_GOODS = {"baker": "bread", "weaver": "cloth", "potter": "bowls", "smith": "tools", "carpenter": "chairs",
          "fisher": "fish", "miller": "flour", "teacher": "lessons", "healer": "remedies", "mason": "walls"}
_RIVERS = ["Avon", "Brin", "Calder", "Dove", "Esk", "Frome", "Glyde", "Hull"]
_COLORS = ["red", "blue", "green", "yellow", "white", "black", "grey", "brown"]


def _world(rng: random.Random, n_people: int = 60) -> list[dict[str, str]]:
    people = []
    for _ in range(n_people):
        trade = rng.choice(_TRADES)
        people.append({
            "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "town": rng.choice(_TOWNS),
            "trade": trade,
            "goods": _GOODS[trade],
            "river": rng.choice(_RIVERS),
            "color": rng.choice(_COLORS),
            "age": str(rng.randint(18, 80)),
        })
    return people


_TEMPLATES = [
    "{name} lives in {town}, a town on the river {river}.",
    "{name} works as a {trade} in {town} and is {age} years old.",
    "Every morning {name}, the {trade} of {town}, makes {goods} for the market.",
    "The door of {name}'s house in {town} is painted {color}.",
    "People in {town} buy {goods} from {name}, who has been a {trade} for many years.",
    "When the river {river} floods, {name} moves the {goods} to higher ground.",
]


def synthetic_corpus(n: int = 1000, seed: int = 0) -> list[str]:
    """``n`` short documents (2-4 sentences) about a seeded synthetic world."""
    rng = random.Random(seed)
    people = _world(rng)
    docs = []
    for _ in range(n):
        person = rng.choice(people)
        k = rng.randint(2, 4)
        docs.append(" ".join(t.format(**person) for t in rng.sample(_TEMPLATES, k)))
    return docs


_QUESTIONS = [
    ("Where does {name} live?", "{name} lives in {town}."),
    ("What is {name}'s trade?", "{name} is a {trade}."),
    ("What does {name} make?", "{name} makes {goods}."),
    ("What color is the door of {name}'s house?", "The door is {color}."),
    ("Which river flows through {town}?", "The river {river} flows through {town}."),
]


def instruction_pairs(n: int = 500, seed: int = 0) -> list[dict[str, str]]:
    """``n`` seeded ``{"prompt", "completion"}`` pairs answering questions about the synthetic
    world, each prompt carrying the context that holds its answer."""
    rng = random.Random(seed)
    people = _world(rng)
    pairs = []
    for _ in range(n):
        person = rng.choice(people)
        context = " ".join(t.format(**person) for t in _TEMPLATES[:4])
        q, a = rng.choice(_QUESTIONS)
        pairs.append({"prompt": f"{context}\nQuestion: {q.format(**person)}\nAnswer:", "completion": " " + a.format(**person)})
    return pairs


def world_preferences(n: int = 500, seed: int = 0) -> list[dict[str, str]]:
    """``n`` seeded ``{"prompt", "chosen", "rejected"}`` preference pairs about the synthetic world: the prompt of
    :func:`instruction_pairs`, its right answer chosen and a wrong one rejected (the same answer with another
    person's fact, e.g. the wrong town)."""
    rng = random.Random(seed)
    people = _world(rng)
    pairs: list[dict[str, str]] = []
    while len(pairs) < n:
        person, other = rng.choice(people), rng.choice(people)
        q, a = rng.choice(_QUESTIONS)
        wrong = a.format(**{**other, "name": person["name"], **({"town": person["town"]} if "{town}" in q else {})})
        if wrong == a.format(**person):
            continue
        context = " ".join(t.format(**person) for t in _TEMPLATES[:4])
        pairs.append({"prompt": f"{context}\nQuestion: {q.format(**person)}\nAnswer:",
                      "chosen": " " + a.format(**person), "rejected": " " + wrong})
    return pairs


#: datasets the project makes itself, by the name a spec (``builtin: NAME``) or a step's dataset parameter uses
BUILTIN_DATASETS = ("synthetic", "instructions", "preferences", "truthfulqa_pairs", "truthfulqa_pairs_heldout")


def builtin_records(name: str, n: int, seed: int = 0, data_dir: str | Path | None = None) -> list[Any]:
    """``n`` records of a builtin dataset: ``synthetic`` (:func:`synthetic_corpus` texts), ``instructions``
    (:func:`instruction_pairs` prompt/completion records), ``preferences`` (:func:`world_preferences` pairs), or
    ``truthfulqa_pairs`` / ``truthfulqa_pairs_heldout`` (TruthfulQA's true vs false answers of the training / held-out
    questions, read from ``data_dir`` or ``$SLM_DATA_DIR``: :func:`adapters.truthfulqa.truthfulqa_pairs`)."""
    if name == "synthetic":
        return list(synthetic_corpus(n, seed=seed))
    if name == "instructions":
        return list(instruction_pairs(n, seed=seed))
    if name == "preferences":
        return world_preferences(n, seed=seed)
    if name in ("truthfulqa_pairs", "truthfulqa_pairs_heldout"):
        from adapters.truthfulqa import truthfulqa_pairs

        return truthfulqa_pairs("train" if name == "truthfulqa_pairs" else "heldout", n, seed=seed, data_dir=data_dir)
    raise ValueError(f"unknown builtin dataset {name!r} (builtin: {', '.join(BUILTIN_DATASETS)})")


def builtin_files(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The local files a builtin dataset reads (none for the generated ones), so their content can enter its identity.

    Raises:
        UsageError: a file it needs is not found (naming the file and the data directory).
    """
    if name in ("truthfulqa_pairs", "truthfulqa_pairs_heldout"):
        from adapters.truthfulqa import truthfulqa_path

        return [truthfulqa_path(data_dir)]
    return []


def read_texts(path: str | Path, limit: int | None = None, min_chars: int = 1) -> list[str]:
    """Documents from a local ``.txt`` (one per non-empty line) or ``.jsonl`` file."""
    path = Path(path)
    out: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                rec: Any = json.loads(line)
                text = rec.get("text") if isinstance(rec, dict) else None
                if text is None and isinstance(rec, dict):
                    text = next((v for v in rec.values() if isinstance(v, str)), None)
                line = (text or "").strip()
            if len(line) >= min_chars:
                out.append(line)
            if limit is not None and len(out) >= limit:
                break
    return out


#: JSONL keys that make a record more than a text (supervised pairs, chats and preference pairs keep their structure)
RECORD_KEYS = ("prompt", "completion", "messages", "chosen", "rejected")
#: keys kept with such a record besides those (KTO's desirability ``label``)
EXTRA_RECORD_KEYS = ("label",)


def read_records(path: str | Path, limit: int | None = None) -> list[Any]:
    """Documents of a local file: strings, except JSONL records with ``prompt``/``completion``, ``messages`` or
    ``chosen``/``rejected``, which are kept as dicts of those keys and ``label`` (so a supervised step sees both
    halves, a preference step both answers), and labelled texts, kept as ``{"text", "label"}``."""
    path = Path(path)
    if path.suffix != ".jsonl":
        return list(read_texts(path, limit=limit))
    out: list[Any] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec: Any = json.loads(line)
            if isinstance(rec, dict) and any(k in rec for k in RECORD_KEYS):
                out.append({k: rec[k] for k in RECORD_KEYS + EXTRA_RECORD_KEYS if k in rec})
            elif isinstance(rec, dict) and any(k in rec for k in EXTRA_RECORD_KEYS) and record_text(rec).strip():
                # a labelled text ({"text", "label"}): the label stays with it (federated.fedavg's partition_key)
                out.append({"text": record_text(rec), **{k: rec[k] for k in EXTRA_RECORD_KEYS if k in rec}})
            else:
                text = record_text(rec).strip()
                if not text:
                    continue
                out.append(text)
            if limit is not None and len(out) >= limit:
                break
    return out


def record_text(record: Any) -> str:
    """A record as one text: the string itself, ``text``, prompt followed by completion, the chat's
    contents joined, or the first string field."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return str(record)
    if isinstance(record.get("text"), str):
        return str(record["text"])
    if "prompt" in record or "completion" in record:
        prompt, completion = record.get("prompt", ""), record.get("completion", record.get("chosen", ""))
        if isinstance(prompt, list) and isinstance(completion, list):  # a chat split at the answer
            return _messages_text(prompt + completion)
        return f"{prompt}{completion}"
    if isinstance(record.get("messages"), list):
        return _messages_text(record["messages"])
    return next((v for v in record.values() if isinstance(v, str)), "")


def _messages_text(messages: list[Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def resolve_records(ctx: Any, dataset: str | None = None, n: int = 1000) -> list[Any]:
    """Records a technique should use: its dataset input (``ctx.inputs["dataset"]``: the harness passes every
    spec dataset a step names there), else ``ctx.datasets[dataset]`` (a caller's own named datasets), else the
    seeded synthetic corpus."""
    if "dataset" in getattr(ctx, "inputs", {}):
        return list(ctx.inputs["dataset"])[:n]
    datasets = getattr(ctx, "datasets", {})
    if dataset and dataset in datasets:
        return list(datasets[dataset])[:n]
    if dataset and dataset not in ("synthetic", "default"):
        from adapters.errors import UsageError

        raise UsageError(f"unknown dataset {dataset!r} (defined: {', '.join(sorted(datasets)) or 'none'}; or 'synthetic')")
    return synthetic_corpus(n, seed=getattr(ctx, "seed", 0))


def resolve_texts(ctx: Any, dataset: str | None = None, n: int = 1000) -> list[str]:
    """The texts of :func:`resolve_records` (records joined into one text each)."""
    return [record_text(r) for r in resolve_records(ctx, dataset, n)]
