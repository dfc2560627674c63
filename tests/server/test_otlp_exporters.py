"""End to end: the OTel Python SDK's stock OTLP exporters (and hand-built OTLP/JSON) against a real server.

Every test sends a small agent trace — ``invoke_agent`` root → ``chat`` model span with ``gen_ai.*``
usage → ``execute_tool`` span — and asserts on what the REST API returns. No mocks: a real
``traceward serve`` process, real gRPC/HTTP exporters, real Delta/SQLite storage.
"""

from __future__ import annotations

import gzip
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import httpx
import orjson
import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e

AUTH = {"authorization": f"Bearer {INGEST_KEY}"}
MINUTE_NS = 60 * 1_000_000_000
DAY_NS = 24 * 60 * MINUTE_NS
REQUEST_MODEL = "gpt-4o"
RESPONSE_MODEL = "gpt-4o-2024-08-06"
TOOL_ARGS = {"city": "Paris", "units": "metric"}


# -- building the agent trace ----------------------------------------------------------------------------------



def make_provider(service: str) -> TracerProvider:
    return TracerProvider(resource=resource(service), id_generator=UniqueIds())


def collecting_provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider whose finished spans are kept in memory (to be exported by hand, in any order)."""
    memory = InMemorySpanExporter()
    provider = make_provider(service)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def resource(service: str) -> Resource:
    return Resource({"service.name": service, "service.version": "1.4.2", "deployment.environment.name": "ci"})


def emit_agent_trace(tracer: trace.Tracer, *, base_ns: int, agent: str = "travel",
                     step_gap_ns: int = 1_000_000) -> dict[str, int]:
    """invoke_agent → chat (usage 100/20) → execute_tool; the root repeats the chat's usage.

    Times: root [base, base+5g], chat [base+g, base+2g], tool [base+3g, base+4g]. Returns the span ids by
    role ("root", "chat", "tool") and the trace id ("trace").
    """
    g = step_gap_ns
    root = tracer.start_span(f"invoke_agent {agent}", kind=SpanKind.INTERNAL, start_time=base_ns, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, "gen_ai.provider.name": "openai"})
    ctx = trace.set_span_in_context(root)
    chat = tracer.start_span(f"chat {REQUEST_MODEL}", context=ctx, kind=SpanKind.CLIENT, start_time=base_ns + g,
                             attributes={
                                 "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                 "gen_ai.request.model": REQUEST_MODEL, "gen_ai.response.model": RESPONSE_MODEL,
                                 "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
                                 "gen_ai.response.finish_reasons": ["tool_calls"]})
    chat.set_status(Status(StatusCode.OK))
    chat.end(end_time=base_ns + 2 * g)
    tool = tracer.start_span("execute_tool get_weather", context=ctx, kind=SpanKind.INTERNAL,
                             start_time=base_ns + 3 * g, attributes={
                                 "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                                 "gen_ai.tool.call.id": "call_7", "gen_ai.tool.type": "function",
                                 "gen_ai.tool.call.arguments": orjson.dumps(TOOL_ARGS).decode(),
                                 "gen_ai.tool.call.result": "sunny, 21C"})
    tool.end(end_time=base_ns + 4 * g)
    # Agent frameworks often repeat the summed usage on the agent span: it must not be counted twice.
    root.set_attributes({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20})
    root.end(end_time=base_ns + 5 * g)
    ids = {role: span.get_span_context().span_id for role, span in (("root", root), ("chat", chat), ("tool", tool))}
    return {**ids, "trace": root.get_span_context().trace_id}


def hex_trace(trace_id: int) -> str:
    return format(trace_id, "032x")


def hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name.split()[0]: span for span in spans}


# -- OTLP/JSON, built by hand per the spec (hex ids, integer enums, int64 as strings) --------------------------

def json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 → decimal string
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    return {"stringValue": str(value)}


def json_attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": key, "value": json_value(value)} for key, value in (attrs or {}).items()]


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """ExportTraceServiceRequest in OTLP/JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)."""
    first = spans[0]
    return {"resourceSpans": [{
        "resource": {"attributes": json_attributes(first.resource.attributes)},
        "scopeSpans": [{
            "scope": {"name": "hand-built-otlp-json", "version": "0.1"},
            "spans": [{
                "traceId": hex_trace(span.context.trace_id),
                "spanId": hex_span(span.context.span_id),
                "parentSpanId": hex_span(span.parent.span_id) if span.parent else "",
                "name": span.name,
                "kind": span.kind.value + 1,  # SDK INTERNAL=0 → OTLP SPAN_KIND_INTERNAL=1
                "startTimeUnixNano": str(span.start_time),
                "endTimeUnixNano": str(span.end_time),
                "attributes": json_attributes(span.attributes),
                "status": {"code": span.status.status_code.value},  # UNSET=0, OK=1, ERROR=2
            } for span in spans],
        }],
    }]}


def post_json(server: LiveServer, spans: Sequence[ReadableSpan], *, compress: bool) -> httpx.Response:
    body = orjson.dumps(otlp_json(spans))
    headers = {**AUTH, "content-type": "application/json"}
    if compress:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    return httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, headers=headers, timeout=30)


# -- exporters ---------------------------------------------------------------------------------------------------

def grpc_exporter(server: LiveServer, *, compress: bool = False, timeout: float = 10) -> GrpcExporter:
    return GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True, headers=AUTH, timeout=timeout,
                        compression=grpc.Compression.Gzip if compress else grpc.Compression.NoCompression)


def http_exporter(server: LiveServer, *, compress: bool = False) -> HttpExporter:
    return HttpExporter(endpoint=f"{server.otlp_http_url}/v1/traces", headers=AUTH, timeout=10,
                        compression=HttpCompression.Gzip if compress else HttpCompression.NoCompression)


SDK_EXPORTERS: dict[str, Callable[[LiveServer], SpanExporter]] = {
    "grpc": lambda s: grpc_exporter(s),
    "grpc-gzip": lambda s: grpc_exporter(s, compress=True),
    "http-protobuf": lambda s: http_exporter(s),
    "http-protobuf-gzip": lambda s: http_exporter(s, compress=True),
}


def export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> None:
    assert exporter.export(list(spans)) is SpanExportResult.SUCCESS


@pytest.fixture
def grpc_out(shared_server: LiveServer) -> Iterator[GrpcExporter]:
    exporter = grpc_exporter(shared_server)
    yield exporter
    exporter.shutdown()


def steps_of(server: LiveServer, run_id: str) -> list[dict[str, Any]]:
    return server.all_steps(run_id)


def wait_steps(server: LiveServer, run_id: str, count: int, **more: Any) -> dict[str, Any]:
    """The run once ``count`` steps are flushed (and every ``more`` field has its value)."""
    return server.wait_run(run_id, lambda r: r["step_count"] == count
                           and all(r[k] == v for k, v in more.items()))


# -- one agent trace per transport ------------------------------------------------------------------------------

def send_agent_trace(server: LiveServer, transport: str, service: str) -> str:
    """Send the agent trace over ``transport``; return its run id (trace id)."""
    base_ns = time.time_ns() - 2 * MINUTE_NS
    if transport in SDK_EXPORTERS:
        # The real SDK pipeline: BatchSpanProcessor → stock exporter, flushed once.
        provider = make_provider(service)
        processor = BatchSpanProcessor(SDK_EXPORTERS[transport](server), schedule_delay_millis=60_000)
        provider.add_span_processor(processor)
        ids = emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=base_ns)
        assert provider.force_flush(10_000)
        provider.shutdown()
        return hex_trace(ids["trace"])
    provider, memory = collecting_provider(service)
    emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=base_ns)
    spans = memory.get_finished_spans()
    resp = post_json(server, spans, compress=transport.endswith("gzip"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert "partialSuccess" not in resp.json() or not int(resp.json()["partialSuccess"].get("rejectedSpans", 0))
    return hex_trace(spans[0].context.trace_id)


@pytest.mark.parametrize("transport", [*SDK_EXPORTERS, "http-json", "http-json-gzip"])
def test_agent_trace_over_each_transport(shared_server: LiveServer, transport: str) -> None:
    service = f"svc-{transport}"
    run_id = send_agent_trace(shared_server, transport, service)
    run = shared_server.wait_run(run_id, lambda r: r["step_count"] == 3 and r["status"] != "running")

    assert run["run_id"] == run["trace_id"] == run_id
    assert len(run_id) == 32
    assert run["status"] == "succeeded"
    assert run["name"] == "travel"
    assert run["agent"] == "travel"
    assert run["service"] == service
    assert run["tags"]["service.name"] == service
    assert run["tags"]["service.version"] == "1.4.2"
    assert run["model_names"] == [RESPONSE_MODEL]
    assert run["tool_names"] == ["get_weather"]
    assert run["tool_count"] == 1
    # The invoke_agent span repeats the chat's usage: counted once (semconv §6.3).
    assert run["tokens"]["input"] == 100
    assert run["tokens"]["output"] == 20
    assert run["error_count"] == 0 and run["has_error"] is False
    assert run["finished_at_ns"] - run["started_at_ns"] == 5_000_000
    assert run["duration_ms"] == 5

    steps = steps_of(shared_server, run_id)
    assert [s["seq"] for s in steps] == [0, 1, 2]
    assert [(s["type"], s["name"]) for s in steps] == [
        ("span", "invoke_agent travel"), ("model", f"chat {REQUEST_MODEL}"), ("tool", "execute_tool get_weather")]
    root, chat, tool = steps
    assert root["parent_span_id"] is None
    assert chat["parent_span_id"] == tool["parent_span_id"] == root["span_id"]
    assert {s["run_id"] for s in steps} == {run_id}
    assert not any(s["orphan"] for s in steps)
    assert chat["model_name"] == RESPONSE_MODEL
    assert chat["tokens"] == {"in": 100, "out": 20, "total": 120}
    assert chat["status"] == "ok"
    assert chat["payload"]["kind"] == 3  # SPAN_KIND_CLIENT, whatever the encoding
    assert chat["payload"]["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert run["tags"]["deployment.environment"] == "ci"
    assert tool["tool_name"] == "get_weather"
    assert tool["tool_call_id"] == "call_7"
    assert tool["payload"]["input"] == TOOL_ARGS
    assert tool["payload"]["output"] == "sunny, 21C"

    # The list endpoint finds it by service, model and tool.
    for params in ({"service": service}, {"service": service, "model": RESPONSE_MODEL},
                   {"service": service, "tool": "get_weather"}, {"service": service, "status": "succeeded"}):
        listed = shared_server.get("/v1/runs", **params).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id], params

    # Cursor paging yields the same steps one at a time.
    assert shared_server.all_steps(run_id, limit=1) == steps


# -- incremental runs, retries, orphans -------------------------------------------------------------------------

@pytest.mark.parametrize("order", [("tool", "chat", "root"), ("root", "chat", "tool"), ("chat", "root", "tool")],
                         ids="-then-".join)
def test_spans_split_across_exports_make_one_incremental_run(
        shared_server: LiveServer, grpc_out: GrpcExporter, order: tuple[str, str, str]) -> None:
    """One span per export, in any order (children before their parent), minutes apart in span time and
    across midnight: one run that fills in export by export, never duplicated, final when the root arrives."""
    service = "svc-split-" + "-".join(order)
    provider, memory = collecting_provider(service)
    # Five minutes of span time across the last UTC midnight: the steps land in two day partitions.
    midnight_ns = time.time_ns() // DAY_NS * DAY_NS
    base_ns = midnight_ns - 150 * 1_000_000_000
    ids = emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=base_ns, step_gap_ns=MINUTE_NS)
    spans = {role: span for span in memory.get_finished_spans() for role in ids
             if role != "trace" and span.context.span_id == ids[role]}
    run_id = hex_trace(ids["trace"])
    step_type = {"root": "span", "chat": "model", "tool": "tool"}
    http_out = http_exporter(shared_server)

    for count, role in enumerate(order, start=1):
        # Alternate protocols: the run must not care how its spans travel.
        export(grpc_out if count % 2 else http_out, [spans[role]])
        arrived = order[:count]
        run = wait_steps(shared_server, run_id, count)
        root_in = "root" in arrived
        assert run["status"] == ("succeeded" if root_in else "running"), arrived
        assert (run["finished_at_ns"] == base_ns + 5 * MINUTE_NS) if root_in else run["finished_at"] is None
        if root_in:
            assert run["name"] == "travel"
        # The root repeats the chat's usage: alone it counts, with the chat it is a repeat (never 200/40).
        usage = (100, 20) if {"root", "chat"} & set(arrived) else (0, 0)
        assert (run["tokens"]["input"], run["tokens"]["output"]) == usage, arrived
        assert run["model_names"] == ([RESPONSE_MODEL] if "chat" in arrived else []), arrived
        assert run["tool_count"] == ("tool" in arrived), arrived
        steps = steps_of(shared_server, run_id)
        # seq follows arrival; a child is an orphan exactly until its parent arrives.
        assert [(s["seq"], s["type"], s["span_id"], s["orphan"]) for s in steps] == [
            (seq, step_type[r], hex_span(ids[r]), r != "root" and not root_in) for seq, r in enumerate(arrived)]
    http_out.shutdown()

    run = shared_server.get(f"/v1/runs/{run_id}").json()
    assert run["started_at_ns"] == base_ns
    assert run["duration_ms"] == 5 * 60 * 1000
    assert run["step_count"] == 3
    listed = shared_server.get("/v1/runs", service=service).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]


def healthz(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.api_url}/healthz", timeout=10).json()


def test_reexported_spans_are_not_duplicated(shared_server: LiveServer, grpc_out: GrpcExporter) -> None:
    """Exporter retries — immediately (still in the WAL) and later (flushed), over every protocol."""
    service = "svc-retry"
    provider, memory = collecting_provider(service)
    ids = emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=time.time_ns() - MINUTE_NS)
    spans = list(memory.get_finished_spans())
    run_id = hex_trace(ids["trace"])
    before = healthz(shared_server)["spans_duplicate"]

    export(grpc_out, spans)
    export(grpc_out, spans)  # a retry racing the flusher
    wait_steps(shared_server, run_id, 3, status="succeeded")

    export(grpc_out, spans)  # a retry after the flush
    http_out = http_exporter(shared_server, compress=True)
    try:
        export(http_out, spans)
    finally:
        http_out.shutdown()
    assert post_json(shared_server, spans, compress=False).status_code == 200

    # One old span and one new one in the same batch: only the new one is stored.
    tracer = provider.get_tracer("tests.e2e")
    root_ctx = trace.set_span_in_context(NonRecordingSpan(spans[-1].context))
    with tracer.start_as_current_span("execute_tool get_time", context=root_ctx, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_time",
            "gen_ai.tool.call.id": "call_8"}):
        pass
    late = memory.get_finished_spans()[-1]
    export(grpc_out, [spans[0], late])

    run = wait_steps(shared_server, run_id, 4)
    assert healthz(shared_server)["spans_duplicate"] - before == 3 * 4 + 1
    steps = steps_of(shared_server, run_id)
    assert [s["seq"] for s in steps] == [0, 1, 2, 3]
    assert len({s["span_id"] for s in steps}) == 4
    assert steps[-1]["name"] == "execute_tool get_time"
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (100, 20)
    assert run["tool_count"] == 2
    assert run["status"] == "succeeded"
    assert [r["run_id"] for r in shared_server.get("/v1/runs", service=service).json()["runs"]] == [run_id]


def lost_parent(trace_id: int, span_id: int) -> Any:
    """A context whose current span is a local parent that never gets exported (e.g. dropped by a full queue)."""
    parent = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_span_whose_parent_never_arrives_is_kept_as_orphan(shared_server: LiveServer,
                                                           grpc_out: GrpcExporter) -> None:
    provider, memory = collecting_provider("svc-orphan")
    tracer = provider.get_tracer("tests.e2e")
    missing_parent = secrets.randbits(64) | 1

    # A trace with a root, an orphan (its parent was lost) and the orphan's own child.
    with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}) as root:
        trace_id = root.get_span_context().trace_id
    lost = lost_parent(trace_id, missing_parent)
    with tracer.start_as_current_span("execute_tool lookup", context=lost, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}), \
            tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3}):
        pass
    # A trace made of nothing but an orphan: no root ever arrives.
    lonely_trace = secrets.randbits(128) | 1
    with tracer.start_as_current_span("execute_tool fetch", context=lost_parent(lonely_trace, missing_parent),
                                      attributes={"gen_ai.tool.name": "fetch"}):
        pass
    export(grpc_out, memory.get_finished_spans())

    run_id = hex_trace(trace_id)
    run = wait_steps(shared_server, run_id, 3, status="succeeded")
    assert run["tool_count"] == 1
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (7, 3)
    by_step = {s["name"]: s for s in steps_of(shared_server, run_id)}
    assert by_step["invoke_agent planner"]["orphan"] is False
    assert by_step["execute_tool lookup"]["orphan"] is True
    assert by_step["execute_tool lookup"]["parent_span_id"] == hex_span(missing_parent)
    assert by_step["chat gpt-4o-mini"]["orphan"] is False  # its parent (the orphan) is there

    lonely = wait_steps(shared_server, hex_trace(lonely_trace), 1)
    assert lonely["status"] == "running"  # no root: not finished, but shown
    (step,) = steps_of(shared_server, hex_trace(lonely_trace))
    assert (step["type"], step["name"], step["orphan"]) == ("tool", "execute_tool fetch", True)


# -- configuration the way users do it: OTEL_EXPORTER_OTLP_* environment variables only ------------------------

@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exporters_configured_from_environment(shared_server: LiveServer, monkeypatch: pytest.MonkeyPatch,
                                               protocol: str) -> None:
    """README's instructions: endpoint + ``authorization=Bearer <key>`` header, nothing in code."""
    port = shared_server.grpc_port if protocol == "grpc" else shared_server.otlp_http_port
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {INGEST_KEY}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    out: SpanExporter = GrpcExporter() if protocol == "grpc" else HttpExporter()
    provider, memory = collecting_provider(f"svc-env-{protocol}")
    ids = emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=time.time_ns() - MINUTE_NS)
    try:
        export(out, memory.get_finished_spans())
    finally:
        out.shutdown()
    run = wait_steps(shared_server, hex_trace(ids["trace"]), 3, status="succeeded")
    assert run["service"] == f"svc-env-{protocol}"
    assert (run["tokens"]["input"], run["tokens"]["output"], run["tool_count"]) == (100, 20, 1)


@pytest.mark.parametrize("make", [
    lambda s: GrpcExporter(endpoint=f"127.0.0.1:{s.grpc_port}", insecure=True, timeout=5,
                           headers={"authorization": "Bearer tw_00000000_not-a-real-key"}),
    lambda s: HttpExporter(endpoint=f"{s.otlp_http_url}/v1/traces", timeout=5),
], ids=["grpc-wrong-key", "http-no-key"])
def test_exporter_without_valid_credentials_fails_fast_and_stores_nothing(
        shared_server: LiveServer, make: Callable[[LiveServer], SpanExporter]) -> None:
    provider, memory = collecting_provider("svc-unauthenticated")
    ids = emit_agent_trace(provider.get_tracer("tests.e2e"), base_ns=time.time_ns() - MINUTE_NS)
    out = make(shared_server)
    started = time.monotonic()
    try:
        assert out.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    finally:
        out.shutdown()
    assert time.monotonic() - started < 3  # UNAUTHENTICATED / 401 is not retried
    # A valid export afterwards: once it is visible, anything sent before it would be too.
    marker_provider, marker_memory = collecting_provider("svc-unauthenticated")
    marker = emit_agent_trace(marker_provider.get_tracer("tests.e2e"), base_ns=time.time_ns() - MINUTE_NS)
    ok = grpc_exporter(shared_server)
    try:
        export(ok, marker_memory.get_finished_spans())
    finally:
        ok.shutdown()
    wait_steps(shared_server, hex_trace(marker["trace"]), 3)
    assert shared_server.get(f"/v1/runs/{hex_trace(ids['trace'])}").status_code == 404


def test_otlp_json_spec_details(shared_server: LiveServer) -> None:
    """Case-insensitive hex ids, omitted vs empty parentSpanId, int64 as string or number, unknown fields."""
    trace_hex, root_hex, child_hex = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    now = time.time_ns()
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc-json-spec"}}],
                     "someFutureField": True},
        "scopeSpans": [{"scope": {"name": "hand"}, "spans": [
            {"traceId": trace_hex.upper(), "spanId": root_hex.upper(), "name": "invoke_agent json",
             "kind": 1, "startTimeUnixNano": str(now - 2_000_000), "endTimeUnixNano": now,
             "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}],
             "status": {}, "futureSpanField": {"x": 1}},
            {"traceId": trace_hex, "spanId": child_hex, "parentSpanId": root_hex.upper(), "name": "chat m",
             "kind": 3, "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now - 500_000),
             "attributes": [
                 {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                 {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                 {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 11}},  # a number is accepted too
                 {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "9007199254740993"}}],
             "status": {"code": 2, "message": "rate limited"}},
        ]}],
    }]}
    resp = httpx.post(f"{shared_server.otlp_http_url}/v1/traces", content=orjson.dumps(doc),
                      headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    run = wait_steps(shared_server, trace_hex, 2, status="succeeded")
    assert run["run_id"] == trace_hex  # lower-case whatever the case sent
    assert run["tokens"]["output"] == 9007199254740993  # beyond 2**53: int64 kept exact via the string form
    root, chat = steps_of(shared_server, trace_hex)
    assert (root["span_id"], root["parent_span_id"]) == (root_hex, None)
    assert (chat["span_id"], chat["parent_span_id"], chat["orphan"]) == (child_hex, root_hex, False)
    assert (chat["type"], chat["status"], chat["error"]) == ("model", "error", {"type": None,
                                                                               "message": "rate limited"})
    assert chat["tokens"]["in"] == 11


def test_late_intermediate_span_relinks_repeated_usage(shared_server: LiveServer,
                                                       grpc_out: GrpcExporter) -> None:
    """invoke_agent (repeats usage) → plain "agent step" span → chat (usage), the middle span exported last.

    Until the middle span arrives the chat looks unrelated to the root, so both usages count; once it
    arrives the root's usage is a repeat and the totals must drop back to the chat's alone.
    """
    provider, memory = collecting_provider("svc-late-middle")
    tracer = provider.get_tracer("tests.e2e")
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
    with tracer.start_as_current_span("invoke_agent travel", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "travel", **usage}) as root, \
            tracer.start_as_current_span("agent step 1"), \
            tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", **usage}):
        pass
    spans = by_name(memory.get_finished_spans())
    run_id = hex_trace(root.get_span_context().trace_id)

    export(grpc_out, [spans["invoke_agent"], spans["chat"]])
    wait_steps(shared_server, run_id, 2, status="succeeded")
    export(grpc_out, [spans["agent"]])
    run = wait_steps(shared_server, run_id, 3)
    assert [s["orphan"] for s in steps_of(shared_server, run_id)] == [False, False, False]
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (100, 20)


def test_agent_continuing_a_remote_trace_finishes(shared_server: LiveServer) -> None:
    """The agent is called over HTTP with a traceparent; the caller's spans never reach Traceward."""
    upstream_trace, upstream_span = secrets.token_hex(16), secrets.token_hex(8)
    incoming = TraceContextTextMapPropagator().extract({"traceparent": f"00-{upstream_trace}-{upstream_span}-01"})
    provider = make_provider("svc-remote-parent")
    provider.add_span_processor(BatchSpanProcessor(grpc_exporter(shared_server), schedule_delay_millis=60_000))
    tracer = provider.get_tracer("tests.e2e")
    token = context.attach(incoming)
    try:
        emit_agent_trace(tracer, base_ns=time.time_ns() - MINUTE_NS)
    finally:
        context.detach(token)
    assert provider.force_flush(10_000)
    provider.shutdown()

    run = wait_steps(shared_server, upstream_trace, 3)  # one flush brings all three spans
    root = steps_of(shared_server, upstream_trace)[0]
    assert root["parent_span_id"] == upstream_span  # the remote parent is kept on the step
    assert run["status"] == "succeeded"
    assert run["name"] == "travel"
    assert run["finished_at"] is not None


def test_run_agent_is_the_root_agent_whatever_the_arrival_order(shared_server: LiveServer,
                                                                grpc_out: GrpcExporter) -> None:
    run_ids = []
    for split in (False, True):
        provider, memory = collecting_provider(f"svc-subagent-{split}")
        tracer = provider.get_tracer("tests.e2e")
        with tracer.start_as_current_span("invoke_agent planner", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}) as root, \
                tracer.start_as_current_span("invoke_agent researcher", attributes={
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"}):
            pass
        spans = memory.get_finished_spans()
        if split:  # the sub-agent ends first, so its batch leaves first
            export(grpc_out, [s for s in spans if s.parent is not None])
            wait_steps(shared_server, hex_trace(root.get_span_context().trace_id), 1)
            export(grpc_out, [s for s in spans if s.parent is None])
        else:
            export(grpc_out, spans)
        run_ids.append(hex_trace(root.get_span_context().trace_id))
    runs = [wait_steps(shared_server, run_id, 2, status="succeeded") for run_id in run_ids]
    assert runs[0]["agent"] == "planner"  # one batch
    assert runs[0]["name"] == runs[1]["name"] == "planner"
    assert runs[1]["agent"] == "planner"  # children first
