"""Training data for ``benchmarks/initialization.yaml``, written from the local benchmark files (nothing downloaded,
nothing copied into the repository): the files go under the workspace given.

* ``wiki_paragraphs.txt``: SQuAD v1.1 dev context paragraphs (Wikipedia articles other than WikiText-2's test
  documents, on which perplexity is measured): the distillation and calibration corpus.
* ``gsm8k_sft.jsonl``: GSM8K questions and worked answers as ``prompt``/``completion`` records: one of the two
  instruction sets the fine-tuned parents of the merges learn (the other is the built-in ``instructions``).
* ``instructions.jsonl``: the built-in synthetic-world question answering pairs (``adapters.corpus.instruction_pairs``),
  the other instruction set.
* ``gsm8k_text.txt``: the same problems as plain text (question, then answer): the held-out domain of continual
  pretraining (its report gives the domain perplexity before/after on held-out problems).

Usage::

    python benchmarks/initialization_data.py --data-dir ../shared/benchmarks --out .slm-init/data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.corpus import instruction_pairs  # noqa: E402


def write(data_dir: Path, out: Path) -> dict[str, int]:
    """Write the three files; returns how many records each holds."""
    out.mkdir(parents=True, exist_ok=True)
    squad = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    paragraphs = [" ".join(p["context"].split()) for article in squad["data"] for p in article["paragraphs"]]
    (out / "wiki_paragraphs.txt").write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    problems = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    with (out / "gsm8k_sft.jsonl").open("w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps({"prompt": f"Question: {p['question']}\nAnswer:", "completion": " " + p["answer"]}) + "\n")
    with (out / "instructions.jsonl").open("w", encoding="utf-8") as fh:
        for pair in instruction_pairs(500, seed=0):
            fh.write(json.dumps(pair) + "\n")
    texts = [" ".join(f"Question: {p['question']} Answer: {p['answer']}".split()) for p in problems]
    (out / "gsm8k_text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"wiki_paragraphs": len(paragraphs), "gsm8k_sft": len(problems), "instructions": 500,
            "gsm8k_text": len(texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/benchmarks"))
    parser.add_argument("--out", type=Path, default=Path(".slm-init/data"))
    args = parser.parse_args()
    for name, n in write(args.data_dir, args.out).items():
        print(f"{args.out / name}: {n} records")


if __name__ == "__main__":
    main()
