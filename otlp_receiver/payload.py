"""A step's JSON payload: input/output resolved per semconv.md §6.2, plus the rest of the span.

Shape: ``{"input", "output", "attributes", "events", "links", "status", "kind", "resource"}``, keys with
empty values left out. ``attributes`` keeps every span attribute not consumed into ``input``/``output``.
JSON strings holding objects or arrays are parsed; flattened message lists (OpenInference
``llm.input_messages.N.message.*``, legacy ``gen_ai.prompt.N.*``) are rebuilt into lists; chat messages of
every convention are stored in the current GenAI shape (``otlp_receiver.messages``); GenAI content span
events (``content_events``) fill a side no attribute gave, and keep in ``events`` only what is not stored
in ``input``/``output`` already (content is stored, hashed and diffed once). Every value is made
JSON-compatible (bytes → base64, non-finite floats and out-of-range ints → strings, depth capped), and
nothing here raises on a bad attribute value.

Pure: imports the standard library and ``otlp_receiver``'s model, conventions and JSON helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from otlp_receiver.content_events import (
    CONTENT_EVENT_NAMES,
    ContentEvent,
    content_messages,
    drop_lifted_content,
    span_event_fields,
    system_message,
)
from otlp_receiver.conventions import Attributes
from otlp_receiver.json_value import parse_json_text, to_json_value
from otlp_receiver.key_profile import KeyProfile, key_profile
from otlp_receiver.messages import Side, to_genai_messages
from otlp_receiver.model import Span, StepType

Resolved = tuple[Any, frozenset[str]]
"""A resolved value and the attribute keys it consumed."""
Source = Callable[[Span, KeyProfile], Resolved | None]
"""Finds a value in a span, given the profile of its attribute keys."""

_MAX_FLAT_SEGMENTS: Final = 16
_MAX_INDEX_DIGITS: Final = 6
_UNWRAP: Final = frozenset({"message", "message_content", "tool_call", "prompt", "completion", "document"})


# --- Sources of input and output ----------------------------------------------------------------------
def _attribute(key: str) -> Source:
    def attribute(span: Span, profile: KeyProfile) -> Resolved | None:
        value = span.attributes.get(key)
        if value is None or value == "":
            return None
        return parse_json_text(value), frozenset({key})

    return attribute


def _messages_with_system(messages_key: str, system_key: str) -> Source:
    """GenAI messages, with ``gen_ai.system_instructions`` prepended as a system message."""

    messages_source, system_source = _attribute(messages_key), _attribute(system_key)

    def messages_with_system(span: Span, profile: KeyProfile) -> Resolved | None:
        found, system = messages_source(span, profile), system_source(span, profile)
        if system is None:
            return found
        if found is None:
            return [system_message(system[0])], system[1]
        if not isinstance(found[0], list):
            return found
        return [system_message(system[0]), *found[0]], found[1] | system[1]

    return messages_with_system


def _messages(source: Source, side: Side) -> Source:
    """``source``'s value as current-shape GenAI messages (``otlp_receiver.messages``) when it is a list."""

    def messages(span: Span, profile: KeyProfile) -> Resolved | None:
        found = source(span, profile)
        return None if found is None else (to_genai_messages(found[0], side), found[1])

    return messages


def _with_finish_reason(source: Source, key: str) -> Source:
    """OpenInference's one ``llm.finish_reason`` moved into the output message when there is exactly one."""

    def with_finish_reason(span: Span, profile: KeyProfile) -> Resolved | None:
        found = source(span, profile)
        reason = span.attributes.get(key)
        if found is None or not isinstance(reason, str) or not reason:
            return found
        messages, used = found
        if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict) \
                and "finish_reason" not in messages[0]:
            return [{**messages[0], "finish_reason": reason}], used | {key}
        return found

    return with_finish_reason


def _flattened(prefix: str) -> Source:
    """A list rebuilt from ``<prefix><index>.<path>`` attributes (OpenInference/OpenLLMetry flattening)."""

    def flattened(span: Span, profile: KeyProfile) -> Resolved | None:
        keys = profile.prefixed(prefix)
        if not keys:
            return None
        root: dict[Any, Any] = {}
        attrs = span.attributes
        consumed = {key for key in keys if _insert_flat(root, prefix, key, attrs[key])}
        if not consumed:
            return None
        return _rebuild(root, 0), frozenset(consumed)

    return flattened


def _span_content_events(side: str) -> Source:
    """Content carried on the span's GenAI events (``content_events``); consumes no attribute.

    ``side`` is ``"input"`` or ``"output"``. The events stay in the payload's ``events``, without the
    content this (or an attribute carrying the same messages) put into the side (``drop_lifted_content``).
    """

    def span_content_events(span: Span, profile: KeyProfile) -> Resolved | None:
        if not span.events:
            return None
        events = [ContentEvent(event.name, span_event_fields(event.attributes))
                  for event in span.events if event.name in CONTENT_EVENT_NAMES]
        found = getattr(content_messages(events), side) if events else None
        return None if found is None else (found, frozenset())

    return span_content_events


# --- Flattened lists ----------------------------------------------------------------------------------
def _segment(text: str) -> int | str:
    if text.isascii() and text.isdigit() and len(text) <= _MAX_INDEX_DIGITS:
        return int(text)
    return text


def _insert_flat(root: dict[Any, Any], prefix: str, key: Any, value: Any) -> bool:
    """Insert one flattened attribute under ``root``; False (not consumed) when it doesn't fit."""
    if not isinstance(key, str) or not key.startswith(prefix):
        return False
    path = [_segment(part) for part in key[len(prefix) :].split(".")]
    if not isinstance(path[0], int) or len(path) > _MAX_FLAT_SEGMENTS:
        return False
    node = root
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        node = child
    if path[-1] in node:
        return False
    node[path[-1]] = parse_json_text(value)
    return True


def _rebuild(node: Any, depth: int) -> Any:
    """Dicts keyed by indices become lists (sparse indices compacted, in index order); OpenInference wrappers
    unwrapped. A top-level index too long to be one was not consumed (``_insert_flat``); a nested one still
    orders its list."""
    if not isinstance(node, dict) or depth > _MAX_FLAT_SEGMENTS:
        return node
    if node and all(isinstance(key, int) or _is_long_index(key) for key in node):
        return [_unwrap(_rebuild(node[index], depth + 1)) for index in sorted(node, key=_index_order)]
    return {str(key): _rebuild(item, depth + 1) for key, item in node.items()}


def _is_long_index(key: Any) -> bool:
    """A nested index with more digits than ``_segment`` reads as a number (ordered as text, never parsed)."""
    return isinstance(key, str) and key.isascii() and key.isdigit()


def _index_order(key: int | str) -> tuple[int, str]:
    text = str(key).lstrip("0") or "0"  # numeric order of any length, without int() on a huge string
    return len(text), text


def _unwrap(item: Any) -> Any:
    if isinstance(item, dict) and len(item) == 1:
        ((key, inner),) = item.items()
        if key in _UNWRAP and isinstance(inner, dict):
            return inner
    return item


# --- Precedence (§6.2 "model input / output", "tool input / output") ------------------------------------
# Every span attribute wins over every span event: events only fill a side no attribute spoke about.
# (§6.2 lists Vercel's ``ai.prompt.messages``/``ai.response.text`` after the events; Vercel never sends
# content events, and "attributes first" is the rule a reader can predict.) Content events correlated
# through OTLP logs come last of all: they never change a stored model step (steps are append-only and
# hash-chained) but become their own step under it (``log_content``).
# Chat messages, whichever convention sent them, are stored in the current GenAI shape (``_messages``), so
# the same conversation diffs equal across instrumentations and readers know one shape.
MODEL_INPUT: Final[tuple[Source, ...]] = (
    _messages(_messages_with_system("gen_ai.input.messages", "gen_ai.system_instructions"), "input"),
    _messages(_flattened("llm.input_messages."), "input"),
    _messages(_flattened("llm.prompts."), "input"),
    _messages(_flattened("gen_ai.prompt."), "input"),
    _attribute("input.value"),
    _messages(_attribute("gen_ai.prompt"), "input"),
    _attribute("ai.prompt.messages"),
    _attribute("ai.prompt"),
    _attribute("traceloop.entity.input"),
    _attribute("gen_ai.guardrail.content.input.value"),
    _span_content_events("input"),
)
MODEL_OUTPUT: Final[tuple[Source, ...]] = (
    _messages(_attribute("gen_ai.output.messages"), "output"),
    _with_finish_reason(_messages(_flattened("llm.output_messages."), "output"), "llm.finish_reason"),
    _messages(_flattened("llm.choices."), "output"),
    _messages(_flattened("gen_ai.completion."), "output"),
    _attribute("output.value"),
    _messages(_attribute("gen_ai.completion"), "output"),
    _attribute("ai.response.text"),
    _attribute("ai.response.object"),
    _attribute("ai.response.toolCalls"),
    _attribute("traceloop.entity.output"),
    _attribute("gen_ai.guardrail.content.output.value"),
    _span_content_events("output"),
)
TOOL_INPUT: Final[tuple[Source, ...]] = (
    _attribute("gen_ai.tool.call.arguments"),
    _attribute("input.value"),
    _attribute("tool.parameters"),
    _attribute("traceloop.entity.input"),
    _attribute("ai.toolCall.args"),
    _attribute("ai.toolCall.input"),
    _attribute("gen_ai.retrieval.query.text"),
    *MODEL_INPUT,
)
TOOL_OUTPUT: Final[tuple[Source, ...]] = (
    _attribute("gen_ai.tool.call.result"),
    _attribute("output.value"),
    _attribute("traceloop.entity.output"),
    _attribute("ai.toolCall.result"),
    _attribute("ai.toolCall.output"),
    _attribute("gen_ai.retrieval.documents"),
    *MODEL_OUTPUT,
)


def _first_resolved(sources: tuple[Source, ...], span: Span, profile: KeyProfile) -> Resolved:
    for source in sources:
        found = source(span, profile)
        if found is not None:
            return found
    return None, frozenset()


# --- The payload ----------------------------------------------------------------------------------------
_PLAIN: Final = frozenset({str, bool, type(None)})
"""Value types ``to_json_value`` returns unchanged (tested first: most attribute values are strings)."""


def _json_mapping(attrs: Attributes, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {key if type(key) is str else str(key): value if type(value) in _PLAIN else to_json_value(value)
            for key, value in attrs.items() if key not in skip}


_last_resource: tuple[Attributes | None, dict[str, Any]] = (None, {})


def _json_resource(resource: Attributes) -> dict[str, Any]:
    """``_json_mapping(resource)``, shared by consecutive spans of one resource (decode gives them one dict)."""
    global _last_resource
    cached, found = _last_resource  # one tuple read: safe when threads interleave
    if cached is not resource:
        found = _json_mapping(resource)
        _last_resource = (resource, found)
    return found


def _status(span: Span) -> dict[str, Any] | None:
    if not span.status_code and not span.status_message:
        return None
    status: dict[str, Any] = {"code": to_json_value(span.status_code)}
    if span.status_message:
        status["message"] = to_json_value(span.status_message)
    return status


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def build_payload(span: Span, step_type: StepType, profile: KeyProfile | None = None) -> dict[str, Any]:
    """The step payload of a span already classified as ``step_type`` (``profile``: of its attribute keys).

    Keys with empty values are left out. The ``resource`` dict may be shared with other payloads: like
    the rest of a payload, it is never changed once built.
    """
    profile = profile or key_profile(span.attributes)
    is_tool = step_type is StepType.TOOL
    step_input, used_in = _first_resolved(TOOL_INPUT if is_tool else MODEL_INPUT, span, profile)
    step_output, used_out = _first_resolved(TOOL_OUTPUT if is_tool else MODEL_OUTPUT, span, profile)
    payload: dict[str, Any] = {}
    if not _is_empty(step_input):
        payload["input"] = step_input
    if not _is_empty(step_output):
        payload["output"] = step_output
    if attributes := _json_mapping(span.attributes, used_in | used_out):
        payload["attributes"] = attributes
    if span.events:
        events = [{"name": event.name, "time_ns": event.time_ns, "attributes": _json_mapping(event.attributes)}
                  for event in span.events]
        payload["events"] = drop_lifted_content(events, step_input, step_output)
    if span.links:
        payload["links"] = [{"trace_id": link.trace_id, "span_id": link.span_id,
                             "attributes": _json_mapping(link.attributes)} for link in span.links]
    if status := _status(span):
        payload["status"] = status
    kind = to_json_value(span.kind)
    if not _is_empty(kind):
        payload["kind"] = kind
    if resource := _json_resource(span.resource):
        payload["resource"] = resource
    return payload
