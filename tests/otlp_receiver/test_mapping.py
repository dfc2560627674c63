"""Span → step mapping, run summaries and the §6.3 counting rules."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otlp_receiver import conventions
from otlp_receiver.classify import CLASSIFICATION_RULES, Rule, match_rule
from otlp_receiver.mapping import map_span, summarize_runs, total_usage
from otlp_receiver.model import RunStatus, StatusCode, StepType
from otlp_receiver.pricing import ModelPrice, PriceTable
from tests.factories import make_child, make_child_step, make_event, make_link, make_span, make_step

# --- Classification: one example span per table row ----------------------------------------------------
RULE_EXAMPLES: dict[str, dict[str, Any]] = {
    "genai_model_operation": {"name": "chat gpt-4o", "attributes": {"gen_ai.operation.name": "chat"}},
    "genai_tool_operation": {
        "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    },
    "genai_guardrail_operation": {"attributes": {"gen_ai.operation.name": "apply_guardrail"}},
    "mcp_tools_call": {"name": "tools/call get_weather", "attributes": {"mcp.method.name": "tools/call"}},
    "openinference_model_kind": {"attributes": {"openinference.span.kind": "LLM"}},
    "openinference_tool_kind": {"attributes": {"openinference.span.kind": "RETRIEVER"}},
    "openinference_guardrail_kind": {"attributes": {"openinference.span.kind": "GUARDRAIL"}},
    "openinference_prompt_kind": {"attributes": {"openinference.span.kind": "PROMPT"}},
    "genai_plan_with_usage": {
        "attributes": {
            "gen_ai.operation.name": "plan",
            "gen_ai.request.model": "o3",
            "gen_ai.usage.input_tokens": 5,
        }
    },
    "genai_structural_operation": {  # usage on an agent span does not make it a model step
        "attributes": {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
        }
    },
    "openinference_structural_kind": {"attributes": {"openinference.span.kind": "CHAIN"}},
    "traceloop_tool_kind": {"attributes": {"traceloop.span.kind": "tool", "traceloop.entity.name": "search"}},
    "traceloop_structural_kind": {"attributes": {"traceloop.span.kind": "workflow"}},
    "traceloop_llm_request_type": {"name": "openai.chat", "attributes": {"llm.request.type": "chat"}},
    "vercel_tool_call": {"name": "ai.toolCall", "attributes": {"ai.toolCall.name": "weather"}},
    "vercel_provider_call": {
        "name": "ai.generateText.doGenerate",
        "attributes": {"ai.model.id": "gpt-4o", "ai.usage.promptTokens": 10},
    },
    "vercel_embed": {"name": "ai.embed", "attributes": {"ai.model.id": "text-embedding-3-small"}},
    "vercel_outer_call": {  # the outer call repeats the inner call's usage: structural, not a model step
        "name": "ai.generateText",
        "attributes": {"ai.model.id": "gpt-4o", "ai.usage.promptTokens": 10},
    },
    "traceward_approval": {
        "attributes": {"traceward.approval.decision": "approved", "gen_ai.tool.name": "delete_database"}
    },
    "traceward_artifact": {"attributes": {"traceward.artifact.uri": "s3://bucket/report.pdf"}},
    "heuristic_model_with_tokens": {"attributes": {"llm.model_name": "gpt-4o", "llm.token_count.prompt": 3}},
    "heuristic_tool_name": {"attributes": {"tool.name": "calculator"}},
    "heuristic_guardrail_attributes": {"attributes": {"gen_ai.guardrail.policy.id": "no-pii"}},
    "heuristic_prompt_reference": {"attributes": {"llm.prompt_template.template": "Hello {name}"}},
    "heuristic_vendor_span_name": {"name": "anthropic.chat"},
    "openinference_output_media": {"attributes": {"output.images.0.image.url": "https://x/y.png"}},
}


@pytest.mark.parametrize("rule", CLASSIFICATION_RULES, ids=lambda rule: rule.name)
def test_each_classification_rule_maps_its_example_to_its_type(rule: Rule) -> None:
    span = make_span(**RULE_EXAMPLES[rule.name])
    assert match_rule(span) is rule
    assert map_span(span).type is rule.step_type


def test_rule_examples_cover_exactly_the_table() -> None:
    assert set(RULE_EXAMPLES) == {rule.name for rule in CLASSIFICATION_RULES}
    assert len({rule.name for rule in CLASSIFICATION_RULES}) == len(CLASSIFICATION_RULES)


def test_unclassified_span_is_structural() -> None:
    step = map_span(make_span(name="handle_request", attributes={"http.method": "GET"}))
    assert step.type is StepType.SPAN
    assert step.status == "unset"


def test_explicit_step_type_overrides_the_table() -> None:
    span = make_span(attributes={"gen_ai.operation.name": "chat", "traceward.step.type": "Approval"})
    assert map_span(span).type is StepType.APPROVAL


def test_invalid_explicit_step_type_is_ignored() -> None:
    span = make_span(attributes={"gen_ai.operation.name": "chat", "traceward.step.type": "banana"})
    assert map_span(span).type is StepType.MODEL


def test_explicit_span_type_stays_span_when_failed() -> None:
    span = make_span(status_code=StatusCode.ERROR, attributes={"traceward.step.type": "span"})
    assert map_span(span).type is StepType.SPAN


def test_structural_genai_operation_does_not_override_openinference_llm_kind() -> None:
    span = make_span(attributes={"gen_ai.operation.name": "invoke_agent", "openinference.span.kind": "LLM"})
    assert map_span(span).type is StepType.MODEL


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "invoke_agent"},
        {"gen_ai.operation.name": "invoke_workflow"},
        {"gen_ai.operation.name": "create_agent"},
        {"openinference.span.kind": "AGENT"},
        {"openinference.span.kind": "CHAIN"},
        {"traceloop.span.kind": "task"},
        {},
    ],
)
def test_failed_structural_span_becomes_error_step(attributes: dict[str, Any]) -> None:
    event = make_event(attributes={"exception.type": "RuntimeError", "exception.message": "agent crashed"})
    span = make_span(status_code=StatusCode.ERROR, attributes=attributes, events=(event,))
    step = map_span(span)
    assert (step.type, step.status) == (StepType.ERROR, "error")
    assert (step.error_type, step.error_message) == ("RuntimeError", "agent crashed")


def test_failed_model_span_keeps_its_type() -> None:
    span = make_span(
        status_code=StatusCode.ERROR,
        status_message="rate limited",
        attributes={"gen_ai.operation.name": "chat", "error.type": "RateLimitError"},
    )
    step = map_span(span)
    assert (step.type, step.status, step.error_type, step.error_message) == (
        StepType.MODEL,
        "error",
        "RateLimitError",
        "rate limited",
    )


@pytest.mark.parametrize(
    ("status_code", "attributes", "expected"),
    [
        (StatusCode.OK, {}, "ok"),
        (StatusCode.UNSET, {}, "unset"),
        (StatusCode.ERROR, {}, "error"),
        (StatusCode.UNSET, {"error.type": "tool_error"}, "error"),  # MCP isError result
        (StatusCode.UNSET, {"gen_ai.task.status": "failure"}, "error"),
        (StatusCode.OK, {"error.type": "handled"}, "ok"),  # OK is the application's final word
        (7, {}, "unset"),
    ],
)
def test_step_status(status_code: int, attributes: dict[str, Any], expected: str) -> None:
    assert map_span(make_span(status_code=status_code, attributes=attributes)).status == expected


def test_error_fields_are_empty_when_the_step_did_not_fail() -> None:
    step = map_span(make_span(status_code=StatusCode.OK, events=(make_event(),)))
    assert (step.error_type, step.error_message) == (None, None)


# --- Field resolution (§6.2) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attributes", "field", "expected"),
    [
        ({"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"}, "model_name",
         "gpt-4o-2024-08-06"),
        ({"llm.request.model_name": "a", "llm.model_name": "b"}, "model_name", "b"),
        ({"gen_ai.response.model": "  ", "gen_ai.request.model": "gpt-4o"}, "model_name", "gpt-4o"),
        ({"embedding.model_name": "text-embedding-3-small"}, "model_name", "text-embedding-3-small"),
        ({"gen_ai.system": "xai"}, "provider", "x_ai"),
        ({"gen_ai.system": "az.ai.openai"}, "provider", "azure.ai.openai"),
        ({"gen_ai.provider.name": "anthropic", "llm.provider": "openai"}, "provider", "anthropic"),
        ({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.prompt_tokens": 7}, "tokens_in", 5),
        ({"gen_ai.usage.input_tokens": "lots", "llm.token_count.prompt": 7}, "tokens_in", 7),
        ({"ai.usage.promptTokens": "12"}, "tokens_in", 12),
        ({"gen_ai.usage.completion_tokens": 9.0}, "tokens_out", 9),
        ({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 3}, "tokens_total", 8),
        ({"gen_ai.usage.input_tokens": 5, "llm.token_count.total": 99}, "tokens_total", 99),
        ({"gen_ai.usage.cache_creation.input_tokens": 4}, "tokens_cache_write", 4),
        ({"gen_ai.usage.cache_write.input_tokens": 3, "gen_ai.usage.cache_creation_input_tokens": 4},
         "tokens_cache_write", 3),
        ({"gen_ai.usage.cache_read_input_tokens": 6}, "tokens_cache_read", 6),
        ({"llm.token_count.completion_details.reasoning": 11}, "tokens_reasoning", 11),
        ({"llm.cost.total": 0.5, "gen_ai.usage.cost": 0.7}, "cost_usd", 0.5),
        ({"operation.cost": "0.25"}, "cost_usd", 0.25),
        ({"llm.cost.prompt": 0.25, "llm.cost.completion": 0.5}, "cost_usd", 0.75),
        ({"llm.cost.total": -1, "gen_ai.usage.cost": 0.1}, "cost_usd", 0.1),
        ({"gen_ai.tool.name": "a", "tool.name": "b"}, "tool_name", "a"),
        ({"traceloop.span.kind": "tool", "traceloop.entity.name": "lookup"}, "tool_name", "lookup"),
        ({"traceloop.span.kind": "task", "traceloop.entity.name": "lookup"}, "tool_name", None),
        ({"gen_ai.tool.call.id": "call_1", "tool.id": "x"}, "tool_call_id", "call_1"),
        ({"jsonrpc.request.id": 42}, "tool_call_id", "42"),
        ({"gen_ai.agent.name": "planner", "agent.name": "x"}, "agent_name", "planner"),
        ({"traceloop.span.kind": "agent", "traceloop.entity.name": "researcher"}, "agent_name", "researcher"),
        ({"ai.telemetry.functionId": "support-bot"}, "agent_name", "support-bot"),
        ({"traceward.decision_token": "tok-123"}, "decision_token", "tok-123"),
    ],
)  # fmt: skip
def test_field_precedence(attributes: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(map_span(make_span(attributes=attributes)), field) == expected


def test_mcp_tool_name_comes_from_the_span_name_target() -> None:
    span = make_span(name="tools/call get_weather", attributes={"mcp.method.name": "tools/call"})
    assert map_span(span).tool_name == "get_weather"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12), (12.0, 12), (12.4, 12), ("12", 12), (" 7 ", 7), ("1e3", 1000), ("12.0", 12),
        ("abc", None), ("", None), (-5, None), ("-5", None), (True, None), (float("nan"), None),
        (float("inf"), None), ("1e999", None), (2**70, None), ({"a": 1}, None), ([1], None), (b"12", None),
        ("9" * 5000, None),
    ],
)  # fmt: skip
def test_token_values_are_normalised_and_garbage_ignored(value: Any, expected: int | None) -> None:
    assert conventions.as_count(value) == expected
    assert map_span(make_span(attributes={"gen_ai.usage.input_tokens": value})).tokens_in == expected


# --- Payload --------------------------------------------------------------------------------------------
def test_payload_parses_genai_messages_and_prepends_system_instructions() -> None:
    messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    instructions = [{"type": "text", "content": "be brief"}]
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": json.dumps(messages),
        "gen_ai.system_instructions": json.dumps(instructions),
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [], "finish_reason": "stop"}]',
    }
    payload = map_span(make_span(attributes=attributes)).payload
    assert payload["input"] == [{"role": "system", "parts": instructions}, *messages]
    assert payload["output"][0]["finish_reason"] == "stop"
    assert payload["attributes"] == {"gen_ai.operation.name": "chat"}


def test_payload_rebuilds_openinference_flattened_messages() -> None:
    prefix = "llm.input_messages"
    attributes = {
        "openinference.span.kind": "LLM",
        f"{prefix}.0.message.role": "system",
        f"{prefix}.0.message.content": "be brief",
        f"{prefix}.2.message.role": "assistant",  # sparse index
        f"{prefix}.2.message.tool_calls.0.tool_call.id": "call_1",
        f"{prefix}.2.message.tool_calls.0.tool_call.function.name": "search",
        f"{prefix}.2.message.tool_calls.0.tool_call.function.arguments": '{"q": "otel"}',
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "done",
        "input.value": "raw request",
    }
    payload = map_span(make_span(attributes=attributes)).payload
    assert payload["input"] == [  # in the current GenAI shape (otlp_receiver.messages)
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "search", "arguments": {"q": "otel"}}],
        },
    ]
    assert payload["output"] == [{"role": "assistant", "parts": [{"type": "text", "content": "done"}]}]
    assert payload["attributes"] == {"openinference.span.kind": "LLM", "input.value": "raw request"}


def test_payload_rebuilds_legacy_indexed_prompt_but_keeps_prompt_name() -> None:
    attributes = {
        "llm.request.type": "chat",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": '{"text": "hi"}',
        "gen_ai.prompt.name": "greeting",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "hello",
        "gen_ai.completion.0.finish_reason": "stop",
    }
    payload = map_span(make_span(attributes=attributes)).payload
    assert payload["input"] == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert payload["output"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]
    assert payload["attributes"] == {"llm.request.type": "chat", "gen_ai.prompt.name": "greeting"}


def test_tool_payload_prefers_tool_call_arguments_and_result() -> None:
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        "gen_ai.tool.call.result": "sunny",
        "input.value": "ignored",
    }
    payload = map_span(make_span(attributes=attributes)).payload
    assert (payload["input"], payload["output"]) == ({"city": "Paris"}, "sunny")
    assert payload["attributes"] == {"gen_ai.operation.name": "execute_tool", "input.value": "ignored"}


def test_payload_takes_content_from_legacy_span_events() -> None:
    events = (make_event(name="gen_ai.content.prompt", attributes={"gen_ai.prompt": '[{"role": "user"}]'}),)
    payload = map_span(make_span(attributes={"gen_ai.operation.name": "chat"}, events=events)).payload
    assert payload["input"] == [{"role": "user", "parts": []}]


def test_payload_carries_events_links_status_kind_and_resource() -> None:
    link = make_link(attributes={"reason": "retry"})
    span = make_span(
        kind=3,
        status_code=StatusCode.ERROR,
        status_message="boom",
        attributes={"blob": b"\x00\x01", "ratio": float("nan"), "big": 2**80},
        events=(make_event(time_ns=5),),
        links=(link,),
        resource={"service.name": "svc"},
    )
    payload = map_span(span).payload
    assert payload["events"] == [
        {
            "name": "exception",
            "time_ns": 5,
            "attributes": {"exception.type": "ValueError", "exception.message": "boom"},
        }
    ]
    assert payload["links"] == [
        {"trace_id": link.trace_id, "span_id": link.span_id, "attributes": {"reason": "retry"}}
    ]
    assert payload["status"] == {"code": 2, "message": "boom"}
    assert payload["kind"] == 3
    assert payload["resource"] == {"service.name": "svc"}
    assert payload["attributes"] == {"blob": "AAE=", "ratio": "nan", "big": str(2**80)}
    orjson.dumps(payload)


def test_payload_omits_empty_keys() -> None:
    payload = map_span(make_span(resource={})).payload
    assert payload == {"kind": 1}


def test_json_text_that_is_not_an_object_stays_a_string() -> None:
    attributes = {"gen_ai.operation.name": "chat", "input.value": "{not json", "output.value": "42"}
    payload = map_span(make_span(attributes=attributes)).payload
    assert (payload["input"], payload["output"]) == ("{not json", "42")


# --- Run summaries ---------------------------------------------------------------------------------------
def test_summarize_runs_reads_the_root_and_the_batch() -> None:
    root = make_span(
        name="POST /chat",
        attributes={"gen_ai.workflow.name": "support", "session.id": "s-1"},
        resource={"service.name": "api", "service.version": "1.2", "deployment.environment.name": "prod"},
        status_code=StatusCode.OK,
    )
    agent = make_child(
        root, attributes={"gen_ai.agent.name": "triage", "user.id": "u-9", "tag.tags": ["beta"]}
    )
    late = make_child(root, start_ns=root.start_ns + 10, end_ns=root.end_ns + 10**9)
    summary = summarize_runs([late, agent, root])[root.trace_id]
    assert (summary.run_id, summary.root_span_id, summary.root_status) == (
        root.trace_id,
        root.span_id,
        RunStatus.SUCCEEDED,
    )
    assert (summary.name, summary.service, summary.agent) == ("support", "api", "triage")
    assert (summary.session_id, summary.user_id) == ("s-1", "u-9")
    assert summary.tags == {
        "service.name": "api",
        "service.version": "1.2",
        "deployment.environment": "prod",
        "session.id": "s-1",
        "user.id": "u-9",
        "tag.beta": "true",
    }
    assert (summary.first_start_ns, summary.last_end_ns) == (root.start_ns, late.end_ns)
    assert (summary.root_start_ns, summary.root_end_ns) == (root.start_ns, root.end_ns)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.workflow.name": "wf", "gen_ai.agent.name": "ag"}, "wf"),
        ({"traceloop.workflow.name": "tl", "agent.name": "ag"}, "tl"),
        ({"agent.name": "ag", "traceloop.entity.name": "ent"}, "ag"),
        ({"traceloop.entity.name": "ent"}, "ent"),
        ({}, "root-span"),
    ],
)
def test_run_name_precedence(attributes: dict[str, Any], expected: str) -> None:
    root = make_span(name="root-span", attributes=attributes)
    assert summarize_runs([root])[root.trace_id].name == expected


def test_session_and_user_search_root_then_spans_then_resource() -> None:
    root = make_span(
        attributes={"traceloop.association.properties.session_id": "root-session"},
        resource={"service.name": "svc", "user.id": "resource-user"},
    )
    child = make_child(
        root, attributes={"gen_ai.conversation.id": "child-conversation", "enduser.id": "child-user"}
    )
    summary = summarize_runs([child, root])[root.trace_id]
    assert (summary.session_id, summary.user_id) == ("root-session", "child-user")
    assert summary.tags["session_id"] == "root-session"  # association properties also become tags


def test_user_falls_back_to_resource_attributes() -> None:
    root = make_span(resource={"service.name": "svc", "user.id": "resource-user"})
    assert summarize_runs([root])[root.trace_id].user_id == "resource-user"


def test_running_root_and_missing_root_leave_status_unset() -> None:
    root = make_span(end_ns=0)
    orphan = make_child(make_span())
    summaries = summarize_runs([root, orphan])
    assert summaries[root.trace_id].root_status is None
    assert summaries[root.trace_id].last_end_ns is None
    assert summaries[orphan.trace_id].root_span_id is None
    assert summaries[orphan.trace_id].name is None


@pytest.mark.parametrize(
    ("attributes", "events", "expected"),
    [
        ({}, (), RunStatus.FAILED),
        ({"error.type": "asyncio.CancelledError"}, (), RunStatus.CANCELED),
        ({"error.type": "AbortError"}, (), RunStatus.CANCELED),
        ({"error.type": "ConnectionAbortedError"}, (), RunStatus.FAILED),
        ({}, (make_event(attributes={"exception.type": "KeyboardInterrupt"}),), RunStatus.CANCELED),
        ({}, (make_event(attributes={"exception.type": "ValueError"}),), RunStatus.FAILED),
    ],
)
def test_failed_root_status_distinguishes_cancellation(
    attributes: dict[str, Any], events: tuple[Any, ...], expected: RunStatus
) -> None:
    root = make_span(status_code=StatusCode.ERROR, attributes=attributes, events=events)
    assert summarize_runs([root])[root.trace_id].root_status is expected


# --- Counting rules (§6.3) -----------------------------------------------------------------------------
PRICES = PriceTable({"m-priced": ModelPrice(1.0, 2.0, 0.1, None)})


def _usage_of(*spans: Any) -> Any:
    return total_usage([map_span(span) for span in spans], PRICES)


def test_agent_usage_above_chat_spans_is_not_counted_twice() -> None:
    usage = {
        "gen_ai.request.model": "m-priced",
        "gen_ai.usage.input_tokens": 300,
        "gen_ai.usage.output_tokens": 30,
    }
    agent = make_span(attributes={"gen_ai.operation.name": "invoke_agent", "llm.cost.total": 9.0, **usage})
    chat_1 = make_child(
        agent, attributes={"gen_ai.operation.name": "chat", **usage, "gen_ai.usage.input_tokens": 100}
    )
    chat_2 = make_child(
        agent, attributes={"gen_ai.operation.name": "chat", **usage, "gen_ai.usage.input_tokens": 200}
    )
    totals = _usage_of(agent, chat_1, chat_2)
    assert (totals.tokens_in, totals.tokens_out, totals.tokens_total) == (300, 60, 360)
    assert totals.cost_source == "computed"  # the agent's reported cost is a repeat of its children's
    assert totals.cost_usd == pytest.approx((300 * 1.0 + 60 * 2.0) / 1e6)
    assert totals.model_names == ("m-priced",)


def test_vercel_outer_and_inner_calls_count_once() -> None:
    usage = {"ai.model.id": "m-priced", "ai.usage.promptTokens": 10, "ai.usage.completionTokens": 5}
    outer = make_span(name="ai.generateText", attributes=usage)
    inner = make_child(outer, name="ai.generateText.doGenerate", attributes=usage)
    totals = _usage_of(outer, inner)
    assert (totals.tokens_in, totals.tokens_out) == (10, 5)


def test_usage_found_through_a_structural_intermediate_still_dedupes() -> None:
    usage = {"llm.model_name": "m-priced", "llm.token_count.prompt": 10}
    wrapper = make_span(attributes={"openinference.span.kind": "LLM", **usage})
    chain = make_child(wrapper, attributes={"openinference.span.kind": "CHAIN"})
    provider = make_child(chain, attributes={"openinference.span.kind": "LLM", **usage})
    assert _usage_of(wrapper, chain, provider).tokens_in == 10


def test_cache_and_reasoning_are_subsets_not_added() -> None:
    span = make_span(
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m-priced",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.cache_read.input_tokens": 800,
            "gen_ai.usage.reasoning.output_tokens": 60,
        }
    )
    totals = _usage_of(span)
    assert (totals.tokens_in, totals.tokens_out, totals.tokens_total) == (1000, 100, 1100)
    assert (totals.tokens_cache_read, totals.tokens_reasoning) == (800, 60)
    assert totals.cost_usd == pytest.approx((200 * 1.0 + 800 * 0.1 + 100 * 2.0) / 1e6)


def test_cost_reported_computed_mixed_and_unknown() -> None:
    reported = make_step(type=StepType.MODEL, model_name="m-priced", tokens_in=10, cost_usd=0.5)
    computed = make_step(type=StepType.MODEL, model_name="m-priced", tokens_in=1_000_000)
    unknown = make_step(type=StepType.MODEL, model_name="m-secret", tokens_in=10, tokens_out=1)
    assert (total_usage([reported], PRICES).cost_usd, total_usage([reported], PRICES).cost_source) == (
        0.5,
        "reported",
    )
    assert total_usage([computed], PRICES).cost_source == "computed"
    assert total_usage([reported, computed], PRICES).cost_usd == pytest.approx(1.5)
    only_unknown = total_usage([unknown], PRICES)
    assert (only_unknown.cost_usd, only_unknown.cost_source, only_unknown.unpriced_models) == (
        None,
        "unknown",
        ("m-secret",),
    )
    partial = total_usage([computed, unknown], PRICES)
    assert (partial.cost_usd, partial.cost_source, partial.unpriced_models) == (1.0, "mixed", ("m-secret",))


def test_no_usage_means_no_cost() -> None:
    totals = total_usage([make_step(type=StepType.MODEL, model_name="m-priced")], PRICES)
    assert (totals.cost_usd, totals.cost_source, totals.model_names) == (None, None, ("m-priced",))


def test_model_names_in_first_seen_order() -> None:
    late = make_step(type=StepType.MODEL, model_name="b", start_ns=20, tokens_in=1)
    early = make_step(type=StepType.MODEL, model_name="a", start_ns=10, tokens_in=1)
    again = make_step(type=StepType.MODEL, model_name="b", start_ns=30, tokens_in=1)
    assert total_usage([again, late, early], PRICES).model_names == ("a", "b")


def test_mcp_client_server_and_execute_tool_count_as_one_tool() -> None:
    client = make_span(
        name="tools/call get_weather",
        kind=3,
        attributes={"mcp.method.name": "tools/call", "jsonrpc.request.id": 7},
    )
    server = make_child(
        client, name="tools/call get_weather", kind=2, attributes={"mcp.method.name": "tools/call"}
    )
    execute = make_child(
        server,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                    "gen_ai.tool.call.id": "call_abc"},
    )  # fmt: skip
    totals = _usage_of(client, server, execute)
    assert (totals.tool_count, totals.tool_names) == (1, ("get_weather",))


def test_same_tool_call_id_twice_counts_once_and_distinct_calls_count_apart() -> None:
    agent = make_step()
    first = make_child_step(agent, type=StepType.TOOL, tool_name="search", tool_call_id="call_1")
    repeat = make_child_step(agent, type=StepType.TOOL, tool_name="search", tool_call_id="call_1")
    other = make_child_step(agent, type=StepType.TOOL, tool_name="search", tool_call_id="call_2")
    calc = make_child_step(agent, type=StepType.TOOL, tool_name="calc")
    totals = total_usage([agent, first, repeat, other, calc], PRICES)
    assert (totals.tool_count, totals.tool_names) == (3, ("search", "calc"))


def test_nested_tool_with_another_name_counts_separately() -> None:
    delegate = make_step(type=StepType.TOOL, tool_name="ask_researcher")
    inner = make_child_step(delegate, type=StepType.TOOL, tool_name="search")
    assert total_usage([delegate, inner], PRICES).tool_count == 2


def test_error_count_and_duplicate_steps() -> None:
    failed_tool = make_step(type=StepType.TOOL, status="error", tool_name="t")
    error_step = make_step(type=StepType.ERROR, status="error")
    totals = total_usage([failed_tool, error_step, failed_tool, make_step()], PRICES)
    assert (totals.error_count, totals.tool_count) == (2, 1)


def test_parent_cycles_terminate() -> None:
    a = make_step(type=StepType.MODEL, tokens_in=1)
    b = make_step(
        type=StepType.TOOL, trace_id=a.trace_id, parent_span_id=a.span_id, tokens_in=2, tool_name="t"
    )
    a_cyclic = dataclasses.replace(a, parent_span_id=b.span_id)
    totals = total_usage([a_cyclic, b], PRICES)
    assert totals.tool_count == 1


# --- Never raise on garbage -------------------------------------------------------------------------------
KNOWN_KEYS = sorted(
    {
        *conventions.MODEL_KEYS, *conventions.PROVIDER_KEYS, *conventions.TOKENS_IN_KEYS,
        *conventions.TOKENS_OUT_KEYS, *conventions.TOKENS_TOTAL_KEYS, *conventions.CACHE_READ_KEYS,
        *conventions.COST_TOTAL_KEYS, *conventions.TOOL_NAME_KEYS, *conventions.TOOL_CALL_ID_KEYS,
        *conventions.SESSION_KEYS, *conventions.USER_KEYS, *conventions.RUN_NAME_KEYS,
        "gen_ai.operation.name", "openinference.span.kind", "traceloop.span.kind", "mcp.method.name",
        "llm.cost.prompt", "error.type", "traceward.step.type", "traceward.decision_token", "tag.tags",
        "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.output.messages", "input.value",
        "gen_ai.tool.call.arguments", "llm.input_messages.0.message.role", "llm.input_messages.0.message",
        "llm.input_messages.x", "gen_ai.prompt.0.content", "gen_ai.prompt.1", "traceloop.association.properties.k",
    }
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["{", "[1, 2]", '{"a": {"b": [1]}}', "1e999", "NaN", "-3", "chat", "LLM", "tools/call"])
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
attribute_maps = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=40), values, max_size=12)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(attributes=attribute_maps, name=st.text(max_size=30), status_code=st.integers(-1, 3))
def test_map_span_never_raises_on_arbitrary_attributes(
    attributes: dict[str, Any], name: str, status_code: int
) -> None:
    span = make_span(name=name, status_code=status_code, attributes=attributes, resource=attributes)
    step = map_span(span)
    json.dumps(step.payload, allow_nan=False)
    orjson.dumps(step.payload)
    summarize_runs([span])
    total_usage([step], PriceTable.default())
