"""JSON compatibility for attribute values: ``to_json_value`` and ``parse_json_text``.

Every value a payload carries goes through one of these, so a payload is always JSON-compatible (bytes →
base64, non-finite floats and out-of-range ints → strings, depth capped) and nothing here raises on a bad
attribute value. Shared by ``payload`` (span payloads) and ``content_events`` (GenAI content events).

Pure: imports the standard library and orjson.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

MAX_DEPTH: Final = 64
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1  # orjson's range


def to_json_value(value: Any, depth: int = 0) -> Any:
    """A JSON-compatible copy of an attribute value (never raises)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, dict | Mapping):
        return {str(key): to_json_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def parse_json_text(value: Any) -> Any:
    """Parse a string holding a JSON object or array; anything else is returned JSON-compatible.

    orjson's output is JSON-compatible already; it is only re-walked (to cap its depth) when the text
    has enough brackets to nest deeper than ``MAX_DEPTH``.
    """
    if not isinstance(value, str) or value.lstrip()[:1] not in ("{", "["):
        return to_json_value(value)
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if value.count("{") + value.count("[") < MAX_DEPTH:
        return parsed
    return to_json_value(parsed)
