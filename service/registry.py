"""Things chosen by name (inference backends, explanation methods): a registry, not an if/else.

Each entry is registered with one line, either the object itself or the
``"package.module:Attribute"`` it lives at; a path is imported on first use, so
listing the names imports nothing (the torch backend must not pull in torch for
deployments that never ask for it).
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one ``kind`` of thing (``backend``, ``method``) → the thing, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str) -> None:
        """Register ``target`` (the object, or ``"module:attribute"``) as ``name``; a name is registered once."""
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise ValueError(f"a {self.kind} name is lower-case letters, digits and underscores; got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Forget ``name`` (for tests that register a toy entry)."""
        del self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order; imports nothing."""
        return tuple(self._entries)

    def get(self, name: str) -> T:
        """The entry ``name``, imported when registered by path.

        ``LookupError`` names the registered ones for an unknown name; an entry whose module
        needs a package that is not installed raises :class:`ModuleNotFoundError` naming it.
        """
        try:
            target = self._entries[name]
        except KeyError:
            raise LookupError(f"unknown {self.kind} {name!r}; registered: {', '.join(self._entries)}") from None
        if not isinstance(target, str):
            return target
        module_name, _, attribute = target.partition(":")
        return cast(T, getattr(importlib.import_module(module_name), attribute))
