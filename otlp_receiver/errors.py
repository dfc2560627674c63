"""Traceward's exception tree. Every package raises these (or leaves below them).

    AppError
    ├── InvalidInputError        bad data from a client                      → 400 / INVALID_ARGUMENT
    │   ├── DecodeError          an OTLP payload or id that cannot be decoded
    │   └── PayloadTooLargeError over a size limit                           → 413 / RESOURCE_EXHAUSTED
    ├── UnprocessableError       well-formed but semantically unacceptable   → 422
    ├── AuthenticationError      missing or wrong credentials               → 401 / UNAUTHENTICATED
    ├── PermissionDeniedError    authenticated, but the role may not do it  → 403 / PERMISSION_DENIED
    ├── NotFoundError            no such resource (for this tenant)          → 404
    ├── ConflictError            the resource is in a state that forbids it → 409
    ├── OverloadedError          back-pressure: retry later                  → 429/503 / UNAVAILABLE
    ├── StorageError             the store cannot read or write              → 503 / UNAVAILABLE
    ├── CorruptDataError         stored data is damaged (not retryable)      → 500
    └── ConfigError              bad configuration, raised at start-up

Expected outcomes (rejected spans, policy violations, empty diffs) are values, not exceptions.
Third-party errors are translated where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping


class AppError(Exception):
    """Root of every error Traceward raises on purpose."""

    code = "internal"
    retryable = False

    def __init__(self, message: str, *, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, str] = dict(details or {})


class InvalidInputError(AppError):
    """The client sent something invalid."""

    code = "invalid_input"


class DecodeError(InvalidInputError):
    """An OTLP payload (protobuf or JSON) or an id in it could not be decoded."""

    code = "decode_error"


class PayloadTooLargeError(InvalidInputError):
    """A request body or message is over its size limit."""

    code = "payload_too_large"


class UnprocessableError(AppError):
    """Well-formed input that cannot be acted on (unknown profile, invalid policy...)."""

    code = "unprocessable"


class AuthenticationError(AppError):
    """Missing, malformed, unknown, revoked or expired credentials."""

    code = "unauthenticated"


class PermissionDeniedError(AppError):
    """The caller is authenticated but its role does not allow the action."""

    code = "permission_denied"


class NotFoundError(AppError):
    """No such resource, or not one the caller's tenant owns."""

    code = "not_found"


class ConflictError(AppError):
    """The resource's state forbids the action (e.g. approving a decided approval)."""

    code = "conflict"


class OverloadedError(AppError):
    """The server is shedding load; the client should retry after ``retry_after_s``."""

    code = "overloaded"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageError(AppError):
    """The store failed to read or write."""

    code = "storage_unavailable"
    retryable = True


class CorruptDataError(AppError):
    """Data read back from the store is damaged (edited or corrupted on disk): retrying will not help."""

    code = "corrupt_data"


class ConfigError(AppError):
    """Invalid configuration; raised at start-up, naming the setting and the bad value."""

    code = "config_error"
