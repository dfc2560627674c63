"""Forwarding log records to a real downstream: a loopback gRPC server implementing LogsService (and an HTTP one).

Accepted GenAI content records, sent by the OTel SDK's stock log exporter, arrive downstream with their trace
and span ids, times and flags, redacted with the same markers as the step Traceward stored; while the downstream
is down they wait in their own on-disk queue and arrive once it is back, also across a restart; a full queue
drops its oldest exports and counts them (log line and /metrics, ``signal="logs"``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otlp_receiver.encode import encode_logs_request
from otlp_receiver.errors import ConfigError
from otlp_receiver.model import LogRecord, SpanId, TraceId
from server.forwarding import forwarders_from_settings
from server.settings import Settings
from tests.live import INGEST_KEY, LiveServer, UniqueIds, free_port, wait_until
from tests.server.test_forwarding import SECRETS, Downstream, make_spans, send, traceward

pytestmark = pytest.mark.e2e

MARKER = re.compile(rb"\[REDACTED:[a-z0-9_.]+:[0-9a-f]+\]")


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    ds = Downstream(free_port())
    yield ds
    ds.stop()


def make_records(n: int) -> list[LogRecord]:
    """``n`` GenAI content records of one new trace, each of its own span (so each is a content step)."""
    trace, now = TraceId(os.urandom(16).hex()), time.time_ns()
    return [LogRecord(trace_id=trace, span_id=SpanId(os.urandom(8).hex()), event_name="gen_ai.user.message",
                      time_ns=now + i, observed_ns=now + i, body={"content": f"question {i} " + "x" * 200},
                      resource={"service.name": "fwd-logs"}) for i in range(n)]


def send_logs(server: LiveServer, records: list[LogRecord]) -> None:
    response = httpx.post(f"{server.otlp_http_url}/v1/logs",
                          content=encode_logs_request(records).SerializeToString(), timeout=30,
                          headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/x-protobuf"})
    assert response.status_code == 200, response.text
    assert not logs_service_pb2.ExportLogsServiceResponse.FromString(response.content).partial_success.rejected_log_records


def queued_logs(server: LiveServer) -> int:
    return len(list((server.data_dir / "forward-queue-logs").glob("*.pb")))


def record_ids(downstream: Downstream) -> list[str]:
    return [r.span_id.hex() for r in downstream.log_records()]


def test_sdk_log_records_arrive_redacted_as_stored_with_ids_kept(tmp_path: Path, downstream: Downstream) -> None:
    downstream.start()
    server = traceward(tmp_path, downstream, TRACEWARD_FORWARD_HEADERS="x-scope-orgid=acme").start()
    try:
        provider = LoggerProvider(resource=Resource({"service.name": "logs-agent"}))
        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(
            endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True,
            headers=(("authorization", f"Bearer {INGEST_KEY}"),))))
        logger = provider.get_logger("genai")
        with TracerProvider(id_generator=UniqueIds()).get_tracer("agent").start_as_current_span("chat") as span:
            logger.emit(event_name="gen_ai.user.message", body={"content": f"mail {SECRETS[1]} key {SECRETS[0]}"},
                        attributes={"gen_ai.system": "openai", "api_key": SECRETS[2]})
            logger.emit(event_name="gen_ai.choice", body={"index": 0, "finish_reason": "stop",
                                                          "message": {"role": "assistant", "content": "sent"}})
            context = span.get_span_context()
        provider.shutdown()
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        wait_until(lambda: len(downstream.log_records()) == 2, 15, what="forwarded log records")
        # forwarding follows the WAL append, not the flush: wait until the stored step is queryable too
        wait_until(lambda: server.get(f"/v1/runs/{trace_id}/steps").status_code == 200
                   and any(s["type"] == "artifact" for s in server.all_steps(trace_id)), 15, what="stored step")
        (step,) = [s for s in server.all_steps(trace_id) if s["type"] == "artifact"]
    finally:
        server.stop()
    user, choice = downstream.log_records()
    assert {(r.trace_id.hex(), r.span_id.hex()) for r in (user, choice)} == {(trace_id, span_id)}
    assert (user.event_name, choice.event_name, user.flags & 1) == ("gen_ai.user.message", "gen_ai.choice", 1)
    # times as sent: the SDK leaves time unset and stamps the observed time, which the step shows as its time
    assert (user.time_unix_nano, user.observed_time_unix_nano) == (0, step["payload"]["events"][0]["time_ns"])
    assert choice.body.kvlist_value.values[0].key == "index"  # the body's structure is kept, not flattened
    raw = b"".join(downstream.raw_logs)
    for secret in SECRETS:
        assert secret.encode() not in raw
    stored = orjson.dumps(step["payload"])
    assert set(MARKER.findall(raw)) == set(MARKER.findall(stored)) and len(set(MARKER.findall(raw))) == 3
    assert downstream.metadata[0]["x-scope-orgid"] == "acme" and INGEST_KEY not in str(downstream.metadata)
    assert downstream.requests == []  # no spans were sent, none forwarded


def test_logs_outage_is_retried_and_drains_also_across_a_restart(tmp_path: Path, downstream: Downstream) -> None:
    server = traceward(tmp_path, downstream).start()
    batches = [make_records(2), make_records(3)]
    try:
        for records in batches:
            send_logs(server, records)  # the downstream is down: accepted all the same
        wait_until(lambda: queued_logs(server) == 2, 10, what="the logs queue to hold both exports")
        assert re.search(r"forwarding logs failed \(gRPC UNAVAILABLE\), attempt 1", server.log())
    finally:
        server.stop()
    assert re.search(r"forwarding logs: queue depth 2 exports", server.log())
    downstream.start()
    server.start()  # the queue is on disk: the next start sends it
    try:
        wait_until(lambda: queued_logs(server) == 0, 15, what="the logs queue to drain")
    finally:
        server.stop()
    assert sorted(set(record_ids(downstream))) == sorted(r.span_id for b in batches for r in b)  # nothing lost


def test_a_full_logs_queue_drops_the_oldest_and_counts_them(tmp_path: Path, downstream: Downstream) -> None:
    batches = [make_records(5) for _ in range(6)]
    size = len(encode_logs_request(batches[0]).SerializeToString())
    server = traceward(tmp_path, downstream, TRACEWARD_FORWARD_QUEUE_MAX_BYTES=str(int(size * 2.5))).start()
    try:
        for records in batches:
            send_logs(server, records)
        assert queued_logs(server) <= 2
        downstream.start()
        wait_until(lambda: queued_logs(server) == 0, 15, what="the logs queue to drain")
        metrics = httpx.get(f"{server.api_url}/metrics", timeout=10).text
    finally:
        server.stop()
    counts = re.findall(r"forwarding logs: .*sent (\d+) exports / (\d+) log records; dropped (\d+) exports / (\d+) "
                        r"log records", server.log())
    sent_exports, sent_records, dropped_exports, dropped_records = map(int, counts[-1])
    assert dropped_exports >= 4 and sent_exports + dropped_exports == 6 and sent_records + dropped_records == 30
    assert f'traceward_forward_exports_total{{outcome="dropped",signal="logs"}} {dropped_exports}.0' in metrics
    assert f'traceward_forward_items_total{{outcome="dropped",signal="logs"}} {dropped_records}.0' in metrics
    received = set(record_ids(downstream))
    assert len(received) == sent_records and {r.span_id for r in batches[-1]} <= received  # the newest survives
    assert not {r.span_id for r in batches[0]} & received  # the oldest was dropped


class HttpDownstream(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that records (path, body) of every POST in the server's ``received`` list."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        return


@pytest.fixture
def http_downstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HttpDownstream)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_over_http_spans_go_to_v1_traces_and_logs_to_v1_logs(tmp_path: Path,
                                                             http_downstream: ThreadingHTTPServer) -> None:
    port = http_downstream.server_address[1]
    server = LiveServer(tmp_path / "data", extra_env={
        "TRACEWARD_FORWARD_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces", "TRACEWARD_FORWARD_PROTOCOL": "http"})
    server.start()
    spans, records = make_spans(2), make_records(2)
    received: list[tuple[str, bytes]] = http_downstream.received  # type: ignore[attr-defined]
    try:
        send(server, spans)
        send_logs(server, records)
        wait_until(lambda: len(received) == 2, 15, what="both exports downstream")
    finally:
        server.stop()
    bodies = dict(received)
    traces = trace_service_pb2.ExportTraceServiceRequest.FromString(bodies["/v1/traces"])
    logs = logs_service_pb2.ExportLogsServiceRequest.FromString(bodies["/v1/logs"])
    assert len(traces.resource_spans[0].scope_spans[0].spans) == 2
    assert [r.span_id.hex() for r in logs.resource_logs[0].scope_logs[0].log_records] == [r.span_id for r in records]


def test_forward_signals_chooses_what_is_forwarded(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "forward_endpoint": "127.0.0.1:1"}
    both = forwarders_from_settings(Settings(**base))
    traces_only = forwarders_from_settings(Settings(**base, forward_signals="traces"))
    try:
        assert (sorted(both), sorted(traces_only)) == (["logs", "traces"], ["traces"])
        assert both["logs"].queue.directory == tmp_path / "forward-queue-logs"
        assert both["traces"].queue.directory == tmp_path / "forward-queue"  # where spans were queued before
    finally:
        for forwarder in [*both.values(), *traces_only.values()]:
            forwarder.transport.close()
    with pytest.raises(ConfigError, match="TRACEWARD_FORWARD_SIGNALS='metrics'"):
        Settings(**base, forward_signals="metrics")
