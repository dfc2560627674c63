"""The agent SDK against a fake Traceward (httpx.MockTransport) speaking the documented wire shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from governance.sdk import (
    ApprovalTimeout,
    DecisionResult,
    GovernanceClient,
    GovernanceError,
    GovernanceUnavailable,
    ToolDenied,
    current_span_ids,
    resume_context,
)

ALLOW = {
    "decision": "allow",
    "reason_code": "small",
    "rule_id": "r1",
    "policy_version": 3,
    "token": "tok-allow",
}
REQUIRE = {"decision": "require_approval", "reason_code": "big", "rule_id": "r2", "policy_version": 3,
           "approval_id": "ap-1"}  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeTraceward:
    """Answers POST /v1/decisions with ``decision`` and GET /v1/approvals/{id} from ``polls`` in turn."""

    def __init__(self, clock: FakeClock, decision: Any = ALLOW, polls: list[Any] | None = None) -> None:
        self.clock, self.decision, self.polls = clock, decision, list(polls or [])
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/v1/decisions":
            return self._answer(self.decision)
        if request.method == "GET" and request.url.path == "/v1/approvals/ap-1":
            self.clock.now += float(request.url.params["wait"])  # the server holds the long poll
            answer = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
            return self._answer(answer)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no route"}})

    def _answer(self, answer: Any) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(
    provider: TracerProvider, clock: FakeClock
) -> Iterator[Callable[..., tuple[GovernanceClient, FakeTraceward]]]:
    clients: list[GovernanceClient] = []

    def make(decision: Any = ALLOW, polls: list[Any] | None = None, **kwargs: Any):
        server = FakeTraceward(clock, decision, polls)
        client = GovernanceClient(
            "http://traceward.test", "key-123", transport=httpx.MockTransport(server), tracer_provider=provider,
            clock=clock, sleep=clock.sleep, **kwargs,
        )  # fmt: skip
        clients.append(client)
        return client, server

    yield make
    for client in clients:
        client.close()


def in_agent_span(provider: TracerProvider, body: Callable[[], Any]) -> tuple[Any, trace.SpanContext]:
    with provider.get_tracer("agent").start_as_current_span("invoke_agent") as span:
        return body(), span.get_span_context()


def tool_span(exporter: InMemorySpanExporter):
    [span] = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool")]
    return span


def test_allow_runs_the_tool_in_a_span_stamped_with_the_token(make_client, provider, exporter):
    client, server = make_client()
    ran: list[dict[str, Any]] = []

    @client.gated()
    def send_email(to: str, body: str = "hi") -> str:
        ran.append({"to": to, "body": body})
        return "sent"

    result, agent = in_agent_span(provider, lambda: send_email("bob@x.com"))
    assert result == "sent" and ran == [{"to": "bob@x.com", "body": "hi"}]
    [body] = server.bodies()
    assert body == {"tool_name": "send_email", "args": {"to": "bob@x.com", "body": "hi"},
                    "trace_id": format(agent.trace_id, "032x"), "span_id": format(agent.span_id, "016x")}  # fmt: skip
    assert server.requests[0].headers["authorization"] == "Bearer key-123"
    span = tool_span(exporter)
    assert span.name == "execute_tool send_email"
    assert span.parent.span_id == agent.span_id and span.context.trace_id == agent.trace_id
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_email",
        "gen_ai.tool.call.arguments": '{"to":"bob@x.com","body":"hi"}', "traceward.decision_token": "tok-allow",
    }  # fmt: skip


def test_guard_sends_optional_fields_and_yields_the_decision(make_client, provider, exporter):
    client, server = make_client()

    def body() -> DecisionResult:
        ctx = {"summary": "refund", "risk_score": 0.2}
        with client.guard(
            "refund", {"order": "A-1"}, agent="billing", environment="prod", context=ctx
        ) as decided:
            return decided

    decided, _ = in_agent_span(provider, body)
    assert (decided.decision, decided.token, decided.rule_id, decided.policy_version) == (
        "allow",
        "tok-allow",
        "r1",
        3,
    )
    assert server.bodies()[0]["agent"] == "billing" and server.bodies()[0]["context"]["risk_score"] == 0.2
    assert tool_span(exporter).attributes["traceward.decision_token"] == "tok-allow"


def test_deny_raises_tool_denied_and_never_runs_the_tool(make_client, provider, exporter):
    client, _ = make_client({"decision": "deny", "reason_code": "recipient_blocked", "rule_id": "r9"})
    ran: list[int] = []

    @client.gated("email.send")
    def send(to: str) -> None:
        ran.append(1)

    with pytest.raises(ToolDenied, match="denied tool 'email.send': recipient_blocked \\(rule r9\\)") as info:
        in_agent_span(provider, lambda: send("x"))
    assert (info.value.reason_code, info.value.rule_id) == ("recipient_blocked", "r9")
    assert ran == [] and not [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool")]


def test_require_approval_waits_then_runs_with_the_edited_args(make_client, provider, exporter, clock):
    approved = {"approval_id": "ap-1", "status": "approved", "token": "tok-approved", "args": {"amount": 400}}
    client, server = make_client(REQUIRE, polls=[{"approval_id": "ap-1", "status": "pending"}, approved])
    seen: list[int] = []

    @client.gated()
    def pay(amount: int) -> None:
        seen.append(amount)

    _, agent = in_agent_span(provider, lambda: pay(500))
    assert seen == [400]
    polls = [r for r in server.requests if r.method == "GET"]
    assert [r.url.params["wait"] for r in polls] == ["30", "30"]
    span = tool_span(exporter)
    assert span.attributes["traceward.decision_token"] == "tok-approved"
    assert span.attributes["gen_ai.tool.call.arguments"] == '{"amount":400}'
    assert span.attributes["traceward.approval_id"] == "ap-1"
    assert span.parent.span_id == agent.span_id  # resumed under the requesting span
    [link] = span.links
    assert link.context.span_id == agent.span_id and link.attributes["traceward.approval_id"] == "ap-1"


def test_approval_denied_raises_tool_denied_with_the_feedback(make_client, provider):
    client, _ = make_client(
        REQUIRE, polls=[{"approval_id": "ap-1", "status": "denied", "reason": "wrong payee"}]
    )
    with pytest.raises(ToolDenied, match="wrong payee \\(approval ap-1\\)"):
        in_agent_span(provider, lambda: client.decide("pay", {"amount": 1}))


def test_approval_expired_server_side_raises_approval_timeout(make_client, provider):
    client, _ = make_client(REQUIRE, polls=[{"approval_id": "ap-1", "status": "expired"}])
    with pytest.raises(ApprovalTimeout, match="expired"):
        in_agent_span(provider, lambda: client.decide("pay", {"amount": 1}))


def test_approval_timeout_on_the_client_raises(make_client, provider, clock):
    client, server = make_client(
        REQUIRE, polls=[{"approval_id": "ap-1", "status": "pending"}], approval_timeout_s=75
    )
    with pytest.raises(ApprovalTimeout, match="no decision on approval ap-1 for tool 'pay' within 75s"):
        in_agent_span(provider, lambda: client.decide("pay", {"amount": 1}))
    assert [r.url.params["wait"] for r in server.requests if r.method == "GET"] == ["30", "30", "15"]
    assert clock.now == 75


def test_server_that_does_not_hold_the_poll_is_not_hammered(make_client, provider, clock):
    client, server = make_client(REQUIRE, polls=[{"status": "pending"}], approval_timeout_s=2, poll_wait_s=0)
    with pytest.raises(ApprovalTimeout):
        in_agent_span(provider, lambda: client.decide("pay", {}))
    assert clock.sleeps and all(s <= 0.5 for s in clock.sleeps)
    assert len([r for r in server.requests if r.method == "GET"]) <= 5


def test_transient_errors_while_waiting_keep_waiting(make_client, provider):
    approved = {"status": "approved", "token": "tok", "args": {"amount": 1}}
    client, _ = make_client(REQUIRE, polls=[httpx.Response(503), httpx.ConnectError("blip"), approved])
    decided, _ = in_agent_span(provider, lambda: client.decide("pay", {"amount": 1}))
    assert (decided.decision, decided.token, decided.approval_id) == ("approved", "tok", "ap-1")


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(503),
        httpx.Response(429),
    ],
)
def test_server_unreachable_fails_closed(make_client, provider, failure):
    client, _ = make_client(failure)
    ran: list[int] = []

    @client.gated()
    def wire(amount: int) -> None:
        ran.append(amount)

    with pytest.raises(GovernanceUnavailable, match="Traceward un"):
        in_agent_span(provider, lambda: wire(5))
    assert ran == []


def test_fail_open_tool_runs_without_a_token_when_unreachable(make_client, provider, exporter):
    client, _ = make_client(httpx.ConnectError("connection refused"), fail_open_tools={"search"})

    @client.gated()
    def search(q: str) -> str:
        return f"results for {q}"

    result, _ = in_agent_span(provider, lambda: search("otel"))
    assert result == "results for otel"
    span = tool_span(exporter)
    assert span.attributes["traceward.fail_open"] is True
    assert "traceward.decision_token" not in span.attributes


def test_fail_open_does_not_cover_a_rejected_request(make_client, provider):
    error = {
        "error": {"code": "invalid_input", "message": "unknown field 'x'", "details": {}, "retryable": False}
    }
    client, _ = make_client(httpx.Response(400, json=error), fail_open_tools={"search"})
    with pytest.raises(GovernanceError, match="400 invalid_input\\): unknown field 'x'") as info:
        in_agent_span(provider, lambda: client.decide("search", {"q": 1}))
    assert info.value.code == "invalid_input" and not isinstance(info.value, GovernanceUnavailable)


@pytest.mark.parametrize(
    "answer",
    [{"decision": "maybe"}, {"decision": "require_approval"}, httpx.Response(200, text="<html>"), [1, 2]],
)
def test_malformed_answers_fail_closed(make_client, provider, answer):
    client, _ = make_client(answer)
    with pytest.raises(GovernanceError):
        in_agent_span(provider, lambda: client.decide("t", {}))


def test_approved_without_a_token_fails_closed(make_client, provider):
    client, _ = make_client(REQUIRE, polls=[{"status": "approved", "args": {}}])
    with pytest.raises(GovernanceError, match="malformed approval"):
        in_agent_span(provider, lambda: client.decide("t", {}))


def test_decide_needs_an_active_span(make_client):
    client, _ = make_client()
    assert current_span_ids() is None
    with pytest.raises(GovernanceError, match="no active OpenTelemetry span"):
        client.decide("t", {})


def test_guard_without_a_span_opens_a_root_span_for_the_request(make_client, exporter):
    client, server = make_client()
    with client.guard("t", {"a": 1}) as decided:
        assert decided.token == "tok-allow"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root, tool = spans["govern t"], spans["execute_tool t"]
    assert tool.parent.span_id == root.context.span_id
    assert server.bodies()[0]["span_id"] == format(root.context.span_id, "016x")


def test_async_gated_tool(make_client, provider, exporter):
    client, _ = make_client()

    @client.gated("lookup")
    async def lookup(key: str, **extra: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"key": key, **extra}

    async def agent() -> dict[str, Any]:
        with provider.get_tracer("agent").start_as_current_span("invoke_agent"):
            return await lookup("k1", region="eu")

    assert asyncio.run(agent()) == {"key": "k1", "region": "eu"}
    assert tool_span(exporter).attributes["gen_ai.tool.call.arguments"] == '{"key":"k1","region":"eu"}'


def test_positional_only_parameters_are_refused(make_client):
    client, _ = make_client()
    with pytest.raises(TypeError, match="cannot be passed by keyword"):
        client.gated()(lambda a, /: a)


def test_resume_context_parents_new_spans_on_the_requesting_span(provider, exporter):
    result = DecisionResult("approved", "big", {}, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    token = otel_context.attach(resume_context(result))
    try:
        with provider.get_tracer("agent").start_as_current_span("resumed"):
            pass
    finally:
        otel_context.detach(token)
    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == result.trace_id
    assert format(span.parent.span_id, "016x") == result.span_id
