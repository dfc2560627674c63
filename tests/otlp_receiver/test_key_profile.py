"""Key profiles (otlp_receiver.key_profile): cached key-only answers must equal scanning the attributes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from otlp_receiver import conventions as cv
from otlp_receiver.key_profile import MAX_PROFILES, key_profile
from tests.factories import make_span

ROWS = (cv.MODEL_KEYS, cv.PROVIDER_KEYS, cv.TOKENS_IN_KEYS, cv.TOKENS_OUT_KEYS, cv.TOKENS_TOTAL_KEYS,
        cv.CACHE_READ_KEYS, cv.CACHE_WRITE_KEYS, cv.REASONING_KEYS, cv.COST_TOTAL_KEYS, *cv.COST_PART_KEYS,
        cv.TOOL_NAME_KEYS, cv.TOOL_CALL_ID_KEYS, cv.AGENT_NAME_KEYS, cv.AGENT_FALLBACK_KEYS)
CONVENTION_KEYS = sorted({key for row in ROWS for key in row} | {cv.TRACELOOP_SPAN_KIND, cv.TRACELOOP_ENTITY_NAME,
                                                                 cv.MCP_METHOD_NAME})
keys = st.sampled_from(CONVENTION_KEYS) | st.text(max_size=12) | st.sampled_from(["llm.input_messages.0.x", "ab"])
values = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
          | st.sampled_from(["12", " 3.5 ", "-1", "", "tool", "agent", "tools/call", "gpt-4o", "az.ai.openai"]))
attributes = st.dictionaries(keys, values, max_size=12)


def _reference_usage(attrs: dict[str, Any]) -> cv.Usage:
    """resolve_usage as written before key profiles: every row scanned in full."""
    tokens_in = cv.first_of(attrs, cv.TOKENS_IN_KEYS, cv.as_count)
    tokens_out = cv.first_of(attrs, cv.TOKENS_OUT_KEYS, cv.as_count)
    total = cv.first_of(attrs, cv.TOKENS_TOTAL_KEYS, cv.as_count)
    if total is None and (tokens_in is not None or tokens_out is not None):
        total = (tokens_in or 0) + (tokens_out or 0)
    cost = cv.first_of(attrs, cv.COST_TOTAL_KEYS, cv.as_amount)
    for part_keys in cv.COST_PART_KEYS if cost is None else ():
        parts = [cv.as_amount(attrs.get(key)) for key in part_keys]
        if any(part is not None for part in parts):
            cost = sum(part or 0.0 for part in parts)
            break
    return cv.Usage(tokens_in, tokens_out, total, cv.first_of(attrs, cv.CACHE_READ_KEYS, cv.as_count),
                    cv.first_of(attrs, cv.CACHE_WRITE_KEYS, cv.as_count),
                    cv.first_of(attrs, cv.REASONING_KEYS, cv.as_count), cost)


@settings(max_examples=300)
@given(attributes)
def test_present_and_prefixed_equal_a_scan(attrs: dict[str, Any]) -> None:
    profile = key_profile(attrs)
    for row in ROWS:
        assert profile.present(row) == tuple(key for key in row if key in attrs)
        assert cv.first_of(attrs, profile.present(row), cv.as_text) == cv.first_of(attrs, row, cv.as_text)
    for prefix in ("llm.", "gen_ai.usage.", ("ai.", "tool.")):
        assert profile.prefixed(prefix) == tuple(k for k in attrs if k.startswith(prefix))


@settings(max_examples=300)
@given(attributes, st.sampled_from(["tools/call get_weather", "chat", ""]))
def test_resolvers_with_profiles_equal_full_scans(attrs: dict[str, Any], name: str) -> None:
    assert cv.resolve_usage(attrs) == _reference_usage(attrs)
    assert cv.resolve_model(attrs) == cv.first_of(attrs, cv.MODEL_KEYS, cv.as_text)
    assert cv.resolve_tool_call_id(attrs) == cv.first_of(attrs, cv.TOOL_CALL_ID_KEYS, cv.as_text)
    provider = cv.first_of(attrs, cv.PROVIDER_KEYS, cv.as_text)
    assert cv.resolve_provider(attrs) == (cv.PROVIDER_ALIASES.get(provider, provider) if provider else None)
    span = make_span(name=name, attributes=attrs)
    assert cv.resolve_tool_name(span) == cv.resolve_tool_name(span, _FullScan())  # type: ignore[arg-type]
    assert cv.resolve_agent_name(attrs) == cv.resolve_agent_name(attrs, _FullScan())  # type: ignore[arg-type]


class _FullScan:
    """A stand-in profile that answers every row with all its keys (the behaviour before profiles)."""

    def present(self, row: tuple[str, ...]) -> tuple[str, ...]:
        return row


def test_spans_with_the_same_keys_share_a_profile() -> None:
    assert key_profile({"a": 1, "b": 2}) is key_profile({"a": "x", "b": None})
    assert key_profile({"a": 1, "b": 2}) is not key_profile({"b": 2, "a": 1})  # order is part of the shape


def test_the_cache_is_bounded() -> None:
    for i in range(MAX_PROFILES + 10):
        key_profile({f"k{i}": i})
    from otlp_receiver import key_profile as module

    assert len(module._PROFILES) <= MAX_PROFILES


def test_large_or_odd_key_shapes_are_answered_but_not_remembered() -> None:
    from otlp_receiver import key_profile as module

    for attrs in ({"k" * 5000: 1, "gen_ai.request.model": "m"}, {1: "x", "gen_ai.request.model": "m"}):
        profile = key_profile(attrs)
        assert profile is not key_profile(dict(attrs))
        assert profile.present(cv.MODEL_KEYS) == ("gen_ai.request.model",)
        assert tuple(attrs) not in module._PROFILES
