"""Text under a diff profile: placeholders for UUIDs and dates, redaction markers down to their fingerprint,
the operator's substitutions, case/whitespace folding and JSON found in strings.

Each distinct string of both runs goes through :func:`text_normalizer` once (``diff.normalize`` caches the
results); the fast paths here are pinned to the plain regex forms by tests/diff/test_normalize.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from diff.profiles import Profile

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ISO_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
PLACEHOLDER_RE = re.compile(f"(?P<uuid>{UUID_PATTERN})|(?P<date>{ISO_DATE_PATTERN})")
# Every UUID and ISO date holds "-hhhh-" or "-dd-dd"; this literal-led pattern is ~10x faster to
# search than the full one, so plain prose skips the expensive substitution.
PLACEHOLDER_HINT = re.compile(r"-(?:[0-9a-fA-F]{4}-|\d\d-\d\d)")
REDACTION_RE = re.compile(r"\[REDACTED:(?:[^\]]*:)?([0-9a-fA-F]{16})\]")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A string that held JSON, parsed (``json_text``): walked like any other value."""

    value: Any


def text_normalizer(
    profile: Profile, subs: tuple[tuple[re.Pattern[str], str], ...], texts: dict[str, str | Parsed]
) -> Callable[[str], str | Parsed]:
    """Normalizes one string and remembers it in ``texts``; a :class:`Parsed` when ``json_text`` found JSON.

    A closure over the profile's flags: it runs for every distinct string of both runs.
    """
    redaction, placeholders, json_text = (
        profile.redaction_by_fingerprint,
        profile.placeholders,
        profile.json_text,
    )
    folding = profile.ignore_whitespace or profile.ignore_case

    def normalize(text: str) -> str | Parsed:
        original = text
        if redaction and "[REDACTED:" in text:
            text = REDACTION_RE.sub(r"[REDACTED:\1]", text)
        if placeholders and "-" in text:
            text = replace_placeholders(text)
        for regex, replacement in subs:
            text = regex.sub(replacement, text)
        result: str | Parsed = text
        if json_text and text[:1] in ("[", "{") and (parsed := parse_json(text)) is not None:
            result = Parsed(parsed)
        elif folding:
            result = fold(text, profile)
        texts[original] = result
        return result

    return normalize


def replace_placeholders(text: str) -> str:
    """``PLACEHOLDER_RE.sub(placeholder, text)``, without scanning where no match can be.

    A text that is one UUID or date (the usual case) is a single anchored match. Otherwise every
    match holds a ``PLACEHOLDER_HINT`` 8 (UUID) or 4 (date) characters after its start, so the next
    match starts no earlier than the next hint minus 8, and there is none after the last hint (the
    patterns look neither behind nor at anchors, so where a search starts does not change what
    they match).
    """
    whole = PLACEHOLDER_RE.match(text)
    if whole is not None and whole.end() == len(text):
        return "<uuid>" if whole.lastgroup == "uuid" else "<datetime>"
    pieces: list[str] = []
    done = 0
    hint = PLACEHOLDER_HINT.search(text)
    while hint is not None:
        match = PLACEHOLDER_RE.search(text, max(hint.start() - 8, done))
        if match is None:
            break
        pieces += (text[done : match.start()], "<uuid>" if match.lastgroup == "uuid" else "<datetime>")
        done = match.end()
        hint = PLACEHOLDER_HINT.search(text, done)
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def markers(profile: Profile) -> tuple[str, str] | None:
    """Two substrings such that the profile leaves a string holding neither unchanged, if there are any.

    Placeholders need a ``-`` (every UUID and ISO date has one) and redaction markers ``[REDACTED:``;
    substitutions, folding and JSON parsing may change any string (``None``).
    """
    if profile.substitutions or profile.json_text or profile.ignore_case or profile.ignore_whitespace:
        return None
    return ("-" if profile.placeholders else "[REDACTED:"), "[REDACTED:"


def fold(text: str, profile: Profile) -> str:
    if profile.ignore_whitespace:
        text = " ".join(text.split())
    return text.casefold() if profile.ignore_case else text


def placeholder(match: re.Match[str]) -> str:
    return "<uuid>" if match["uuid"] else "<datetime>"


def parse_json(text: str) -> Any:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict | list) else None
