"""Name -> implementation registries for everything a config string can pick (methods, samplers, metrics...).

Unknown names fail with a "did you mean" suggestion, as lm-evaluation-harness does for tasks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from mrdkit.errors import MrdkitError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered object with free-form metadata (e.g. a one-line summary and a citation)."""

    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A small string-keyed registry.

    Example:
        >>> samplers = Registry("sampler")
        >>> @samplers.register("random", summary="uniform without replacement")
        ... class RandomSampler: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second registration of a name is an error."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, dict(meta))
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, or raise a did-you-mean :class:`MrdkitError`."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """Return the full entry (object and metadata) for ``name``."""
        if name not in self._entries:
            raise MrdkitError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """One-line message for an unknown name, with the closest known names."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """All entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
