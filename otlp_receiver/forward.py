"""Forwarding accepted, redacted spans to a downstream OTLP endpoint (Traceward as a hop in a Collector pipeline).

Ingest never waits on the downstream: :meth:`Forwarder.enqueue` (called after the WAL append) encodes the spans
back into an ``ExportTraceServiceRequest`` — trace and span ids unchanged — and writes it to a bounded queue on
disk; a background thread sends the oldest queued export first, deleting it once the downstream acknowledged it.

Retries (the OTLP exporter rules, https://opentelemetry.io/docs/specs/otlp/#failures): gRPC UNAVAILABLE,
DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE, DATA_LOSS and RESOURCE_EXHAUSTED-with-RetryInfo, HTTP 429,
502, 503, 504 and connection errors are retried with exponential backoff and full jitter, never sooner than the
server's ``google.rpc.RetryInfo`` / ``Retry-After`` asks. Other failures are permanent: that export is dropped
(counted as rejected, logged) so one bad request cannot stall the queue.

Queue policy when full (``max_bytes``): the OLDEST queued exports are deleted to make room for the new one
(never the one being sent), counted in ``dropped_requests`` / ``dropped_spans`` and logged. Fresh data wins over
stale data, and ingest keeps going however long the downstream is away. Each export is one file
``<seq:020d>-<spans>.pb`` written under a temporary name and renamed, so a restart finds whole exports only and
resumes in order; files are not fsync'd (they survive a process crash, not a power cut — the WAL, not this
queue, is the durability boundary).

Bytes attributes were decoded to base64 text at ingest and are forwarded as that text.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import httpx
import orjson
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.model import AttrValue, Span

logger = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRYABLE_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                             grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS})
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 600.0
"""A server's Retry-After / RetryInfo is honoured up to this long."""


# -- encoding (the inverse of decode.py) ----------------------------------------------------------------------
def encode_request(spans: Sequence[Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    """Domain spans → one OTLP request, grouped by resource and scope (ids, times, status, events, links kept)."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    groups: dict[tuple[bytes, str, str], trace_pb2.ScopeSpans] = {}
    resources: dict[bytes, trace_pb2.ResourceSpans] = {}
    for span in spans:
        resource_key = orjson.dumps(span.resource, option=orjson.OPT_SORT_KEYS, default=str)
        key = (resource_key, span.scope_name, span.scope_version)
        scope_spans = groups.get(key)
        if scope_spans is None:
            resource_spans = resources.get(resource_key)
            if resource_spans is None:
                resource_spans = resources[resource_key] = request.resource_spans.add()
                _encode_attributes(resource_spans.resource.attributes, span.resource)
            scope_spans = groups[key] = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = span.scope_name, span.scope_version
        _encode_span(scope_spans.spans.add(), span)
    return request


def _encode_span(out: trace_pb2.Span, span: Span) -> None:
    out.trace_id, out.span_id = bytes.fromhex(span.trace_id), bytes.fromhex(span.span_id)
    if span.parent_span_id:
        out.parent_span_id = bytes.fromhex(span.parent_span_id)
    out.name, out.kind, out.flags = span.name, span.kind, span.flags  # type: ignore[assignment]
    out.start_time_unix_nano, out.end_time_unix_nano = span.start_ns, span.end_ns
    out.status.code, out.status.message = span.status_code, span.status_message  # type: ignore[assignment]
    _encode_attributes(out.attributes, span.attributes)
    for event in span.events:
        pb_event = out.events.add(name=event.name, time_unix_nano=event.time_ns)
        _encode_attributes(pb_event.attributes, event.attributes)
    for link in span.links:
        pb_link = out.links.add(trace_id=bytes.fromhex(link.trace_id), span_id=bytes.fromhex(link.span_id))
        _encode_attributes(pb_link.attributes, link.attributes)


def _encode_attributes(out: Any, attributes: Mapping[str, AttrValue]) -> None:
    for key, value in attributes.items():
        kv = out.add(key=key)
        _encode_value(kv.value, value)


def _encode_value(out: common_pb2.AnyValue, value: AttrValue) -> None:
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int subclass
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Mapping):
        out.kvlist_value.SetInParent()
        _encode_attributes(out.kvlist_value.values, value)
    elif isinstance(value, list | tuple):
        out.array_value.SetInParent()
        for item in value:
            _encode_value(out.array_value.values.add(), item)
    else:
        out.string_value = str(value)


# -- the on-disk queue -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueuedExport:
    """One export waiting in the queue."""

    seq: int
    spans: int
    size: int
    path: Path


class DiskQueue:
    """A bounded FIFO of serialized exports, one file each; thread-safe; drops the oldest when full."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._items: deque[QueuedExport] = deque()
        self._bytes = 0
        self._inflight: int | None = None
        self.dropped_requests = self.dropped_spans = 0
        for path in sorted(directory.iterdir()):
            item = _parse_name(path)
            if item is None:
                path.unlink(missing_ok=True)  # a temporary file from an interrupted write
                continue
            self._items.append(item)
            self._bytes += item.size
        self._next_seq = self._items[-1].seq + 1 if self._items else 1

    @property
    def depth(self) -> int:
        """Exports waiting (the one being sent included)."""
        return len(self._items)

    @property
    def depth_spans(self) -> int:
        """Spans waiting."""
        with self._lock:
            return sum(item.spans for item in self._items)

    @property
    def size_bytes(self) -> int:
        """Bytes waiting."""
        return self._bytes

    def put(self, body: bytes, spans: int) -> int:
        """Queue one export, dropping the oldest ones if it would not fit; returns how many were dropped."""
        with self._lock:
            if len(body) > self.max_bytes:
                self._count_drop(spans)
                return 1
            dropped = 0
            while self._bytes + len(body) > self.max_bytes and self._drop_oldest():
                dropped += 1
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            path = self.directory / f"{seq:020d}-{spans}.pb"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
            self._items.append(QueuedExport(seq, spans, len(body), path))
            self._bytes += len(body)
            return dropped

    def _drop_oldest(self) -> bool:
        """Delete the oldest export that is not being sent; False when there is none."""
        for i, item in enumerate(self._items):
            if item.seq != self._inflight:
                del self._items[i]
                self._bytes -= item.size
                item.path.unlink(missing_ok=True)
                self._count_drop(item.spans)
                return True
        return False

    def _count_drop(self, spans: int) -> None:
        self.dropped_requests += 1
        self.dropped_spans += spans

    def peek(self) -> tuple[QueuedExport, bytes] | None:
        """The oldest export and its body, marked in flight (so a full queue never drops it mid-send)."""
        with self._lock:
            while self._items:
                item = self._items[0]
                try:
                    body = item.path.read_bytes()
                except FileNotFoundError:  # removed behind our back: forget it
                    self._items.popleft()
                    self._bytes -= item.size
                    continue
                self._inflight = item.seq
                return item, body
            return None

    def ack(self, item: QueuedExport) -> None:
        """Remove an export once it was delivered (or permanently rejected)."""
        with self._lock:
            self._inflight = None
            if self._items and self._items[0].seq == item.seq:
                self._items.popleft()
                self._bytes -= item.size
            item.path.unlink(missing_ok=True)

    def release(self) -> None:
        """The in-flight export was not delivered: it stays first in line."""
        with self._lock:
            self._inflight = None


def _parse_name(path: Path) -> QueuedExport | None:
    stem, dash, spans = path.stem.partition("-")
    if path.suffix != ".pb" or not dash or not stem.isdigit() or not spans.isdigit():
        return None
    return QueuedExport(int(stem), int(spans), path.stat().st_size, path)


# -- transports --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the downstream said about one export."""

    delivered: bool
    retryable: bool = False
    retry_after_s: float | None = None
    error: str = ""


class Transport(Protocol):
    """Sends one serialized ExportTraceServiceRequest."""

    def send(self, body: bytes) -> SendOutcome:
        """Deliver ``body``; never raises for downstream failures."""

    def close(self) -> None:
        """Release connections."""


class GrpcTransport:
    """OTLP/gRPC (``host:port``, or ``http://``/``https://host:port`` for plaintext/TLS)."""

    def __init__(self, endpoint: str, *, headers: Mapping[str, str], timeout_s: float) -> None:
        target = endpoint.split("://", 1)[-1].rstrip("/")
        self.channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials()) if endpoint.startswith("https://")
                        else grpc.insecure_channel(target))
        self.export: grpc.UnaryUnaryMultiCallable[bytes, trace_service_pb2.ExportTraceServiceResponse]
        self.export = self.channel.unary_unary(
            EXPORT_METHOD, request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
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
        _log_partial(response)
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
    """OTLP/HTTP protobuf to ``<endpoint>/v1/traces``."""

    def __init__(self, endpoint: str, *, headers: Mapping[str, str], timeout_s: float) -> None:
        base = endpoint if "://" in endpoint else f"http://{endpoint}"
        self.url = base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"
        self.client = httpx.Client(timeout=timeout_s,
                                   headers={**headers, "content-type": "application/x-protobuf"})

    def send(self, body: bytes) -> SendOutcome:
        try:
            response = self.client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            return SendOutcome(False, True, None, f"HTTP {type(exc).__name__}")
        if 200 <= response.status_code < 300:
            return SendOutcome(True)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return SendOutcome(False, response.status_code in _RETRYABLE_HTTP, retry_after,
                           f"HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()


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


def _log_partial(response: trace_service_pb2.ExportTraceServiceResponse) -> None:
    if response.partial_success.rejected_spans:
        logger.warning("downstream rejected %d forwarded spans: %s", response.partial_success.rejected_spans,
                       response.partial_success.error_message[:200])


# -- the forwarder -----------------------------------------------------------------------------------------
def backoff_s(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None,
              rng: random.Random) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry, never below the server's retry delay."""
    delay = rng.uniform(0, min(max_s, base_s * 2 ** min(attempt - 1, 30)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


class Forwarder:
    """Queue on ingest, send in the background."""

    def __init__(self, queue: DiskQueue, transport: Transport, *, base_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, log_every_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.queue, self.transport = queue, transport
        self.base_backoff_s, self.max_backoff_s, self.log_every_s = base_backoff_s, max_backoff_s, log_every_s
        self.rng = rng or random.Random()
        self.sent_requests = self.sent_spans = self.rejected_requests = self.enqueue_failures = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._last_log = 0.0
        self._logged_drops = 0

    @property
    def forward_queue_depth(self) -> int:
        """Exports waiting to be forwarded (for logs and metrics)."""
        return self.queue.depth

    def enqueue(self, tenant_id: str, spans: Sequence[Span]) -> None:
        """Queue redacted spans for the downstream; never raises, never waits for the network."""
        if not spans:
            return
        try:
            dropped = self.queue.put(encode_request(spans).SerializeToString(), len(spans))
        except Exception:  # ingest boundary: forwarding trouble must never fail an accepted export
            self.enqueue_failures += 1
            logger.exception("could not queue %d spans of tenant %s for forwarding", len(spans), tenant_id)
            return
        if dropped:
            self._log_drops()
        self._wake.set()

    def start(self) -> None:
        """Start the sender thread."""
        self._thread = threading.Thread(target=self._loop, name="traceward-forwarder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending; whatever is queued stays on disk for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.transport.close()
        self._log_depth(force=True)

    def _loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                attempt = self._send_next(attempt)
            except Exception:  # background boundary: keep the sender alive
                logger.exception("forwarding failed; retrying")
                self.queue.release()
                self._stop.wait(1.0)
            self._log_depth()

    def _send_next(self, attempt: int) -> int:
        """Send the oldest export; returns the number of failed attempts in a row."""
        head = self.queue.peek()
        if head is None:
            self._wake.wait(self.log_every_s)
            self._wake.clear()
            return 0
        item, body = head
        outcome = self.transport.send(body)
        if outcome.delivered or not outcome.retryable:
            self.queue.ack(item)
            if outcome.delivered:
                self.sent_requests, self.sent_spans = self.sent_requests + 1, self.sent_spans + item.spans
            else:
                self.rejected_requests += 1
                logger.warning("downstream refused a forwarded export of %d spans (%s): dropped", item.spans,
                               outcome.error)
            return 0
        self.queue.release()
        attempt += 1
        delay = backoff_s(attempt, base_s=self.base_backoff_s, max_s=self.max_backoff_s,
                          retry_after_s=outcome.retry_after_s, rng=self.rng)
        if attempt == 1 or attempt % 10 == 0:
            logger.warning("forwarding failed (%s), attempt %d; retrying in %.2fs; queue depth %d", outcome.error,
                           attempt, delay, self.queue.depth)
        self._stop.wait(delay)
        return attempt

    def _log_drops(self) -> None:
        if self.queue.dropped_requests - self._logged_drops and time.monotonic() - self._last_log >= 1.0:
            self._log_depth(force=True)

    def _log_depth(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_log < self.log_every_s or not self.queue.depth):
            return
        self._last_log = now
        level = logging.WARNING if self.queue.dropped_requests > self._logged_drops else logging.INFO
        self._logged_drops = self.queue.dropped_requests
        logger.log(level, "forward queue depth %d exports (%d bytes); sent %d exports / %d spans; dropped %d exports / "
                    "%d spans (queue full, oldest first); refused %d", self.queue.depth, self.queue.size_bytes,
                    self.sent_requests, self.sent_spans, self.queue.dropped_requests, self.queue.dropped_spans,
                    self.rejected_requests)
