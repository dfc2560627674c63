"""Alignment of sibling groups and span forests, on bare nodes."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from diff.align import Aligned, Node, align_forests, align_siblings, build_forest


def node(
    index: int, kind: str = "tool", name: str = "t", *, tool: str | None = None, model: str | None = None,
    digest: int | None = None, parent: str | None = None, span: str | None = None,
) -> Node:  # fmt: skip
    """A node; digest defaults to one derived from the signature (equal signature ⇒ equal content)."""
    signature = (kind, name, tool if tool is not None else (name if kind == "tool" else None), model)
    return Node(index, hash(signature) if digest is None else digest, signature, (index, index),
                span if span is not None else f"s{index}", parent)  # fmt: skip


def distinct(count: int, offset: int = 0) -> list[Node]:
    return [node(offset + k, name=f"t{k}") for k in range(count)]


def statuses(ops: list) -> Counter[str]:
    def status(op: tuple) -> str:
        a, b, moved = op
        if a is None:
            return "added"
        if b is None:
            return "removed"
        return "moved" if moved else ("equal" if a.digest == b.digest else "changed")

    return Counter(status(op) for op in ops)


def test_an_insertion_does_not_shift_what_follows() -> None:
    a = distinct(50)
    b = [node(99, name="retry")] + distinct(50, offset=100)
    assert statuses(align_siblings(a, b)) == {"equal": 50, "added": 1}


def test_a_deletion_in_the_middle_is_one_removal() -> None:
    a = distinct(30)
    b = [n for n in distinct(30, offset=100) if n.signature[1] != "t14"]
    assert statuses(align_siblings(a, b)) == {"equal": 29, "removed": 1}


def test_swapped_siblings_are_one_move() -> None:
    a = distinct(6)
    b = distinct(6, offset=100)
    b[2], b[3] = b[3], b[2]
    ops = align_siblings(a, b)
    assert statuses(ops) == {"equal": 5, "moved": 1}
    moved = next(op for op in ops if op[2])
    assert moved[0].signature == moved[1].signature


def test_a_step_with_changed_content_pairs_with_its_counterpart() -> None:
    a = distinct(5)
    b = distinct(5, offset=100)
    b[2] = node(102, name="t2", digest=12345)
    ops = align_siblings(a, b)
    assert statuses(ops) == {"equal": 4, "changed": 1}
    assert [op[0].index for op in ops] == [0, 1, 2, 3, 4]


def test_a_changed_model_is_a_change_but_another_tool_is_not() -> None:
    a = [node(0, "model", "chat", model="gpt-4o"), node(1, name="search")]
    b = [node(10, "model", "chat", model="gpt-4o-mini"), node(11, name="fetch")]
    assert statuses(align_siblings(a, b)) == {"changed": 1, "removed": 1, "added": 1}


def test_removed_rows_come_before_added_rows() -> None:
    a = [node(0, name="x"), node(1, name="keep")]
    b = [node(10, name="y"), node(11, name="keep")]
    for first, second in ((a, b), (b, a)):
        ops = align_siblings(first, second)
        assert [("a" if op[0] else "-") + ("b" if op[1] else "-") for op in ops] == ["a-", "-b", "ab"]


def test_large_gaps_of_changed_content_still_align_by_signature() -> None:
    kinds = ["plan", "search", "fetch"]
    a = [node(k, name=kinds[k % 3], digest=k) for k in range(300)]
    b = [node(1000 + k, name=kinds[k % 3], digest=1000 + k) for k in range(300)]
    b.insert(150, node(5000, name="notify", digest=5000))
    counts = statuses(align_siblings(a, b))
    assert counts == {"changed": 300, "added": 1}


def test_children_are_aligned_within_their_parents() -> None:
    a = [node(0, "span", "agent"), node(1, name="x", parent="s0"), node(2, name="y", parent="s0")]
    b = [node(10, "span", "agent"), node(11, name="y", parent="s10")]
    rows = align_forests(build_forest(a), build_forest(b))
    assert [(r.a and r.a.index, r.b and r.b.index, r.depth) for r in rows] == [
        (0, 10, 0),
        (1, None, 1),
        (2, 11, 1),
    ]


def test_children_of_an_unmatched_step_are_unmatched() -> None:
    a = [node(0, "span", "agent"), node(1, name="x", parent="s0")]
    b: list[Node] = []
    rows = align_forests(build_forest(a), build_forest(b))
    assert [(r.a.index if r.a else None, r.b, r.depth) for r in rows] == [(0, None, 0), (1, None, 1)]


def test_orphans_and_parent_cycles_become_roots() -> None:
    nodes = [
        node(0, name="orphan", parent="missing"),
        node(1, name="p", span="c1", parent="c2"),
        node(2, name="q", span="c2", parent="c1"),
        node(3, name="self", span="me", parent="me"),
    ]
    roots = build_forest(nodes)
    reached = {n.index for r in roots for n in [r, *r.children]}
    assert reached == {0, 1, 2, 3}
    assert {0, 3} <= {r.index for r in roots}


def test_siblings_are_ordered_by_start_then_seq() -> None:
    late, early = node(0, name="late"), node(1, name="early")
    late.order, early.order = (20, 0), (10, 1)
    assert [n.index for n in build_forest([late, early])] == [1, 0]


def _mirror(rows: list[Aligned]) -> Counter:
    return Counter((r.b and r.b.index, r.a and r.a.index, r.moved, r.depth) for r in rows)


signatures = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(signatures, signatures, st.lists(st.booleans(), min_size=12, max_size=12))
def test_sibling_alignment_is_antisymmetric(
    names_a: list[str], names_b: list[str], tweak: list[bool]
) -> None:
    a = [node(k, name=n) for k, n in enumerate(names_a)]
    b = [node(100 + k, name=n, digest=(hash(n) + 1 if tweak[k] else None)) for k, n in enumerate(names_b)]
    forward = [Aligned(x, y, moved, 0) for x, y, moved in align_siblings(a, b)]
    backward = [Aligned(x, y, moved, 0) for x, y, moved in align_siblings(b, a)]
    assert _mirror(backward) == Counter((r.a and r.a.index, r.b and r.b.index, r.moved, 0) for r in forward)
    assert sum(1 for r in forward if r.a) == len(a) and sum(1 for r in forward if r.b) == len(b)
