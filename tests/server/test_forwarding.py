"""Forwarding spans to a real downstream: a second gRPC server on loopback implementing TraceService (and LogsService,
for ``test_forwarding_logs``).

Spans arrive redacted with trace, span and parent ids kept, carrying the configured headers; while the
downstream is down the on-disk queue grows and ingest does not wait, and everything arrives once it is back —
also across a Traceward restart; a full queue drops its oldest exports and counts them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otlp_receiver.encode import encode_request
from otlp_receiver.model import Span, SpanId, StatusCode, TraceId
from tests.live import INGEST_KEY, LiveServer, free_port, wait_until

pytestmark = pytest.mark.e2e

SECRETS = ("sk-proj-Xq3v9LmT7rB2nW8yK4pD6sF1hJ0gA5cE", "ada.lovelace@example.org", "hunter2-password-value")


class Downstream:
    """A TraceService and LogsService on a fixed loopback port that record every request (and its metadata);
    can go down."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.raw: list[bytes] = []
        self.raw_logs: list[bytes] = []
        self.metadata: list[dict[str, str]] = []
        self.server: grpc.Server | None = None

    def start(self) -> Downstream:
        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            self.raw.append(body)
            self.requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
            return b""

        def export_logs(body: bytes, context: grpc.ServicerContext) -> bytes:
            self.raw_logs.append(body)
            self.log_requests.append(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
            return b""

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService",
                                                 {"Export": grpc.unary_unary_rpc_method_handler(export)}),
            grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService",
                                                 {"Export": grpc.unary_unary_rpc_method_handler(export_logs)})))
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.server = None

    def span_ids(self) -> list[str]:
        return [s.span_id.hex() for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans
                for s in ss.spans]

    def log_records(self) -> list[logs_pb2.LogRecord]:
        return [lr for r in self.log_requests for rl in r.resource_logs for sl in rl.scope_logs
                for lr in sl.log_records]


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    ds = Downstream(free_port())
    yield ds
    ds.stop()


def traceward(tmp_path: Path, downstream: Downstream, **env: str) -> LiveServer:
    return LiveServer(tmp_path / "data", extra_env={
        "TRACEWARD_FORWARD_ENDPOINT": f"127.0.0.1:{downstream.port}", "TRACEWARD_FORWARD_PROTOCOL": "grpc",
        "TRACEWARD_FORWARD_MAX_BACKOFF_S": "0.3", **env})


def make_spans(n: int, *, secrets: bool = False) -> list[Span]:
    """A finished root and ``n - 1`` children (with planted secrets when asked)."""
    trace, root = TraceId(os.urandom(16).hex()), SpanId(os.urandom(8).hex())
    now = time.time_ns()
    attrs = {"api_key": SECRETS[2], "gen_ai.input.messages": orjson.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": f"mail {SECRETS[1]} with key {SECRETS[0]}"}]}]
    ).decode()} if secrets else {"note": "x" * 200}
    spans = [Span(trace_id=trace, span_id=root, parent_span_id=None, name="invoke_agent", kind=1, start_ns=now,
                  end_ns=now + 10**9, status_code=StatusCode.OK, resource={"service.name": "fwd-test"})]
    spans += [Span(trace_id=trace, span_id=SpanId(os.urandom(8).hex()), parent_span_id=root, name=f"chat {i}", kind=3,
                   start_ns=now + i, end_ns=now + i + 1000, attributes=attrs, resource={"service.name": "fwd-test"})
              for i in range(1, n)]
    return spans


def send(server: LiveServer, spans: list[Span]) -> float:
    """POST spans over OTLP/HTTP; returns how long the export took."""
    started = time.monotonic()
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", content=encode_request(spans).SerializeToString(),
                          headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/x-protobuf"},
                          timeout=30)
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def queued(server: LiveServer) -> int:
    return len(list((server.data_dir / "forward-queue").glob("*.pb")))


def test_spans_arrive_redacted_with_ids_kept(tmp_path: Path, downstream: Downstream) -> None:
    downstream.start()
    server = traceward(tmp_path, downstream, TRACEWARD_FORWARD_HEADERS="x-scope-orgid=acme,x-note=a%20b").start()
    try:
        spans = make_spans(4, secrets=True)
        send(server, spans)
        wait_until(lambda: len(downstream.span_ids()) == 4, 15, what="forwarded spans")
    finally:
        server.stop()
    received = {s.span_id.hex(): s for r in downstream.requests for rs in r.resource_spans for ss in rs.scope_spans
                for s in ss.spans}
    for span in spans:
        got = received[span.span_id]
        assert got.trace_id.hex() == span.trace_id and got.name == span.name
        assert (got.parent_span_id.hex() or None) == span.parent_span_id
        assert (got.start_time_unix_nano, got.end_time_unix_nano) == (span.start_ns, span.end_ns)
    raw = b"".join(downstream.raw)
    for secret in SECRETS:
        assert secret.encode() not in raw
    assert b"REDACTED" in raw
    assert downstream.metadata[0]["x-scope-orgid"] == "acme" and downstream.metadata[0]["x-note"] == "a b"
    assert INGEST_KEY not in str(downstream.metadata)  # the agent's credential is never passed on


def test_outage_queues_on_disk_and_drains_also_across_a_restart(tmp_path: Path, downstream: Downstream) -> None:
    server = traceward(tmp_path, downstream).start()
    first = [make_spans(5), make_spans(5)]
    try:
        assert max(send(server, spans) for spans in first) < 2.0  # ingest does not wait for the downstream
        wait_until(lambda: queued(server) == 2, 10, what="the queue to hold both exports")
        downstream.start()
        wait_until(lambda: queued(server) == 0, 15, what="the queue to drain")
        assert sorted(downstream.span_ids()) == sorted(s.span_id for b in first for s in b)
        downstream.stop()
        second = [make_spans(3), make_spans(3)]
        for spans in second:
            send(server, spans)
        wait_until(lambda: queued(server) == 2, 10, what="the queue to hold the new exports")
    finally:
        server.stop()
    assert re.search(r"forwarding traces: queue depth 2 exports", server.log())
    downstream.start()
    server.start()  # the queue is on disk: the next start sends it
    try:
        wait_until(lambda: queued(server) == 0, 15, what="the queue to drain after the restart")
    finally:
        server.stop()
    expected = [s.span_id for b in first + second for s in b]
    assert sorted(set(downstream.span_ids())) == sorted(expected)  # nothing lost


def test_a_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path, downstream: Downstream) -> None:
    batches = [make_spans(5) for _ in range(6)]
    size = len(encode_request(batches[0]).SerializeToString())
    server = traceward(tmp_path, downstream, TRACEWARD_FORWARD_QUEUE_MAX_BYTES=str(int(size * 2.5))).start()
    try:
        for spans in batches:
            send(server, spans)
        assert queued(server) <= 2
        downstream.start()
        wait_until(lambda: queued(server) == 0, 15, what="the queue to drain")
    finally:
        server.stop()
    counts = re.findall(r"forwarding traces: .*sent (\d+) exports / (\d+) spans; dropped (\d+) exports / (\d+) spans",
                        server.log())
    sent_exports, sent_spans, dropped_exports, dropped_spans = map(int, counts[-1])
    assert dropped_exports >= 4 and sent_exports + dropped_exports == 6 and sent_spans + dropped_spans == 30
    received = set(downstream.span_ids())
    assert len(received) == sent_spans and {s.span_id for s in batches[-1]} <= received  # the newest survives
    assert not {s.span_id for s in batches[0]} & received  # the oldest was dropped
