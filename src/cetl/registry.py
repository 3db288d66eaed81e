"""The one registry class behind every name a config can contain.

Methods, networks, datasets and experiments are chosen by name in configs and on
the command line. Resolving names through a registry (never through import
strings) keeps configs free of code, and gives every lookup the same helpful
error: the unknown name, a "did you mean", and the known names.

Registering modules are imported explicitly by each package's ``__init__`` so a
name never silently goes missing because nobody imported its module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cetl.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """A " did you mean 'x'?" suffix for the closest known name, or "" when none is close.

    Case is ignored in the comparison (``CETL`` → ``cetl``); the suggestion is the known spelling.
    """
    lowered = {entry.lower(): entry for entry in reversed(known)}  # the first spelling wins
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" did you mean '{lowered[close[0]]}'?" if close else ""


class Registry(Generic[T]):
    """A name → object mapping for one kind of thing (e.g. "method").

    Args:
        kind: what the entries are, used in error messages ("unknown method ...").
        contract: one line describing what a registered object must be; shown by
            ``cetl list`` and in the registry's docstring.
    """

    def __init__(self, kind: str, contract: str = "") -> None:
        self.kind = kind
        self.contract = contract
        self._entries: dict[str, T] = {}
        self.__doc__ = f"Registry of {kind}s. Contract: {contract}"

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a programming error."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` (for objects that are not defined with a decorator)."""
        if name in self._entries:
            raise KeyError(f"{self.kind} '{name}' is registered twice")
        if name != name.lower():
            raise KeyError(f"{self.kind} names are lower-case; got '{name}'")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``, or a :class:`ConfigError` listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = self.names()
            raise ConfigError(
                f"unknown {self.kind} '{name}';{did_you_mean(name, known)} "
                f"known {self.kind}s: {', '.join(known)}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
