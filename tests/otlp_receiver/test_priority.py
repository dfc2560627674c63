"""Decisions go first: the PriorityGate, the ingest checkpoints that honour it, and the bound on concurrent
gRPC exports. Ingest keeps its guarantee meanwhile: an export is acknowledged only once durable in the WAL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import orjson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from benchmarks.spans import make_agent_request
from otlp_receiver.decode import decode_request
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.model import Span
from otlp_receiver.priority import CHECK_EVERY_SPANS, PriorityGate
from otlp_receiver.service import IngestIdentity, TraceServicer, lower_thread_priority, start_grpc_server
from otlp_receiver.store.index import RunIndex
from otlp_receiver.wal import WriteAheadLog

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_pause_returns_at_once_when_nothing_is_urgent() -> None:
    gate = PriorityGate(max_pause_s=5.0)
    started = time.monotonic()
    for _ in range(1000):
        gate.pause()
    assert time.monotonic() - started < 1.0
    assert gate.pauses == 0


def test_pause_waits_until_the_urgent_request_is_answered() -> None:
    gate = PriorityGate(max_pause_s=5.0)
    resumed = threading.Event()

    def bulk() -> None:
        gate.pause()
        resumed.set()

    with gate.urgent():
        worker = threading.Thread(target=bulk)
        worker.start()
        assert not resumed.wait(0.2), "bulk work ran on while an urgent request was in flight"
    assert resumed.wait(2.0), "bulk work did not resume once the urgent request was answered"
    worker.join()
    assert gate.pauses == 1


def test_pause_is_bounded_so_ingest_never_stops() -> None:
    gate = PriorityGate(max_pause_s=0.05)
    with gate.urgent():
        started = time.monotonic()
        gate.pause()
        assert 0.04 <= time.monotonic() - started < 2.0


def test_a_zero_max_pause_turns_the_gate_off() -> None:
    gate = PriorityGate(max_pause_s=0)
    with gate.urgent():
        gate.pause()
    assert gate.pauses == 0


def _pipeline(tmp_path: Path, gate: PriorityGate) -> tuple[IngestPipeline, WriteAheadLog]:
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    return IngestPipeline(wal, Sequencer(RunIndex(tmp_path / "index.db")), pause=gate.pause), wal


def test_ingest_pauses_at_its_checkpoints_while_a_decision_is_in_flight(tmp_path: Path) -> None:
    gate = PriorityGate(max_pause_s=0.01)
    pipeline, wal = _pipeline(tmp_path, gate)
    spans = decode_request(make_agent_request(4 * CHECK_EVERY_SPANS, seed=3)).spans
    with gate.urgent():
        result = pipeline.ingest_spans("t", "p", spans)
    assert gate.pauses >= 4  # decode is not in this pipeline: redaction/mapping and sequencing checkpoints
    assert result.accepted == len(spans)  # the batch is whole in the WAL when ingest_spans returns
    assert sum(len(orjson.loads(record)["items"]) for record, _ in wal.read_from(0)) == len(spans)


def test_decoding_pauses_every_few_dozen_spans() -> None:
    gate = PriorityGate(max_pause_s=0.001)
    with gate.urgent():
        batch = decode_request(make_agent_request(3 * CHECK_EVERY_SPANS, seed=4), pause=gate.pause)
    assert len(batch.spans) == 3 * CHECK_EVERY_SPANS
    assert gate.pauses == 3


def test_exports_over_the_slots_wait_and_are_all_acknowledged() -> None:
    inside, most, lock = [0], [0], threading.Lock()
    stored: list[int] = []

    def sink(identity: IngestIdentity, spans: Sequence[Span]) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # the CPU work of a big export
        with lock:
            inside[0] -= 1
            stored.append(len(spans))

    servicer = TraceServicer(lambda header: IngestIdentity("t", "p"), sink, slots=threading.BoundedSemaphore(1))
    server, port = start_grpc_server(servicer, host="127.0.0.1", port=0, max_message_bytes=4 * 2**20)
    try:
        body = make_agent_request(10, seed=5).SerializeToString()
        answers: list[trace_service_pb2.ExportTraceServiceResponse] = []

        def export() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(EXPORT, request_serializer=None,
                                           response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
                answers.append(call(body, timeout=30))

        clients = [threading.Thread(target=export) for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
    finally:
        server.stop(grace=None)
    assert len(answers) == 4 and not any(a.partial_success.rejected_spans for a in answers)
    assert stored == [10, 10, 10, 10]  # every acknowledged export reached the sink first
    assert most[0] == 1


def test_ingest_threads_run_at_a_lower_os_priority() -> None:
    seen: list[tuple[int, int]] = []

    def worker() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        lower_thread_priority(5)
        seen.append((before, os.getpriority(os.PRIO_PROCESS, tid)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    (before, after), = seen
    assert after == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # only that thread
