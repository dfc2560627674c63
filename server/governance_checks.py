"""Checks on what callers send to governance: W3C ids, tool names, reasons, and the digest of tool args.

Each failure is an ``InvalidInputError`` naming the field. Imports only ``otlp_receiver`` (errors, chain)
and the standard library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from otlp_receiver.chain import canonical_json
from otlp_receiver.errors import InvalidInputError

MAX_ARGS_BYTES = 64 * 1024
MAX_TOOL_NAME_CHARS = 256
MAX_TEXT_CHARS = 4000
_HEX = frozenset("0123456789abcdef")


def check_ids(trace_id: str, span_id: str) -> None:
    """trace_id: 32 and span_id: 16 lower-case hex characters, not all zero (W3C trace context)."""
    for name, value, size in (("trace_id", trace_id, 32), ("span_id", span_id, 16)):
        if len(value) != size or not set(value) <= _HEX or not value.strip("0"):
            raise InvalidInputError(f"{name} must be {size} lower-case hex characters, not all zero",
                                    details={name: "invalid"})


def check_tool_name(tool_name: str) -> None:
    """A tool name of 1 to 256 characters."""
    if not tool_name or len(tool_name) > MAX_TOOL_NAME_CHARS:
        raise InvalidInputError("tool_name must have 1 to 256 characters", details={"tool_name": "invalid"})


def check_reason(reason: str | None) -> None:
    """An optional free-text reason of at most 4000 characters."""
    if reason is not None and len(reason) > MAX_TEXT_CHARS:
        raise InvalidInputError("reason: at most 4000 characters", details={"reason": "too long"})


def args_digest(args: Mapping[str, Any], *, field: str = "args") -> str:
    """sha256 hex of the canonical JSON of tool arguments (what tokens bind), at most 64 KiB of it.

    Raises:
        InvalidInputError: over 64 KiB canonical, or not canonicalisable (e.g. integers beyond 64 bits).
    """
    try:
        encoded = canonical_json(args)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{field}: cannot be canonicalised ({exc})", details={field: "invalid"}) from exc
    if len(encoded) > MAX_ARGS_BYTES:
        raise InvalidInputError(f"{field}: {len(encoded)} bytes of canonical JSON, over the {MAX_ARGS_BYTES}-byte "
                                "limit", details={field: "too large"})
    return hashlib.sha256(encoded).hexdigest()
