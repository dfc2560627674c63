"""GenAI content events → model step input/output (semconv.md §1.4), on span events and log bodies.

Every per-message event kind is checked in the three body forms seen in the wild: the body fields as
span-event attributes, the body as JSON text in ``gen_ai.event.content`` (Azure AI Inference), and the
body of an OTLP log record. Precedence: span attributes always win; events only fill an absent side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from otlp_receiver.content_events import (
    ContentEvent,
    Messages,
    content_messages,
    drop_lifted_content,
    log_record_fields,
    span_event_fields,
)
from otlp_receiver.mapping import map_span
from otlp_receiver.model import SpanEvent
from otlp_receiver.redact import RedactionPolicy, Redactor
from tests.factories import make_event, make_span

Form = Callable[[str, dict[str, Any]], ContentEvent]


def as_span_attributes(name: str, body: dict[str, Any]) -> ContentEvent:
    """Body fields as span-event attributes; nested values as JSON text (SDK attributes can't nest)."""
    attributes = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in body.items()}
    return ContentEvent(name, span_event_fields({"gen_ai.system": "openai", **attributes}))


def as_event_content(name: str, body: dict[str, Any]) -> ContentEvent:
    return ContentEvent(name, span_event_fields({"gen_ai.system": "openai", "gen_ai.event.content": json.dumps(body)}))


def as_log_body(name: str, body: dict[str, Any]) -> ContentEvent:
    return ContentEvent(name, log_record_fields(body, {"gen_ai.system": "openai"}))


FORMS = pytest.mark.parametrize("form", [as_span_attributes, as_event_content, as_log_body])
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
TOOL_CALL_PART = {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}


def messages(*events: ContentEvent) -> Messages:
    return content_messages(events)


# --- one test per event kind ------------------------------------------------------------------------
@FORMS
def test_system_message_event_becomes_a_system_message(form: Form) -> None:
    found = messages(form("gen_ai.system.message", {"content": "be brief"}))
    assert found == Messages(input=[{"role": "system", "parts": [{"type": "text", "content": "be brief"}]}])


@FORMS
def test_user_message_event_becomes_a_user_message(form: Form) -> None:
    found = messages(form("gen_ai.user.message", {"content": "weather in Paris?"}))
    assert found.input == [{"role": "user", "parts": [{"type": "text", "content": "weather in Paris?"}]}]
    assert found.output is None


@FORMS
def test_assistant_message_event_keeps_text_and_tool_calls(form: Form) -> None:
    found = messages(form("gen_ai.assistant.message", {"content": "checking", "tool_calls": [TOOL_CALL]}))
    assert found.input == [{"role": "assistant", "parts": [{"type": "text", "content": "checking"}, TOOL_CALL_PART]}]


@FORMS
def test_tool_message_event_becomes_a_tool_call_response(form: Form) -> None:
    found = messages(form("gen_ai.tool.message", {"content": "sunny, 21C", "id": "call_1"}))
    assert found.input == [{"role": "tool", "parts": [
        {"type": "tool_call_response", "id": "call_1", "response": "sunny, 21C"}]}]


@FORMS
def test_choice_event_becomes_an_output_message_with_finish_reason(form: Form) -> None:
    body = {"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]}}
    found = messages(form("gen_ai.choice", body))
    assert found == Messages(output=[{"role": "assistant", "parts": [TOOL_CALL_PART], "finish_reason": "tool_calls"}])


@FORMS
def test_choices_are_ordered_by_index_and_default_to_assistant(form: Form) -> None:
    second = form("gen_ai.choice", {"index": 1, "finish_reason": "stop", "message": {"content": "b"}})
    first = form("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {"content": "a"}})
    found = messages(second, first)
    assert [m["parts"][0]["content"] for m in found.output] == ["a", "b"]
    assert {m["role"] for m in found.output} == {"assistant"}


def test_legacy_content_prompt_and_completion_events_give_current_shape_message_lists() -> None:
    prompt = ContentEvent("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "hi"}]'})
    completion = ContentEvent("gen_ai.content.completion", {"gen_ai.completion": '[{"role": "assistant"}]'})
    found = messages(prompt, completion)
    assert found == Messages(input=[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
                             output=[{"role": "assistant", "parts": []}])


# --- the current generation ---------------------------------------------------------------------------
INPUT = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
OUTPUT = [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]
INSTRUCTIONS = [{"type": "text", "content": "be brief"}]


@pytest.mark.parametrize("encode", [lambda v: v, json.dumps], ids=["structured", "json-text"])
def test_operation_details_event_carries_input_output_and_system_instructions(
        encode: Callable[[Any], Any]) -> None:
    fields = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": encode(INPUT),
              "gen_ai.output.messages": encode(OUTPUT), "gen_ai.system_instructions": encode(INSTRUCTIONS)}
    found = messages(ContentEvent("gen_ai.client.inference.operation.details", fields))
    assert found == Messages(input=[{"role": "system", "parts": INSTRUCTIONS}, *INPUT], output=OUTPUT)


def test_operation_details_wins_over_per_message_events_of_the_same_span() -> None:
    details = ContentEvent("gen_ai.client.inference.operation.details", {"gen_ai.input.messages": INPUT})
    user = as_log_body("gen_ai.user.message", {"content": "hi"})
    assert messages(user, details) == Messages(input=INPUT)


# --- odd bodies ---------------------------------------------------------------------------------------
def test_content_as_a_list_of_openai_parts_is_normalised() -> None:
    body = {"content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}, "plain"]}
    found = messages(as_log_body("gen_ai.user.message", body))
    assert found.input[0]["parts"] == [{"type": "text", "content": "look"},
                                       {"type": "uri", "modality": "image", "uri": "u"},
                                       {"type": "text", "content": "plain"}]


def test_a_plain_string_log_body_is_the_message_content() -> None:
    found = messages(ContentEvent("gen_ai.user.message", log_record_fields("hi", {})))
    assert found.input == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_a_role_in_the_body_overrides_the_event_name() -> None:
    found = messages(as_log_body("gen_ai.user.message", {"role": "developer", "content": "x"}))
    assert found.input[0]["role"] == "developer"


@pytest.mark.parametrize("body", [{}, {"content": None}, {"tool_calls": "not json"}, {"tool_calls": [1, None]},
                                  {"message": "[1, 2"}, {"index": "x", "message": {"tool_calls": {"id": 3}}}])
def test_garbage_bodies_never_raise(body: dict[str, Any]) -> None:
    for name in ("gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message", "gen_ai.choice"):
        found = messages(as_log_body(name, body), as_span_attributes(name, body))
        assert json.loads(json.dumps(found.input or found.output)) is not None


def test_unknown_events_say_nothing() -> None:
    assert messages(ContentEvent("exception", {"exception.message": "boom"})) == Messages()


# --- on a span: precedence ----------------------------------------------------------------------------
def span_event(name: str, **attributes: Any) -> SpanEvent:
    return make_event(name=name, attributes=attributes)


CHAT_EVENTS = (
    span_event("gen_ai.system.message", content="be brief"),
    span_event("gen_ai.user.message", content="weather?"),
    span_event("gen_ai.choice", **{"gen_ai.event.content": json.dumps(
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "sunny"}})}),
)


def payload_of(attributes: Mapping[str, Any], events: tuple[SpanEvent, ...]) -> dict[str, Any]:
    return dict(map_span(make_span(attributes={"gen_ai.operation.name": "chat", **attributes}, events=events)).payload)


def test_span_events_fill_model_input_and_output_when_no_attribute_carries_them() -> None:
    payload = payload_of({}, CHAT_EVENTS)
    assert payload["input"] == [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                                {"role": "user", "parts": [{"type": "text", "content": "weather?"}]}]
    assert payload["output"] == [{"role": "assistant", "parts": [{"type": "text", "content": "sunny"}],
                                  "finish_reason": "stop"}]
    assert [e["name"] for e in payload["events"]] == [e.name for e in CHAT_EVENTS]  # kept for the timeline


def test_span_event_messages_have_the_shape_of_genai_message_attributes() -> None:
    from_events = payload_of({}, (span_event("gen_ai.user.message", content="hi"),))
    from_attribute = payload_of({"gen_ai.input.messages": json.dumps(INPUT)}, ())
    assert from_events["input"] == from_attribute["input"]


@pytest.mark.parametrize("attribute", [
    {"gen_ai.input.messages": json.dumps(INPUT)},
    {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "hi"},
    {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi"},
    {"input.value": "hi"},
    {"ai.prompt.messages": '[{"role": "user", "content": "hi"}]'},
])  # fmt: skip
def test_any_input_attribute_wins_over_span_events_which_still_fill_the_output(attribute: dict[str, Any]) -> None:
    payload = payload_of(attribute, CHAT_EVENTS)
    assert payload_of(attribute, ())["input"] == payload["input"]
    assert payload["output"][0]["finish_reason"] == "stop"


def test_output_attribute_wins_over_choice_events_which_still_fill_the_input() -> None:
    payload = payload_of({"gen_ai.output.messages": json.dumps(OUTPUT)}, CHAT_EVENTS)
    assert payload["output"] == OUTPUT
    assert payload["input"][1]["role"] == "user"


def test_operation_details_span_event_with_structured_values() -> None:
    details = span_event("gen_ai.client.inference.operation.details",
                         **{"gen_ai.input.messages": INPUT, "gen_ai.output.messages": OUTPUT})
    payload = payload_of({}, (details,))
    assert (payload["input"], payload["output"]) == (INPUT, OUTPUT)


def test_legacy_content_prompt_event_still_fills_the_input() -> None:
    events = (span_event("gen_ai.content.prompt", **{"gen_ai.prompt": '[{"role": "user"}]'}),)
    assert payload_of({}, events)["input"] == [{"role": "user", "parts": []}]


# --- stored once -----------------------------------------------------------------------------------------
def test_events_whose_content_was_lifted_keep_name_time_and_other_attributes_but_not_the_content() -> None:
    events = (make_event(name="gen_ai.user.message", time_ns=5,
                         attributes={"gen_ai.system": "openai", "content": "weather?", "role": "user"}),
              *CHAT_EVENTS[2:], make_event(name="exception", attributes={"exception.message": "boom"}))
    payload = payload_of({}, events)
    assert payload["events"][0] == {"name": "gen_ai.user.message", "time_ns": 5,
                                    "attributes": {"gen_ai.system": "openai"}, "content_in": ["input"]}
    assert payload["events"][1]["content_in"] == ["output"]
    assert "sunny" not in json.dumps(payload["events"]) and "weather?" not in json.dumps(payload["events"])
    assert payload["events"][2] == {"name": "exception", "time_ns": events[2].time_ns,
                                    "attributes": {"exception.message": "boom"}}  # not a content event


def test_event_content_equal_to_an_attribute_that_won_is_stored_once_too() -> None:
    user = span_event("gen_ai.user.message", content="hi")
    payload = payload_of({"gen_ai.input.messages": json.dumps(INPUT)}, (user,))
    assert payload["input"] == INPUT
    assert payload["events"][0]["content_in"] == ["input"] and payload["events"][0]["attributes"] == {}


def test_event_content_that_differs_from_what_was_stored_is_kept_as_sent() -> None:
    user = span_event("gen_ai.user.message", content="something else")
    payload = payload_of({"gen_ai.input.messages": json.dumps(INPUT)}, (user,))
    assert payload["events"][0]["attributes"] == {"content": "something else"}
    assert "content_in" not in payload["events"][0]


def test_operation_details_loses_only_the_sides_it_gave() -> None:
    details = span_event("gen_ai.client.inference.operation.details", **{
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": []}]), "gen_ai.output.messages": OUTPUT,
        "gen_ai.provider.name": "openai"})
    payload = payload_of({"gen_ai.input.messages": json.dumps(INPUT)}, (details,))
    (event,) = payload["events"]
    assert event["content_in"] == ["output"]
    assert set(event["attributes"]) == {"gen_ai.input.messages", "gen_ai.provider.name"}


def test_per_message_events_beside_operation_details_are_not_its_content_and_are_kept() -> None:
    details = span_event("gen_ai.client.inference.operation.details", **{"gen_ai.input.messages": INPUT})
    user = span_event("gen_ai.user.message", content="hi")
    payload = payload_of({}, (details, user))
    assert payload["events"][0]["content_in"] == ["input"]
    assert payload["events"][1]["attributes"] == {"content": "hi"}


def test_unread_fields_of_a_json_event_body_are_kept() -> None:
    body = {"role": "user", "content": "hi", "x.vendor": 1}
    payload = payload_of({}, (span_event("gen_ai.user.message", **{"gen_ai.event.content": json.dumps(body)}),))
    assert payload["events"][0]["attributes"] == {"gen_ai.event.content": {"x.vendor": 1}}


def test_stored_once_is_the_same_rule_on_an_already_built_payload() -> None:
    payload = payload_of({}, CHAT_EVENTS)
    assert drop_lifted_content(payload["events"], payload["input"], payload["output"]) is payload["events"]
    whole = [{"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)} for e in CHAT_EVENTS]
    assert drop_lifted_content(whole, payload["input"], payload["output"]) == payload["events"]


@pytest.mark.parametrize("events", [
    [None, 1, "x", {"name": ["unhashable"]}, {"name": "gen_ai.user.message", "attributes": ["not", "a", "map"]}],
    [{"name": "gen_ai.choice", "attributes": {"message": {"content": {"deep": [[[]]]}}, "index": "NaN"}}],
    [{"name": "gen_ai.user.message"}, {"name": "gen_ai.client.inference.operation.details", "attributes": 3}],
])  # fmt: skip
def test_stored_once_never_raises_on_what_a_stored_payload_may_hold(events: list[Any]) -> None:
    assert isinstance(drop_lifted_content(events, [{"role": "user", "parts": []}], "x"), list)


# --- redaction -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attributes", [
    {"content": "mail me at jane.doe@example.com"},
    {"gen_ai.event.content": json.dumps({"content": "mail me at jane.doe@example.com"})},
])  # fmt: skip
def test_content_rebuilt_from_span_events_is_rebuilt_from_the_redacted_span(attributes: dict[str, Any]) -> None:
    redactor = Redactor(RedactionPolicy.default(), fingerprint_key=b"k" * 32)
    span = make_span(attributes={"gen_ai.operation.name": "chat"},
                     events=(make_event(name="gen_ai.user.message", attributes=attributes),))
    clean, meta = redactor.redact_span(span)
    payload = dict(map_span(clean).payload)
    text = json.dumps(payload)
    assert "jane.doe@example.com" not in text
    assert "[REDACTED:value.email:" in json.dumps(payload["input"]) and not meta.is_empty()
    assert payload["events"][0]["content_in"] == ["input"]  # the redacted content is stored once, in input
