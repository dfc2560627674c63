"""Step alignment: which step of run A corresponds to which step of run B.

The alignment respects the span tree: the roots of both runs are aligned, then the children of
every aligned pair, recursively (children of an unmatched step are unmatched too). Within one
sibling group (ordered by start time, then seq) it works in three passes:

1. **Exact anchors.** Steps whose normalized content digests are equal are matched by a patience
   diff (common prefix and suffix, then the longest increasing run of digests unique on both
   sides, recursively). One inserted retry or skipped step therefore never shifts what follows.
2. **Gaps.** Between two anchors, the leftovers are paired by signature (type, name, tool, model)
   with a small weighted LCS (Needleman-Wunsch without gap penalty) when the gap is small, or a
   linear greedy walk with look-ahead when it is large (e.g. every step's content changed).
3. **Moves.** A step left unmatched on both sides with the same digest (then the same signature)
   is reported as moved: this is how reordered parallel siblings come out.

Pure and deterministic; it sees only :class:`Node` objects, never steps or payloads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, TypeAlias

Signature: TypeAlias = tuple[str, str, str | None, str | None]
"""``(type, name, tool_name, model_name)`` of a normalized step."""

_DP_CELLS = 4096
"""Largest gap (cells = len(a) × len(b)) aligned by the weighted LCS; above, the greedy walk."""
_LOOKAHEAD = 32
"""How far the greedy walk looks for the next step with the same signature."""


@dataclass(slots=True, eq=False)
class Node:
    """One step as the alignment sees it."""

    index: int
    """Position of the step in the caller's list."""
    digest: int
    signature: Signature
    order: tuple[int, int]
    """``(start_ns, seq)``: sibling order."""
    span_id: str
    parent_span_id: str | None
    children: list[Node] = field(default_factory=list)


class Aligned(NamedTuple):
    """One row of the alignment: a step of A, of B, or of both (``moved`` when reordered).

    A NamedTuple rather than a frozen dataclass: there is one per step, and this is ~3x cheaper.
    """

    a: Node | None
    b: Node | None
    moved: bool
    depth: int


Op: TypeAlias = tuple[Node | None, Node | None, bool]
_new_tuple = tuple.__new__
"""Builds an :class:`Aligned` without its Python-level ``__new__`` (one per step)."""


def build_forest(nodes: Sequence[Node]) -> list[Node]:
    """Link ``nodes`` by span id and return the roots; every sibling list is sorted by ``order``.

    Roots are steps without a parent, whose parent is not in the run, or that sit on a parent cycle.
    """
    by_span: dict[str, Node] = {}
    for node in nodes:
        if node.span_id:
            by_span.setdefault(node.span_id, node)
    roots = []
    for node in nodes:
        parent = by_span.get(node.parent_span_id) if node.parent_span_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    if _count_reachable(roots) < len(nodes):
        roots += _cycle_breakers(nodes, roots)
    for node in nodes:
        if len(node.children) > 1:
            node.children.sort(key=_ORDER)
    roots.sort(key=_ORDER)
    return roots


_ORDER = attrgetter("order")


def _count_reachable(roots: list[Node]) -> int:
    """How many nodes the roots reach; every node is in at most one children list, so none twice."""
    count = 0
    stack = list(roots)
    while stack:
        count += 1
        stack += stack.pop().children
    return count


def _cycle_breakers(nodes: Sequence[Node], roots: list[Node]) -> list[Node]:
    """Nodes to promote to roots so that every node is reachable (only parent cycles need it)."""
    seen = _reachable(roots)
    parents = {id(child): node for node in nodes for child in node.children}
    extra = []
    for node in nodes:
        if id(node) not in seen:
            parents[id(node)].children.remove(node)
            extra.append(node)
            seen |= _reachable([node])
    return extra


def _reachable(roots: Iterable[Node]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        seen.add(id(node))
        stack.extend(node.children)
    return seen


def align_forests(roots_a: list[Node], roots_b: list[Node]) -> list[Aligned]:
    """Align two span forests; rows come out in pre-order (a row, then its children's rows)."""
    out: list[Aligned] = []
    stack = [(op, 0) for op in reversed(align_siblings(roots_a, roots_b))]
    while stack:
        (a, b, moved), depth = stack.pop()
        out.append(_new_tuple(Aligned, (a, b, moved, depth)))
        if (a is not None and a.children) or (b is not None and b.children):
            children = align_siblings(a.children if a else [], b.children if b else [])
            stack.extend((op, depth + 1) for op in reversed(children))
    return out


def align_siblings(a: Sequence[Node], b: Sequence[Node]) -> list[Op]:
    """Align one sibling group: anchors on equal digests, gaps by signature, then moves.

    Antisymmetric by construction: the group is aligned in a canonical orientation (the smaller
    digest sequence first) and mirrored back, so swapping the runs swaps every row. Within each run
    of unmatched rows, removed steps come before added ones.
    """
    if not a or not b:
        return [(node, None, False) for node in a] + [(None, node, False) for node in b]
    digests_a, digests_b = [n.digest for n in a], [n.digest for n in b]
    if digests_a == digests_b:  # the common case: nothing changed among these siblings
        return [(x, y, False) for x, y in zip(a, b, strict=True)]
    if digests_a < digests_b:
        ops = _align_oriented(a, b, digests_a, digests_b)
    else:
        ops = [(x, y, moved) for y, x, moved in _align_oriented(b, a, digests_b, digests_a)]
    return _removed_first(ops)


def _align_oriented(
    a: Sequence[Node], b: Sequence[Node], digests_a: list[int], digests_b: list[int]
) -> list[Op]:
    ops: list[Op] = []
    next_a = next_b = 0
    for i, j in _anchor(digests_a, digests_b) + [(len(a), len(b))]:
        ops += _align_gap(a[next_a:i], b[next_b:j])
        if i < len(a):
            ops.append((a[i], b[j], False))
        next_a, next_b = i + 1, j + 1
    return _pair_moves(ops)


def _removed_first(ops: list[Op]) -> list[Op]:
    """Stable-sort each maximal block of unmatched rows so removed steps precede added ones."""
    out: list[Op] = []
    block: list[Op] = []
    for op in ops:
        if op[0] is None or op[1] is None:
            block.append(op)
        else:
            out += sorted(block, key=_is_added) + [op]
            block = []
    return out + sorted(block, key=_is_added)


def _is_added(op: Op) -> bool:
    return op[0] is None


# --- pass 1: exact anchors (patience diff) ---------------------------------------------------


def _anchor(a: Sequence[int], b: Sequence[int]) -> list[tuple[int, int]]:
    """Monotone index pairs (i, j) with ``a[i] == b[j]``."""
    matches: list[tuple[int, int]] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        while alo < ahi and blo < bhi and a[alo] == b[blo]:
            matches.append((alo, blo))
            alo, blo = alo + 1, blo + 1
        while alo < ahi and blo < bhi and a[ahi - 1] == b[bhi - 1]:
            ahi, bhi = ahi - 1, bhi - 1
            matches.append((ahi, bhi))
        if alo == ahi or blo == bhi:
            continue
        anchors = _unique_lis(a, b, (alo, ahi), (blo, bhi))
        previous = (alo, blo)
        for i, j in anchors:
            matches.append((i, j))
            stack.append((previous[0], i, previous[1], j))
            previous = (i + 1, j + 1)
        if anchors:
            stack.append((previous[0], ahi, previous[1], bhi))
    matches.sort()
    return matches


def _unique_lis(
    a: Sequence[int], b: Sequence[int], a_range: tuple[int, int], b_range: tuple[int, int]
) -> list[tuple[int, int]]:
    """The longest increasing chain of (i, j) over digests that occur exactly once in each range."""
    count_a = Counter(a[a_range[0] : a_range[1]])
    count_b = Counter(b[b_range[0] : b_range[1]])
    position_b = {b[j]: j for j in range(*b_range) if count_b[b[j]] == 1}
    candidates = [(i, position_b[a[i]]) for i in range(*a_range) if count_a[a[i]] == 1 and a[i] in position_b]
    return _longest_increasing(candidates)


def _longest_increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest subsequence of ``pairs`` (increasing in i) that is also increasing in j."""
    tails: list[int] = []  # tails[k] = smallest j ending an increasing chain of length k + 1
    tail_at: list[int] = []  # index into pairs of that chain's end
    back: list[int] = []
    for k, (_, j) in enumerate(pairs):
        length = bisect_left(tails, j)
        if length == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[length], tail_at[length] = j, k
        back.append(tail_at[length - 1] if length else -1)
    chain = []
    k = tail_at[-1] if tail_at else -1
    while k >= 0:
        chain.append(pairs[k])
        k = back[k]
    return chain[::-1]


# --- pass 2: gaps between anchors ------------------------------------------------------------


def _score(a: Node, b: Node) -> int:
    """How well two steps pair up (0 = never): a different tool is another action, a model is not."""
    if a.digest == b.digest:
        return 5
    sa, sb = a.signature, b.signature
    if sa == sb:
        return 4
    if sa[0] != sb[0]:
        return 0
    if sa[0] == "tool":
        return 3 if sa[2] == sb[2] else 0
    if sa[0] == "model":
        return 3 if sa[3] == sb[3] else 2
    return 2 if sa[1] == sb[1] else 1


def _align_gap(a: Sequence[Node], b: Sequence[Node]) -> list[Op]:
    if not a or not b:
        return [(node, None, False) for node in a] + [(None, node, False) for node in b]
    if len(a) * len(b) <= _DP_CELLS:
        return _weighted_lcs(a, b)
    return _greedy(a, b)


def _weighted_lcs(a: Sequence[Node], b: Sequence[Node]) -> list[Op]:
    """Optimal pairing of a small gap: maximise the total :func:`_score` of monotone pairs."""
    rows, cols = len(a), len(b)
    scores = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        row, above = scores[i], scores[i - 1]
        for j in range(1, cols + 1):
            pair = _score(a[i - 1], b[j - 1])
            row[j] = max(above[j], row[j - 1], above[j - 1] + pair if pair else 0)
    ops: list[Op] = []
    i, j = rows, cols
    while i or j:
        pair = _score(a[i - 1], b[j - 1]) if i and j else 0
        if pair and scores[i][j] == scores[i - 1][j - 1] + pair:
            ops.append((a[i - 1], b[j - 1], False))
            i, j = i - 1, j - 1
        elif j and (not i or scores[i][j] == scores[i][j - 1]):
            ops.append((None, b[j - 1], False))
            j -= 1
        else:
            ops.append((a[i - 1], None, False))
            i -= 1
    return ops[::-1]


def _greedy(a: Sequence[Node], b: Sequence[Node]) -> list[Op]:
    """Linear alignment of a large gap: walk both, skipping ahead to the nearest equal signature."""
    ops: list[Op] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i].signature == b[j].signature:
            ops.append((a[i], b[j], False))
            i, j = i + 1, j + 1
            continue
        skip_b = _find(b, j + 1, a[i].signature)
        skip_a = _find(a, i + 1, b[j].signature)
        if skip_b is not None and (skip_a is None or skip_b - j <= skip_a - i):
            ops += [(None, node, False) for node in b[j:skip_b]]
            j = skip_b
        elif skip_a is not None:
            ops += [(node, None, False) for node in a[i:skip_a]]
            i = skip_a
        else:
            ops += [(a[i], b[j], False)] if _score(a[i], b[j]) else [(a[i], None, False), (None, b[j], False)]
            i, j = i + 1, j + 1
    return ops + [(node, None, False) for node in a[i:]] + [(None, node, False) for node in b[j:]]


def _find(nodes: Sequence[Node], start: int, signature: Signature) -> int | None:
    for k in range(start, min(len(nodes), start + _LOOKAHEAD)):
        if nodes[k].signature == signature:
            return k
    return None


# --- pass 3: moves ---------------------------------------------------------------------------


def _pair_moves(ops: list[Op]) -> list[Op]:
    """Pair leftover removed/added steps with equal digests, then equal signatures, as moved.

    A moved row takes the place of the added step (where the step now is, in run B).
    """
    removed = [k for k, op in enumerate(ops) if op[1] is None]
    added = [k for k, op in enumerate(ops) if op[0] is None]
    if not removed or not added:
        return ops
    partner: dict[int, int] = {}  # added op index → removed op index
    for key in (_by_digest, _by_signature):
        taken = set(partner.values())
        waiting: defaultdict[object, deque[int]] = defaultdict(deque)
        for k in removed:
            if k not in taken:
                waiting[key(ops[k][0])].append(k)
        for k in added:
            queue = waiting.get(key(ops[k][1]))
            if k not in partner and queue:
                partner[k] = queue.popleft()
    taken = set(partner.values())
    return [
        (ops[partner[k]][0], op[1], True) if k in partner else op
        for k, op in enumerate(ops)
        if k not in taken
    ]


def _by_digest(node: Node | None) -> object:
    return None if node is None else node.digest


def _by_signature(node: Node | None) -> object:
    return None if node is None else node.signature
