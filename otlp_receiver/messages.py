"""Chat messages as each instrumentation spells them → the current GenAI message shape (semconv.md §1.4).

The one place that knows the message shapes of the wild. The current shape is
``[{"role", "parts": [part, …], "name"?, "finish_reason"?}]`` with parts ``{"type": "text", "content"}``,
``{"type": "tool_call", "id"?, "name", "arguments"}``, ``{"type": "tool_call_response", "id"?, "response"}``,
``{"type": "reasoning", "content"}``, ``{"type": "blob", "modality", "mime_type"?, "content"}``,
``{"type": "uri", "modality", "mime_type"?, "uri"}``, and any other ``{"type", …}`` part as sent.

Sources, and the rows that read them (``_PART_FIELDS`` for message fields, ``_CONTENT_TYPES`` for
content items):

- GenAI current (``gen_ai.input/output.messages``, ``operation.details``): ``parts`` (the doc example's
  ``tool_call_response.result`` read as ``response``, JSON-text ``arguments`` parsed);
- GenAI v1.28–1.36 message events, OpenAI chat, legacy OpenLLMetry ``gen_ai.prompt.N.*`` /
  ``gen_ai.completion.N.*``: ``content`` (text, a content item, or a list of them, e.g. OpenAI
  ``image_url`` / ``input_audio``, Anthropic ``image`` / ``tool_use`` / ``tool_result`` / ``thinking``),
  ``tool_calls`` (``{id, function{name, arguments}}`` or flat ``{id, name, arguments}``),
  ``function_call``; on a ``tool`` message the content is the ``tool_call_response`` to ``tool_call_id``
  (``id`` in the GenAI event body);
- OpenInference ``llm.input_messages.N.message.*`` (after ``payload`` rebuilt the list): the above plus
  ``contents`` (``message_content`` items: ``text``, ``image.image.url``, ``audio.audio.{url, mime_type,
  transcript}``, ``video``, ``document``, ``reasoning``, ``tool_use``) and ``function_call_name`` /
  ``function_call_arguments_json``;
- legacy completions (OpenInference ``llm.prompts.N.prompt.text``, ``llm.choices.N.completion.text``):
  ``text``.

What does not fit has one clear outcome, and nothing here raises:

- a value that is not a list is not a message list: it is returned as sent;
- ``None`` items are skipped; an item that is not a map becomes a message with one text part holding it;
- a missing or non-text role is the side's default (``user`` in, ``assistant`` out), ``tool`` for a message
  answering a tool call; LangChain's ``human``/``ai`` are ``user``/``assistant``;
- a list field given as a map (a flattened index too long to be read as one) is read as its values in key
  order, a lone value as a list of one;
- message fields no row reads (``name``, ``finish_reason``, vendor extras) stay on the message as sent, and
  so do the fields of a text, reasoning or tool item that were not converted; content items of an unknown
  type, and media without a readable URL or data, stay as sent (never dropped); of media that is
  converted, the URL or data, mime type and transcript are kept;
- values are not walked: their depth and size were capped where they were decoded (``json_value``).

Pure: imports the standard library and ``otlp_receiver.json_value``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from otlp_receiver.json_value import parse_json_text

Side = Literal["input", "output"]
Part = dict[str, Any]

_DEFAULT_ROLE: Final[Mapping[str, str]] = {"input": "user", "output": "assistant"}
_ROLE_ALIASES: Final[Mapping[str, str]] = {"human": "user", "ai": "assistant"}
_PLAIN_ROLES: Final = frozenset({"system", "user", "assistant", "tool", "developer"})
"""Roles kept as they are without a closer look (the fast path's first test)."""
_TOOL: Final = "tool"


# --- Entry points ---------------------------------------------------------------------------------------
def to_genai_messages(value: Any, side: Side) -> Any:
    """``value`` as a list of current-shape messages; a value that is not a list is returned as sent.

    A list already in the current shape (most spans) is returned as it is, not copied: payloads are never
    modified once built.
    """
    if not isinstance(value, list):
        return value
    for item in value:
        if type(item) is not dict or not _is_current(item):
            return [to_genai_message(item, side) for item in value if item is not None]
    return value


def to_genai_message(item: Any, side: Side) -> dict[str, Any]:
    """One message in the current shape (see the module docstring for every source shape read).

    A message already in it is returned as it is, not copied (payloads are never modified once built).
    """
    if type(item) is dict and _is_current(item):
        return item
    return _converted(item, side)


def _converted(item: Any, side: Side) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        return {"role": _DEFAULT_ROLE[side], "parts": [_text(item)]}
    role = _role(item, side)
    parts: list[Part] = []
    for key, read in _PART_FIELDS:
        value = item.get(key)
        if value is not None:
            parts.extend(read(value, item, role))
    if role == _TOOL and "parts" not in item and "content" not in item and _call_id(item) is not None:
        parts.append(_tool_response(_call_id(item), None))
    message: dict[str, Any] = {"role": role, "parts": parts}
    consumed = _TOOL_MESSAGE_KEYS if role == _TOOL else _READ_KEYS
    message.update((str(key), value) for key, value in item.items() if key not in consumed)
    return message


# --- Already current (the fast path: most spans are current GenAI) ----------------------------------------
def _is_current(item: dict[str, Any]) -> bool:
    """Whether :func:`to_genai_message` would give ``item`` back unchanged (checked, not converted)."""
    role, parts = item.get("role"), item.get("parts")
    if type(parts) is not list or type(role) is not str:
        return False
    if role not in _PLAIN_ROLES and (not role or role.lower() in _ROLE_ALIASES):
        return False
    if not _CONVERTED_KEYS.isdisjoint(item) or (role == _TOOL and ("tool_call_id" in item or "id" in item)):
        return False
    for part in parts:
        if type(part) is not dict:
            return False
        if part.get("type") == "text":  # most parts: checked inline
            if "content" not in part or "text" in part:
                return False
        elif not _is_current_part(part):
            return False
    return True


def _is_current_part(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    if type(kind) is not str:
        return False
    if kind == "text" or kind == "reasoning":
        return "content" in part and "text" not in part and "thinking" not in part
    if kind == "tool_call":
        arguments = part.get("arguments")
        return not ("function" in part or "input" in part
                    or (type(arguments) is str and arguments.lstrip()[:1] in ("{", "[")))
    if kind == "tool_call_response":
        return "response" in part and "result" not in part and "content" not in part and "tool_use_id" not in part
    return kind not in _CONTENT_TYPES


# --- Message fields -------------------------------------------------------------------------------------
def _role(item: Mapping[str, Any], side: Side) -> str:
    role = item.get("role")
    if isinstance(role, str) and role:
        return _ROLE_ALIASES.get(role.lower(), role)
    return _TOOL if item.get("tool_call_id") is not None else _DEFAULT_ROLE[side]


def _call_id(item: Mapping[str, Any]) -> Any:
    found = item.get("tool_call_id")
    return item.get("id") if found is None else found


def _given_parts(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [_content_item(part) for part in _items(value)]


def _content(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    if role == _TOOL and "parts" not in item:
        return [_tool_response(_call_id(item), value)]
    if value == "":
        return []
    if isinstance(value, list | tuple):
        return [_content_item(part) for part in value if part is not None and part != ""]
    if isinstance(value, Mapping):
        return [_content_item(value)]
    return [_text(value)]


def _contents(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [_content_item(part) for part in _items(value)]


def _legacy_text(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [] if "content" in item or "parts" in item else [_text(value)]


def _tool_calls(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [_tool_call(call) for call in _items(value)]


def _function_call(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [_tool_call(value)]


def _openinference_function_call(value: Any, item: Mapping[str, Any], role: str) -> list[Part]:
    return [_tool_call({"name": value, "arguments": item.get("function_call_arguments_json")})]


_PART_FIELDS: Final[tuple[tuple[str, Callable[[Any, Mapping[str, Any], str], list[Part]]], ...]] = (
    ("parts", _given_parts),
    ("content", _content),
    ("contents", _contents),
    ("text", _legacy_text),
    ("tool_calls", _tool_calls),
    ("function_call", _function_call),
    ("function_call_name", _openinference_function_call),
)
"""Message field → its parts, in this order (attribute order differs between emitters; part order must not)."""
_READ_KEYS: Final = frozenset({"role", *(key for key, _ in _PART_FIELDS), "function_call_arguments_json"})
_CONVERTED_KEYS: Final = _READ_KEYS - {"role", "parts"}
_TOOL_MESSAGE_KEYS: Final = _READ_KEYS | {"tool_call_id", "id"}


# --- Parts ----------------------------------------------------------------------------------------------
def _text(value: Any) -> Part:
    return {"type": "text", "content": value}


def _tool_response(call_id: Any, response: Any) -> Part:
    part: Part = {"type": "tool_call_response"}
    if call_id is not None and call_id != "":
        part["id"] = call_id
    part["response"] = response
    return part


def _tool_call(call: Any) -> Part:
    fields = call if isinstance(call, Mapping) else {}
    function = fields.get("function")
    function = function if isinstance(function, Mapping) else {}
    part: Part = {"type": "tool_call"}
    for key, value in (("id", fields.get("id")), ("name", function.get("name", fields.get("name"))),
                       ("arguments", function.get("arguments", fields.get("arguments", fields.get("input"))))):
        if value is not None and value != "":
            part[key] = parse_json_text(value) if key == "arguments" else value
    return part


def _content_item(item: Any) -> Part:
    """One content item or part: a known type converted, any other typed part kept, an untyped value as text."""
    if not isinstance(item, Mapping):
        return _text(item)
    kind = item.get("type")
    if isinstance(kind, str):
        convert = _CONTENT_TYPES.get(kind)
        return convert(item) if convert is not None else {str(key): value for key, value in item.items()}
    if "text" in item:
        return _text(item["text"])
    return _text(dict(item))


def _text_item(item: Mapping[str, Any]) -> Part:
    return _with_rest(item, _text(item["content"] if "content" in item else item.get("text")), ("text",))


def _reasoning_item(item: Mapping[str, Any]) -> Part:
    key = next((key for key in ("content", "text", "thinking") if key in item), "content")
    return _with_rest(item, {"type": "reasoning", "content": item.get(key)}, ("text", "thinking"))


def _tool_call_item(item: Mapping[str, Any]) -> Part:
    return _with_rest(item, _tool_call(item), ("function", "input"))


def _tool_response_item(item: Mapping[str, Any]) -> Part:
    key = next((key for key in ("response", "result", "content") if key in item), "response")
    part = _tool_response(item.get("id", item.get("tool_use_id")), item.get(key))
    return _with_rest(item, part, ("result", "content", "tool_use_id"))


def _with_rest(item: Mapping[str, Any], part: Part, read: tuple[str, ...]) -> Part:
    """``part`` plus the item's fields that were not read into it (vendor extras are kept, not dropped)."""
    rest = {str(key): value for key, value in item.items() if key not in part and key not in read}
    return {**part, **rest} if rest else part


def _media(modality: str) -> Callable[[Mapping[str, Any]], Part]:
    """A media item (OpenInference ``image.image.url``, OpenAI ``image_url.url``, Anthropic ``source``…)."""

    def media(item: Mapping[str, Any]) -> Part:
        found = _media_source(item, modality)
        if found is None:
            return {str(key): value for key, value in item.items()}  # nothing readable: kept as sent
        container, location = found
        part = _from_location(location, modality)
        mime = _first_text(container, ("mime_type", "mimeType", "media_type"))
        if mime is not None and "mime_type" not in part:
            part["mime_type"] = mime
        if (transcript := container.get("transcript")) is not None:
            part["transcript"] = transcript
        return part

    return media


_MEDIA_KEYS: Final = ("url", "uri", "data")


def _media_source(item: Mapping[str, Any], modality: str) -> tuple[Mapping[str, Any], tuple[str, str]] | None:
    """The map holding the media and its ``(kind, value)``: ``url``/``uri`` or base64 ``data``."""
    candidates: list[Any] = [item.get(modality), item.get(f"{modality}_url"), item.get(f"input_{modality}"),
                             item.get("source"), item]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return item, ("url", candidate)
        if isinstance(candidate, Mapping):
            inner = candidate.get(modality)  # OpenInference nests ``image.image.url``
            container = inner if isinstance(inner, Mapping) else candidate
            for key in _MEDIA_KEYS:
                value = container.get(key)
                if isinstance(value, str) and value:
                    return container, (key, value)
    return None


def _from_location(location: tuple[str, str], modality: str) -> Part:
    kind, value = location
    if kind == "data":
        return {"type": "blob", "modality": modality, "content": value}
    if value.startswith("data:") and "," in value:
        header, data = value[5:].split(",", 1)
        mime = header.split(";", 1)[0]
        part: Part = {"type": "blob", "modality": modality}
        if mime:
            part["mime_type"] = mime
        part["content"] = data
        return part
    return {"type": "uri", "modality": modality, "uri": value}


def _input_audio(item: Mapping[str, Any]) -> Part:
    """OpenAI ``{"type": "input_audio", "input_audio": {"data", "format"}}``."""
    audio = item.get("input_audio")
    if isinstance(audio, Mapping) and isinstance(audio.get("data"), str):
        part: Part = {"type": "blob", "modality": "audio"}
        if isinstance(audio.get("format"), str):
            part["mime_type"] = f"audio/{audio['format']}"
        part["content"] = audio["data"]
        return part
    return _media("audio")(item)


_CONTENT_TYPES: Final[Mapping[str, Callable[[Mapping[str, Any]], Part]]] = {
    "text": _text_item,
    "input_text": _text_item,
    "output_text": _text_item,
    "reasoning": _reasoning_item,
    "thinking": _reasoning_item,
    "tool_call": _tool_call_item,
    "tool_use": _tool_call_item,
    "tool_call_response": _tool_response_item,
    "tool_result": _tool_response_item,
    "image": _media("image"),
    "image_url": _media("image"),
    "input_image": _media("image"),
    "audio": _media("audio"),
    "input_audio": _input_audio,
    "video": _media("video"),
    "document": _media("document"),
}
"""Content item ``type`` → the current part. Types not listed (``blob``, ``uri``, ``file``, ``server_tool_call``,
``compaction``, vendor types) are current or unknown parts and are kept as sent."""


# --- Helpers --------------------------------------------------------------------------------------------
def _items(value: Any) -> list[Any]:
    """A list field's items: a list as is, a map keyed by indices only (an index too long for ``payload``
    to read as one) by its values in index order, anything else as one item."""
    if isinstance(value, list | tuple):
        return [item for item in value if item is not None]
    if isinstance(value, Mapping) and value and all(str(key).isdigit() for key in value):
        return [item for _, item in sorted(value.items(), key=lambda pair: _index_order(pair[0]))
                if item is not None]
    return [value]


def _index_order(key: Any) -> tuple[int, str]:
    text = str(key).lstrip("0") or "0"  # numeric order of any length, without int() on a huge string
    return len(text), text


def _first_text(fields: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = fields.get(key)
        if isinstance(value, str) and value:
            return value
    return None
