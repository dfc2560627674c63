"""Unit tests of forwarding: encoding back to OTLP, the bounded on-disk queue, backoff, transports, the sender."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from otlp_receiver.decode import decode_request
from otlp_receiver.encode import encode_request
from otlp_receiver.forward import Forwarder, backoff_s
from otlp_receiver.forward_queue import DiskQueue
from otlp_receiver.forward_transport import (
    TRACES,
    GrpcTransport,
    HttpTransport,
    SendOutcome,
    parse_retry_after,
)
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.model import RedactionMeta, RedactionRuleHit, Span
from otlp_receiver.store.index import RunIndex
from otlp_receiver.wal import WriteAheadLog
from tests.factories import make_child, make_span


# -- the queue -----------------------------------------------------------------------------------------------
def test_queue_is_fifo_and_survives_a_reopen(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=10_000)
    for i in range(3):
        queue.put(f"body-{i}".encode(), items=i + 1)
    (tmp_path / "q" / "00000000000000000099-1.tmp").write_bytes(b"torn")  # an interrupted write
    reopened = DiskQueue(tmp_path / "q", max_bytes=10_000)
    assert reopened.depth == 3 and reopened.depth_items == 6
    assert not list((tmp_path / "q").glob("*.tmp"))
    bodies = []
    while (head := reopened.peek()) is not None:
        bodies.append(head[1])
        reopened.ack(head[0])
    assert bodies == [b"body-0", b"body-1", b"body-2"]
    reopened.put(b"after", items=1)
    assert reopened.peek()[0].seq == 4  # sequence numbers continue after a restart


def test_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=100)
    for i in range(10):
        queue.put(bytes([i]) * 30, items=2)
    assert queue.depth == 3 and queue.size_bytes == 90
    assert (queue.dropped_requests, queue.dropped_items) == (7, 14)
    assert queue.peek()[1] == bytes([7]) * 30  # the newest three survive
    assert len(list((tmp_path / "q").iterdir())) == 3


def test_full_queue_never_drops_the_export_being_sent(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=100)
    queue.put(b"a" * 40, items=1)
    in_flight, _ = queue.peek()
    queue.put(b"b" * 40, items=1)
    queue.put(b"c" * 40, items=1)  # must drop b, not a
    queue.ack(in_flight)
    assert queue.peek()[1] == b"c" * 40 and queue.dropped_requests == 1


def test_an_export_bigger_than_the_queue_is_dropped(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=10)
    assert queue.put(b"x" * 11, items=5) == 1
    assert queue.depth == 0 and queue.dropped_items == 5


# -- backoff and Retry-After -------------------------------------------------------------------------------
def test_backoff_is_jittered_exponential_capped_and_honours_the_server() -> None:
    rng = random.Random(7)
    delays = [backoff_s(a, base_s=0.5, max_s=8.0, retry_after_s=None, rng=rng) for a in range(1, 200)]
    assert all(0 <= d <= 8.0 for d in delays) and max(delays) > 4.0
    assert all(d <= 0.5 * 2 ** (a - 1) for a, d in zip(range(1, 5), delays, strict=False))
    assert backoff_s(1, base_s=0.5, max_s=8.0, retry_after_s=3.0, rng=rng) >= 3.0
    assert backoff_s(1, base_s=0.5, max_s=8.0, retry_after_s=10**6, rng=rng) == 600.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- the sender ----------------------------------------------------------------------------------------------
class FakeTransport:
    """Answers from a script of outcomes, then delivers; records what it was sent."""

    def __init__(self, script: list[SendOutcome]) -> None:
        self.script, self.sent, self.delivered = list(script), [], []

    def send(self, body: bytes) -> SendOutcome:
        self.sent.append(body)
        outcome = self.script.pop(0) if self.script else SendOutcome(True)
        if outcome.delivered:
            self.delivered.append(body)
        return outcome

    def close(self) -> None:
        pass


@pytest.fixture
def spans() -> list[Span]:
    root = make_span()
    return [root, make_child(root)]


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_forwarder_retries_until_delivered_in_order(tmp_path: Path, spans: list[Span]) -> None:
    transport = FakeTransport([SendOutcome(False, True, None, "down")] * 3)
    forwarder = Forwarder(DiskQueue(tmp_path / "q", max_bytes=1 << 20), transport, signal=TRACES,
                          base_backoff_s=0.01, max_backoff_s=0.02)
    forwarder.start()
    try:
        forwarder.enqueue("t", spans[:1])
        forwarder.enqueue("t", spans[1:])
        wait_for(lambda: forwarder.sent_requests == 2)
    finally:
        forwarder.stop()
    assert len(transport.sent) == 5 and forwarder.queue.depth == 0
    assert [decode_request(_request(b)).spans[0].span_id for b in transport.delivered] == [s.span_id for s in spans]


def test_forwarder_drops_an_export_the_downstream_refuses(tmp_path: Path, spans: list[Span]) -> None:
    transport = FakeTransport([SendOutcome(False, False, None, "HTTP 400")])
    forwarder = Forwarder(DiskQueue(tmp_path / "q", max_bytes=1 << 20), transport, signal=TRACES)
    forwarder.start()
    try:
        forwarder.enqueue("t", spans[:1])
        forwarder.enqueue("t", spans[1:])
        wait_for(lambda: forwarder.sent_requests == 1)
    finally:
        forwarder.stop()
    assert forwarder.rejected_requests == 1 and forwarder.queue.depth == 0


def test_enqueue_never_raises(tmp_path: Path, spans: list[Span]) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=1 << 20)
    forwarder = Forwarder(queue, FakeTransport([]), signal=TRACES)
    (tmp_path / "q").rmdir()  # the queue directory vanished: the write fails
    forwarder.enqueue("t", spans)
    assert forwarder.enqueue_failures == 1


def _request(body: bytes) -> Any:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    return trace_service_pb2.ExportTraceServiceRequest.FromString(body)


# -- the ingest hook -----------------------------------------------------------------------------------------
class MaskEverything:
    """A Redaction that masks the attribute ``secret`` of every span."""

    def spans(self, tenant_id: str, spans: Sequence[Span]) -> list[tuple[Span, RedactionMeta]]:
        return [self._one(span) for span in spans]

    @staticmethod
    def _one(span: Span) -> tuple[Span, RedactionMeta]:
        if "secret" not in span.attributes:
            return span, RedactionMeta()
        return (replace(span, attributes={**span.attributes, "secret": "[REDACTED]"}),
                RedactionMeta(("$.attributes.secret",), (RedactionRuleHit("key.secret", "secret"),)))

    def payload(self, tenant_id: str, payload: Any) -> tuple[Any, RedactionMeta]:
        return payload, RedactionMeta()


def test_pipeline_hands_redacted_accepted_spans_to_the_hook(tmp_path: Path) -> None:
    seen: list[tuple[str, list[Span]]] = []
    pipeline = IngestPipeline(WriteAheadLog(tmp_path / "wal", fsync=False), Sequencer(RunIndex(":memory:")),
                              redact=MaskEverything(), on_accepted=lambda t, s: seen.append((t, list(s))))
    root = make_span(attributes={"secret": "hunter2"})
    child = make_child(root)
    pipeline.ingest_spans("t", "p", [root, child])
    result = pipeline.ingest_spans("t", "p", [child, make_child(root, attributes={"secret": "x"})])
    assert result.duplicates == 1
    assert [(t, [s.span_id for s in batch]) for t, batch in seen] == [
        ("t", [root.span_id, child.span_id]), ("t", [seen[1][1][0].span_id])]
    assert seen[0][1][0].attributes["secret"] == "[REDACTED]" and seen[0][1][0].trace_id == root.trace_id
    assert seen[1][1][0].span_id != child.span_id


# -- transports against real servers -----------------------------------------------------------------------
@pytest.fixture
def grpc_downstream() -> Iterator[tuple[int, list[Any]]]:
    """A loopback gRPC server whose Export answers from a list of (code, retry delay) scripts."""
    script: list[Any] = []

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        code, delay = script.pop(0) if script else (None, None)
        if code is not None:
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="busy")
            if delay is not None:
                status.details.add().Pack(error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=delay)))
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(code, "busy")
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
        "Export": grpc.unary_unary_rpc_method_handler(export)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, script
    server.stop(0)


def test_grpc_transport_outcomes(grpc_downstream: tuple[int, list[Any]]) -> None:
    port, script = grpc_downstream
    transport = GrpcTransport(f"127.0.0.1:{port}", signal=TRACES, headers={"Authorization": "Bearer x"}, timeout_s=5)
    script.extend([(grpc.StatusCode.UNAVAILABLE, 3), (grpc.StatusCode.RESOURCE_EXHAUSTED, None),
                   (grpc.StatusCode.RESOURCE_EXHAUSTED, 2), (grpc.StatusCode.INVALID_ARGUMENT, None)])
    body = encode_request([make_span()]).SerializeToString()
    outcomes = [transport.send(body) for _ in range(5)]
    transport.close()
    assert outcomes[0] == SendOutcome(False, True, 3.0, "gRPC UNAVAILABLE")
    assert not outcomes[1].retryable  # RESOURCE_EXHAUSTED without RetryInfo is not retryable (OTLP spec)
    assert outcomes[2].retryable and outcomes[2].retry_after_s == 2.0
    assert not outcomes[3].retryable
    assert outcomes[4].delivered


def test_grpc_transport_when_nobody_listens() -> None:
    transport = GrpcTransport("127.0.0.1:1", signal=TRACES, headers={}, timeout_s=2)
    outcome = transport.send(b"")
    transport.close()
    assert not outcome.delivered and outcome.retryable


def test_http_transport_outcomes() -> None:
    answers = [httpx.Response(503, headers={"retry-after": "4"}), httpx.Response(400), httpx.Response(200)]
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)

    transport = HttpTransport("collector:4318", signal=TRACES, headers={"x-key": "k"}, timeout_s=5)
    transport.client = httpx.Client(transport=httpx.MockTransport(handler), headers=transport.client.headers)
    outcomes = [transport.send(b"body") for _ in range(3)]
    assert outcomes[0] == SendOutcome(False, True, 4.0, "HTTP 503")
    assert not outcomes[1].retryable and outcomes[2].delivered
    assert str(requests[0].url) == "http://collector:4318/v1/traces"
    assert requests[0].headers["content-type"] == "application/x-protobuf" and requests[0].headers["x-key"] == "k"


def test_the_sender_thread_stops_promptly_while_backing_off(tmp_path: Path, spans: list[Span]) -> None:
    transport = FakeTransport([SendOutcome(False, True, 60.0, "down")])
    forwarder = Forwarder(DiskQueue(tmp_path / "q", max_bytes=1 << 20), transport, signal=TRACES, max_backoff_s=60)
    forwarder.start()
    forwarder.enqueue("t", spans)
    wait_for(lambda: len(transport.sent) == 1)
    started = time.monotonic()
    forwarder.stop()
    assert time.monotonic() - started < 5 and forwarder.queue.depth == 1  # still queued, for the next start
