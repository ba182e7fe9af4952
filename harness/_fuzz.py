"""Malformed specs for fuzzing the spec loader and planner: one valid spec mutated line by line (dropped, duplicated,
cut, or given junk: YAML anchors and aliases, brackets, tags, control characters, huge numbers, random text), and
hostile files (non-UTF-8 bytes, deep nesting, recursive aliases, alias bombs, non-name keys, lone surrogates, huge
integers, oversized files).

Shared by the hypothesis test (``tests/harness/test_spec_limits.py``, through :func:`mutation_strategy`) and the
robustness benchmark (``benchmarks/robustness.py``, through :func:`random_mutation`), so both draw from the same
kinds of edit. Nothing here runs on import; hypothesis is imported only by :func:`mutation_strategy`.
"""

from __future__ import annotations

import random
import textwrap
from typing import Any

VALID = textwrap.dedent("""
    name: ok
    base: tiny-llama
    hardware: cpu-1t
    suites: {quality: {profile: quick}}
    grid:
      prune: [none, {prune.magnitude: {sparsity: [0.3, 0.5]}}]
      quant: [none, quant.int8]
""")

#: junk put into a line: YAML structure gone wrong, anchors and aliases, tags, escapes, numbers at the edges
JUNK = ("&a [*a]", "*nope", "{", "]", ": :", "!!python/object:os.system 'x'", "- - -", "\"\\ud800\"", "9" * 30,
        "[" * 200, "? [1]", "\t", "~", "{a: b, a: c}", "null", "[]", "{}", "0", "-1", "1e999", "yes", "\x00", "\u202e",
        "<<: *x", ".nan", "-.inf", "{num_beams: 0}", "{prune.magnitude: {sparsity: -1}}", "[none, {peft.lora: "
        "{batch_size: 0}}]", "{infer.decoding: {num_beams: 0}}", "[[{peft.lora: {dataset: nope}}]]")

#: how a line is edited
EDITS = ("drop", "dup", "cut", "replace", "append")

#: files no spec loader should choke on: (bytes, what they are)
HOSTILE: tuple[tuple[bytes, str], ...] = (
    (b"name: caf\xe9\nbase: tiny-llama\npaths: [[]]\n", "non-UTF-8 byte"),
    (b"\xff\xfen\x00a\x00", "UTF-16 bytes"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "deep nesting"),
    (b"a: &x [*x]\nbase: tiny-llama\n", "recursive alias"),
    (b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
     "alias bomb"),
    (b"2020-01-01: x\nbase: tiny-llama\n", "a date as a key"),
    (b'name: "\\ud800"\nbase: tiny-llama\npaths: [[]]\n', "lone surrogate"),
    (b"name: x\nbase: tiny-llama\nseed: " + b"9" * 400 + b"\npaths: [[]]\n", "huge integer"),
    (b"name: x\n" + b"#" * (1 << 20) + b"\n", "over 1 MiB"),
    (b"name: x\nbase: tiny-llama\ndatasets: {a: {from: b}, b: {from: a}}\npaths: [[]]\n", "dataset cycle"),
)

Edit = tuple[int, str, str]


def apply_edits(edits: list[Edit], valid: str = VALID) -> str:
    """``valid`` with each ``(line index, kind, value)`` edit applied in order (an index past the end is the last
    line)."""
    out = valid.splitlines()
    for i, kind, value in edits:
        i = min(i, len(out) - 1)
        if not out:
            out = [value]
        elif kind == "drop":
            del out[i]
        elif kind == "dup":
            out.insert(i, out[i])
        elif kind == "cut":
            out[i] = out[i][: len(out[i]) // 2]
        elif kind == "replace":
            out[i] = out[i].split(":")[0] + ": " + value
        else:
            out[i] = out[i] + value
    return "\n".join(out) + "\n"


def _random_text(rng: random.Random, max_size: int = 40) -> str:
    """Up to ``max_size`` characters of any plane but surrogates (what hypothesis's ``st.text`` draws from)."""
    chars = []
    for _ in range(rng.randint(0, max_size)):
        pick = rng.random()
        code = rng.randint(0, 127) if pick < 0.6 else rng.randint(128, 0xFFFF) if pick < 0.95 else \
            rng.randint(0x10000, 0x10FFFF)
        chars.append(chr(code if not 0xD800 <= code <= 0xDFFF else 0xFFFD))
    return "".join(chars)


def random_mutation(rng: random.Random, valid: str = VALID) -> str:
    """One to four random edits of ``valid`` (the same kinds :func:`mutation_strategy` draws)."""
    lines = len(valid.splitlines())
    edits = [(rng.randrange(lines), rng.choice(EDITS), rng.choice(JUNK) if rng.random() < 0.5 else _random_text(rng))
             for _ in range(rng.randint(1, 4))]
    return apply_edits(edits, valid)


def mutation_strategy(valid: str = VALID) -> Any:
    """A hypothesis strategy of mutated specs (imports hypothesis, a test dependency)."""
    from hypothesis import strategies as st

    text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
    edit = st.tuples(st.integers(0, len(valid.splitlines()) - 1), st.sampled_from(EDITS),
                     st.one_of(st.sampled_from(JUNK), text))
    return st.lists(edit, min_size=1, max_size=4).map(lambda edits: apply_edits(edits, valid))
