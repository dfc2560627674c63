"""Chat messages of every convention → the current GenAI shape, at mapping time (``otlp_receiver.messages``).

One case per source shape, through ``map_span`` (the attributes as each instrumentation sends them), then the
inputs that do not fit: gaps, huge indices, non-text values, nesting, garbage. Nothing may raise on ingest.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otlp_receiver.mapping import map_span
from otlp_receiver.messages import _converted, _is_current, to_genai_message, to_genai_messages
from tests.factories import make_span

IM, OM = "llm.input_messages", "llm.output_messages"


def text(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content}


CALL = {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}
RESULT = {"type": "tool_call_response", "id": "call_1", "response": "sunny"}
CONVERSATION = [
    {"role": "system", "parts": [text("be brief")]},
    {"role": "user", "parts": [text("weather in Paris?")]},
    {"role": "assistant", "parts": [CALL]},
    {"role": "tool", "parts": [RESULT]},
]
ANSWER = [{"role": "assistant", "parts": [text("It is sunny.")], "finish_reason": "stop"}]


# --- one case per source shape -----------------------------------------------------------------------------
SOURCES = {
    "genai-current": {
        "gen_ai.system_instructions": json.dumps([text("be brief")]),
        "gen_ai.input.messages": json.dumps([
            CONVERSATION[1],
            {"role": "assistant", "parts": [{**CALL, "arguments": '{"city": "Paris"}'}]},  # JSON text: parsed
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "result": "sunny"}]},
        ]),  # the spec's example spells the response ``result``
        "gen_ai.output.messages": json.dumps(ANSWER),
    },
    "openinference": {
        f"{IM}.0.message.role": "system", f"{IM}.0.message.content": "be brief",
        f"{IM}.1.message.role": "user", f"{IM}.1.message.content": "weather in Paris?",
        f"{IM}.2.message.role": "assistant",
        f"{IM}.2.message.tool_calls.0.tool_call.id": "call_1",
        f"{IM}.2.message.tool_calls.0.tool_call.function.name": "weather",
        f"{IM}.2.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        f"{IM}.3.message.role": "tool", f"{IM}.3.message.tool_call_id": "call_1",
        f"{IM}.3.message.content": "sunny",
        f"{OM}.0.message.role": "assistant", f"{OM}.0.message.content": "It is sunny.",
        "llm.finish_reason": "stop",
    },
    "openllmetry-legacy": {
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": '[{"type": "text", "text": "weather in Paris?"}]',
        "gen_ai.prompt.2.role": "assistant",
        "gen_ai.prompt.2.tool_calls.0.id": "call_1", "gen_ai.prompt.2.tool_calls.0.name": "weather",
        "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
        "gen_ai.prompt.3.role": "tool", "gen_ai.prompt.3.tool_call_id": "call_1", "gen_ai.prompt.3.content": "sunny",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "It is sunny.",
        "gen_ai.completion.0.finish_reason": "stop",
    },
    "langchain-roles": {
        f"{IM}.0.message.role": "system", f"{IM}.0.message.content": "be brief",
        f"{IM}.1.message.role": "human", f"{IM}.1.message.content": "weather in Paris?",
        f"{IM}.2.message.role": "ai",
        f"{IM}.2.message.function_call_name": "weather",
        f"{IM}.2.message.function_call_arguments_json": '{"city": "Paris"}',
        f"{IM}.3.message.tool_call_id": "call_1", f"{IM}.3.message.content": "sunny",  # no role: answers a call
        f"{OM}.0.message.role": "ai", f"{OM}.0.message.content": "It is sunny.", "llm.finish_reason": "stop",
    },
}  # fmt: skip


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_shape_gives_the_same_current_shape_conversation(source: str) -> None:
    payload = map_span(make_span(attributes=SOURCES[source])).payload
    expected = CONVERSATION
    if source == "langchain-roles":  # a legacy function call carries no id
        expected = [*CONVERSATION[:2], {"role": "assistant", "parts": [{k: v for k, v in CALL.items() if k != "id"}]},
                    CONVERSATION[3]]
    assert payload["input"] == expected
    assert payload["output"] == ANSWER
    assert not any(key.startswith(("llm.input", "llm.output", "gen_ai.prompt.", "gen_ai.completion."))
                   or key == "llm.finish_reason" for key in payload.get("attributes", {}))


def test_legacy_completions_prompts_and_choices_become_user_and_assistant_text() -> None:
    payload = map_span(make_span(attributes={
        "llm.prompts.0.prompt.text": "Say hi", "llm.choices.0.completion.text": "hi"})).payload
    assert payload["input"] == [{"role": "user", "parts": [text("Say hi")]}]
    assert payload["output"] == [{"role": "assistant", "parts": [text("hi")]}]


def test_openinference_multimodal_contents_keep_every_part() -> None:
    contents = f"{IM}.0.message.contents"
    payload = map_span(make_span(attributes={
        f"{IM}.0.message.role": "user",
        f"{contents}.0.message_content.type": "text", f"{contents}.0.message_content.text": "what is this?",
        f"{contents}.1.message_content.type": "image",
        f"{contents}.1.message_content.image.image.url": "https://example.com/cat.png",
        f"{contents}.2.message_content.type": "image",
        f"{contents}.2.message_content.image.image.url": "data:image/png;base64,iVBORw0K",
        f"{contents}.3.message_content.type": "audio",
        f"{contents}.3.message_content.audio.audio.url": "https://example.com/a.wav",
        f"{contents}.3.message_content.audio.audio.mime_type": "audio/wav",
        f"{contents}.3.message_content.audio.audio.transcript": "meow",
        f"{contents}.4.message_content.type": "hologram", f"{contents}.4.message_content.hologram.id": "h1",
        f"{contents}.5.message_content.type": "image",  # no URL: kept as sent
    })).payload  # fmt: skip
    assert payload["input"][0]["parts"] == [
        text("what is this?"),
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0K"},
        {"type": "uri", "modality": "audio", "uri": "https://example.com/a.wav", "mime_type": "audio/wav",
         "transcript": "meow"},
        {"type": "hologram", "hologram": {"id": "h1"}},
        {"type": "image"},
    ]


def test_openai_and_anthropic_content_items_in_legacy_content_json() -> None:
    blocks = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", "is_error": False},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png", "detail": "high"}},
    ]
    payload = map_span(make_span(attributes={
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps(blocks)})).payload
    assert payload["input"][0]["parts"] == [
        {"type": "reasoning", "content": "hmm", "signature": "sig"},
        {"type": "blob", "modality": "image", "content": "/9j/", "mime_type": "image/jpeg"},
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "UklG"},
        {"type": "tool_call", "id": "toolu_1", "name": "weather", "arguments": {"city": "Paris"}},
        {"type": "tool_call_response", "id": "toolu_1", "response": "sunny", "is_error": False},
        {"type": "uri", "modality": "image", "uri": "https://example.com/x.png"},
    ]


def test_message_fields_no_row_reads_are_kept() -> None:
    found = to_genai_message({"role": "assistant", "content": "x", "name": "bot", "refusal": None}, "output")
    assert found == {"role": "assistant", "parts": [text("x")], "name": "bot", "refusal": None}


def test_current_shape_is_a_fixed_point() -> None:
    once = to_genai_messages(CONVERSATION + ANSWER, "input")
    assert once == CONVERSATION + ANSWER
    assert to_genai_messages(once, "input") == once


# --- what does not fit ---------------------------------------------------------------------------------------
def test_gaps_in_indices_keep_order_and_close_up() -> None:
    payload = map_span(make_span(attributes={
        f"{IM}.5.message.role": "user", f"{IM}.5.message.content": "third",
        f"{IM}.0.message.role": "user", f"{IM}.0.message.content": "first",
        f"{IM}.2.message.content": "second",  # no role: the input side's default
    })).payload  # fmt: skip
    assert [m["parts"][0]["content"] for m in payload["input"]] == ["first", "second", "third"]
    assert [m["role"] for m in payload["input"]] == ["user", "user", "user"]


def test_an_index_too_long_to_be_one_is_left_in_the_attributes() -> None:
    key = f"{IM}.{'9' * 40}.message.content"
    payload = map_span(make_span(attributes={f"{IM}.0.message.content": "hi", key: "x"})).payload
    assert payload["input"] == [{"role": "user", "parts": [text("hi")]}]
    assert payload["attributes"][key] == "x"


def test_a_nested_index_too_long_to_be_one_is_read_in_index_order() -> None:
    calls = f"{IM}.0.message.tool_calls"
    payload = map_span(make_span(attributes={
        f"{IM}.0.message.role": "assistant",
        f"{calls}.{'1' * 9}.tool_call.function.name": "b", f"{calls}.{'1' * 8}.tool_call.function.name": "a",
    })).payload  # fmt: skip
    assert [part.get("name") for part in payload["input"][0]["parts"]] == ["a", "b"]


@pytest.mark.parametrize(("content", "parts"), [
    (42, [text(42)]), (True, [text(True)]), ("", []), ([1, "two", None], [text(1), text("two")]),
    ({"a": 1}, [text({"a": 1})]), ({"text": "hi"}, [text("hi")]),
])  # fmt: skip
def test_non_string_content_is_kept_as_the_text_value(content: Any, parts: list[Any]) -> None:
    assert to_genai_message({"role": "user", "content": content}, "input")["parts"] == parts


@pytest.mark.parametrize("value", ["plain text", {"messages": []}, 7, None, "", True])
def test_a_value_that_is_not_a_list_is_returned_as_sent(value: Any) -> None:
    assert to_genai_messages(value, "input") == value


def test_items_that_are_not_messages_and_roles_that_are_not_text() -> None:
    assert to_genai_messages([None, "hi", 3, {"role": 5, "content": "x"}, {"role": ""}], "output") == [
        {"role": "assistant", "parts": [text("hi")]}, {"role": "assistant", "parts": [text(3)]},
        {"role": "assistant", "parts": [text("x")]}, {"role": "assistant", "parts": []}]


def test_deeply_nested_content_is_capped_not_fatal() -> None:
    deep = "[" * 5000 + "]" * 5000
    payload = map_span(make_span(attributes={"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": deep})).payload
    assert payload["input"][0]["role"] == "user"
    assert json.dumps(payload)  # JSON-compatible: depth capped by json_value


def test_garbage_list_fields_become_parts_without_raising() -> None:
    found = to_genai_message({"role": "assistant", "tool_calls": "nope", "contents": 5, "parts": {"x": 1},
                              "function_call": [1]}, "output")
    assert found["role"] == "assistant" and all(isinstance(part, dict) for part in found["parts"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["role", "content", "parts", "type", "text", "tool_calls", "function", "id", "name",
                         "arguments", "contents", "image", "url", "source", "data", "tool_call_id", "x"]),
        inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON, side=st.sampled_from(["input", "output"]))
def test_any_json_value_is_normalized_without_raising(value: Any, side: Any) -> None:
    found = to_genai_messages(value, side)
    if isinstance(value, list):
        assert all(isinstance(m["role"], str) and isinstance(m["parts"], list) for m in found)
        assert to_genai_messages(found, side) == found  # normalizing twice changes nothing
        for message in found:
            assert _is_current(message)  # so the second pass took the fast path...
            assert _converted(message, side) == message  # ...which gives what the conversion would
    else:
        assert found is value


@settings(max_examples=300, deadline=None)
@given(item=JSON, side=st.sampled_from(["input", "output"]))
def test_the_fast_path_takes_only_messages_the_conversion_would_leave_unchanged(item: Any, side: Any) -> None:
    if isinstance(item, dict) and _is_current(item):
        assert _converted(item, side) == item
