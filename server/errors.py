"""One JSON error envelope for every HTTP error, from one exception-handler map.

    {"error": {"code": str, "message": str, "details": {field: message}, "retryable": bool}}
"""

from __future__ import annotations

import logging
from typing import Any

from google.rpc import status_pb2
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from otlp_receiver.errors import (
    AppError,
    AuthenticationError,
    ConflictError,
    CorruptDataError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StorageError,
    UnprocessableError,
)

logger = logging.getLogger(__name__)

_STATUS: dict[type[AppError], int] = {
    PayloadTooLargeError: 413,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    UnprocessableError: 422,
    OverloadedError: 429,
    StorageError: 503,
    CorruptDataError: 500,
}
_HTTP_CODES = {400: "invalid_input", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "unprocessable", 429: "rate_limited", 500: "internal", 503: "unavailable"}


def envelope(code: str, message: str, *, details: dict[str, Any] | None = None, retryable: bool = False,
             status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    """Build an error response in the envelope."""
    body = {"error": {"code": code, "message": message, "details": details or {}, "retryable": retryable}}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


# keyed like Response.status_code, which litestar types as int | None
_GRPC_FROM_HTTP: dict[int | None, int] = {
    400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 413: 8, 415: 3, 422: 3, 429: 8, 503: 14}


def for_request(request: Request[Any, Any, Any], response: Response[Any]) -> Response[Any]:
    """OTLP/HTTP protobuf requests get a protobuf ``google.rpc.Status`` body in their own content type
    (OTLP spec, "Failures"); every other error keeps the JSON envelope."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not request.url.path.rstrip("/").endswith(("/v1/traces", "/v1/logs")) or media != "application/x-protobuf":
        return response
    error = response.content["error"] if isinstance(response.content, dict) else {}
    status = status_pb2.Status(code=_GRPC_FROM_HTTP.get(response.status_code, 13),
                               message=str(error.get("message", "request failed")))
    return Response(status.SerializeToString(), status_code=response.status_code,
                    media_type="application/x-protobuf", headers=dict(response.headers))


def status_for(exc: AppError) -> int:
    """HTTP status of a domain error (400 for anything invalid that has no closer match)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400 if exc.code in ("invalid_input", "decode_error") else 500


def app_error_handler(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    """Domain errors → envelope."""
    status = status_for(exc)
    headers = None
    if isinstance(exc, OverloadedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    if status >= 500:
        logger.warning("request failed: %s (%s)", exc.code, type(exc).__name__)
    return for_request(request, envelope(exc.code, exc.message, details=exc.details,
                                         retryable=exc.retryable or status in (429, 503), status=status,
                                         headers=headers))


def validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's request validation errors → 400 envelope with per-field details."""
    details: dict[str, Any] = {}
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            details[str(item.get("key") or item.get("source") or "request")] = str(item.get("message"))
    return envelope("invalid_input", _clean(exc.detail), details=details, status=400)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Framework HTTP errors (404 route, 405 method, 413 body, ...) → envelope."""
    status = exc.status_code
    retryable = status in (429, 503)
    return for_request(request, envelope(_HTTP_CODES.get(status, "error"), _clean(exc.detail), status=status,
                                         retryable=retryable, headers=dict(exc.headers or {}) or None))


def recursion_handler(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """A body nested too deeply to decode is the client's error, not a 500."""
    return for_request(request, envelope("invalid_input", "request body nested too deeply", status=400))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything unexpected: log the traceback once, answer a generic 500."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope("internal", "internal server error", status=500)


def _clean(detail: str) -> str:
    return detail or "request failed"


EXCEPTION_HANDLERS: dict[Any, Any] = {
    AppError: app_error_handler,
    ValidationException: validation_handler,
    HTTPException: http_exception_handler,
    RecursionError: recursion_handler,
    Exception: internal_error_handler,
}
