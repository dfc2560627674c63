"""End to end: a real LangGraph graph, instrumented by OpenInference, exported over OTLP gRPC to a real server.

The graph is the classic tool loop — model node → ToolNode → model node — driven by a fake chat model
from langchain-core whose first answer asks for a tool call and whose second answer is final, both
with ``usage_metadata``. Assertions are on what Traceward's API returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.live import INGEST_KEY, LiveServer, UniqueIds

pytestmark = pytest.mark.e2e

MODEL_NAME = "fake-gpt-1"
SERVICE = "langgraph-weather-agent"




class NamedFakeChatModel(FakeMessagesListChatModel):
    """The fake chat model with a model name (langchain reports it as ``ls_model_name``)."""

    model_name: str = MODEL_NAME


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_graph() -> Any:
    model = NamedFakeChatModel(responses=[
        AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "paris"}, "id": "call_1",
                                           "type": "tool_call"}],
                  usage_metadata={"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}),
        AIMessage(content="It is sunny in paris.",
                  usage_metadata={"input_tokens": 50, "output_tokens": 8, "total_tokens": 58}),
    ])

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile()


@pytest.fixture
def instrumented(shared_server: LiveServer) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """OpenInference's LangChain instrumentation → OTLP gRPC → the live server (and a local copy of the spans)."""
    provider = TracerProvider(resource=Resource({"service.name": SERVICE}), id_generator=UniqueIds())
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=f"127.0.0.1:{shared_server.grpc_port}", insecure=True,
        headers={"authorization": f"Bearer {INGEST_KEY}"}, timeout=10), schedule_delay_millis=60_000))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, memory
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_langgraph_tool_loop(shared_server: LiveServer, instrumented: tuple[TracerProvider, InMemorySpanExporter],
                             mode: str) -> None:
    provider, memory = instrumented
    question = {"messages": [HumanMessage("What is the weather in paris?")]}
    graph = build_graph()
    result = graph.invoke(question) if mode == "invoke" else asyncio.run(graph.ainvoke(question))
    assert result["messages"][-1].content == "It is sunny in paris."
    assert provider.force_flush(10_000)

    spans = memory.get_finished_spans()
    (run_id,) = {format(s.context.trace_id, "032x") for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    kinds = [s.attributes.get("openinference.span.kind") for s in spans]
    assert kinds.count("LLM") == 2 and kinds.count("TOOL") == 1  # what OpenInference emitted

    run = shared_server.wait_run(run_id, lambda r: r["step_count"] == len(spans) and r["status"] != "running")
    assert run["status"] == "succeeded"
    assert run["name"] == root.name == "LangGraph"
    assert run["service"] == SERVICE
    assert run["model_names"] == [MODEL_NAME]
    assert run["tool_names"] == ["get_weather"]
    assert run["tool_count"] == 1
    # OpenInference reports usage_metadata as llm.token_count.*; no CHAIN span repeats it.
    assert (run["tokens"]["input"], run["tokens"]["output"]) == (30 + 50, 5 + 8)
    assert run["error_count"] == 0

    steps = shared_server.all_steps(run_id)
    assert [s["seq"] for s in steps] == list(range(len(spans)))
    assert {s["span_id"] for s in steps} == {format(s.context.span_id, "016x") for s in spans}
    assert not any(s["orphan"] for s in steps)
    expected_type = {"LLM": "model", "TOOL": "tool", "CHAIN": "span", "AGENT": "span"}
    by_span = {format(s.context.span_id, "016x"): s for s in spans}
    for step in steps:
        kind = by_span[step["span_id"]].attributes["openinference.span.kind"]
        assert step["type"] == expected_type[kind], (step["name"], kind)
    # Seq order is start-time order: graph → agent node → model → router → tools node → tool → agent → model…
    assert [(s["type"], s["name"]) for s in steps][:6] == [
        ("span", "LangGraph"), ("span", "agent"), ("model", "NamedFakeChatModel"), ("span", "tools_condition"),
        ("span", "tools"), ("tool", "get_weather")]

    models = [s for s in steps if s["type"] == "model"]
    assert [s["model_name"] for s in models] == [MODEL_NAME, MODEL_NAME]
    assert [(s["tokens"]["in"], s["tokens"]["out"], s["tokens"]["total"]) for s in models] == [
        (30, 5, 35), (50, 8, 58)]
    # OpenInference's flattened llm.input_messages / llm.output_messages come back as message lists, in the
    # current GenAI shape (role + parts) whichever convention sent them.
    assert models[0]["payload"]["input"] == [
        {"role": "user", "parts": [{"type": "text", "content": "What is the weather in paris?"}]}]
    (call,) = [p for p in models[0]["payload"]["output"][0]["parts"] if p["type"] == "tool_call"]
    assert (call["name"], call["arguments"]) == ("get_weather", {"city": "paris"})
    assert [m["role"] for m in models[1]["payload"]["input"]] == ["user", "assistant", "tool"]
    (result,) = models[1]["payload"]["input"][2]["parts"]
    assert result["type"] == "tool_call_response" and result["id"] == call["id"]
    assert [m["parts"] for m in models[1]["payload"]["output"]] == [
        [{"type": "text", "content": "It is sunny in paris."}]]
    (tool_step,) = [s for s in steps if s["type"] == "tool"]
    assert tool_step["name"] == tool_step["tool_name"] == "get_weather"
    assert "paris" in str(tool_step["payload"]["input"])
    assert "sunny in paris" in str(tool_step["payload"]["output"])
    assert tool_step["parent_span_id"] == next(s["span_id"] for s in steps if s["name"] == "tools")
