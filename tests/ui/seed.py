"""Seed data for the UI tests: agent traces sent over OTLP/HTTP, and bulk runs written into the index.

- :func:`travel_trace` builds a small, realistic agent trace (an ``invoke_agent`` root, model and tool
  spans, optionally a failing tool, a secret that redaction masks, a span whose parent never arrives);
- :func:`big_trace` builds one run of ``n`` steps nested three levels deep (root → sub-agents → model and
  tool calls), for the timeline's performance test;
- :func:`load_bulk_runs` writes runs straight into the SQLite index (like ``benchmarks/test_query.py``),
  so the runs list can be measured over 100,000 runs without ingesting them.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.store.index import RunIndex
from tests.live import INGEST_KEY, LiveServer

MS = 1_000_000


@dataclass
class SpanSpec:
    """What to put in one OTLP span."""

    span_id: bytes
    parent: bytes | None
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, object] = field(default_factory=dict)
    error: str | None = None


def _set(span: trace_pb2.Span, key: str, value: object) -> None:
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = str(value)


def export_request(trace_id: bytes, specs: list[SpanSpec], *, service: str
                   ) -> trace_service_pb2.ExportTraceServiceRequest:
    """One resource (``service.name``) holding the spans of one trace."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _set_resource(resource_spans, service)
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tests.ui"
    for spec in specs:
        span = scope.spans.add()
        span.trace_id, span.span_id, span.name = trace_id, spec.span_id, spec.name
        if spec.parent:
            span.parent_span_id = spec.parent
        span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
        span.start_time_unix_nano, span.end_time_unix_nano = spec.start_ns, spec.end_ns
        for key, value in spec.attrs.items():
            _set(span, key, value)
        if spec.error:
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            span.status.message = spec.error
    return request


def _set_resource(resource_spans: trace_pb2.ResourceSpans, service: str) -> None:
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service


def send(server: LiveServer, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
    """POST the request to the OTLP/HTTP receiver (protobuf)."""
    resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=request.SerializeToString(),
                      headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {INGEST_KEY}"},
                      timeout=60)
    assert resp.status_code == 200, resp.text


def _model(rng: random.Random, parent: bytes, start: int, model: str, prompt: str | None) -> SpanSpec:
    """A chat span; with a ``prompt`` it carries input messages (which also make a ``prompt`` step)."""
    attrs: dict[str, object] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.usage.input_tokens": rng.randint(300, 3000),
        "gen_ai.usage.output_tokens": rng.randint(20, 400)}
    if prompt is not None:
        attrs["gen_ai.input.messages"] = json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])
    return SpanSpec(rng.randbytes(8), parent, f"chat {model}", start, start + rng.randint(40, 400) * MS, attrs)


def _tool(rng: random.Random, parent: bytes, start: int, tool: str, args: dict[str, object],
          error: str | None = None) -> SpanSpec:
    return SpanSpec(rng.randbytes(8), parent, f"execute_tool {tool}", start, start + rng.randint(5, 120) * MS, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
        "gen_ai.tool.call.id": f"call_{rng.getrandbits(32):x}", "gen_ai.tool.call.arguments": json.dumps(args),
        "gen_ai.tool.call.result": json.dumps({"ok": error is None})}, error)


@dataclass(frozen=True)
class TraceShape:
    """How a travel-agent run differs from the baseline."""

    model: str = "gpt-4o"
    city: str = "Lisbon"
    retry_search: bool = False
    failing_tool: bool = False
    secret: bool = False
    orphan: bool = False


def travel_trace(rng: random.Random, start_ns: int, shape: TraceShape, *, agent: str = "travel-agent"
                 ) -> tuple[bytes, list[SpanSpec]]:
    """A travel agent's run: plan (model) → search flights (maybe twice) → book hotel → answer (model)."""
    trace_id, root = rng.randbytes(16), rng.randbytes(8)
    t = start_ns + 2 * MS
    specs = [_model(rng, root, t, shape.model, f"Plan three days in {shape.city}")]
    for _ in range(2 if shape.retry_search else 1):
        t += 450 * MS
        specs.append(_tool(rng, root, t, "search_flights", {"to": shape.city, "date": "2026-12-01"}))
    t += 200 * MS
    hotel_args: dict[str, object] = {"city": shape.city, "nights": 3}
    if shape.secret:
        hotel_args["api_key"] = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    specs.append(_tool(rng, root, t, "book_hotel", hotel_args,
                       error="hotel API returned 503" if shape.failing_tool else None))
    if shape.secret:
        specs[-1].attrs["app.api_key"] = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    t += 150 * MS
    specs.append(_model(rng, root, t, shape.model, "Write the itinerary"))
    if shape.orphan:
        specs.append(_tool(rng, rng.randbytes(8), t + 10 * MS, "get_weather", {"city": shape.city}))
    end = max(s.end_ns for s in specs) + 5 * MS
    specs.insert(0, SpanSpec(root, None, f"invoke_agent {agent}", start_ns, end,
                             {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}))
    return trace_id, specs


def big_trace(rng: random.Random, start_ns: int, n_steps: int, *, agent: str = "planner") -> tuple[bytes, list[SpanSpec]]:
    """One run of ``n_steps`` spans (and steps): a root, sub-agents of 20 spans each, model and tool calls under them."""
    trace_id, root = rng.randbytes(16), rng.randbytes(8)
    specs: list[SpanSpec] = []
    t = start_ns + MS
    while len(specs) < n_steps - 1:
        sub = SpanSpec(rng.randbytes(8), root, "invoke_agent researcher", t, t, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"})
        specs.append(sub)
        for k in range(min(19, n_steps - 1 - len(specs))):
            child_start = t + k * 5 * MS
            if k % 2 == 0:
                child = _model(rng, sub.span_id, child_start, "gpt-4o-mini", None)
            else:
                failing = k == 7 and len(specs) % 3 == 0
                child = _tool(rng, sub.span_id, child_start, "query_db", {"q": f"select {k}"},
                              error="timeout" if failing else None)
            child.end_ns = child_start + rng.randint(1, 8) * MS
            specs.append(child)
        sub.end_ns = max(s.end_ns for s in specs[-19:]) + MS
        t = sub.end_ns + MS
    specs.insert(0, SpanSpec(root, None, f"invoke_agent {agent}", start_ns, t + MS,
                             {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}))
    return trace_id, specs[:n_steps]


def send_trace(server: LiveServer, trace_id: bytes, specs: list[SpanSpec], *, service: str,
               chunk: int = 1000) -> str:
    """Send the spans in chunks; returns the run id (hex trace id)."""
    for start in range(0, len(specs), chunk):
        send(server, export_request(trace_id, specs[start:start + chunk], service=service))
    return trace_id.hex()


_STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "running", "canceled")


def load_bulk_runs(index: RunIndex, n: int, *, newest_ns: int | None = None, seed: int = 11) -> None:
    """``n`` runs of 50 bulk agents, one every 20 s going back from ``newest_ns`` (default: a day ago)."""
    rng = random.Random(seed)
    newest = newest_ns if newest_ns is not None else time.time_ns() - 86_400 * 10**9
    rows, tools = [], []
    for i in range(n):
        run_id = f"{rng.getrandbits(128):032x}"
        started = newest - i * 20 * 10**9 - rng.randint(0, 999)
        status = rng.choice(_STATUSES)
        agent = f"bulk-agent-{i % 50}"
        rows.append(("default", "default", run_id, run_id, status, started, started + rng.randint(1, 90) * 10**9,
                     f"bulk-service-{i % 7}", agent, orjson.dumps({"env": "prod"}).decode(),
                     1 if status == "failed" else 0, rng.random() / 10, rng.randint(10, 60),
                     rng.randint(500, 20_000), rng.randint(50, 3_000)))
        tools.append(("default", run_id, rng.choice(("search", "book", "email")), started))
    with index.transaction() as db:
        db.conn.executemany(
            "INSERT INTO runs (tenant_id, project_id, run_id, trace_id, status, started_ns, finished_ns, service, "
            "agent, tags, error_count, cost_usd, step_count, tokens_in, tokens_out) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.conn.executemany("INSERT INTO run_tools VALUES (?,?,?,?)", tools)
    index.writer.execute("ANALYZE")
