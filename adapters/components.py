"""The lifecycle components of DESIGN.md, in display order, and the registry families under each."""

from __future__ import annotations

from typing import NamedTuple


class Component(NamedTuple):
    """A lifecycle component: its key, title, kind (main/optional/cross-cutting) and families."""

    key: str
    title: str
    kind: str
    families: tuple[str, ...]


COMPONENTS: tuple[Component, ...] = (
    Component("initialization", "Initialization", "main", ("init", "prune", "factorize", "merge", "train")),
    Component("distillation", "Distillation", "main", ("distill",)),
    Component("general", "General lifecycle", "main", ("tune", "infer")),
    Component("quantization", "Quantization", "main", ("quant",)),
    Component("deployment", "Deployment", "main", ("deploy",)),
    Component("ondevice", "On-device learning", "optional", ("ondevice",)),
    Component("federated", "Federated learning", "optional", ("federated",)),
    Component("data", "Data selection", "cross-cutting", ("data",)),
    Component("peft", "Efficient fine-tuning", "cross-cutting", ("peft",)),
    Component("inference", "Inference optimization", "cross-cutting", ("kv",)),
)

BY_KEY = {c.key: c for c in COMPONENTS}


def component_of(technique_name: str) -> Component:
    """The component a technique belongs to, from its family (the part before the dot)."""
    family = technique_name.split(".", 1)[0]
    for comp in COMPONENTS:
        if family in comp.families:
            return comp
    raise ValueError(
        f"technique {technique_name!r}: family {family!r} belongs to no lifecycle component "
        f"(families: {', '.join(f for c in COMPONENTS for f in c.families)})"
    )
