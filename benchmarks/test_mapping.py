"""map_span on a realistic agent chat span (~1 KB, a dozen attributes, one event)."""

from __future__ import annotations

import json

import orjson
from pytest_benchmark.fixture import BenchmarkFixture

from otlp_receiver.mapping import map_span
from otlp_receiver.model import Span, SpanEvent, SpanId, SpanKind, StatusCode, StepType, TraceId

START_NS = 1_767_225_600_000_000_000

INPUT_MESSAGES = [
    {"role": "user", "parts": [{"type": "text", "content": "What's the weather in Paris tomorrow, and should I pack an umbrella?"}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_7Qx", "name": "get_weather",
                                      "arguments": {"city": "Paris", "day": "tomorrow"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_7Qx",
                                 "response": {"forecast": "rain", "high_c": 14, "low_c": 9}}]},
]  # fmt: skip
OUTPUT_MESSAGES = [
    {"role": "assistant", "finish_reason": "stop",
     "parts": [{"type": "text", "content": "Rain is expected in Paris tomorrow (9-14 °C): pack an umbrella."}]},
]  # fmt: skip


def make_agent_chat_span() -> Span:
    """A GenAI chat span as util-genai emits it with content capture on."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.temperature": 0.2,
        "gen_ai.usage.input_tokens": 412,
        "gen_ai.usage.output_tokens": 38,
        "gen_ai.usage.cache_read.input_tokens": 256,
        "gen_ai.conversation.id": "conv_5f2c9e",
        "gen_ai.agent.name": "travel-assistant",
        "server.address": "api.openai.com",
        "gen_ai.input.messages": json.dumps(INPUT_MESSAGES),
        "gen_ai.output.messages": json.dumps(OUTPUT_MESSAGES),
    }
    return Span(
        trace_id=TraceId("4bf92f3577b34da6a3ce929d0e0e4736"),
        span_id=SpanId("00f067aa0ba902b7"),
        parent_span_id=SpanId("53995c3f42cd8ad8"),
        name="chat gpt-4o",
        kind=SpanKind.CLIENT,
        start_ns=START_NS,
        end_ns=START_NS + 812_000_000,
        status_code=StatusCode.OK,
        attributes=attributes,
        events=(SpanEvent("gen_ai.client.first_token", START_NS + 300_000_000, {}),),
        resource={
            "service.name": "travel-agent",
            "service.version": "1.4.2",
            "deployment.environment.name": "prod",
        },
        scope_name="opentelemetry.instrumentation.openai_v2",
    )


def test_map_span_agent_chat(benchmark: BenchmarkFixture) -> None:
    span = make_agent_chat_span()
    assert 900 <= len(orjson.dumps(span.attributes)) <= 1600  # keep the fixture realistic
    step = benchmark(map_span, span)
    assert (step.type, step.model_name, step.tokens_in) == (StepType.MODEL, "gpt-4o-2024-08-06", 412)
