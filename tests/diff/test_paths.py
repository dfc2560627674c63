"""The JSONPath subset: parsing, printing, and the matching automaton."""

from __future__ import annotations

import pytest

from diff.paths import DROP, IDLE, PathAutomaton, compile_path, format_path


def test_compile_path_understands_the_subset() -> None:
    assert compile_path("$.a['b.c'][2][*]..d.*") == (
        (False, "a"), (False, "b.c"), (False, 2), (False, None), (True, "d"), (False, None),
    )  # fmt: skip
    assert compile_path('$..["x y"]') == ((True, "x y"),)


@pytest.mark.parametrize("bad", ["a.b", "$", "$.", "$.a[", "$.a[x]", "$a", "$.a..", "$.a b"])
def test_compile_path_rejects_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_path(bad)


@pytest.mark.parametrize(
    "parts", [["payload", "input", "messages", 0, "content"], ["gen_ai.request.model"], ["it's", 3], ["a-b"]]
)
def test_format_path_parses_back(parts: list[str | int]) -> None:
    printed = format_path(parts)
    assert tuple(selector for _, selector in compile_path(printed)) == tuple(parts)


def test_format_path_prefers_dots_for_identifiers() -> None:
    assert format_path(["payload", "attributes", "gen_ai.request.model", 0]) == (
        "$.payload.attributes['gen_ai.request.model'][0]"
    )


def _walk(automaton: PathAutomaton, *keys: str | int) -> int:
    state = automaton.start
    for key in keys:
        state = automaton.step(state, key)
        if state in (DROP, IDLE):
            return state
    return state


def test_automaton_matches_exact_wildcard_and_descendant_patterns() -> None:
    automaton = PathAutomaton([compile_path(p) for p in ("$.a.b", "$.l[*].t", "$..secret")])
    assert _walk(automaton, "a", "b") == DROP
    assert _walk(automaton, "a", "c") == IDLE or _walk(automaton, "a", "c") > 0
    assert _walk(automaton, "l", 3, "t") == DROP
    assert _walk(automaton, "x", "y", "z", "secret") == DROP
    assert _walk(automaton, "x", "y") not in (DROP, IDLE)  # '..secret' may still match below


def test_automaton_goes_idle_when_nothing_can_match() -> None:
    automaton = PathAutomaton([compile_path("$.a.b")])
    assert _walk(automaton, "z") == IDLE
    assert _walk(automaton, "a", "c") == IDLE


def test_index_selectors_do_not_match_string_keys() -> None:
    automaton = PathAutomaton([compile_path("$.l[0]")])
    assert _walk(automaton, "l", 0) == DROP
    assert _walk(automaton, "l", "0") == IDLE


def test_no_patterns_start_idle() -> None:
    assert PathAutomaton([]).start == IDLE


def test_a_copy_learns_on_its_own() -> None:
    template = PathAutomaton([compile_path(p) for p in ("$.a.b", "$..secret")])
    after_a = template.step(template.start, "a")
    copy = template.copy()
    assert copy.step(copy.start, "a") == after_a
    assert _walk(copy, "x", "y", "secret") == DROP
    assert "x" not in template.moves(template.start)
    assert _walk(template, "a", "b") == _walk(copy, "a", "b") == DROP
