"""OTLP entry points: the gRPC TraceService and LogsService servicers and the OTLP/HTTP request handlers.

Thin: authenticate → decode → hand spans to an injected ``sink`` → answer as the OTLP spec
says (https://opentelemetry.io/docs/specs/otlp/):
- some spans invalid → OK / 200 with ``partial_success{rejected_spans, error_message}``;
- the whole payload unparseable → INVALID_ARGUMENT / 400 (not retryable);
- missing or wrong credentials → UNAUTHENTICATED / 401;
- overloaded → RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo`` / 429 + Retry-After;
- storage unavailable → UNAVAILABLE / 503 (retryable).
Traces and logs share all of it: authentication, size limits, decompression, error mapping and the
partial-success rules; only the decoder, the sink and the response message differ. Knows nothing about
storage or HTTP frameworks.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otlp_receiver.decode import (
    DecodedBatch,
    decode_request,
    encode_partial_success_json,
    encode_partial_success_protobuf,
    make_response,
    parse_json,
    parse_protobuf,
)
from otlp_receiver.decode_logs import DecodedLogs, decode_logs_request, parse_logs_json, parse_logs_protobuf
from otlp_receiver.errors import (
    AppError,
    AuthenticationError,
    DecodeError,
    OverloadedError,
    PayloadTooLargeError,
    StorageError,
)
from otlp_receiver.log_content import LogContent, content_steps
from otlp_receiver.model import Span
from otlp_receiver.priority import no_pause

logger = logging.getLogger(__name__)

MAX_HTTP_BODY_BYTES = 20 * 1024 * 1024
"""OTLP/HTTP limit after decompression (the spec's recommended 20 MiB)."""


@dataclass(frozen=True, slots=True)
class IngestIdentity:
    """Who is sending: the tenant and project of an ingest credential."""

    tenant_id: str
    project_id: str


Authenticate = Callable[[str | None], IngestIdentity]
"""Authorization header value (or None) → identity; raises AuthenticationError / OverloadedError."""
Sink = Callable[[IngestIdentity, Sequence[Span]], object]
"""Makes decoded spans durable; raises OverloadedError or StorageError."""
LogSink = Callable[[IngestIdentity, LogContent], object]
"""Makes the content steps of decoded log records durable (and counts what was left out); raises like Sink."""
T = TypeVar("T")


def decode_and_sink(identity: IngestIdentity, request: trace_service_pb2.ExportTraceServiceRequest,
                    sink: Sink, *, pause: Callable[[], None] = no_pause) -> DecodedBatch:
    """Decode a parsed request and hand its valid spans to the sink (``pause``: see ``otlp_receiver.priority``)."""
    pause()
    batch = decode_request(request, pause=pause)
    if batch.spans:
        sink(identity, batch.spans)
    return batch


def decode_and_sink_logs(identity: IngestIdentity, request: logs_service_pb2.ExportLogsServiceRequest,
                         sink: LogSink) -> DecodedLogs:
    """Decode a parsed logs request and hand its GenAI content to the sink.

    Records that are not stored (not content events, or content without a trace id) are counted as
    rejected, with the reason, so the sender sees them in the partial success (the client must not retry).
    """
    batch = decode_logs_request(request)
    if batch.records:
        content = content_steps(batch.records)
        sink(identity, content)
        for reason, count in content.not_kept.items():
            batch.reject(f"{count} log record{'s' if count > 1 else ''} not stored: {reason}", count)
    return batch


# -- gRPC ----------------------------------------------------------------------------------------------------

class TraceServicer:
    """``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

    Registered with a raw-bytes request deserializer (see :func:`start_grpc_server`) so a malformed
    payload reaches our decoder and is answered INVALID_ARGUMENT with a reason, not grpcio's
    generic INTERNAL "Exception deserializing request!".

    ``slots`` (shared with the logs servicer) bounds how many exports parse, decode and sink at once. The work
    is Python and C calls that hold the GIL, so more at once add no throughput on one interpreter; they only
    queue for the GIL, which every API request then waits behind too. Exports over the bound wait without it.
    ``pause`` is the ingest checkpoint of a ``PriorityGate`` (``otlp_receiver.priority``), called while decoding.
    """

    def __init__(self, authenticate: Authenticate, sink: Sink, *,
                 slots: threading.Semaphore | None = None, pause: Callable[[], None] = no_pause) -> None:
        self.authenticate = authenticate
        self.sink = sink
        self.slots = slots
        self.pause = pause

    def Export(self, body: bytes, context: grpc.ServicerContext  # noqa: N802 - gRPC method name
               ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Handle one export."""
        batch = serve_export(context, self.authenticate,
                             lambda identity: decode_and_sink(identity, parse_protobuf(body), self.sink,
                                                              pause=self.pause),
                             slots=self.slots)
        return make_response(batch.rejected, batch.error_message)


class LogsServicer:
    """``opentelemetry.proto.collector.logs.v1.LogsService/Export``: like :class:`TraceServicer`."""

    def __init__(self, authenticate: Authenticate, sink: LogSink, *,
                 slots: threading.Semaphore | None = None) -> None:
        self.authenticate = authenticate
        self.sink = sink
        self.slots = slots

    def Export(self, body: bytes, context: grpc.ServicerContext  # noqa: N802 - gRPC method name
               ) -> logs_service_pb2.ExportLogsServiceResponse:
        """Handle one logs export."""
        batch = serve_export(context, self.authenticate,
                             lambda identity: decode_and_sink_logs(identity, parse_logs_protobuf(body), self.sink),
                             slots=self.slots)
        return make_logs_response(batch.rejected, batch.error_message)


def serve_export(context: grpc.ServicerContext, authenticate: Authenticate,
                 export: Callable[[IngestIdentity], T], *, slots: threading.Semaphore | None = None) -> T:
    """Authenticate a gRPC export and run it (holding one of ``slots`` when given); AppErrors abort with
    their gRPC status, anything else INTERNAL."""
    slot: AbstractContextManager[object] = slots if slots is not None else nullcontext()
    try:
        identity = authenticate(_metadata_value(context.invocation_metadata(), "authorization"))
        with slot:
            return export(identity)
    except AppError as exc:
        _abort(context, exc)
    except Exception:  # process boundary: log once, answer INTERNAL, keep serving
        logger.exception("unexpected error in an OTLP gRPC Export")
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise AssertionError("unreachable: grpc's context.abort raises")


def make_logs_response(rejected: int, message: str) -> logs_service_pb2.ExportLogsServiceResponse:
    """An ExportLogsServiceResponse, with partial_success set only when there is something to say."""
    response = logs_service_pb2.ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return response


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name.lower() == key:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


_GRPC_CODES: Mapping[type[AppError], tuple[grpc.StatusCode, int]] = {
    AuthenticationError: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    PayloadTooLargeError: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    DecodeError: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    OverloadedError: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    StorageError: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
}


def _grpc_code(exc: AppError) -> tuple[grpc.StatusCode, int]:
    for cls in type(exc).__mro__:
        if cls in _GRPC_CODES:
            return _GRPC_CODES[cls]
    if exc.code == "invalid_input":
        return grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT
    if exc.code == "permission_denied":
        return grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED
    return grpc.StatusCode.INTERNAL, code_pb2.INTERNAL


def _abort(context: grpc.ServicerContext, exc: AppError) -> None:
    code, rpc_code = _grpc_code(exc)
    status = status_pb2.Status(code=rpc_code, message=exc.message)
    if isinstance(exc, OverloadedError):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(exc.retry_after_s), nanos=int((exc.retry_after_s % 1) * 1e9)))
        status.details.add().Pack(retry)
    trailers: list[tuple[str, bytes]] = [("grpc-status-details-bin", status.SerializeToString())]
    if isinstance(exc, OverloadedError):  # opentelemetry-exporter-otlp-proto-grpc reads this key
        trailers.append(("google.rpc.retryinfo-bin", retry.SerializeToString()))
    context.set_trailing_metadata(tuple(trailers))
    context.abort(code, exc.message)


def start_grpc_server(servicer: TraceServicer, *, host: str, port: int, max_message_bytes: int,
                      logs_servicer: LogsServicer | None = None, max_workers: int = 8,
                      max_concurrent_rpcs: int = 64, nice: int = 0) -> tuple[grpc.Server, int]:
    """Start the OTLP gRPC server (traces, and logs when given); returns it and the bound port (port 0
    picks a free one).

    Over ``max_concurrent_rpcs`` gRPC itself answers RESOURCE_EXHAUSTED; over
    ``max_message_bytes`` it answers RESOURCE_EXHAUSTED too (which clients must not retry). ``nice``
    lowers the OS priority of the serving threads (Linux schedules threads one by one).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otlp-grpc",
                                   initializer=lower_thread_priority, initargs=(nice,)),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", 4 * 1024 * 1024)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    handler: grpc.RpcMethodHandler[bytes, trace_service_pb2.ExportTraceServiceResponse]
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Export, request_deserializer=None,
        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString)
    services = [grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler})]
    if logs_servicer is not None:
        logs_handler: grpc.RpcMethodHandler[bytes, logs_service_pb2.ExportLogsServiceResponse]
        logs_handler = grpc.unary_unary_rpc_method_handler(
            logs_servicer.Export, request_deserializer=None,
            response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString)
        services.append(grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": logs_handler}))
    server.add_generic_rpc_handlers(services)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise StorageError(f"cannot bind the OTLP gRPC port {host}:{port}")
    server.start()
    return server, bound


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps less favoured by the OS scheduler (Linux: per thread; a no-op
    elsewhere or at 0). Lowering needs no privilege."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        logger.warning("cannot lower the priority of an OTLP gRPC thread: %s", exc)


# -- OTLP/HTTP -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HttpReply:
    """What the HTTP layer should send back."""

    status: int
    body: bytes
    content_type: str


def handle_http_export(body: bytes, *, content_type: str, content_encoding: str, identity: IngestIdentity,
                       sink: Sink, max_body_bytes: int = MAX_HTTP_BODY_BYTES) -> HttpReply:
    """Decode an OTLP/HTTP ``POST /v1/traces`` body and sink its spans.

    Raises AppError subclasses for the HTTP layer to map (DecodeError → 400,
    PayloadTooLargeError → 413, …). Unsupported media types raise DecodeError.
    """
    raw, is_json = read_http_body(body, content_type=content_type, content_encoding=content_encoding,
                                  max_body_bytes=max_body_bytes)
    batch = decode_and_sink(identity, parse_json(raw) if is_json else parse_protobuf(raw), sink)
    if is_json:
        return HttpReply(200, encode_partial_success_json(batch.rejected, batch.error_message), "application/json")
    return HttpReply(200, encode_partial_success_protobuf(batch.rejected, batch.error_message),
                     "application/x-protobuf")


def handle_http_logs_export(body: bytes, *, content_type: str, content_encoding: str, identity: IngestIdentity,
                            sink: LogSink, max_body_bytes: int = MAX_HTTP_BODY_BYTES) -> HttpReply:
    """Decode an OTLP/HTTP ``POST /v1/logs`` body and sink its GenAI content; errors as :func:`handle_http_export`."""
    raw, is_json = read_http_body(body, content_type=content_type, content_encoding=content_encoding,
                                  max_body_bytes=max_body_bytes)
    batch = decode_and_sink_logs(identity, parse_logs_json(raw) if is_json else parse_logs_protobuf(raw), sink)
    if is_json:
        return HttpReply(200, encode_partial_success_json(batch.rejected, batch.error_message,
                                                          rejected_field="rejectedLogRecords"), "application/json")
    return HttpReply(200, make_logs_response(batch.rejected, batch.error_message).SerializeToString(),
                     "application/x-protobuf")


def read_http_body(body: bytes, *, content_type: str, content_encoding: str, max_body_bytes: int) -> tuple[bytes, bool]:
    """An OTLP/HTTP body checked and decompressed: (raw bytes, whether it is OTLP/JSON)."""
    media = content_type.split(";")[0].strip().lower()
    if media not in ("application/x-protobuf", "application/json", "application/protobuf"):
        raise DecodeError(f"unsupported Content-Type {media!r}: use application/x-protobuf or application/json")
    return decompress(body, content_encoding, max_body_bytes), media == "application/json"


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding (identity or gzip), refusing output over ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise DecodeError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"malformed gzip body: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(f"decompressed request body over {limit} bytes")
    if not inflater.eof:
        raise DecodeError("malformed gzip body: truncated stream")
    return out
