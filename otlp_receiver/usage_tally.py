"""A run's usage totals kept up to date as its spans arrive: the incremental form of ``usage.total_usage``.

``total_usage`` recounts a run from all of its steps. Done for every flush batch that touches a run, that
reloads the whole run each time: quadratic for a long run arriving in many export batches. A
:class:`UsageTally` holds what the §6.3 rules need (the span tree, which spans repeat a descendant's usage,
what each counted span adds, the tool-call groups) and folds new spans in; its totals equal
``total_usage`` over every span added so far, in any arrival order (property-tested against it in
tests/otlp_receiver/test_usage_tally.py).

Why folding in is exact. A span's parent link never changes; the tree only grows, by spans whose parent
was missing or whose children were waiting for them. So:

- a span is *repeated* (its usage repeats a descendant's) iff a proper descendant has usage. Descendants
  only grow, so a repeated span stays repeated and all its ancestors are repeated too: a new span that has
  usage, or repeats a child's, marks its ancestors upward until it meets a repeated one;
- a counted span (not repeated; a model step or one with usage) adds its share until it becomes repeated,
  then its share is taken back. Costs add up exactly (Shewchuk partials, rounded once as ``math.fsum``
  rounds ``total_usage``'s sum); names keep the sort key (start_ns, span_id) they were first seen with;
- a tool's nearest tool ancestor, once present, never changes (paths only extend upward), so tool groups
  only merge. Tools with no tool above them yet wait at the top of their tree for its missing parent.

A parent cycle (invalid input, but possible) breaks these arguments: the tally then says ``broken`` and the
caller recounts with ``total_usage``, as it does for a reported cost too large to add exactly.

Pure: imports the standard library and otlp_receiver's usage and pricing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any, Final, NamedTuple

from otlp_receiver.pricing import PriceTable
from otlp_receiver.usage import UsageTotals, computed_cost

USAGE_COLUMNS: Final = ("span_id", "parent_span_id", "type", "status", "start_ns", "model_name", "tool_name",
                        "tool_call_id", "tokens_in", "tokens_out", "tokens_total", "tokens_cache_read",
                        "tokens_cache_write", "tokens_reasoning", "cost_usd")
"""The fields of a span the tally reads, in the order of a :data:`UsageRow`."""

UsageRow = tuple[Any, ...]
"""One span as a tuple of :data:`USAGE_COLUMNS` values."""

SortKey = tuple[int, str]  # (start_ns, span_id): the order names are listed in
_MODEL, _TOOL, _ERROR = "model", "tool", "error"
_MAX_EXACT: Final = 1e300  # below this, ~1e8 shares cannot overflow the exact sum


class _Share(NamedTuple):
    """What one counted span adds to the run's totals."""

    tokens: tuple[int, int, int, int, int, int]  # in, out, total, cache read, cache write, reasoning
    cost: float | None
    source: str | None
    model: str | None
    unpriced: str | None
    key: SortKey


class UsageTally:
    """The usage totals of one run's spans, updated span by span."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.broken = False
        """True after a parent cycle or an unsummable cost: the totals must come from ``total_usage``."""
        self._parent: dict[str, str | None] = {}
        self._waiting: dict[str, list[str]] = {}  # a parent not seen yet → its children that are here
        self._usage: set[str] = set()
        self._repeated: set[str] = set()
        self._counted: dict[str, _Share] = {}
        self._tokens = [0, 0, 0, 0, 0, 0]
        self._cost = _ExactSum()
        self._sources: dict[str, int] = {}
        self._models = _FirstSeen()
        self._unpriced = _FirstSeen()
        self._tools = _ToolGroups()
        self._errors = 0

    def __len__(self) -> int:
        """Spans held."""
        return len(self._parent)

    def add(self, rows: Iterable[UsageRow]) -> None:
        """Fold spans in, in arrival order; a span id already held is a retried export and is skipped."""
        for row in rows:
            if self.broken:
                return
            if row[0] not in self._parent:
                self._add(row)

    def totals(self) -> UsageTotals:
        """The run's totals, as ``total_usage`` counts them over the same spans."""
        t = self._tokens
        return UsageTotals(
            tokens_in=t[0], tokens_out=t[1], tokens_total=t[2], tokens_cache_read=t[3],
            tokens_cache_write=t[4], tokens_reasoning=t[5], cost_usd=self._cost.value(),
            cost_source=_source(self._sources), model_names=self._models.names(),
            tool_names=self._tools.names(), tool_count=self._tools.count, error_count=self._errors,
            unpriced_models=self._unpriced.names())

    # -- one span ----------------------------------------------------------------------------------------

    def _add(self, row: UsageRow) -> None:
        span_id, parent = row[0], row[1] or None
        children = self._waiting.pop(span_id, [])
        present = parent is not None and parent in self._parent
        if parent == span_id or (present and children and self._reaches(parent, children)):
            self.broken = True
            return
        self._parent[span_id] = parent
        if parent is not None and not present:
            self._waiting.setdefault(parent, []).append(span_id)
        self._add_usage(span_id, row, children)
        if row[3] == "error" or row[2] == _ERROR:
            self._errors += 1
        self._link_tools(span_id, row, parent if present else None, children)

    def _reaches(self, node: str | None, targets: list[str]) -> bool:
        """Whether the ancestor path from ``node`` (inclusive) meets one of ``targets`` (a cycle to be)."""
        while node is not None and node in self._parent:
            if node in targets:
                return True
            node = self._parent[node]
        return False

    def _add_usage(self, span_id: str, row: UsageRow, children: list[str]) -> None:
        usage = row[8] is not None or row[9] is not None or row[10] is not None or row[14] is not None
        if usage:
            self._usage.add(span_id)
        if children and any(c in self._usage or c in self._repeated for c in children):
            self._repeated.add(span_id)
        elif usage or row[2] == _MODEL:
            self._count(span_id, self._share(row))
        if usage or span_id in self._repeated:
            self._repeat_ancestors(row[1] or None)

    def _repeat_ancestors(self, node: str | None) -> None:
        while node is not None and node in self._parent and node not in self._repeated:
            self._repeated.add(node)
            share = self._counted.pop(node, None)
            if share is not None:
                self._apply(share, -1)
            node = self._parent[node]

    def _share(self, row: UsageRow) -> _Share:
        tokens_in, tokens_out, total, cache_read, cache_write, reasoning, cost = row[8:15]
        source = unpriced = None
        if cost is not None:
            source = "reported"
        elif tokens_in is not None or tokens_out is not None or total is not None:
            cost = computed_cost(self.prices, row[5], tokens_in, tokens_out, cache_read, cache_write)
            source = "unknown" if cost is None else "computed"
            if cost is None and row[5] and self.prices.lookup(row[5]) is None:
                unpriced = row[5]
        if total is None:
            total = (tokens_in or 0) + (tokens_out or 0)
        tokens = (tokens_in or 0, tokens_out or 0, total, cache_read or 0, cache_write or 0, reasoning or 0)
        return _Share(tokens, cost, source, row[5], unpriced, (row[4], row[0]))

    def _count(self, span_id: str, share: _Share) -> None:
        if share.cost is not None and not abs(share.cost) <= _MAX_EXACT:
            self.broken = True
            return
        self._counted[span_id] = share
        self._apply(share, 1)

    def _apply(self, share: _Share, sign: int) -> None:
        """Add (sign 1) or take back (sign -1) one counted span's share."""
        t, (tokens_in, tokens_out, total, cache_read, cache_write, reasoning) = self._tokens, share.tokens
        t[0] += sign * tokens_in
        t[1] += sign * tokens_out
        t[2] += sign * total
        t[3] += sign * cache_read
        t[4] += sign * cache_write
        t[5] += sign * reasoning
        if share.cost is not None:
            self._cost.add(sign * share.cost, sign)
        if share.source is not None:
            self._sources[share.source] = self._sources.get(share.source, 0) + sign
        for unpriced, name in ((False, share.model), (True, share.unpriced)):
            if name:
                self._list_name(unpriced, name, share.key, sign)

    def _list_name(self, unpriced: bool, name: str, key: SortKey, sign: int) -> None:
        names = self._unpriced if unpriced else self._models
        if sign > 0:
            names.add(name, key)
        elif names.remove(name, key):  # it was listed by this span's key: find the next smallest
            names.rekey(name, min(s.key for s in self._counted.values() if (s.unpriced if unpriced else s.model)
                                  == name))

    # -- tools -------------------------------------------------------------------------------------------

    def _link_tools(self, span_id: str, row: UsageRow, parent: str | None, children: list[str]) -> None:
        """Group a tool span with its tool ancestor/descendants; ``parent`` is None unless it is here."""
        uncovered = [tool for child in children for tool in self._tools.uncovered.pop(child, ())] if children else []
        if row[2] == _TOOL:
            self._tools.add(span_id, row[6], row[7], (row[4], span_id))
            self._tools.join_under(span_id, uncovered)
            uncovered = [span_id]
        if not uncovered:
            return
        if parent is None:
            if row[1]:  # its parent may still arrive
                self._tools.uncovered[span_id] = uncovered
            return
        top, tool = self._nearest_tool(parent)
        if tool is not None:
            self._tools.join_under(tool, uncovered)
        elif self._parent[top] is not None:
            self._tools.uncovered.setdefault(top, []).extend(uncovered)

    def _nearest_tool(self, node: str) -> tuple[str, str | None]:
        """(the top of ``node``'s tree, the nearest tool step from ``node`` upward or None)."""
        while True:
            if node in self._tools.name:
                return node, node
            parent = self._parent[node]
            if parent is None or parent not in self._parent:
                return node, None
            node = parent


class _ToolGroups:
    """Union-find over tool spans: one group per executed tool call (§6.3 tool counting)."""

    def __init__(self) -> None:
        self.name: dict[str, str | None] = {}
        self.count = 0
        self.uncovered: dict[str, list[str]] = {}  # top of a tree → its tools with no tool step above
        self._group: dict[str, str] = {}
        self._call_ids: dict[str, str] = {}
        self._first_seen: dict[str, SortKey] = {}

    def add(self, span_id: str, name: str | None, call_id: str | None, key: SortKey) -> None:
        self.name[span_id] = name
        self._group[span_id] = span_id
        self.count += 1
        if name and (name not in self._first_seen or key < self._first_seen[name]):
            self._first_seen[name] = key
        if call_id:
            self._union(span_id, self._call_ids.setdefault(call_id, span_id))

    def join_under(self, tool: str, below: Iterable[str]) -> None:
        """``tool`` is the nearest tool ancestor of each of ``below``: same-name ones are one call."""
        for other in below:
            if self.name[other] == self.name[tool]:
                self._union(other, tool)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._first_seen, key=self._first_seen.__getitem__))

    def _find(self, key: str) -> str:
        group = self._group
        while group[key] != key:
            group[key] = group[group[key]]
            key = group[key]
        return key

    def _union(self, a: str, b: str) -> None:
        root_a, root_b = self._find(a), self._find(b)
        if root_a != root_b:
            self._group[root_a] = root_b
            self.count -= 1


class _FirstSeen:
    """Names with how many counted spans carry each and the smallest sort key among them."""

    def __init__(self) -> None:
        self._entries: dict[str, list[Any]] = {}  # name → [count, smallest key]

    def add(self, name: str, key: SortKey) -> None:
        entry = self._entries.get(name)
        if entry is None:
            self._entries[name] = [1, key]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], key)

    def remove(self, name: str, key: SortKey) -> bool:
        """Drop one carrier; True when it held the smallest key and others remain (call :meth:`rekey`)."""
        entry = self._entries[name]
        entry[0] -= 1
        if not entry[0]:
            del self._entries[name]
            return False
        return bool(entry[1] == key)

    def rekey(self, name: str, key: SortKey) -> None:
        self._entries[name][1] = key

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries, key=lambda name: self._entries[name][1]))


class _ExactSum:
    """An exact float sum (Shewchuk's non-overlapping partials), rounded once on read like ``math.fsum``."""

    def __init__(self) -> None:
        self._partials: list[float] = []
        self._terms = 0

    def add(self, x: float, terms: int) -> None:
        partials, i = self._partials, 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
        self._terms += terms

    def value(self) -> float | None:
        return math.fsum(self._partials) if self._terms else None


def _source(sources: dict[str, int]) -> str | None:
    present = [name for name, n in sources.items() if n]
    return present[0] if len(present) == 1 else ("mixed" if present else None)


class TallyCache:
    """Tallies of recently updated runs, each valid for exactly one head hash; LRU, bounded by spans held.

    The head hash names the run's whole step sequence, so a tally is used only when the run index still
    says what the tally has seen: after a failed transaction, a replay, a retention delete or a restart
    the tally is simply not found and the caller recounts.
    """

    def __init__(self, max_spans: int = 200_000) -> None:
        self.max_spans = max_spans
        self._entries: OrderedDict[Hashable, tuple[str, UsageTally, int]] = OrderedDict()
        self._spans = 0

    def __len__(self) -> int:
        """Tallies held."""
        return len(self._entries)

    def take(self, key: Hashable, head_hash: str) -> UsageTally | None:
        """Remove and return the tally of ``key`` if it was put with ``head_hash``."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._spans -= entry[2]
        return entry[1] if entry[0] == head_hash else None

    def put(self, key: Hashable, head_hash: str, tally: UsageTally) -> None:
        """Keep ``tally`` as the state of ``key`` at ``head_hash`` (evicting the least recently put)."""
        size = len(tally)
        if tally.broken or size > self.max_spans:
            return
        self._entries[key] = (head_hash, tally, size)
        self._spans += size
        while self._spans > self.max_spans:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._spans -= evicted
