"""How forwarded exports reach the downstream: the wire details of each OTLP signal, and the transports.

A :class:`Signal` says what one forwarder carries — traces or logs — and so which gRPC method
(``TraceService/Export``, ``LogsService/Export``), OTLP/HTTP path (``/v1/traces``, ``/v1/logs``) and response
message it uses. A transport sends one serialized request and reports the outcome as a value
(:class:`SendOutcome`), never raising for downstream failures.

Retryable outcomes follow the OTLP exporter rules (https://opentelemetry.io/docs/specs/otlp/#failures): gRPC
UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE, DATA_LOSS and RESOURCE_EXHAUSTED-with-RetryInfo;
HTTP 429, 502, 503, 504 and connection errors. The server's ``google.rpc.RetryInfo`` / ``Retry-After`` is read
so the sender never retries sooner than asked.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import grpc
import httpx
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otlp_receiver.encode import encode_logs_request, encode_request
from otlp_receiver.model import LogRecord, Span

logger = logging.getLogger(__name__)

T = TypeVar("T")
_RETRYABLE_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                             grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS})
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Signal(Generic[T]):
    """One OTLP signal as forwarding sends it."""

    name: str
    """``traces`` or ``logs``: the metrics label, and the queue directory's suffix."""
    unit: str
    """What an export holds, for logs and messages: ``spans``, ``log records``."""
    grpc_method: str
    http_path: str
    response: Callable[[bytes], Any]
    """Parses the downstream's Export response (for its partial success)."""
    rejected_field: str
    """The partial-success field counting refused items."""
    encode: Callable[[Sequence[T]], bytes]
    """Domain objects → one serialized Export request."""


TRACES: Signal[Span] = Signal(
    "traces", "spans", "/opentelemetry.proto.collector.trace.v1.TraceService/Export", "/v1/traces",
    trace_service_pb2.ExportTraceServiceResponse.FromString, "rejected_spans",
    lambda spans: encode_request(spans).SerializeToString())
LOGS: Signal[LogRecord] = Signal(
    "logs", "log records", "/opentelemetry.proto.collector.logs.v1.LogsService/Export", "/v1/logs",
    logs_service_pb2.ExportLogsServiceResponse.FromString, "rejected_log_records",
    lambda records: encode_logs_request(records).SerializeToString())
SIGNALS: Mapping[str, Signal[Any]] = {TRACES.name: TRACES, LOGS.name: LOGS}


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the downstream said about one export."""

    delivered: bool
    retryable: bool = False
    retry_after_s: float | None = None
    error: str = ""


class Transport(Protocol):
    """Sends one serialized Export request."""

    def send(self, body: bytes) -> SendOutcome:
        """Deliver ``body``; never raises for downstream failures."""

    def close(self) -> None:
        """Release connections."""


class GrpcTransport:
    """OTLP/gRPC (``host:port``, or ``http://``/``https://host:port`` for plaintext/TLS)."""

    def __init__(self, endpoint: str, *, signal: Signal[Any], headers: Mapping[str, str], timeout_s: float) -> None:
        target = endpoint.split("://", 1)[-1].rstrip("/")
        self.signal = signal
        self.channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials()) if endpoint.startswith("https://")
                        else grpc.insecure_channel(target))
        self.export: grpc.UnaryUnaryMultiCallable[bytes, bytes]
        self.export = self.channel.unary_unary(signal.grpc_method, request_serializer=None,
                                               response_deserializer=None)
        self.metadata = tuple((k.lower(), v) for k, v in headers.items())
        self.timeout_s = timeout_s

    def send(self, body: bytes) -> SendOutcome:
        try:
            response = self.export(body, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            retry_after = _grpc_retry_delay(exc.trailing_metadata() if isinstance(exc, grpc.Call) else None)
            retryable = code in _RETRYABLE_GRPC or (code == grpc.StatusCode.RESOURCE_EXHAUSTED
                                                    and retry_after is not None)
            return SendOutcome(False, retryable, retry_after, f"gRPC {code.name if code else 'UNKNOWN'}")
        log_partial(self.signal, response)
        return SendOutcome(True)

    def close(self) -> None:
        self.channel.close()


def _grpc_retry_delay(trailers: Any) -> float | None:
    """The RetryInfo delay in a gRPC error's trailers (either of the keys servers use)."""
    for key, value in trailers or ():
        try:
            if key == "google.rpc.retryinfo-bin":
                return _duration_s(error_details_pb2.RetryInfo.FromString(value))
            if key == "grpc-status-details-bin":
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.RetryInfo()
                    if detail.Unpack(info):
                        return _duration_s(info)
        except (message.DecodeError, ValueError):  # a malformed trailer from a foreign server: retry normally
            continue
    return None


def _duration_s(info: error_details_pb2.RetryInfo) -> float:
    seconds: float = info.retry_delay.seconds + info.retry_delay.nanos / 1e9  # google.rpc has no stubs: Any
    return seconds


class HttpTransport:
    """OTLP/HTTP protobuf to ``<base URL>/v1/traces`` or ``/v1/logs``.

    The endpoint is the base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is; one that already ends in a
    signal's path (``…/v1/traces``, as this setting documented before logs were forwarded) has it removed
    first, so the same setting serves both signals."""

    def __init__(self, endpoint: str, *, signal: Signal[Any], headers: Mapping[str, str], timeout_s: float) -> None:
        self.url, self.signal = signal_url(endpoint, signal), signal
        self.client = httpx.Client(timeout=timeout_s,
                                   headers={**headers, "content-type": "application/x-protobuf"})

    def send(self, body: bytes) -> SendOutcome:
        try:
            response = self.client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            return SendOutcome(False, True, None, f"HTTP {type(exc).__name__}")
        if 200 <= response.status_code < 300:
            log_partial(self.signal, response.content)
            return SendOutcome(True)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return SendOutcome(False, response.status_code in _RETRYABLE_HTTP, retry_after,
                           f"HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()


def signal_url(endpoint: str, signal: Signal[Any]) -> str:
    """The OTLP/HTTP URL of ``signal`` from the configured endpoint (a base URL, or one signal's URL)."""
    base = (endpoint if "://" in endpoint else f"http://{endpoint}").rstrip("/")
    for known in SIGNALS.values():
        if base.endswith(known.http_path):
            base = base[: -len(known.http_path)]
            break
    return base + signal.http_path


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def log_partial(signal: Signal[Any], body: bytes) -> None:
    """Log a downstream's partial success (it refused some of what it was sent; not retryable)."""
    try:
        partial = signal.response(body).partial_success
    except message.DecodeError:  # an unreadable answer to an acknowledged export: it was still delivered
        return
    rejected = getattr(partial, signal.rejected_field)
    if rejected:
        logger.warning("downstream rejected %d forwarded %s: %s", rejected, signal.unit, partial.error_message[:200])
