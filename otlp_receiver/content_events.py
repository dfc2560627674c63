"""GenAI content events → a model call's input and output messages (semconv.md §1.4).

Content that is not in span attributes arrives as *events*, on the span or as OTLP log records correlated
to it (trace_id/span_id). Three generations are read:

- v1.26–1.27, span events ``gen_ai.content.prompt`` / ``gen_ai.content.completion``: the whole message
  list as JSON text in ``gen_ai.prompt`` / ``gen_ai.completion`` (OpenAI-style messages);
- v1.28–1.36, one event per message: ``gen_ai.{system,user,assistant,tool}.message`` with body
  ``{content, role?, tool_calls?[{id, type, function{name, arguments}}], id? (tool)}`` and ``gen_ai.choice``
  with body ``{index, finish_reason, message{role, content, tool_calls}}``. Over logs the body is the log
  record's body; on span events it is in the attributes, either as the fields themselves (``content``,
  ``role`` …) or as one JSON text in ``gen_ai.event.content`` (Azure AI Inference, Semantic Kernel);
  the body field names come from third-party code, not a published schema (semconv.md §10), so both
  forms are read leniently;
- current, ``gen_ai.client.inference.operation.details``: ``gen_ai.input.messages``,
  ``gen_ai.output.messages`` and ``gen_ai.system_instructions`` in the attributes (structured values or
  JSON text), already in the current message schema.

Every generation is rebuilt into the current schema (``otlp_receiver.messages``), the shape
``gen_ai.input.messages`` gives: ``[{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call",
"id", "name", "arguments"} | {"type": "tool_call_response", "id", "response"} | …]}]``, output messages
with ``finish_reason``. Within one span, ``operation.details`` wins over per-message events (an emitter in
``SPAN_AND_EVENT``-style modes may send both).

Content is stored once: :func:`drop_lifted_content` takes out of a payload's ``events`` the body fields
whose content the payload's ``input``/``output`` already hold, and marks each such event with
``content_in`` (the sides that hold it); the event itself (name, time, other attributes) stays for the
timeline. It works on the payload's JSON form, so the diff applies the same rule to payloads stored
before it existed.

Pure: imports the standard library and ``otlp_receiver``'s JSON and message helpers; never raises on bad
values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from otlp_receiver.json_value import parse_json_text, to_json_value
from otlp_receiver.messages import Side, to_genai_message, to_genai_messages

SYSTEM_MESSAGE: Final = "gen_ai.system.message"
USER_MESSAGE: Final = "gen_ai.user.message"
ASSISTANT_MESSAGE: Final = "gen_ai.assistant.message"
TOOL_MESSAGE: Final = "gen_ai.tool.message"
CHOICE: Final = "gen_ai.choice"
CONTENT_PROMPT: Final = "gen_ai.content.prompt"
CONTENT_COMPLETION: Final = "gen_ai.content.completion"
OPERATION_DETAILS: Final = "gen_ai.client.inference.operation.details"
EVENT_CONTENT: Final = "gen_ai.event.content"
"""Span-event attribute holding the whole event body as JSON text (Azure AI Inference, Semantic Kernel)."""

INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"

_ROLES: Final = {SYSTEM_MESSAGE: "system", USER_MESSAGE: "user", ASSISTANT_MESSAGE: "assistant",
                 TOOL_MESSAGE: "tool"}
_WHOLE_LIST: Final = {CONTENT_PROMPT: "gen_ai.prompt", CONTENT_COMPLETION: "gen_ai.completion"}
CONTENT_EVENT_NAMES: Final = frozenset({*_ROLES, CHOICE, OPERATION_DETAILS, *_WHOLE_LIST})
"""Every event name this module reads content from."""
CONTENT_IN: Final = "content_in"
"""Key of a payload event whose content was taken out: the payload sides that hold it (``["input"]``…)."""

_BODY_FIELDS: Final = ("role", "content", "tool_calls", "id")
_MESSAGE_FIELDS: Final = frozenset(_BODY_FIELDS)
_LIFTED_FIELDS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    **{name: {"input": _MESSAGE_FIELDS} for name in _ROLES},
    CHOICE: {"output": _MESSAGE_FIELDS | {"message", "finish_reason", "index"}},
    CONTENT_PROMPT: {"input": frozenset({_WHOLE_LIST[CONTENT_PROMPT]})},
    CONTENT_COMPLETION: {"output": frozenset({_WHOLE_LIST[CONTENT_COMPLETION]})},
    OPERATION_DETAILS: {"input": frozenset({INPUT_MESSAGES, SYSTEM_INSTRUCTIONS}),
                        "output": frozenset({OUTPUT_MESSAGES})},
}
"""Event name → payload side → the body fields :func:`content_messages` builds that side from."""


@dataclass(frozen=True, slots=True)
class ContentEvent:
    """One GenAI content event: its name and its body fields (see :func:`span_event_fields`)."""

    name: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Messages:
    """A model call's content rebuilt from events: ``None`` on a side no event spoke about."""

    input: Any = None
    output: Any = None


# --- Body fields --------------------------------------------------------------------------------------
def span_event_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A span event's body fields: its attributes, with ``gen_ai.event.content`` JSON spread over them."""
    fields = dict(attributes)
    fields.update(_as_dict(fields.pop(EVENT_CONTENT, None)))
    return fields


def log_record_fields(body: Any, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A log record's body fields: its attributes with the body's fields over them.

    A body that is not a map (nor JSON text of one) is taken as the message ``content``.
    """
    fields = dict(attributes)
    found = _as_dict(body)
    if found:
        fields.update(found)
    elif body is not None and body != "":
        fields["content"] = body
    return fields


# --- Messages -----------------------------------------------------------------------------------------
def content_messages(events: Iterable[ContentEvent]) -> Messages:
    """The input and output messages the content events among ``events`` carry (others are ignored)."""
    details: list[ContentEvent] = []
    inputs: list[Any] = []
    choices: list[tuple[int, dict[str, Any]]] = []
    outputs: list[Any] = []
    for event in events:
        if event.name == OPERATION_DETAILS:
            details.append(event)
        elif event.name in _ROLES:
            inputs.append(_message(_text_or(event.fields.get("role"), _ROLES[event.name]), event.fields, "input"))
        elif event.name == CHOICE:
            choices.append(_choice(event.fields, len(choices)))
        elif event.name in _WHOLE_LIST:
            value = event.fields.get(_WHOLE_LIST[event.name])
            if value is not None and value != "":
                side: Side = "input" if event.name == CONTENT_PROMPT else "output"
                found = to_genai_messages(parse_json_text(value), side)
                (inputs if side == "input" else outputs).extend(found if isinstance(found, list) else [found])
    if details:
        return _details(details)
    outputs.extend(message for _, message in sorted(choices, key=lambda pair: pair[0]))
    return Messages(input=inputs or None, output=outputs or None)


# --- Stored once ---------------------------------------------------------------------------------------
def drop_lifted_content(events: list[Any], stored_input: Any, stored_output: Any) -> list[Any]:
    """Payload-form ``events`` (``{"name", "time_ns", "attributes"}``) without the content stored elsewhere.

    A side (``input``/``output``) counts as stored when the messages the content events give for it
    equal the payload's value for it, whichever source won (events, or an attribute carrying the same
    messages). From each event that built a stored side, the body fields it was built from are removed
    (from its attributes and from a ``gen_ai.event.content`` JSON body) and ``content_in`` lists the
    sides; every other event, and any content that was not stored, is kept as sent. Returns ``events``
    itself when nothing changes.
    """
    content = [ContentEvent(event["name"], span_event_fields(_mapping(event.get("attributes"))))
               for event in events if _is_content_event(event)]
    if not content:
        return events
    found = content_messages(content)
    sides = frozenset(side for side, built, stored in (("input", found.input, stored_input),
                                                       ("output", found.output, stored_output))
                      if built is not None and built == stored)
    if not sides:
        return events
    used = {OPERATION_DETAILS} if any(event.name == OPERATION_DETAILS for event in content) else None
    return [_without_lifted(event, sides) if _is_content_event(event) and (used is None or event["name"] in used)
            else event for event in events]


def _is_content_event(event: Any) -> bool:
    """A content event not yet stripped (stored payloads may hold anything: REST steps, older versions)."""
    if not isinstance(event, dict) or CONTENT_IN in event:
        return False
    name = event.get("name")
    return isinstance(name, str) and name in CONTENT_EVENT_NAMES


def _without_lifted(event: dict[str, Any], sides: frozenset[str]) -> dict[str, Any]:
    by_side = _LIFTED_FIELDS[event["name"]]
    held = sorted(side for side in by_side if side in sides)
    if not held:
        return event
    lifted = frozenset().union(*(by_side[side] for side in held))
    attributes = _mapping(event.get("attributes"))
    body = _as_dict(attributes.get(EVENT_CONTENT))
    kept = {key: value for key, value in attributes.items()
            if key != EVENT_CONTENT and not (key in lifted and key not in body)}
    if EVENT_CONTENT in attributes and not body:
        kept[EVENT_CONTENT] = attributes[EVENT_CONTENT]  # not a JSON body: nothing was read from it
    elif rest := {key: value for key, value in body.items() if key not in lifted}:
        kept[EVENT_CONTENT] = rest
    out = {key: value for key, value in event.items() if key != "attributes"}
    if kept or "attributes" in event:
        out["attributes"] = kept
    out[CONTENT_IN] = held
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def system_message(instructions: Any) -> dict[str, Any]:
    """``gen_ai.system_instructions`` (a list of parts, or one text) as a leading system message."""
    parts = instructions if isinstance(instructions, list) else [{"type": "text", "content": instructions}]
    return {"role": "system", "parts": parts}


def _details(events: list[ContentEvent]) -> Messages:
    inputs: list[Any] = []
    outputs: list[Any] = []
    for event in events:
        instructions = _present(parse_json_text(event.fields.get(SYSTEM_INSTRUCTIONS)))
        if instructions is not None:
            inputs.append(system_message(instructions))
        inputs.extend(_as_messages(event.fields.get(INPUT_MESSAGES), "input"))
        outputs.extend(_as_messages(event.fields.get(OUTPUT_MESSAGES), "output"))
    return Messages(input=inputs or None, output=outputs or None)


def _choice(fields: Mapping[str, Any], order: int) -> tuple[int, dict[str, Any]]:
    message = _as_dict(fields.get("message")) or fields
    out = _message(_text_or(message.get("role"), "assistant"), message, "output")
    finish_reason = fields.get("finish_reason")
    if finish_reason is not None and finish_reason != "":
        out["finish_reason"] = to_json_value(finish_reason)
    index = fields.get("index")
    return (index if isinstance(index, int) and not isinstance(index, bool) else order), out


def _message(role: str, fields: Mapping[str, Any], side: Side) -> dict[str, Any]:
    """A per-message event body in the current shape; only its body fields are read (not ``gen_ai.system``…)."""
    body = {key: parse_json_text(fields[key]) if key == "tool_calls" else to_json_value(fields[key])
            for key in _BODY_FIELDS if key in fields}
    body["role"] = role
    return to_genai_message(body, side)


def _as_messages(value: Any, side: Side) -> list[Any]:
    found = parse_json_text(value)
    if found is None or found == "":
        return []
    return to_genai_messages(found, side) if isinstance(found, list) else [found]


def _as_dict(value: Any) -> dict[str, Any]:
    found = parse_json_text(value) if isinstance(value, str) else value
    return {str(key): item for key, item in found.items()} if isinstance(found, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    found = parse_json_text(value) if isinstance(value, str) else value
    if isinstance(found, list | tuple):
        return list(found)
    return [found] if isinstance(found, Mapping) else []


def _present(value: Any) -> Any:
    return None if value is None or value == "" else value


def _text_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default
