"""Runs opened by log records alone (their spans were sampled out upstream): no root span will ever end them, so
they end when idle — ``succeeded`` at their last record's time, scanned as finished runs — instead of staying
``running`` forever and being flagged ``abrupt_end`` ("still running") by the findings job.

The first tests drive an in-process Runtime by hand (flush, housekeeping at a chosen time) so each step is
deterministic; the last ones go through a live server with the OTel SDK's stock log exporter and a tracer
whose sampler drops every span, as upstream sampling does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import generate_latest

from otlp_receiver.log_content import content_steps
from otlp_receiver.model import LogRecord, SpanId, StatusCode, TraceId
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.events import read_events
from otlp_receiver.store.findings import queue_depth, run_findings
from otlp_receiver.store.runs import idle_log_only_runs
from server.runtime import Runtime
from server.settings import Settings
from tests.factories import make_child, make_span
from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e
IDENTITY = IngestIdentity("default", "default")
SECOND = 10**9
IDLE_S = 600


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data", wal_fsync=False, findings_idle_s=IDLE_S,
                          flusher_process=False))
    try:
        yield rt
    finally:
        rt.stop()


def content(trace_id: str, *, start_ns: int, answered: bool = True) -> list[LogRecord]:
    """A user turn and (when ``answered``) the model's reply, as GenAI content log records of one span."""
    span = SpanId(os.urandom(8).hex())
    records = [LogRecord(trace_id=TraceId(trace_id), span_id=span, event_name="gen_ai.user.message",
                         time_ns=start_ns, observed_ns=start_ns, body={"content": "forecast please"})]
    if answered:
        records.append(LogRecord(trace_id=TraceId(trace_id), span_id=span, event_name="gen_ai.choice",
                                 time_ns=start_ns + SECOND, observed_ns=start_ns + SECOND,
                                 body={"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "sunny"}}))
    return records


def ingest_logs(rt: Runtime, records: list[LogRecord]) -> None:
    rt.ingest_logs(IDENTITY, content_steps(records))
    rt.flusher.drain()


def run_row(rt: Runtime, run_id: str) -> dict[str, Any]:
    return dict(rt.index.query("SELECT * FROM runs WHERE run_id = ?", [run_id])[0])


def idle_round(rt: Runtime, *, after_s: float) -> None:
    """The findings job's housekeeping ``after_s`` from now, then the flush of what it wrote, then a scan."""
    later = time.time_ns() + int(after_s * SECOND)
    rt.findings_job.housekeeping(now_ns=later)
    rt.flusher.drain()
    rt.findings_job.run_once(now_ns=later)


def test_a_log_only_run_ends_when_idle_as_succeeded_without_a_false_abrupt_end(runtime: Runtime) -> None:
    trace_id, start = os.urandom(16).hex(), time.time_ns() - 60 * SECOND
    ingest_logs(runtime, content(trace_id, start_ns=start))
    assert run_row(runtime, trace_id)["log_only"] == 1
    idle_round(runtime, after_s=IDLE_S - 60)  # not idle long enough yet
    assert run_row(runtime, trace_id)["status"] == "running" and queue_depth(runtime.index) == 0
    idle_round(runtime, after_s=IDLE_S + 60)
    row = run_row(runtime, trace_id)
    assert (row["status"], row["started_ns"], row["finished_ns"]) == ("succeeded", start, start + SECOND)
    assert row["explicit_status"] is None  # inferred: a late root span may still say otherwise
    assert run_findings(runtime.index, "default", trace_id) == []
    events = [(e.type, e.run_id) for e in read_events(runtime.index, "default", after_id=0)]
    assert ("run.finished", trace_id) in events  # an ordinary finish: events, metrics, seals, findings
    assert 'traceward_runs_total{agent="unknown",status="succeeded"} 1.0' in generate_latest(runtime.metrics.registry).decode()


def test_a_log_only_conversation_never_answered_is_an_abrupt_end(runtime: Runtime) -> None:
    trace_id = os.urandom(16).hex()
    ingest_logs(runtime, content(trace_id, start_ns=time.time_ns() - 60 * SECOND, answered=False))
    idle_round(runtime, after_s=IDLE_S + 60)
    (finding,) = run_findings(runtime.index, "default", trace_id)
    assert (finding.kind, finding.message) == ("abrupt_end", "run succeeded without any output")


def test_a_record_arriving_after_the_run_was_found_idle_keeps_it_running(runtime: Runtime) -> None:
    trace_id, start = os.urandom(16).hex(), time.time_ns() - 60 * SECOND
    ingest_logs(runtime, content(trace_id, start_ns=start))
    later = time.time_ns() + (IDLE_S + 60) * SECOND
    found = idle_log_only_runs(runtime.index, now_ns=later, idle_ns=IDLE_S * SECOND)
    assert [r.run_id for r in found] == [trace_id]
    runtime.ingest_logs(IDENTITY, content_steps(content(trace_id, start_ns=start + 5 * SECOND)))
    runtime.pipeline.end_idle_runs(found)  # written after the new record: it no longer applies
    runtime.flusher.drain()
    assert run_row(runtime, trace_id)["status"] == "running"


def test_a_root_span_arriving_late_sets_the_status_it_says(runtime: Runtime) -> None:
    root = make_span(name="invoke_agent", start_ns=time.time_ns() - 120 * SECOND, status_code=StatusCode.ERROR)
    ingest_logs(runtime, content(root.trace_id, start_ns=root.start_ns + SECOND))
    idle_round(runtime, after_s=IDLE_S + 60)
    assert run_row(runtime, root.trace_id)["status"] == "succeeded"
    runtime.ingest_spans(IDENTITY, [root])
    runtime.flusher.drain()
    row = run_row(runtime, root.trace_id)
    assert (row["status"], row["log_only"], row["finished_ns"]) == ("failed", 0, root.end_ns)


def test_a_run_with_spans_is_not_log_only_and_still_gets_abrupt_end(runtime: Runtime) -> None:
    root = make_span(name="invoke_agent", start_ns=time.time_ns() - 120 * SECOND)
    ingest_logs(runtime, content(root.trace_id, start_ns=root.start_ns + SECOND))  # logs first
    runtime.ingest_spans(IDENTITY, [make_child(root, name="chat")])  # then spans, but the root never ends
    runtime.flusher.drain()
    assert run_row(runtime, root.trace_id)["log_only"] == 0
    idle_round(runtime, after_s=IDLE_S + 60)
    assert run_row(runtime, root.trace_id)["status"] == "running"
    kinds = {(f.kind, f.message.split(",")[0]) for f in run_findings(runtime.index, "default", root.trace_id)}
    assert ("abrupt_end", "still running") in kinds


# -- live: the OTel SDK, its spans sampled out ---------------------------------------------------------------
def emit_sampled_out(server: LiveServer, *, answered: bool) -> tuple[str, int]:
    """Content logs of a ``chat`` span the tracer's sampler drops; (trace id, the last record's time)."""
    provider = LoggerProvider(resource=Resource({"service.name": "sampled-out"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True,
        headers=(("authorization", f"Bearer {INGEST_KEY}"),))))
    logger = provider.get_logger("genai")
    tracer = TracerProvider(sampler=ALWAYS_OFF, id_generator=UniqueIds()).get_tracer("agent")
    with tracer.start_as_current_span("chat") as span:
        assert not span.get_span_context().trace_flags.sampled  # no span of this trace is ever exported
        logger.emit(event_name="gen_ai.user.message", body={"content": "forecast please"})
        last = time.time_ns()
        if answered:
            logger.emit(event_name="gen_ai.choice", timestamp=last, body={
                "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "sunny"}})
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id, last


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose idle window is 1 s (the findings job then looks every second)."""
    server = LiveServer(tmp_path_factory.mktemp("log-only") / "data",
                        extra_env={"TRACEWARD_FINDINGS_IDLE_S": "1"}).start()
    yield server
    server.stop()


def test_sampled_out_sdk_logs_make_a_run_that_ends_succeeded(idle_server: LiveServer) -> None:
    trace_id, last = emit_sampled_out(idle_server, answered=True)
    run = idle_server.wait_run(trace_id, lambda r: r["status"] != "running", timeout_s=30)
    assert (run["status"], run["finished_at_ns"], run["step_count"]) == ("succeeded", last, 2)
    time.sleep(2.5)  # two more rounds of the findings job: nothing is raised, now or later
    assert idle_server.get("/v1/findings").json()["findings"] == []
    metrics = httpx.get(f"{idle_server.api_url}/metrics", timeout=10).text
    assert "traceward_runs_running 0.0" in metrics


def test_sampled_out_sdk_logs_of_an_unanswered_turn_are_an_abrupt_end(idle_server: LiveServer) -> None:
    trace_id, _ = emit_sampled_out(idle_server, answered=False)
    run = idle_server.wait_run(trace_id, lambda r: r["status"] != "running" and r["findings"], timeout_s=30)
    assert [(f["kind"], f["message"]) for f in run["findings"]] == [
        ("abrupt_end", "run succeeded without any output")]
