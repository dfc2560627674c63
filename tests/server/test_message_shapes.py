"""End to end: chat messages are stored once and in one shape, whichever convention sent them.

Spans go out through the OTel SDK's OTLP/HTTP exporter to ``traceward serve``; the diff and the steps are
read back through the API. The same agent conversation sent once as OpenInference spans and once as
current GenAI-convention spans diffs with no message change; a conversation carried by the older
generation's span events, changed in one user message, diffs with exactly that one change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Tracer

from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e

SYSTEM, QUESTION, ANSWER = "be brief", "weather in Paris?", "It is sunny in Paris."
ARGUMENTS, RESULT = {"city": "Paris"}, "sunny, 21C"




@pytest.fixture
def tracer(shared_server: LiveServer) -> Iterator[Tracer]:
    provider = TracerProvider(resource=Resource({"service.name": "shapes-agent"}), id_generator=UniqueIds())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{shared_server.otlp_http_url}/v1/traces", headers={"authorization": f"Bearer {INGEST_KEY}"},
        timeout=10)))
    try:
        yield provider.get_tracer("agent")
    finally:
        provider.shutdown()


def _run(tracer: Tracer, root: dict[str, Any], steps: list[tuple[str, dict[str, Any]]]) -> str:
    """A root span ``agent`` over child spans ``(name, attributes)`` in order; the trace id."""
    with tracer.start_as_current_span("agent", attributes=root) as span:
        for name, attributes in steps:
            with tracer.start_as_current_span(name, attributes=attributes):
                pass
        return format(span.get_span_context().trace_id, "032x")


# --- one conversation, two conventions --------------------------------------------------------------------
def _openinference(tracer: Tracer) -> str:
    im = "llm.input_messages"

    def llm(turns: int, output: dict[str, Any]) -> dict[str, Any]:
        history: dict[str, Any] = {
            f"{im}.0.message.role": "system", f"{im}.0.message.content": SYSTEM,
            f"{im}.1.message.role": "user", f"{im}.1.message.content": QUESTION}
        if turns > 2:
            history |= {
                f"{im}.2.message.role": "assistant", f"{im}.2.message.tool_calls.0.tool_call.id": "call_1",
                f"{im}.2.message.tool_calls.0.tool_call.function.name": "weather",
                f"{im}.2.message.tool_calls.0.tool_call.function.arguments": json.dumps(ARGUMENTS),
                f"{im}.3.message.role": "tool", f"{im}.3.message.tool_call_id": "call_1",
                f"{im}.3.message.content": RESULT}
        return {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", **history, **output}

    calls = {"llm.output_messages.0.message.role": "assistant",
             "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
             "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "weather",
             "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": json.dumps(ARGUMENTS),
             "llm.finish_reason": "tool_calls"}
    answer = {"llm.output_messages.0.message.role": "assistant",
              "llm.output_messages.0.message.content": ANSWER, "llm.finish_reason": "stop"}
    tool = {"openinference.span.kind": "TOOL", "tool.name": "weather", "input.value": json.dumps(ARGUMENTS),
            "input.mime_type": "application/json", "output.value": RESULT}
    return _run(tracer, {"openinference.span.kind": "AGENT"},
                [("chat gpt-4o", llm(2, calls)), ("weather", tool), ("chat gpt-4o", llm(4, answer))])


def _genai(tracer: Tracer) -> str:
    call = {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": ARGUMENTS}
    history = [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
    turn = [*history, {"role": "assistant", "parts": [call]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": RESULT}]}]

    def chat(messages: list[Any], output: list[Any]) -> dict[str, Any]:
        return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SYSTEM}]),
                "gen_ai.input.messages": json.dumps(messages), "gen_ai.output.messages": json.dumps(output)}

    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather",
            "gen_ai.tool.call.id": "call_1", "gen_ai.tool.call.arguments": json.dumps(ARGUMENTS),
            "gen_ai.tool.call.result": RESULT}
    return _run(tracer, {"gen_ai.operation.name": "invoke_agent"}, [
        ("chat gpt-4o", chat(history, [{"role": "assistant", "parts": [call], "finish_reason": "tool_calls"}])),
        ("weather", tool),
        ("chat gpt-4o", chat(turn, [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}],
                                     "finish_reason": "stop"}]))])


def _diff(server: LiveServer, run_a: str, run_b: str, **params: Any) -> dict[str, Any]:
    for run_id in (run_a, run_b):
        server.wait_run(run_id, lambda run: run["step_count"] == 4)
    resp = server.get("/v1/diff", runA=run_a, runB=run_b, **params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _paths(diff: dict[str, Any], keep: Callable[[str], bool]) -> list[str]:
    return [change["path"] for pair in diff["pairs"] for change in pair["changes"] if keep(change["path"])]


def _is_message_path(path: str) -> bool:
    return path.startswith(("$.payload.input", "$.payload.output"))


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_same_conversation_from_openinference_and_genai_spans_has_no_message_changes(
        shared_server: LiveServer, tracer: Tracer, profile: str) -> None:
    diff = _diff(shared_server, _openinference(tracer), _genai(tracer), normalize_profile=profile)
    assert diff["summary"]["pair_counts"]["added"] == diff["summary"]["pair_counts"]["removed"] == 0
    assert _paths(diff, _is_message_path) == []
    assert _paths(diff, lambda path: path.startswith("$.payload.attributes"))  # the conventions do differ


def test_both_conventions_store_the_current_genai_shape(shared_server: LiveServer, tracer: Tracer) -> None:
    runs = [_openinference(tracer), _genai(tracer)]
    for run_id in runs:
        shared_server.wait_run(run_id, lambda run: run["step_count"] == 4)
    inputs = [[s["payload"]["input"] for s in shared_server.all_steps(r) if s["type"] == "model"] for r in runs]
    assert inputs[0] == inputs[1]
    assert inputs[0][1][0] == {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]}
    assert inputs[0][1][3] == {"role": "tool", "parts": [
        {"type": "tool_call_response", "id": "call_1", "response": RESULT}]}


# --- content span events: stored once -----------------------------------------------------------------------
def _event_run(tracer: Tracer, question: str) -> str:
    """One chat span whose content is carried by v1.28-style span events (body fields as attributes)."""
    with tracer.start_as_current_span("agent", attributes={"gen_ai.operation.name": "invoke_agent"}) as root:
        with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}) as span:
            span.add_event("gen_ai.system.message", {"gen_ai.system": "openai", "content": SYSTEM})
            span.add_event("gen_ai.user.message", {"gen_ai.system": "openai", "content": question})
            span.add_event("gen_ai.choice", {"gen_ai.system": "openai", "index": 0, "finish_reason": "stop",
                                             "message": json.dumps({"role": "assistant", "content": ANSWER})})
        return format(root.get_span_context().trace_id, "032x")


def test_a_changed_user_message_in_content_events_is_one_change(shared_server: LiveServer, tracer: Tracer) -> None:
    run_a, run_b = _event_run(tracer, QUESTION), _event_run(tracer, "weather in Rome?")
    for run_id in (run_a, run_b):
        shared_server.wait_run(run_id, lambda run: run["step_count"] == 2)
    diff = shared_server.get("/v1/diff", runA=run_a, runB=run_b).json()
    changes = [change for pair in diff["pairs"] for change in pair["changes"]]
    assert [(c["path"], c["old"], c["new"]) for c in changes] == [
        ("$.payload.input[1].parts[0].content", QUESTION, "weather in Rome?")]


def test_the_timeline_still_shows_each_content_event(shared_server: LiveServer, tracer: Tracer) -> None:
    run_id = _event_run(tracer, QUESTION)
    shared_server.wait_run(run_id, lambda run: run["step_count"] == 2)
    (model,) = [s for s in shared_server.all_steps(run_id) if s["type"] == "model"]
    events = model["payload"]["events"]
    assert [(e["name"], e["content_in"]) for e in events] == [
        ("gen_ai.system.message", ["input"]), ("gen_ai.user.message", ["input"]), ("gen_ai.choice", ["output"])]
    assert all(e["time_ns"] > 0 and e["attributes"] == {"gen_ai.system": "openai"} for e in events)
    assert model["payload"]["input"][1]["parts"] == [{"type": "text", "content": QUESTION}]
    assert model["payload"]["output"][0]["finish_reason"] == "stop"
