"""Opaque keyset cursors: the sort key of the last row of a page, as url-safe base64 of a JSON array.

One codec for every cursor-paged list (runs, steps, audit, keys, findings, approvals). A cursor
that doesn't decode to values of the expected types is the client's error (400), never a 500.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from otlp_receiver.errors import InvalidInputError


def encode_cursor(*parts: int | str) -> str:
    """The cursor after a row whose sort key is ``parts``."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """Inverse of :func:`encode_cursor`, checking that the parts have ``types`` (bools are not ints)."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or len(parts) != len(types) or not all(
                isinstance(p, t) and not isinstance(p, bool) for p, t in zip(parts, types, strict=True)):
            raise ValueError("wrong shape")
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidInputError("malformed cursor", details={"cursor": "not a cursor from this API"}) from exc
    return tuple(parts)


def decode_ns_key(cursor: str) -> tuple[int, str]:
    """A ``(nanoseconds, id)`` cursor, the sort key most lists page by (runs, keys, findings, approvals)."""
    ns, key = decode_cursor(cursor, int, str)
    return ns, key
