"""Seeded synthetic OTLP requests of realistic agent spans (~1 KB, a dozen attributes each)."""

from __future__ import annotations

import json
import random
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash")
_TOOLS = ("search_flights", "book_hotel", "get_weather", "send_email", "query_db")
SPANS_PER_TRACE = 50


def _attr(span: trace_pb2.Span, key: str, value: object) -> None:
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


def _fill_model(span: trace_pb2.Span, rng: random.Random) -> None:
    model = rng.choice(_MODELS)
    span.name = f"chat {model}"
    messages = [{"role": "user", "parts": [{"type": "text", "content": "Plan a trip to Lisbon " * 8}]}]
    for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
                       ("gen_ai.request.model", model), ("gen_ai.response.model", model),
                       ("gen_ai.usage.input_tokens", rng.randint(200, 4000)),
                       ("gen_ai.usage.output_tokens", rng.randint(20, 800)),
                       ("gen_ai.response.finish_reasons", "stop"), ("gen_ai.request.temperature", 0.2),
                       ("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
                       ("gen_ai.input.messages", json.dumps(messages)), ("server.address", "api.openai.com"),
                       ("gen_ai.conversation.id", f"conv-{rng.getrandbits(32):x}")):
        _attr(span, key, value)


def _fill_tool(span: trace_pb2.Span, rng: random.Random) -> None:
    tool = rng.choice(_TOOLS)
    span.name = f"execute_tool {tool}"
    args = {"city": "Lisbon", "date": "2026-12-01", "limit": rng.randint(1, 20), "note": "x" * 300}
    for key, value in (("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", tool),
                       ("gen_ai.tool.call.id", f"call_{rng.getrandbits(48):x}"), ("gen_ai.tool.type", "function"),
                       ("gen_ai.tool.call.arguments", json.dumps(args)),
                       ("gen_ai.tool.call.result", json.dumps({"ok": True, "items": list(range(20))})),
                       ("code.function", "run_tool"), ("thread.id", rng.randint(1, 64)),
                       ("app.step", rng.randint(0, 99)), ("app.retry", False),
                       ("app.region", "eu-west-1"), ("app.latency_budget_ms", 1500)):
        _attr(span, key, value)


def make_agent_request(n_spans: int, *, seed: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """An export request of ``n_spans`` spans: traces of SPANS_PER_TRACE spans under invoke_agent roots."""
    rng = random.Random(seed)
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "bench-agent"), ("service.version", "1.0.0"),
                       ("deployment.environment.name", "bench")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope = rs.scope_spans.add()
    scope.scope.name = "bench"
    now = time.time_ns()
    root_id = b""
    trace_id = b""
    for i in range(n_spans):
        span = scope.spans.add()
        if i % SPANS_PER_TRACE == 0:
            trace_id, root_id = rng.randbytes(16), rng.randbytes(8)
            span.span_id, span.name = root_id, "invoke_agent travel"
            _attr(span, "gen_ai.operation.name", "invoke_agent")
            _attr(span, "gen_ai.agent.name", "travel")
        else:
            span.span_id, span.parent_span_id = rng.randbytes(8), root_id
            (_fill_model if i % 2 else _fill_tool)(span, rng)
        span.trace_id = trace_id
        span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
        span.start_time_unix_nano = now + i * 1000
        span.end_time_unix_nano = now + i * 1000 + 500_000
    return request
