"""End to end: GenAI-convention spans from opentelemetry-util-genai's TelemetryHandler, exported over
OTLP/HTTP protobuf to a real server.

util-genai emits the current GenAI semantic conventions (``invoke_agent``, ``chat``, ``execute_tool``
spans; ``gen_ai.provider.name``, ``gen_ai.usage.*``, ``gen_ai.input.messages`` …) — the spans real
instrumentations built on it produce.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.genai.handler import TelemetryHandler
from opentelemetry.util.genai.types import InputMessage, OutputMessage, Text, ToolCallRequest

from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e

REQUEST_MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"




@pytest.fixture
def handler(shared_server: LiveServer, monkeypatch: pytest.MonkeyPatch,
            ) -> Iterator[tuple[TelemetryHandler, TracerProvider, InMemorySpanExporter]]:
    """A TelemetryHandler (content capture on) whose spans go to the live server over OTLP/HTTP."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    provider = TracerProvider(resource=Resource({"service.name": "genai-util-agent"}), id_generator=UniqueIds())
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=f"{shared_server.otlp_http_url}/v1/traces", headers={"authorization": f"Bearer {INGEST_KEY}"},
        timeout=10), schedule_delay_millis=60_000))
    try:
        yield TelemetryHandler(tracer_provider=provider), provider, memory
    finally:
        provider.shutdown()


def trace_of(memory: InMemorySpanExporter) -> str:
    (trace_id,) = {format(s.context.trace_id, "032x") for s in memory.get_finished_spans()}
    return trace_id


def test_agent_with_two_llm_calls_and_a_tool(
        shared_server: LiveServer, handler: tuple[TelemetryHandler, TracerProvider, InMemorySpanExporter]) -> None:
    telemetry, provider, memory = handler
    with telemetry.invoke_local_agent(agent_name="weather-agent", request_model=REQUEST_MODEL) as agent:
        with telemetry.inference("openai", request_model=REQUEST_MODEL) as first:
            first.input_messages = [InputMessage(role="user", parts=[Text(content="Weather in Paris?")])]
            first.output_messages = [OutputMessage(role="assistant", finish_reason="tool_calls", parts=[
                ToolCallRequest(arguments={"city": "Paris"}, name="get_weather", id="call_1")])]
            first.response_model_name = RESPONSE_MODEL
            first.input_tokens, first.output_tokens, first.cache_read_input_tokens = 42, 7, 10
        with telemetry.tool("get_weather", tool_type="function") as call:
            call.tool_call_id = "call_1"
            call.arguments = {"city": "Paris"}
            call.tool_result = "sunny, 21C"
        with telemetry.inference("openai", request_model=REQUEST_MODEL) as second:
            second.output_messages = [OutputMessage(role="assistant", finish_reason="stop",
                                                    parts=[Text(content="Sunny, 21C.")])]
            second.response_model_name = RESPONSE_MODEL
            second.input_tokens, second.output_tokens = 60, 12
        # The agent span repeats the total usage; Traceward must count it once.
        agent.input_tokens, agent.output_tokens = 102, 19
    assert provider.force_flush(10_000)
    run_id = trace_of(memory)

    run = shared_server.wait_run(run_id, lambda r: r["step_count"] == 4 and r["status"] != "running")
    assert run["status"] == "succeeded"
    assert run["name"] == run["agent"] == "weather-agent"
    assert run["service"] == "genai-util-agent"
    assert run["model_names"] == [RESPONSE_MODEL]
    assert run["tool_names"] == ["get_weather"] and run["tool_count"] == 1
    assert run["tokens"] == {"input": 102, "output": 19, "cache_read": 10, "cache_write": 0, "reasoning": 0}
    # Priced from the shipped table (gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per 1M tokens).
    assert run["cost_source"] == "computed"
    assert run["cost_usd"] == pytest.approx((32 * 0.15 + 10 * 0.075 + 7 * 0.6 + 60 * 0.15 + 12 * 0.6) / 1e6)

    steps = shared_server.all_steps(run_id)
    assert [(s["seq"], s["type"], s["name"]) for s in steps] == [
        (0, "span", "invoke_agent weather-agent"), (1, "model", f"chat {REQUEST_MODEL}"),
        (2, "tool", "execute_tool get_weather"), (3, "model", f"chat {REQUEST_MODEL}")]
    agent_step, chat1, tool_step, chat2 = steps
    for chat in (chat1, chat2):
        assert chat["model_name"] == RESPONSE_MODEL
        assert chat["provider"] == "openai"
        assert chat["parent_span_id"] == agent_step["span_id"]
    assert chat1["tokens"] == {"in": 42, "out": 7, "total": 49, "cache_read": 10}
    assert chat2["tokens"] == {"in": 60, "out": 12, "total": 72}
    assert chat1["payload"]["input"][0]["role"] == "user"
    assert chat1["payload"]["input"][0]["parts"][0]["content"] == "Weather in Paris?"
    assert chat1["payload"]["output"][0]["parts"][0]["name"] == "get_weather"
    assert tool_step["tool_name"] == "get_weather" and tool_step["tool_call_id"] == "call_1"
    assert tool_step["payload"]["input"] == {"city": "Paris"}
    assert tool_step["payload"]["output"] == "sunny, 21C"
    assert agent_step["agent_name"] == "weather-agent"


def test_failed_tool_fails_the_run(
        shared_server: LiveServer, handler: tuple[TelemetryHandler, TracerProvider, InMemorySpanExporter]) -> None:
    telemetry, provider, memory = handler
    with pytest.raises(TimeoutError), telemetry.invoke_local_agent(agent_name="flaky-agent"):
        with telemetry.inference("openai", request_model=REQUEST_MODEL) as chat:
            chat.input_tokens, chat.output_tokens = 5, 1
        with telemetry.tool("get_weather"):
            raise TimeoutError("weather service timed out")
    assert provider.force_flush(10_000)
    run_id = trace_of(memory)

    run = shared_server.wait_run(run_id, lambda r: r["step_count"] == 3 and r["status"] != "running")
    assert run["status"] == "failed"
    assert run["has_error"] is True and run["error_count"] == 2  # the tool and the agent span
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (5, 1)
    steps = {s["name"]: s for s in shared_server.all_steps(run_id)}
    tool_step = steps["execute_tool get_weather"]
    assert (tool_step["type"], tool_step["status"]) == ("tool", "error")
    assert tool_step["error"] == {"type": "TimeoutError", "message": "weather service timed out"}
    assert steps["invoke_agent flaky-agent"]["status"] == "error"
    assert steps[f"chat {REQUEST_MODEL}"]["status"] in ("ok", "unset")
