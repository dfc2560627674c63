"""The ingest hot path's dict form of a step (mapping.step_fields → ingest.fields_wal_item) equals the
dataclass path (map_span → wal_item), byte for byte in the WAL record."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.spans import make_agent_request
from otlp_receiver.decode import decode_request
from otlp_receiver.ingest import draft_fields, fields_wal_item, wal_item
from otlp_receiver.mapping import map_span, step_fields
from otlp_receiver.model import Span
from tests.factories import make_event, make_span

keys = st.sampled_from(["gen_ai.operation.name", "gen_ai.usage.input_tokens", "llm.input_messages.0.message.content",
                        "gen_ai.tool.name", "error.type", "traceward.decision_token", "output.value"]) | st.text(max_size=8)
values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(
    ["chat", "execute_tool", "12", '{"a": [1, 2.5]}', "[1]"])


def _assert_same(span: Span, binding: tuple[str | None, str | None] | None = None) -> None:
    assert list(step_fields(span).items()) == list(draft_fields(map_span(span)).items())
    fast = fields_wal_item("run", 3, step_fields(span), binding)
    assert orjson.dumps(fast) == orjson.dumps(wal_item("run", 3, map_span(span), binding))


def test_benchmark_spans_map_the_same_both_ways() -> None:
    for span in decode_request(make_agent_request(120, seed=7)).spans:
        _assert_same(span, ("ungated", None))


@settings(max_examples=200)
@given(st.dictionaries(keys, values, max_size=8), st.integers(0, 2), st.booleans())
def test_random_spans_map_the_same_both_ways(attrs: dict[str, Any], status: int, exception: bool) -> None:
    events = (make_event(name="exception", attributes={"exception.type": "ValueError"}),) if exception else ()
    _assert_same(make_span(attributes=attrs, status_code=status, events=events))


def test_payload_resources_follow_each_spans_resource() -> None:
    first, second = {"service.name": "a", "n": 1}, {"service.name": "b", "n": float("inf")}
    for resource in (first, first, second, first, {}, second):
        payload = map_span(make_span(resource=resource)).payload
        expected = {k: v if v != float("inf") else "inf" for k, v in resource.items()}
        assert payload.get("resource", {}) == expected
