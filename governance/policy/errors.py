"""Policy validation errors: ``PolicyFileError`` and the helpers that build its path-hinted messages.

Every message starts with where the problem is (``rules[3].match.args: ...``); ``_ROOT`` is the hint
for the document as a whole. Imports only ``otlp_receiver.errors`` and the standard library.
"""

from __future__ import annotations

from typing import Any, NoReturn

from otlp_receiver.errors import UnprocessableError

_ROOT = "(document)"


class PolicyFileError(UnprocessableError):
    """A policy document that cannot be parsed or validated; the message starts with a path hint."""

    code = "invalid_policy"


def _error(hint: str, message: str) -> PolicyFileError:
    return PolicyFileError(f"{hint}: {message}", details={hint: message})


def _fail(hint: str, message: str) -> NoReturn:
    raise _error(hint, message)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)
