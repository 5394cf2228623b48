"""One generic registry for every pluggable thing: models, unlearning methods and data sources.

    from lumebench.registry import METHODS

    @METHODS.register("ga", help="gradient ascent on the forget set")
    class GradientAscent: ...

``METHODS.get("ga")`` returns the object; an unknown name raises a one-line error that lists the
known ones. Entries register themselves when their package is imported; ``get``/``names`` import
the package that owns a registry first, so callers never need to.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lumebench.errors import LumeError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str, owner: str | None = None):
        self.kind = kind
        self.owner = owner  # module whose import registers the entries
        self._entries: dict[str, Entry[T]] = {}

    def _load(self) -> None:
        if self.owner:
            importlib.import_module(self.owner)

    def register(self, name: str, *, help: str = "", **meta: Any):
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, obj, help, meta)
            return obj
        return deco

    def entry(self, name: str) -> Entry[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise LumeError(f"unknown {self.kind} '{name}'; known {self.kind}s: {known}") from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._load()
        return [self._entries[n] for n in sorted(self._entries)]


MODELS: Registry[Any] = Registry("model", owner="lumebench.models")
METHODS: Registry[Any] = Registry("method", owner="lumebench.methods.catalog")
SOURCES: Registry[Any] = Registry("data source", owner="lumebench.data.loaders")
