"""End to end: an OTel-instrumented agent, the governance SDK, a person approving over HTTP, the binding check.

The agent is real OpenTelemetry SDK code exporting over OTLP/HTTP to a live server; it asks through
``governance.sdk.GovernanceClient``; an approver key decides from another thread; the tool's span is
ingested and its step must record the right binding (``traceward.decision_token`` is stamped by the SDK).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from governance.sdk import (
    ApprovalTimeout,
    GovernanceClient,
    GovernanceUnavailable,
    ToolDenied,
    resume_context,
)
from governance.tokens import SigningKeys, issue_token, verify_token
from tests.live import INGEST_KEY, LiveServer, free_port, wait_until
from tests.server.test_governance_api import (
    APPROVER_KEY,
    BARE_PROJECT_INGEST_KEY,
    audit_actions,
    start_governed_server,
    wait_steps,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_governed_server(tmp_path_factory.mktemp("gov-e2e") / "data")
    try:
        yield srv
    finally:
        srv.stop()


class Agent:
    """An OTel-instrumented agent process: its own TracerProvider exporting to the live server."""

    def __init__(self, server: LiveServer, key: str = INGEST_KEY) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "billing-agent"}))
        self.exporter = OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces",
                                         headers={"authorization": f"Bearer {key}"})
        self.captured = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.tracer = self.provider.get_tracer("billing-agent")

    def client(self, base_url: str, key: str = INGEST_KEY, **kwargs: Any) -> GovernanceClient:
        return GovernanceClient(base_url, key, tracer_provider=self.provider, poll_wait_s=10, **kwargs)

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def agent(server: LiveServer) -> Iterator[Agent]:
    agent = Agent(server)
    try:
        yield agent
    finally:
        agent.close()


def hex_ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def approve_when_pending(server: LiveServer, trace_id: str, body: dict[str, Any], verb: str = "approve") -> None:
    """A person: wait for the run's pending approval, then decide it over HTTP."""
    found: list[str] = []

    def pending() -> bool:
        approvals = server.get("/v1/approvals", key=APPROVER_KEY, run=trace_id, status="pending").json()
        found[:] = [a["approval_id"] for a in approvals["approvals"]]
        return bool(found)

    wait_until(pending, 20, what="a pending approval")
    response = server.post(f"/v1/approvals/{found[0]}:{verb}", key=APPROVER_KEY, json=body)
    assert response.status_code == 200, response.text


def step_of(steps: list[dict[str, Any]], span_id: str) -> dict[str, Any]:
    return next(s for s in steps if s["span_id"] == span_id)


def wait_tool_step(server: LiveServer, trace_id: str, span_id: str, *, violation: str | None = None) -> list[dict[str, Any]]:
    """The run's steps once the tool step (and, if expected, its violation step) is stored."""
    def ready(steps: list[dict[str, Any]]) -> bool:
        has_tool = any(s["span_id"] == span_id for s in steps)
        return has_tool and (violation is None or any(s["name"] == f"binding {violation}" for s in steps))

    return wait_steps(server, trace_id, ready)


def assert_violation(server: LiveServer, steps: list[dict[str, Any]], trace_id: str, span_id: str,
                     outcome: str) -> None:
    tool = step_of(steps, span_id)
    assert (tool["type"], tool["binding"]) == ("tool", outcome)
    violations = [s for s in steps if s["type"] == "policy" and s["name"].startswith("binding ")]
    assert [(v["name"], v["status"], v["parent_span_id"]) for v in violations] == [
        (f"binding {outcome}", "error", span_id)]
    assert violations[0]["payload"]["finding"] == "policy_violation"
    assert ("binding.violation", f"{trace_id}/{span_id}") in audit_actions(server)


# ---------------------------------------------------------------- the happy path, and one run across the pause


def test_gated_tool_waits_for_a_person_then_runs_bound_in_one_ordered_run(server: LiveServer, agent: Agent) -> None:
    ran: list[tuple[int, str]] = []
    with agent.client(server.api_url) as client:
        @client.gated("payments.send", agent="billing")
        def send_payment(amount: int, to: str) -> str:
            ran.append((amount, to))
            ran_span.append(hex_ids(trace.get_current_span())[1])
            return "sent"

        ran_span: list[str] = []
        with agent.tracer.start_as_current_span("invoke_agent billing") as root:
            trace_id, root_span_id = hex_ids(root)
            person = threading.Thread(target=approve_when_pending, args=(
                server, trace_id, {"args": {"amount": 4500, "to": "bob"}, "reason": "capped"}))
            person.start()
            assert send_payment(amount=5000, to="bob") == "sent"
            person.join()
    assert ran == [(4500, "bob")]  # the approver's edit is what ran
    steps = wait_tool_step(server, trace_id, ran_span[0])
    wait_steps(server, trace_id, lambda s: any(x["span_id"] == root_span_id for x in s))
    steps = server.all_steps(trace_id)
    tool = step_of(steps, ran_span[0])
    assert tool["binding"] == "bound" and tool["decision_token_id"]
    decision = next(s for s in steps if s["name"] == "decision payments.send")
    approval = next(s for s in steps if s["type"] == "approval")
    root_step = step_of(steps, root_span_id)
    assert approval["payload"]["jti"] == tool["decision_token_id"]
    # request → decision → approval → execution, in one run: by time, by parentage and by seq
    assert root_step["ts_ns"] <= decision["ts_ns"] <= approval["ts_ns"] <= tool["ts_ns"]
    assert decision["parent_span_id"] == approval["parent_span_id"] == tool["parent_span_id"] == root_span_id
    assert decision["seq"] < approval["seq"] < tool["seq"]
    assert not [s for s in steps if s["name"].startswith("binding ")]


def test_a_resent_span_keeps_its_binding_and_is_not_a_replay(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root, \
            client.guard("payments.send", {"amount": 20, "to": "ann"}):
        tool_span_id = hex_ids(trace.get_current_span())[1]
    trace_id = hex_ids(root)[0]
    wait_tool_step(server, trace_id, tool_span_id)
    resent = [s for s in agent.captured.get_finished_spans() if format(s.context.span_id, "016x") == tool_span_id]
    retry = OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces",
                             headers={"authorization": f"Bearer {INGEST_KEY}"})
    assert retry.export(resent).name == "SUCCESS" and retry.export(resent).name == "SUCCESS"
    retry.shutdown()
    time.sleep(1.0)
    steps = server.all_steps(trace_id)
    assert [s["binding"] for s in steps if s["span_id"] == tool_span_id] == ["bound"]
    assert not [s for s in steps if s["name"].startswith("binding ")]
    assert ("binding.violation", f"{trace_id}/{tool_span_id}") not in audit_actions(server)


def _tool_attributes(decided: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "payments.send",
            "gen_ai.tool.call.arguments": json.dumps(dict(decided.args)),
            "traceward.decision_token": decided.token, "traceward.approval_id": decided.approval_id}


def test_a_run_resumed_later_under_the_requesting_span_stays_one_run(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("plan refund") as requesting:
        trace_id, requesting_id = hex_ids(requesting)
        person = threading.Thread(target=approve_when_pending, args=(server, trace_id, {}))
        person.start()
        decided = client.decide("payments.send", {"amount": 900, "to": "ann"})
        person.join()
    # ... the agent process restarts; the tool runs under the requesting span's context
    with agent.tracer.start_as_current_span("execute_tool payments.send", context=resume_context(decided),
                                            attributes=_tool_attributes(decided)) as tool:
        tool_id = hex_ids(tool)[1]
    steps = wait_tool_step(server, trace_id, tool_id)
    executed = step_of(steps, tool_id)
    assert (executed["binding"], executed["parent_span_id"]) == ("bound", requesting_id)
    order = [step_of(steps, requesting_id), next(s for s in steps if s["name"] == "decision payments.send"),
             next(s for s in steps if s["type"] == "approval"), executed]
    assert [s["ts_ns"] for s in order] == sorted(s["ts_ns"] for s in order)


def test_an_execution_in_a_new_trace_linked_to_the_request_is_bound(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("plan") as requesting:
        decided = client.decide("payments.send", {"amount": 12, "to": "lee"})
    link = trace.Link(requesting.get_span_context(), {"traceward.approval_id": "none"})
    with agent.tracer.start_as_current_span("execute_tool payments.send", context=otel_context.Context(),
                                            links=[link], attributes=_tool_attributes(decided)) as tool:
        new_trace, tool_id = hex_ids(tool)
    assert new_trace != decided.trace_id
    assert step_of(wait_tool_step(server, new_trace, tool_id), tool_id)["binding"] == "bound"
    # the decided run shows the execution too, after its decision
    steps = wait_steps(server, decided.trace_id, lambda s: any(x["name"].startswith("executed in linked") for x in s))
    linked = next(x for x in steps if x["name"].startswith("executed in linked"))
    assert linked["payload"]["linked_run_id"] == new_trace and linked["payload"]["executed_span_id"] == tool_id
    assert linked["name"] == "executed in linked run (bound)" and linked["status"] == "ok"
    decision = next(x for x in steps if x["name"] == "decision payments.send")
    assert decision["seq"] < linked["seq"] and decision["ts_ns"] <= linked["ts_ns"]


# ---------------------------------------------------------------- executions that don't match the decision


def test_a_forged_token_is_invalid(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root, \
            client.guard("payments.send", {"amount": 30, "to": "eve"}) as decided:
        genuine = verify_token(httpx.get(f"{server.api_url}/.well-known/jwks.json").json(), decided.token or "")
        forged = issue_token(SigningKeys.generate(), tenant=genuine.tenant, project=genuine.project,
                             tool=genuine.tool, args_sha256=genuine.args_sha256, trace_id=genuine.trace_id,
                             span_id=genuine.span_id, decision="allow", approval_id=None,
                             policy_version=genuine.policy_version, break_glass=False, ttl_s=300)
        tool_span = trace.get_current_span()
        tool_span.set_attribute("traceward.decision_token", forged)
    trace_id, tool_span_id = hex_ids(root)[0], hex_ids(tool_span)[1]
    assert_violation(server, wait_tool_step(server, trace_id, tool_span_id, violation="invalid"), trace_id,
                     tool_span_id, "invalid")


def test_tampered_args_are_an_args_mismatch(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root, \
            client.guard("payments.send", {"amount": 30, "to": "eve"}):
        tool_span = trace.get_current_span()  # the agent runs with other arguments than were allowed
        tool_span.set_attribute("gen_ai.tool.call.arguments", json.dumps({"amount": 30000, "to": "eve"}))
    trace_id, tool_span_id = hex_ids(root)[0], hex_ids(tool_span)[1]
    assert_violation(server, wait_tool_step(server, trace_id, tool_span_id, violation="args_mismatch"), trace_id,
                     tool_span_id, "args_mismatch")


def test_a_second_execution_with_the_same_token_is_replayed(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root:
        with client.guard("payments.send", {"amount": 40, "to": "joe"}) as decided:
            first_id = hex_ids(trace.get_current_span())[1]
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "payments.send",
                      "gen_ai.tool.call.arguments": json.dumps(decided.args), "traceward.decision_token": decided.token}
        with agent.tracer.start_as_current_span("execute_tool payments.send", attributes=attributes) as again:
            second_id = hex_ids(again)[1]
    trace_id = hex_ids(root)[0]
    steps = wait_tool_step(server, trace_id, second_id, violation="replayed")
    assert step_of(steps, first_id)["binding"] == "bound"
    assert_violation(server, steps, trace_id, second_id, "replayed")


def test_missing_and_expired_tokens_are_flagged_and_ungated_tools_are_not(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root:
        with client.guard("payments.send", {"amount": 10, "to": "kim"}) as decided:
            pass
        gated = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "payments.send",
                 "gen_ai.tool.call.arguments": json.dumps(decided.args)}
        with agent.tracer.start_as_current_span("execute_tool payments.send", attributes=gated) as missing:
            pass
        an_hour_later = time.time_ns() + 3600 * 10**9
        late = agent.tracer.start_span("execute_tool payments.send", start_time=an_hour_later,
                                       attributes=gated | {"traceward.decision_token": decided.token})
        late.end(end_time=an_hour_later + 1000)
        with client.guard("search_docs", {"q": "refund policy"}):
            docs_id = hex_ids(trace.get_current_span())[1]
    trace_id = hex_ids(root)[0]
    missing_id, late_id = hex_ids(missing)[1], hex_ids(late)[1]
    steps = wait_steps(server, trace_id, lambda s: {"binding missing", "binding expired"} <= {x["name"] for x in s}
                       and any(x["span_id"] == docs_id for x in s))
    assert (step_of(steps, missing_id)["binding"], step_of(steps, late_id)["binding"]) == ("missing", "expired")
    assert step_of(steps, docs_id)["binding"] == "ungated"
    assert sorted(s["name"] for s in steps if s["name"].startswith("binding ")) == [
        "binding expired", "binding missing"]


# ---------------------------------------------------------------- fail safe


def test_no_active_policy_denies(server: LiveServer, agent: Agent) -> None:
    ran: list[int] = []
    with agent.client(server.api_url, key=BARE_PROJECT_INGEST_KEY) as client, \
            agent.tracer.start_as_current_span("invoke_agent"), pytest.raises(ToolDenied) as denied, \
            client.guard("search_docs", {"q": "x"}):
        ran.append(1)
    assert denied.value.reason_code == "no_active_policy" and ran == []


def test_policy_and_approver_denials_raise_tool_denied(server: LiveServer, agent: Agent) -> None:
    with agent.client(server.api_url) as client, agent.tracer.start_as_current_span("invoke_agent") as root:
        with pytest.raises(ToolDenied) as by_policy, client.guard("rm_rf", {"path": "/"}):
            pytest.fail("a denied tool must not run")
        person = threading.Thread(target=approve_when_pending, args=(
            server, hex_ids(root)[0], {"reason": "wrong supplier"}, "deny"))
        person.start()
        with pytest.raises(ToolDenied) as by_person, client.guard("payments.send", {"amount": 900, "to": "x"}):
            pytest.fail("a denied tool must not run")
        person.join()
    assert by_policy.value.reason_code == "default_deny"
    assert by_person.value.reason_code == "wrong supplier" and by_person.value.approval_id


def test_nobody_approving_in_time_is_an_approval_timeout(server: LiveServer, agent: Agent) -> None:
    started = time.monotonic()
    with agent.client(server.api_url, approval_timeout_s=1.5) as client, \
            agent.tracer.start_as_current_span("invoke_agent"), pytest.raises(ApprovalTimeout), \
            client.guard("payments.send", {"amount": 700, "to": "y"}):
        pytest.fail("an unapproved tool must not run")
    assert time.monotonic() - started < 6


def test_an_unreachable_server_fails_closed_unless_the_tool_is_fail_open(server: LiveServer, agent: Agent) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with agent.client(nowhere, timeout_s=1, fail_open_tools={"payments.send"}) as client, \
            agent.tracer.start_as_current_span("invoke_agent") as root:
        with pytest.raises(GovernanceUnavailable), client.guard("db.migrate", {"target": "v9"}):
            pytest.fail("must fail closed")
        with client.guard("payments.send", {"amount": 1, "to": "z"}) as decided:
            fail_open_id = hex_ids(trace.get_current_span())[1]
    assert decided.fail_open and decided.token is None
    trace_id = hex_ids(root)[0]  # the operator accepted the risk; the receiver still flags the execution
    steps = wait_tool_step(server, trace_id, fail_open_id, violation="missing")
    assert_violation(server, steps, trace_id, fail_open_id, "missing")
