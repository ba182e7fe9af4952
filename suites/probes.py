"""Built-in offline capability probes: seeded, versioned multiple-choice tasks the project generates itself.

- ``slm_arithmetic``: single-digit addition and subtraction, four numeric choices.
- ``slm_world_facts``: recall a fact (town or trade) stated in a two-sentence passage about a synthetic world.
- ``slm_agreement``: subject-verb agreement minimal pairs across an attractor ("The keys to the cabinet are").
- ``slm_sequence``: continue a sequence (arithmetic progressions, weekdays, months, number words, letters).

Items are ``{id, query, choices, gold}``; ``suites/tasks/slm_*.yaml`` make them lm-eval tasks (acc,
acc_norm), so probes run through the same engine as every other task. Chance level is 1/4 (1/2 for agreement).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

VERSION = 3  # 3: choices without a leading space (lm-eval adds its target_delimiter " "; 2 scored "  is")
N_ITEMS = 200

_NAMES = ["Ada", "Bram", "Cleo", "Dov", "Edda", "Finn", "Gala", "Hugo", "Iris", "Jonas", "Kira", "Lev", "Mira",
          "Nils", "Oona", "Pavel", "Rhea", "Sami", "Tova", "Uri"]
_TOWNS = ["Ashford", "Brindle", "Corvale", "Dunmere", "Elmstead", "Fernhollow", "Glenwick", "Harrowgate"]
_JOBS = ["baker", "carpenter", "weaver", "fisher", "potter", "smith", "miller", "tailor"]
_NOUNS = [("key", "keys"), ("dog", "dogs"), ("teacher", "teachers"), ("box", "boxes"), ("car", "cars"),
          ("song", "songs"), ("child", "children"), ("letter", "letters"), ("painting", "paintings"),
          ("farmer", "farmers"), ("bridge", "bridges"), ("story", "stories")]
_ADJECTIVES = ["old", "new", "small", "famous", "quiet", "broken", "young", "strange"]
_ATTRACTORS = ["near the cabinet", "by the old doors", "with the red stripes", "behind the tall trees",
               "from the small village", "next to the windows"]
_VERBS = [("is", "are"), ("was", "were"), ("has", "have"), ("seems", "seem")]


def _choices(rng: random.Random, gold: Any, distractors: list[Any]) -> tuple[list[str], int]:
    options = [gold] + [d for d in dict.fromkeys(distractors) if d != gold][:3]
    rng.shuffle(options)
    return [str(o) for o in options], options.index(gold)


def arithmetic(rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(1, 12), rng.randint(1, 12)
    op = rng.choice(["+", "+", "-"]) if a > b else "+"
    val = a + b if op == "+" else a - b
    wrong = rng.sample([v for v in range(0, 25) if v != val], 3)
    choices, gold = _choices(rng, val, wrong)
    return {"query": f"Question: What is {a} {op} {b}?\nAnswer:", "choices": list(choices), "gold": gold}


def world_facts(rng: random.Random) -> dict[str, Any]:
    people = rng.sample(_NAMES, 2)
    towns, jobs = rng.sample(_TOWNS, 4), rng.sample(_JOBS, 4)
    passage = " ".join(f"{p} is a {j} who lives in {t}." for p, t, j in zip(people, towns, jobs, strict=False))
    k = rng.randrange(2)
    if rng.random() < 0.5:
        q, gold, pool = f"Where does {people[k]} live?", towns[k], towns
    else:
        q, gold, pool = f"What is {people[k]}'s job?", jobs[k], jobs
    choices, g = _choices(rng, gold, [x for x in pool if x != gold])
    return {"query": f"{passage}\nQuestion: {q}\nAnswer:", "choices": list(choices), "gold": g}


def agreement(rng: random.Random) -> dict[str, Any]:
    sing, plur = rng.choice(_NOUNS)
    plural = rng.random() < 0.5
    verb = rng.choice(_VERBS)
    subject = plur if plural else sing
    attractor = rng.choice(_ATTRACTORS)
    gold = 1 if plural else 0
    adjective = rng.choice(_ADJECTIVES)
    return {"query": f"The {adjective} {subject} {attractor}", "choices": [verb[0], verb[1]], "gold": gold}


_SEQUENCES = [["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
              ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"],
              ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
              list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")]


def sequence(rng: random.Random) -> dict[str, Any]:
    """Continue a sequence: arithmetic progressions, or weekdays, months, number words, letters."""
    if rng.random() < 0.5:
        start, step = rng.randint(1, 30), rng.randint(1, 5)
        terms = [str(start + i * step) for i in range(5)]
        gold = str(start + 5 * step)
        wrong = [str(start + 5 * step + d) for d in rng.sample([-2 * step, -step, step, 2 * step, 1, -1], 3)]
    else:
        seq = rng.choice(_SEQUENCES)
        i = rng.randrange(0, len(seq) - 4)
        terms, gold = seq[i: i + 4], seq[i + 4]
        wrong = rng.sample([x for x in seq if x not in (gold, terms[-1])], 3)
    choices, g = _choices(rng, gold, wrong)
    return {"query": ", ".join(terms) + ",", "choices": list(choices), "gold": g}


PROBES: dict[str, tuple[Callable[[random.Random], dict[str, Any]], float]] = {
    "slm_arithmetic": (arithmetic, 0.25),
    "slm_world_facts": (world_facts, 0.25),
    "slm_agreement": (agreement, 0.5),
    "slm_sequence": (sequence, 0.25),
}

def items(task: str, n: int = N_ITEMS, seed: int = 0) -> list[dict[str, Any]]:
    """The probe's items; the seed mixes in the probe's name so probes differ from each other."""
    make, _ = PROBES[task]
    rng = random.Random(f"{task}:{VERSION}:{seed}")
    return [{"id": f"{task}-{i}", **make(rng)} for i in range(n)]
