"""Text helpers of the redaction engine: fingerprints, recognising masks, sniffing JSON, JSONPaths, matches.

Pure: imports the standard library, orjson and ``otlp_receiver``'s model and redaction rules. Used by
``otlp_receiver.redact`` (split out of it to keep that module about walking spans).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

import orjson

from otlp_receiver.model import Span
from otlp_receiver.redact_rules import UNANCHORED, RedactionRule, ValueMatcher

_MARKER = re.compile(rb"\[REDACTED:[A-Za-z0-9_.-]{1,64}:[0-9a-f]{16}\]")
_UPSTREAM_MASK = re.compile(rb"\*{4,}")
_MASK_TEXT = re.compile(r"\[REDACTED:[A-Za-z0-9_.-]{1,64}:[0-9a-f]{16}\]|\*{4,}")
_SCHEME_WORD = re.compile(r"(?i)\b(?:bearer|basic|token|digest)\b")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fingerprint(key: bytes, value: str) -> str:
    """First 16 hex digits of HMAC-SHA256(key, value): a keyed, non-reversible id of a secret."""
    return fingerprint_bytes(key, value.encode("utf-8", "surrogatepass"))


def fingerprint_bytes(key: bytes, raw: bytes) -> str:
    """:func:`fingerprint` of raw bytes."""
    return hmac.digest(key, raw, "sha256").hex()[:16]


def is_upstream_redacted(span: Span) -> bool:
    """True when the Collector's redaction processor masked or hashed values of this span (reference §8)."""
    for attributes in (span.attributes, span.resource):
        count = attributes.get("redaction.masked.count")
        if isinstance(count, int | str) and str(count).strip().isdigit() and int(count) > 0:
            return True
    return False


def is_already_masked(text: str) -> bool:
    """The value was redacted before: nothing but our markers / ``****`` masks (and an auth scheme word).

    A value that merely *contains* a mask next to other content (``hunter****2``) is not trusted.
    """
    if "[REDACTED:" not in text and "****" not in text:
        return False
    residue = _SCHEME_WORD.sub("", _MASK_TEXT.sub("", text))
    return sum(ch.isalnum() for ch in residue) < 4


def leaves_text(value: Any, limit: int = 10_000) -> bytes:
    """A stable, recursion-free text of a nested value's leaves (fingerprint input for over-deep values)."""
    stack: list[Any] = [value]
    out: list[str] = []
    while stack and len(out) < limit:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(reversed([*item.keys(), *item.values()]))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
        else:
            out.append(str(item))
    return "\x1f".join(out).encode("utf-8", "surrogatepass")


def decode_utf8(data: bytes) -> str:
    """UTF-8 bytes back to text (lone surrogates pass through; never raises)."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def looks_like_json(text: str) -> bool:
    """Starts like a JSON object or array (after whitespace)."""
    first = text[:1]
    if first in ("{", "["):
        return True
    return first.isspace() and text.lstrip()[:1] in ("{", "[")


def parse_json(text: str) -> Any | None:
    """The parsed object or array, or None if ``text`` is not valid JSON (e.g. truncated)."""
    try:
        parsed = orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict | list) else None


Path = str | tuple[Any, Any, int]
"""A JSONPath, built lazily: a root string, or (parent, key or index, TOP | MEMBER | INDEX)."""
TOP, MEMBER, INDEX = 0, 1, 2


def render_path(path: Path) -> str:
    """JSONPath text: ``$.attributes['k']`` at the top, then ``.k``, ``['k']`` or ``[i]`` inside values."""
    if isinstance(path, str):
        return path
    parent, key, kind = path
    base = render_path(parent)
    if kind == INDEX:
        return f"{base}[{key}]"
    text = str(key)
    if kind == MEMBER and _IDENTIFIER.fullmatch(text):
        return f"{base}.{text}"
    return base + "['" + text.replace("\\", "\\\\").replace("'", "\\'") + "']"


def protected_regions(data: bytes) -> list[tuple[int, int]]:
    """Byte spans of existing markers and ``****`` masks, which must not be redacted again."""
    if b"[REDACTED:" not in data and b"****" not in data:
        return []
    found = [m.span() for m in _MARKER.finditer(data)]
    found.extend(m.span() for m in _UPSTREAM_MASK.finditer(data))
    return found


def utf8_or_none(value: bytes | bytearray) -> str | None:
    """Bytes as text when they are valid UTF-8 (binary values are not searched)."""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return None


def find_matches(matcher: ValueMatcher, data: bytes, *, raw: bool) -> list[tuple[int, int]]:
    """Validated (start, end) byte spans to mask for one rule: its secret group, or the whole match."""
    regex = matcher.raw_regex if raw else matcher.regex
    spans: list[tuple[int, int]] = []
    pos, end = 0, len(data)
    while pos <= end:
        groups = regex.Match(UNANCHORED, data, pos, end)
        m_start, m_end = groups[0]
        if m_start < 0:
            break
        pos = m_end if m_end > m_start else m_start + 1
        start, stop = groups[matcher.secret_group] if groups[matcher.secret_group][0] >= 0 else groups[0]
        if matcher.validator is not None:
            sub = matcher.validator(data[start:stop])
            if sub is None:
                pos = m_start + 1  # a rejected candidate may hide a real one starting inside it
                continue
            start, stop = start + sub[0], start + sub[1]
        if stop > start:
            spans.append((start, stop))
    return spans


def merge_matches(found: list[tuple[int, int, int, RedactionRule]]) -> list[tuple[int, int, list[RedactionRule]]]:
    """Overlapping matches merged into one masked span, named after the earliest (then highest-priority) rule."""
    merged: list[tuple[int, int, list[RedactionRule]]] = []
    for start, end, _, rule in sorted(found, key=lambda f: (f[0], f[2])):
        if merged and start < merged[-1][1]:
            m_start, m_end, rules = merged[-1]
            merged[-1] = (m_start, max(m_end, end), rules if rule in rules else [*rules, rule])
        else:
            merged.append((start, end, [rule]))
    return merged
