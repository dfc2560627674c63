"""Key profiles: which convention keys and key prefixes one *shape* of attribute keys holds.

Spans from one instrumentation repeat a handful of key sets, so the mapping asks "which of the nine model
keys does this span have?" about the same few key sets over and over. A :class:`KeyProfile` answers such
questions once per distinct key tuple (in attribute order) and remembers the answers; :func:`key_profile`
keeps a bounded cache of profiles. Values are never looked at, so a profile can be shared by every span
with the same keys.

Answers are exact: ``present(row)`` lists the row's keys the attributes hold, in the row's order, so
``first_of(attrs, profile.present(row), coerce) == first_of(attrs, row, coerce)``; ``prefixed(prefix)``
lists the string keys starting with ``prefix`` in attribute order.

Pure: imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

MAX_PROFILES: Final = 1024
"""Distinct key shapes remembered; the cache is emptied when it is full (shapes are few in practice)."""
MAX_SHAPE_CHARS: Final = 4096
"""Longer key tuples (all keys' characters together) get a profile that is not remembered: keys come from
the sender, and the cache must not hold on to arbitrarily large ones."""


class KeyProfile:
    """Key-only facts about one tuple of attribute keys, computed on first use and then remembered."""

    __slots__ = ("_keyset", "_prefixed", "_present", "keys")

    def __init__(self, keys: tuple[Any, ...]) -> None:
        self.keys = keys
        self._keyset: frozenset[Any] | None = None
        self._present: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._prefixed: dict[str | tuple[str, ...], tuple[str, ...]] = {}

    def present(self, row: tuple[str, ...]) -> tuple[str, ...]:
        """The keys of ``row`` these attributes hold, in the row's order."""
        found = self._present.get(row)
        if found is None:
            if self._keyset is None:
                self._keyset = frozenset(self.keys)
            found = self._present[row] = tuple(key for key in row if key in self._keyset)
        return found

    def prefixed(self, prefix: str | tuple[str, ...]) -> tuple[str, ...]:
        """The string keys starting with ``prefix`` (or one of several), in attribute order."""
        found = self._prefixed.get(prefix)
        if found is None:
            found = self._prefixed[prefix] = tuple(
                key for key in self.keys if isinstance(key, str) and key.startswith(prefix))
        return found


_PROFILES: dict[tuple[Any, ...], KeyProfile] = {}


def key_profile(attrs: Mapping[Any, Any]) -> KeyProfile:
    """The (cached) profile of ``attrs``' keys."""
    keys = tuple(attrs)
    found = _PROFILES.get(keys)
    if found is None:
        found = KeyProfile(keys)
        if is_small_shape(keys):
            if len(_PROFILES) >= MAX_PROFILES:
                _PROFILES.clear()
            _PROFILES[keys] = found
    return found


def is_small_shape(keys: tuple[Any, ...]) -> bool:
    """Whether a key tuple is small enough to be kept in a cache (string keys of MAX_SHAPE_CHARS in all)."""
    return len(keys) <= MAX_SHAPE_CHARS and all(type(key) is str for key in keys) \
        and sum(map(len, keys)) <= MAX_SHAPE_CHARS
