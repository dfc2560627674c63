"""The JSONPath subset a diff speaks: parsed in ignore lists, printed in the changes it reports.

``$.a.b[0]['c.d'][*]..e.*``: keys (dotted or quoted in brackets), list indexes, ``*`` wildcards
and ``..`` recursive descent. A path printed by :func:`format_path` parses back with
:func:`compile_path`, so an operator can paste a reported change into an ignore list.
:class:`PathAutomaton` matches many patterns at once while a value is walked, one key at a time,
with every transition cached (keys repeat across thousands of steps).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Selector = str | int | None
"""One path step: a dict key, a list index, or ``None`` for the ``*`` wildcard."""
Segment = tuple[bool, Selector]
"""``(recursive_descent, selector)``: ``..name`` is ``(True, "name")``, ``[3]`` is ``(False, 3)``."""
PathPattern = tuple[Segment, ...]

_SEGMENT_RE = re.compile(
    r"(?P<name>[A-Za-z_][\w-]*)|(?P<star>\*)|\[(?:(?P<index>\d+)|(?P<bstar>\*)|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\")\]"
)
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DROP = -1
"""The automaton state for "a pattern matched here: leave this value out"."""
IDLE = 0
"""The automaton state in which no pattern can match any more (the fast path)."""


def compile_path(text: str) -> PathPattern:
    """Compile a JSONPath of the supported subset into segments.

    Raises:
        ValueError: not in the subset; the message says where.
    """
    if not text.startswith("$"):
        raise ValueError("must start with '$'")
    segments: list[Segment] = []
    pos = 1
    while pos < len(text):
        descend = text.startswith("..", pos)
        if descend or text[pos] == ".":
            pos += 2 if descend else 1
        elif text[pos] != "[":
            raise ValueError(f"unexpected {text[pos]!r} at offset {pos}")
        match = _SEGMENT_RE.match(text, pos)
        if match is None:
            raise ValueError(f"cannot parse a key, index or '*' at offset {pos}")
        segments.append((descend, _selector(match)))
        pos = match.end()
    if not segments:
        raise ValueError("'$' alone would ignore everything")
    return tuple(segments)


def _selector(match: re.Match[str]) -> Selector:
    if match["index"] is not None:
        return int(match["index"])
    for group in ("name", "sq", "dq"):
        if match[group] is not None:
            return match[group]
    return None  # '*' or '[*]'


def format_path(parts: Sequence[str | int]) -> str:
    """``$.a.b[0]['c.d']`` from path parts (keys and list indexes)."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER_RE.fullmatch(str(part)):
            out.append(f".{part}")
        else:
            quote = '"' if "'" in str(part) else "'"
            out.append(f"[{quote}{part}{quote}]")
    return "".join(out)


class PathAutomaton:
    """Matches a set of patterns along a path, lazily built into a DFA over integer states.

    Start at :attr:`start`; :meth:`step` with each key or index gives the next state, :data:`DROP`
    when a pattern matched, or :data:`IDLE` when no pattern can match below.
    """

    def __init__(self, patterns: Sequence[PathPattern]) -> None:
        """Build the automaton for ``patterns`` (compiled with :func:`compile_path`)."""
        self._patterns = tuple(patterns)
        self._ids: dict[tuple[tuple[int, int], ...], int] = {(): IDLE}
        self._sets: list[tuple[tuple[int, int], ...]] = [()]
        self._moves: list[dict[str | int, int]] = [{}]
        self.start = self._intern(tuple((i, 0) for i in range(len(self._patterns))))

    def step(self, state: int, key: str | int) -> int:
        """The state after ``key`` (a dict key or list index) from ``state``."""
        moves = self._moves[state]
        following = moves.get(key)
        if following is None:
            following = moves[key] = self._advance(state, key)
        return following

    def copy(self) -> PathAutomaton:
        """An independent automaton that starts with the transitions learnt so far."""
        clone = PathAutomaton.__new__(PathAutomaton)
        clone._patterns = self._patterns
        clone._ids = dict(self._ids)
        clone._sets = list(self._sets)
        clone._moves = [dict(moves) for moves in self._moves]
        clone.start = self.start
        return clone

    def moves(self, state: int) -> dict[str | int, int]:
        """The transitions out of ``state`` found so far (read-only; :meth:`step` adds the others)."""
        return self._moves[state]

    def _advance(self, state: int, key: str | int) -> int:
        following: list[tuple[int, int]] = []
        for index, pos in self._sets[state]:
            pattern = self._patterns[index]
            descend, selector = pattern[pos]
            if descend:
                following.append((index, pos))
            if selector is None or (selector == key and type(selector) is type(key)):
                if pos + 1 == len(pattern):
                    return DROP
                following.append((index, pos + 1))
        return self._intern(tuple(sorted(set(following))))

    def _intern(self, states: tuple[tuple[int, int], ...]) -> int:
        known = self._ids.get(states)
        if known is None:
            known = self._ids[states] = len(self._sets)
            self._sets.append(states)
            self._moves.append({})
        return known
