"""Data files of issue 20's on-device, federated and data-selection benchmarks, written from the local benchmark
files (nothing downloaded, nothing copied into the repository): every file goes under the folder given.

Sources (``--data-dir``, the layouts of ``../shared/benchmarks``): SQuAD v1.1 dev context paragraphs (Wikipedia; 48
articles, none of them a WikiText-2 test document, on which perplexity is measured), GSM8K test problems (question
and worked answer), HellaSwag validation contexts with their gold ending, PIQA validation goals with their correct
solution. Every text is used by at most one file below (each file draws its own, disjoint slice), so no file holds a
text another one trains or evaluates on, except where a file is *meant* to repeat others (``chunks12``).

For ``benchmarks/ondevice_federated.yaml``:

* ``local_math.txt``: GSM8K problems: the local data of ``ondevice.adapt``.
* ``chunk1_gsm8k.txt``, ``chunk2_hellaswag.txt``, ``chunk3_piqa.txt``: the stream of ``ondevice.continual``, one
  domain per chunk, each about ``--chunk-chars`` characters.
* ``chunks12.txt``: chunks 1 and 2 interleaved (what chunk 3 replays): the training parts (first 80% of each
  chunk's texts) interleaved, then their last 20% interleaved, so the replay data's held-out tail is, up to block
  boundaries, texts neither earlier step trained on.
* ``fed_mixture.jsonl``: four domains (Wikipedia, GSM8K, HellaSwag, PIQA), about ``--fed-chars`` characters each,
  shuffled (seeded), as ``{"completion": text, "label": domain}`` records: the federation's corpus (``label`` is the
  ``partition_key`` of the Dirichlet split; a language-modelling step reads the completion as the text).
* ``fed_public.txt``: the public (unlabeled) set of ``federated.distill``: texts of the four domains, disjoint from
  the federation's.

For ``benchmarks/data_selection.yaml``:

* ``pool.txt``: the selection pool: ``--pool-per-domain`` texts each of Wikipedia (SQuAD paragraphs of the first 40
  articles), GSM8K and HellaSwag, plus planted duplicates of randomly chosen pool texts: ``--exact-dups`` verbatim
  copies and ``--near-dups`` near-copies (one word deleted from a text of at least 40 words: word 3-gram Jaccard
  about 0.93-0.95), shuffled (seeded). ``pool_labels.jsonl`` gives every pool line's domain and whether it is a planted
  copy (``exact``, ``near``) and of which line (``copy_of``, the 0-based line of the original in ``pool.txt``):
  ``benchmarks/data_selection_table.py`` reads it to show what each selection kept. No technique reads it.
* ``dsir_target.txt``: DSIR's target: every paragraph of the last 8 SQuAD articles (Wikipedia text the pool does not
  hold). WikiText-2's *train* split is not among the local files, and its test documents are where perplexity is
  measured, so neither is used: the target is held-out Wikipedia of the same kind instead.

Usage::

    python benchmarks/selection_data.py --data-dir ../shared/benchmarks --out .slm-issue20/data
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TARGET_ARTICLES = 8  # the last SQuAD articles: DSIR's target, never in the pool


def squad_articles(data_dir: Path) -> list[list[str]]:
    squad = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    return [[" ".join(p["context"].split()) for p in a["paragraphs"]] for a in squad["data"]]


def gsm8k(data_dir: Path) -> list[str]:
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [" ".join(f"Question: {p['question']} Answer: {p['answer']}".split())
            for p in (json.loads(x) for x in lines if x.strip())]


def hellaswag(data_dir: Path) -> list[str]:
    """Context (with its activity label) followed by the gold ending; the file has 6 lines per task."""
    lines = (data_dir / "hellaswag" / "hellaswag_val_full.first2000.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for i in range(0, len(lines) - 5, 6):
        ctx, label, endings = lines[i], int(lines[i + 1]), lines[i + 2:i + 6]
        out.append(" ".join(f"{ctx} {endings[label]}".split()))
    return out


def piqa(data_dir: Path) -> list[str]:
    goals = [json.loads(x) for x in (data_dir / "piqa" / "valid.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    labels = [int(x) for x in (data_dir / "piqa" / "valid-labels.lst").read_text(encoding="utf-8").split()]
    return [" ".join(f"{g['goal']} {g['sol1'] if y == 0 else g['sol2']}".split()) for g, y in zip(goals, labels, strict=True)
            if len(g["goal"]) > 15]


class Source:
    """A domain's texts handed out in order, each at most once."""

    def __init__(self, texts: list[str]):
        self.texts, self.i = texts, 0

    def take(self, n: int) -> list[str]:
        out = self.texts[self.i:self.i + n]
        if len(out) < n:
            raise SystemExit(f"not enough texts: asked {n}, {len(out)} left")
        self.i += n
        return out

    def take_chars(self, chars: int) -> list[str]:
        out: list[str] = []
        while sum(len(t) + 1 for t in out) < chars:
            out += self.take(1)
        return out


def interleave(a: list[str], b: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(max(len(a), len(b))):
        out += [x[i] for x in (a, b) if i < len(x)]
    return out


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    del words[rng.randrange(1, len(words) - 1)]
    return " ".join(words)


def write_lines(path: Path, texts: list[str]) -> int:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return len(texts)


def write(data_dir: Path, out: Path, seed: int = 0, chunk_chars: int = 60000, fed_chars: int = 40000,
          pool_per_domain: int = 300, exact_dups: int = 60, near_dups: int = 60) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    articles = squad_articles(data_dir)
    wiki_pool_side = [p for a in articles[:-TARGET_ARTICLES] for p in a]
    rng.shuffle(wiki_pool_side)
    wiki, math, hella, phys = Source(wiki_pool_side), Source(gsm8k(data_dir)), Source(hellaswag(data_dir)), Source(piqa(data_dir))
    counts: dict[str, int] = {}

    # on-device: local data of ondevice.adapt and the three chunks of ondevice.continual
    counts["local_math.txt"] = write_lines(out / "local_math.txt", math.take(150))
    chunks = [math.take_chars(chunk_chars), hella.take_chars(chunk_chars), phys.take_chars(chunk_chars)]
    for name, texts in zip(("chunk1_gsm8k.txt", "chunk2_hellaswag.txt", "chunk3_piqa.txt"), chunks, strict=True):
        counts[name] = write_lines(out / name, texts)
    cut = [int(len(c) * 0.8) for c in chunks[:2]]
    replay = interleave(chunks[0][:cut[0]], chunks[1][:cut[1]]) + interleave(chunks[0][cut[0]:], chunks[1][cut[1]:])
    counts["chunks12.txt"] = write_lines(out / "chunks12.txt", replay)

    # federated: a four-domain corpus with its domain labels, and a disjoint public set
    records = [{"completion": t, "label": dom} for dom, src in (("wikipedia", wiki), ("gsm8k", math),
                                                                 ("hellaswag", hella), ("piqa", phys))
               for t in src.take_chars(fed_chars)]
    rng.shuffle(records)
    with (out / "fed_mixture.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    counts["fed_mixture.jsonl"] = len(records)
    public = [t for src in (wiki, math, hella, phys) for t in src.take(12)]
    rng.shuffle(public)
    counts["fed_public.txt"] = write_lines(out / "fed_public.txt", public)

    # data selection: a three-domain pool with planted duplicates, and held-out Wikipedia as DSIR's target
    originals = [(t, dom, "") for dom, src in (("wikipedia", wiki), ("gsm8k", math), ("hellaswag", hella))
                 for t in src.take(pool_per_domain)]
    exact = [(t, dom, "exact") for t, dom, _ in (originals[i] for i in rng.sample(range(len(originals)), exact_dups))]
    long_enough = [i for i, (t, _, _) in enumerate(originals) if len(t.split()) >= 40]
    near = [(near_copy(t, rng), dom, "near", t) for t, dom, _ in (originals[i] for i in rng.sample(long_enough, near_dups))]
    originals_of = {c: t for c, _, _, t in near}
    near = [x[:3] for x in near]
    pool = originals + exact + near
    rng.shuffle(pool)
    counts["pool.txt"] = write_lines(out / "pool.txt", [t for t, _, _ in pool])
    line_of = {t: i for i, (t, _, planted) in enumerate(pool) if not planted}
    with (out / "pool_labels.jsonl").open("w", encoding="utf-8") as fh:
        for t, dom, planted in pool:
            copy_of = line_of[t if planted == "exact" else originals_of[t]] if planted else None
            fh.write(json.dumps({"text": t, "domain": dom, "planted": planted, "copy_of": copy_of}) + "\n")
    counts["pool_labels.jsonl"] = len(pool)
    counts["dsir_target.txt"] = write_lines(out / "dsir_target.txt",
                                            [p for a in articles[-TARGET_ARTICLES:] for p in a])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/benchmarks"))
    parser.add_argument("--out", type=Path, default=Path(".slm-issue20/data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-chars", type=int, default=60000)
    parser.add_argument("--fed-chars", type=int, default=40000)
    parser.add_argument("--pool-per-domain", type=int, default=300)
    parser.add_argument("--exact-dups", type=int, default=60)
    parser.add_argument("--near-dups", type=int, default=60)
    args = parser.parse_args()
    counts = write(args.data_dir, args.out, args.seed, args.chunk_chars, args.fed_chars, args.pool_per_domain,
                   args.exact_dups, args.near_dups)
    for name, n in counts.items():
        print(f"{args.out / name}: {n} records")


if __name__ == "__main__":
    main()
