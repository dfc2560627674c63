"""Field-level changes between normalized contents (deepdiff behind a plain API)."""

from __future__ import annotations

from diff.compare import diff_contents
from diff.result import FieldChange


def _changes(old: dict, new: dict, **kwargs: float) -> list[tuple[str, object, object]]:
    return [(c.path, c.old, c.new) for c in diff_contents(old, new, **kwargs)]


def test_equal_contents_have_no_changes() -> None:
    assert diff_contents({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == ()


def test_nested_leaf_change_has_a_jsonpath() -> None:
    old = {"payload": {"input": {"messages": [{"role": "user", "content": "hi"}, {"role": "x"}]}}}
    new = {"payload": {"input": {"messages": [{"role": "user", "content": "hello"}, {"role": "x"}]}}}
    assert _changes(old, new) == [("$.payload.input.messages[0].content", "hi", "hello")]


def test_dotted_keys_are_quoted() -> None:
    old = {"payload": {"attributes": {"gen_ai.request.model": "a"}}}
    new = {"payload": {"attributes": {"gen_ai.request.model": "b"}}}
    assert _changes(old, new) == [("$.payload.attributes['gen_ai.request.model']", "a", "b")]


def test_added_and_removed_fields_use_none_for_the_missing_side() -> None:
    assert _changes({"a": 1, "status": "ok"}, {"status": "ok", "b": 2}) == [
        ("$.a", 1, None),
        ("$.b", None, 2),
    ]


def test_list_insertions_are_items_not_a_cascade() -> None:
    old = {"m": ["a", "b", "c"]}
    new = {"m": ["a", "x", "b", "c"]}
    assert _changes(old, new) == [("$.m[1]", None, "x")]


def test_type_changes_are_reported() -> None:
    assert _changes({"a": "1"}, {"a": 1}) == [("$.a", "1", 1)]


def test_changes_are_sorted_by_path_with_numeric_indexes() -> None:
    old = {"l": list(range(12)), "a": 0}
    new = {"l": [*range(2), 99, *range(3, 10), 98, 11], "a": 1}
    assert [c[0] for c in _changes(old, new)] == ["$.a", "$.l[2]", "$.l[10]"]


def test_numeric_tolerance_is_relative() -> None:
    old, new = {"x": 1000.0, "y": 1.0}, {"x": 1000.0005, "y": 1.1}
    assert _changes(old, new, numeric_tolerance=1e-6) == [("$.y", 1.0, 1.1)]
    assert len(_changes(old, new)) == 2


def test_results_are_plain_field_changes() -> None:
    (change,) = diff_contents({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}})
    assert change == FieldChange("$.a.b[1]", 2, 3)
    assert type(change.old) is int
