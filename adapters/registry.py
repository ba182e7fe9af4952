"""One registry type for every kind of named component (techniques, suites, model sources).

Registering a name twice raises; looking up an unknown name raises :class:`UnknownNameError` with
close matches. Built-in entries are discovered by importing every module of a package, so a new
technique or suite is registered the day its module is added. Modules named in ``$SLM_PLUGINS``
(comma-separated) are imported too: that is how users add their own techniques and suites.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from adapters.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping that refuses duplicates and explains misses.

    Args:
        kind: what the entries are, for messages ("technique", "suite", "model").
        discover: dotted package names whose modules register entries when imported.
    """

    def __init__(self, kind: str, discover: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._discover = discover
        self._discovered = False

    def register(self, name: str, obj: T) -> T:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register temporary components)."""
        self._entries.pop(name, None)

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for package in self._discover:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        # User plugins: modules that register their own techniques or suites when imported.
        for module in filter(None, os.environ.get("SLM_PLUGINS", "").split(",")):
            importlib.import_module(module.strip())

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        yield from sorted(self._entries.items())
