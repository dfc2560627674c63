"""End to end: GenAI content sent as OTLP logs by the OTel Python SDK's stock log exporters, against a real server.

Content logs become one ``artifact`` step per span and export in the trace's run, a child of the model
step, with the same message shape ``gen_ai.input.messages`` gives; they are redacted like spans, deduped
on retry, and anything not stored is reported in the partial success. No mocks: ``traceward serve``,
the SDK's gRPC and HTTP ``OTLPLogExporter``, and opentelemetry-util-genai's ``TelemetryHandler``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.util.genai.handler import TelemetryHandler
from opentelemetry.util.genai.types import InputMessage, OutputMessage, Text

from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e

AUTH = {"authorization": f"Bearer {INGEST_KEY}"}
SECRET_EMAIL = "jane.doe@example.com"
RESOURCE = Resource({"service.name": "logs-agent"})




class Recording(LogRecordExporter):
    """Passes records to a real exporter and keeps what it answered (to replay a batch, as a retry does)."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.batches: list[list[ReadableLogRecord]] = []
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Any) -> LogRecordExportResult:
        self.batches.append(list(batch))
        self.results.append(self.inner.export(batch))
        return self.results[-1]

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def grpc_exporter(server: LiveServer) -> LogRecordExporter:
    return GrpcLogExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True,
                           headers=tuple(AUTH.items()), timeout=10)


def http_exporter(server: LiveServer) -> LogRecordExporter:
    return HttpLogExporter(endpoint=f"{server.otlp_http_url}/v1/logs", headers=AUTH, timeout=10,
                           compression=HttpCompression.Gzip)


EXPORTERS = pytest.mark.parametrize("make_exporter", [grpc_exporter, http_exporter], ids=["grpc", "http-gzip"])


@pytest.fixture
def tracer_provider(shared_server: LiveServer) -> Iterator[TracerProvider]:
    provider = TracerProvider(resource=RESOURCE, id_generator=UniqueIds())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{shared_server.otlp_http_url}/v1/traces", headers=AUTH, timeout=10)))
    try:
        yield provider
    finally:
        provider.shutdown()


def logger_provider(exporter: LogRecordExporter) -> LoggerProvider:
    """Records are exported in one batch when the provider is flushed or shut down."""
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000))
    return provider


def content_steps(server: LiveServer, run_id: str, count: int = 1) -> list[dict[str, Any]]:
    server.wait_run(run_id, lambda run: run["step_count"] >= count + 1)
    return [s for s in server.all_steps(run_id) if s["type"] == "artifact"]


def by_name(server: LiveServer, run_id: str, name: str) -> dict[str, Any]:
    return next(s for s in server.all_steps(run_id) if s["name"] == name)


# --- the old generation: one event per message, emitted with the SDK's Logger ---------------------------
def emit_chat_events(tracer_provider: TracerProvider, provider: LoggerProvider) -> tuple[str, str]:
    """A ``chat`` span whose content goes out as per-message log events only; (trace id, span id)."""
    logger = provider.get_logger("openai-v2-style")
    tracer = tracer_provider.get_tracer("agent")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat",
                                                                 "gen_ai.request.model": "gpt-4o"}) as span:
        common = {"gen_ai.system": "openai"}
        logger.emit(event_name="gen_ai.system.message", body={"content": "be brief"}, attributes=common)
        logger.emit(event_name="gen_ai.user.message", body={"content": f"mail {SECRET_EMAIL} the forecast"},
                    attributes=common)
        logger.emit(event_name="gen_ai.choice", attributes=common, body={
            "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "send_mail", "arguments": '{"to": "x"}'}}]}})
        context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@EXPORTERS
def test_per_message_log_events_become_one_content_step_under_the_model_step(
        shared_server: LiveServer, tracer_provider: TracerProvider,
        make_exporter: Callable[[LiveServer], LogRecordExporter]) -> None:
    provider = logger_provider(make_exporter(shared_server))
    try:
        trace_id, span_id = emit_chat_events(tracer_provider, provider)
    finally:
        provider.shutdown()
    (step,) = content_steps(shared_server, trace_id)
    model = by_name(shared_server, trace_id, "chat gpt-4o")
    assert (step["parent_span_id"], model["type"], "input" in model["payload"]) == (span_id, "model", False)
    assert step["name"] == "gen_ai.system.message, gen_ai.user.message, gen_ai.choice"
    payload = step["payload"]
    assert payload["input"][0] == {"role": "system", "parts": [{"type": "text", "content": "be brief"}]}
    assert payload["output"] == [{"role": "assistant", "finish_reason": "tool_calls", "parts": [
        {"type": "tool_call", "id": "call_1", "name": "send_mail", "arguments": {"to": "x"}}]}]
    assert [e["name"] for e in payload["events"]] == ["gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"]
    assert payload["resource"]["service.name"] == "logs-agent"
    # redacted before it reached the WAL, like span content
    text = orjson.dumps(payload).decode()
    assert SECRET_EMAIL not in text and "[REDACTED:value.email:" in text
    assert "$.input[1].parts[0].content" in step["redaction_meta"]["paths"]


def test_a_retried_log_export_is_stored_once(shared_server: LiveServer, tracer_provider: TracerProvider) -> None:
    recording = Recording(grpc_exporter(shared_server))
    provider = logger_provider(recording)
    try:
        trace_id, _ = emit_chat_events(tracer_provider, provider)
        provider.force_flush()
        (batch,) = recording.batches
        assert recording.export(batch) == LogRecordExportResult.SUCCESS  # a retry after a lost answer
    finally:
        provider.shutdown()
    (step,) = content_steps(shared_server, trace_id)
    assert len(step["payload"]["events"]) == 3
    barrier = secrets.token_hex(16)  # a later export: everything acknowledged before it is flushed by then
    assert post_json_logs(shared_server, json_record(barrier, "gen_ai.user.message")).status_code == 200
    content_steps(shared_server, barrier, count=0)
    assert shared_server.wait_run(trace_id)["step_count"] == 2


# --- the current generation: util-genai's operation.details event ---------------------------------------
@pytest.mark.parametrize("make_exporter", [grpc_exporter, http_exporter], ids=["grpc", "http-gzip"])
def test_util_genai_operation_details_event_carries_the_content_of_an_event_only_span(
        shared_server: LiveServer, tracer_provider: TracerProvider, monkeypatch: pytest.MonkeyPatch,
        make_exporter: Callable[[LiveServer], LogRecordExporter]) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    provider = logger_provider(make_exporter(shared_server))
    try:
        handler = TelemetryHandler(tracer_provider=tracer_provider, logger_provider=provider)
        with handler.inference("openai", request_model="gpt-4o-mini") as call:
            call.input_messages = [InputMessage(role="user", parts=[Text(content="Weather in Paris?")])]
            call.output_messages = [OutputMessage(role="assistant", finish_reason="stop",
                                                  parts=[Text(content="Sunny.")])]
            call.input_tokens, call.output_tokens = 12, 3
        finished = call.span.get_span_context()
        trace_id, span_id = format(finished.trace_id, "032x"), format(finished.span_id, "016x")
    finally:
        provider.shutdown()
    (step,) = content_steps(shared_server, trace_id)
    run = shared_server.wait_run(trace_id)
    model = next(s for s in shared_server.all_steps(trace_id) if s["type"] == "model")
    assert (step["name"], step["parent_span_id"]) == ("gen_ai.client.inference.operation.details", span_id)
    assert "input" not in model["payload"]  # EVENT_ONLY: no content on the span
    (sent,), (answered,) = step["payload"]["input"], step["payload"]["output"]  # kept as sent (util-genai adds name: null)
    assert (sent["role"], sent["parts"]) == ("user", [{"type": "text", "content": "Weather in Paris?"}])
    assert (answered["role"], answered["finish_reason"]) == ("assistant", "stop")
    assert answered["parts"] == [{"type": "text", "content": "Sunny."}]
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (12, 3)  # the event's usage is not counted again


# --- what is not stored is reported ----------------------------------------------------------------------
def json_record(trace_id: str | None, event_name: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"eventName": event_name, "timeUnixNano": "1767225600000000000",
                           "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "hi"}}]}},
                           **extra}
    if trace_id:
        out["traceId"] = trace_id
    return out


def post_json_logs(server: LiveServer, *records: dict[str, Any]) -> httpx.Response:
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]})
    return httpx.post(f"{server.otlp_http_url}/v1/logs", content=body, timeout=30,
                      headers={**AUTH, "content-type": "application/json"})


def test_records_not_stored_are_rejected_in_the_partial_success_with_the_reason(shared_server: LiveServer) -> None:
    trace_id = secrets.token_hex(16)
    resp = post_json_logs(shared_server, json_record(trace_id, "gen_ai.user.message"),
                          json_record(trace_id, "app.request.log"), json_record(None, ""),
                          json_record(None, "gen_ai.user.message"))
    assert resp.status_code == 200, resp.text
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "3"
    assert "2 log records not stored: not a GenAI content event" in partial["errorMessage"]
    assert "1 log record not stored: a GenAI content event without a trace_id" in partial["errorMessage"]
    assert len(content_steps(shared_server, trace_id, count=0)) == 1
    metrics = httpx.get(f"{shared_server.api_url}/metrics", timeout=10).text
    assert 'traceward_log_records_total{outcome="not_content"}' in metrics


def test_grpc_partial_success_counts_log_records(shared_server: LiveServer) -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(event_name="app.log")
    with grpc.insecure_channel(f"127.0.0.1:{shared_server.grpc_port}") as channel:
        response = logs_service_pb2_grpc.LogsServiceStub(channel).Export(
            request, metadata=tuple(AUTH.items()), timeout=30)
    assert response.partial_success.rejected_log_records == 1
    assert "not a GenAI content event" in response.partial_success.error_message


def test_content_logs_arriving_before_their_spans_open_the_run(shared_server: LiveServer) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    resp = post_json_logs(shared_server, json_record(trace_id, "gen_ai.user.message", spanId=span_id))
    assert resp.status_code == 200 and resp.json() == {}
    (step,) = content_steps(shared_server, trace_id, count=0)
    assert step["parent_span_id"] == span_id and step["orphan"] is True
