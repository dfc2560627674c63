"""Unit tests of forwarding log records: encoding back to OTLP logs, the signal's URL and gRPC method, and the
ingest hook that hands over the records of accepted content steps, redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from otlp_receiver.decode_logs import decode_logs_request
from otlp_receiver.forward import Forwarder
from otlp_receiver.forward_queue import DiskQueue
from otlp_receiver.forward_transport import LOGS, TRACES, GrpcTransport, HttpTransport, signal_url
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.log_content import content_steps
from otlp_receiver.model import LogRecord, RedactionMeta, RedactionRuleHit, Span, SpanId, TraceId
from otlp_receiver.store.index import RunIndex
from otlp_receiver.wal import WriteAheadLog

TRACE = TraceId("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = SpanId("00f067aa0ba902b7")
T0 = 1_767_225_600_000_000_000


def record(**overrides: Any) -> LogRecord:
    fields: dict[str, Any] = {"trace_id": TRACE, "span_id": SPAN, "event_name": "gen_ai.user.message",
                              "time_ns": T0, "observed_ns": T0 + 5, "body": {"content": "hi"},
                              "resource": {"service.name": "agent"}, "scope_name": "genai"}
    return LogRecord(**{**fields, **overrides})


# -- where logs go -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint, traces, logs", [
    ("collector:4318", "http://collector:4318/v1/traces", "http://collector:4318/v1/logs"),
    ("https://otlp.example.com/otlp/", "https://otlp.example.com/otlp/v1/traces",
     "https://otlp.example.com/otlp/v1/logs"),
    ("http://c:4318/v1/traces", "http://c:4318/v1/traces", "http://c:4318/v1/logs"),  # the traces URL, as before
])
def test_http_urls_of_each_signal(endpoint: str, traces: str, logs: str) -> None:
    assert (signal_url(endpoint, TRACES), signal_url(endpoint, LOGS)) == (traces, logs)


def test_http_transport_posts_logs_to_v1_logs_and_reads_partial_success(caplog: pytest.LogCaptureFixture) -> None:
    requests: list[httpx.Request] = []
    answer = logs_service_pb2.ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records, answer.partial_success.error_message = 2, "too old"

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=answer.SerializeToString())

    transport = HttpTransport("http://collector:4318/v1/traces", signal=LOGS, headers={}, timeout_s=5)
    transport.client = httpx.Client(transport=httpx.MockTransport(handler), headers=transport.client.headers)
    with caplog.at_level(logging.WARNING):
        assert transport.send(b"body").delivered
    assert str(requests[0].url) == "http://collector:4318/v1/logs"
    assert "downstream rejected 2 forwarded log records: too old" in caplog.text


@pytest.fixture
def logs_downstream() -> Iterator[tuple[int, list[logs_service_pb2.ExportLogsServiceRequest]]]:
    """A loopback gRPC server implementing only LogsService/Export, recording what it receives."""
    received: list[logs_service_pb2.ExportLogsServiceRequest] = []

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, received
    server.stop(0)


def test_grpc_transport_calls_logs_service_export(
        logs_downstream: tuple[int, list[logs_service_pb2.ExportLogsServiceRequest]]) -> None:
    port, received = logs_downstream
    logs = GrpcTransport(f"127.0.0.1:{port}", signal=LOGS, headers={}, timeout_s=5)
    traces = GrpcTransport(f"127.0.0.1:{port}", signal=TRACES, headers={}, timeout_s=5)
    try:
        delivered = logs.send(LOGS.encode([record()]))
        unimplemented = traces.send(b"")  # this downstream takes no traces: a permanent failure, not retried
    finally:
        logs.close()
        traces.close()
    assert delivered.delivered and decode_logs_request(received[0]).records == [record()]
    assert (unimplemented.delivered, unimplemented.retryable, unimplemented.error) == (False, False,
                                                                                      "gRPC UNIMPLEMENTED")


def test_a_logs_forwarder_counts_log_records(tmp_path: Path,
                                             logs_downstream: tuple[int, list[Any]]) -> None:
    port, received = logs_downstream
    forwarder = Forwarder(DiskQueue(tmp_path / "q", max_bytes=1 << 20),
                          GrpcTransport(f"127.0.0.1:{port}", signal=LOGS, headers={}, timeout_s=5), signal=LOGS)
    forwarder.enqueue("t", [record(), record(time_ns=T0 + 1)])
    assert forwarder.queue.depth_items == 2
    forwarder.start()
    try:
        while forwarder.sent_requests < 1:
            forwarder._stop.wait(0.01)
    finally:
        forwarder.stop()
    assert (forwarder.sent_items, len(received), forwarder.queue.depth) == (2, 1, 0)


# -- the ingest hook -----------------------------------------------------------------------------------------
class MaskSecrets:
    """A Redaction that masks the string ``hunter2`` wherever it is in a payload."""

    def spans(self, tenant_id: str, spans: Sequence[Span]) -> list[tuple[Span, RedactionMeta]]:
        return [(span, RedactionMeta()) for span in spans]

    def payload(self, tenant_id: str, payload: Any) -> tuple[Any, RedactionMeta]:
        hits: list[str] = []
        masked = self._mask(payload, "$", hits)
        if not hits:
            return payload, RedactionMeta()
        return masked, RedactionMeta(tuple(hits), (RedactionRuleHit("value.test", "secret"),))

    def _mask(self, value: Any, path: str, hits: list[str]) -> Any:
        if isinstance(value, dict):
            return {k: self._mask(v, f"{path}.{k}", hits) for k, v in value.items()}
        if isinstance(value, list):
            return [self._mask(v, f"{path}[{i}]", hits) for i, v in enumerate(value)]
        if isinstance(value, str) and "hunter2" in value:
            hits.append(path)
            return value.replace("hunter2", "[REDACTED]")
        return value


def test_pipeline_hands_the_redacted_records_of_accepted_content_steps_to_the_hook(tmp_path: Path) -> None:
    seen: list[tuple[str, list[LogRecord]]] = []
    pipeline = IngestPipeline(WriteAheadLog(tmp_path / "wal", fsync=False), Sequencer(RunIndex(":memory:")),
                              redact=MaskSecrets(), on_accepted_logs=lambda t, r: seen.append((t, list(r))))
    secret = record(body={"content": "my password is hunter2"}, attributes={"note": "hunter2 again"})
    other_span = record(span_id=SpanId("1111111111111111"), event_name="gen_ai.choice")
    pipeline.ingest_log_content("t", "p", content_steps([secret, other_span]))
    retried = pipeline.ingest_log_content("t", "p", content_steps([secret, record(span_id=SpanId("2" * 16))]))
    assert retried.duplicates == 1
    assert [(t, [r.span_id for r in batch]) for t, batch in seen] == [
        ("t", [SPAN, other_span.span_id]), ("t", ["2" * 16])]  # the retried record is not forwarded twice
    forwarded = seen[0][1][0]
    assert forwarded.body == {"content": "my password is [REDACTED]"}
    assert forwarded.attributes == {"note": "[REDACTED] again"}
    assert (forwarded.trace_id, forwarded.time_ns, forwarded.event_name) == (TRACE, T0, "gen_ai.user.message")
    assert seen[0][1][1] is other_span  # a clean record is passed on as it came
