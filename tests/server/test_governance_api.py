"""Governance HTTP API against a real server: policies, decisions, approvals, kill switch, break-glass, JWKS."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from governance.tokens import verify_token
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until

pytestmark = pytest.mark.e2e

APPROVER_KEY = "tw_0a0a0a0a_approver-secret-0123456789abcdefghijklmnopqrstu"
VIEWER_KEY = "tw_0b0b0b0b_viewer-secret-0123456789abcdefghijklmnopqrstuvw"
BARE_PROJECT_INGEST_KEY = "tw_0c0c0c0c_bare-project-ingest-0123456789abcdefghijklmn"
OTHER_TENANT_INGEST_KEY = "tw_0d0d0d0d_other-tenant-ingest-0123456789abcdefghijklmn"
OTHER_TENANT_APPROVER_KEY = "tw_0e0e0e0e_other-tenant-approver-0123456789abcdefghijkl"
EXTRA_KEYS = (  # (key, tenant, project, role)
    (APPROVER_KEY, "default", "default", "approver"),
    (VIEWER_KEY, "default", "default", "viewer"),
    (BARE_PROJECT_INGEST_KEY, "default", "bare", "ingest"),
    (OTHER_TENANT_INGEST_KEY, "acme", "default", "ingest"),
    (OTHER_TENANT_APPROVER_KEY, "acme", "default", "approver"),
)

POLICY_YAML = """
description: governance API tests
default: {decision: deny, reason_code: default_deny}
tools:
  "payments.*": {action_class: external_write, autonomy_level: L3}
  search_docs: {action_class: read}
  db.migrate: {action_class: write}
rules:
  - id: small-payments
    match: {tool: payments.send, args: {$.amount: {lte: 100}}}
    decision: allow
    reason_code: small_payment
  - id: large-payments
    match: {tool: payments.send, args: {$.amount: {lte: 100000}}}
    decision: require_approval
    reason_code: large_payment
  - id: docs
    match: {tool: search_docs}
    decision: allow
    reason_code: read_only
  - id: migrations
    match: {tool: db.migrate}
    decision: require_approval
    reason_code: schema_change
"""


def start_governed_server(data_dir: Path, *, policy: str | None = POLICY_YAML,
                          env: dict[str, str] | None = None) -> LiveServer:
    """A live server with the extra keys above and (optionally) ``policy`` active in tenant/project default."""
    index = RunIndex(data_dir / "traceward.sqlite3")
    for key, tenant, project, role in EXTRA_KEYS:
        KeyStore(index).create(tenant_id=tenant, project_id=project, role=role, key_text=key)
    index.writer.conn.close()
    server = LiveServer(data_dir, extra_env=env or {}).start()
    if policy is not None:
        activate_policy(server, policy)
    return server


def activate_policy(server: LiveServer, text: str, content_type: str = "application/yaml") -> dict[str, Any]:
    """Create and activate a policy version with the admin key."""
    created = server.post("/v1/policies", key=ADMIN_KEY, content=text, headers={"content-type": content_type})
    assert created.status_code == 201, created.text
    activated = server.post(f"/v1/policies/{created.json()['policy_id']}:activate", key=ADMIN_KEY)
    assert activated.status_code == 200, activated.text
    return dict(activated.json())


def new_ids() -> tuple[str, str]:
    """A fresh (trace_id, span_id)."""
    return secrets.token_hex(16), secrets.token_hex(8)


def decide(server: LiveServer, tool: str, args: dict[str, Any], *, key: str = INGEST_KEY,
           trace_id: str | None = None, **extra: Any) -> httpx.Response:
    """POST /v1/decisions with fresh ids unless given."""
    trace, span = new_ids()
    body = {"tool_name": tool, "args": args, "trace_id": trace_id or trace, "span_id": span, **extra}
    return server.post("/v1/decisions", key=key, json=body)


def audit_actions(server: LiveServer, tenant: str = "default") -> list[tuple[str, str | None]]:
    """(action, target) of the tenant's audit rows, oldest first (read-only on the live database)."""
    db = sqlite3.connect(f"file:{server.data_dir / 'traceward.sqlite3'}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT action, target FROM audit_log WHERE tenant_id = ? ORDER BY id", [tenant]))
    finally:
        db.close()


def wait_steps(server: LiveServer, run_id: str, predicate: Any, timeout_s: float = 20) -> list[dict[str, Any]]:
    """The run's steps once ``predicate(steps)`` holds."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        if server.get(f"/v1/runs/{run_id}").status_code != 200:
            return False
        found[:] = server.all_steps(run_id)
        return bool(predicate(found))

    wait_until(ready, timeout_s, what=f"steps of run {run_id}")
    return found


def put_kill_switch(server: LiveServer, key: str, *, enabled: bool) -> httpx.Response:
    """PUT /v1/kill-switch."""
    return httpx.put(f"{server.api_url}/v1/kill-switch", json={"enabled": enabled},
                     headers={"authorization": f"Bearer {key}"}, timeout=10)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The envelope's error object."""
    return dict(response.json()["error"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_governed_server(tmp_path_factory.mktemp("gov-api") / "data")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Approvals expire after 1 s, and the global kill switch is on."""
    env = {"TRACEWARD_APPROVAL_TIMEOUT_S": "1", "TRACEWARD_KILL_SWITCH_EXTERNAL_WRITE": "true"}
    srv = start_governed_server(tmp_path_factory.mktemp("gov-strict") / "data", env=env)
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------- policies


def test_policy_versions_are_created_listed_and_activated(server: LiveServer) -> None:
    before = server.get("/v1/policies", key=VIEWER_KEY).json()
    created = server.post("/v1/policies", key=ADMIN_KEY, json={
        "default": {"decision": "deny", "reason_code": "nope"}, "rules": []})
    assert created.status_code == 201 and created.json()["active"] is False
    assert created.json()["version"] == len(before["policies"]) + 1
    listed = server.get("/v1/policies", key=VIEWER_KEY).json()
    assert [p["version"] for p in listed["policies"]][0] == created.json()["version"]
    assert listed["active_policy_id"] == before["active_policy_id"]  # creating doesn't activate
    one = server.get(f"/v1/policies/{created.json()['policy_id']}", key=VIEWER_KEY).json()
    assert one["document"]["default"] == {"decision": "deny", "reason_code": "nope"}
    assert one["content_type"] == "application/json"
    assert ("policy.create", created.json()["policy_id"]) in audit_actions(server)


def test_activation_switches_the_one_active_version_and_takes_effect_at_once(server: LiveServer) -> None:
    original = server.get("/v1/policies", key=ADMIN_KEY).json()["active_policy_id"]
    deny_all = activate_policy(server, '{"default": {"decision": "deny", "reason_code": "frozen"}, "rules": []}',
                               "application/json")
    try:
        assert error_of(server.post("/v1/policies/x", key=ADMIN_KEY))["code"] == "not_found"
        listed = server.get("/v1/policies", key=ADMIN_KEY).json()
        assert [p["policy_id"] for p in listed["policies"] if p["active"]] == [deny_all["policy_id"]]
        assert decide(server, "search_docs", {"q": "x"}).json()["reason_code"] == "frozen"
    finally:
        assert server.post(f"/v1/policies/{original}:activate", key=ADMIN_KEY).status_code == 200
    assert decide(server, "search_docs", {"q": "x"}).json()["decision"] == "allow"
    assert ("policy.activate", deny_all["policy_id"]) in audit_actions(server)


@pytest.mark.parametrize("body, content_type, hint", [
    ("default: {decision: deny, reason_code: d}\nrules:\n  - id: r\n    match: {args: {$.amount: {gtx: 1}}}\n"
     "    decision: allow\n    reason_code: x\n", "application/yaml", "rules[0].match.args"),
    ("default: {decision: maybe, reason_code: d}\nrules: []\n", "text/yaml", "default.decision"),
    ("rules: [\n", "application/yaml", "(document)"),
    ('{"default": {"decision": "deny", "reason_code": "d"}}', "application/json", "(document)"),
    ("default: {decision: deny, reason_code: d}\nrules: []\n", "text/plain", "(document)"),
])
def test_a_malformed_policy_is_422_with_a_path_hint_and_nothing_is_stored(
        server: LiveServer, body: str, content_type: str, hint: str) -> None:
    before = len(server.get("/v1/policies", key=ADMIN_KEY).json()["policies"])
    response = server.post("/v1/policies", key=ADMIN_KEY, content=body, headers={"content-type": content_type})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_policy" and hint in error["details"] and error["message"].startswith(hint)
    assert len(server.get("/v1/policies", key=ADMIN_KEY).json()["policies"]) == before


def test_only_admins_write_policies(server: LiveServer) -> None:
    active = server.get("/v1/policies", key=VIEWER_KEY).json()["active_policy_id"]
    assert server.post("/v1/policies", key=APPROVER_KEY, content="{}",
                       headers={"content-type": "application/json"}).status_code == 403
    assert server.post(f"/v1/policies/{active}:activate", key=VIEWER_KEY).status_code == 403
    assert server.get("/v1/policies", key=INGEST_KEY).status_code == 403


def test_people_manage_other_projects_of_their_tenant_with_the_project_parameter(server: LiveServer) -> None:
    created = server.post("/v1/policies?project=side", key=ADMIN_KEY, content=POLICY_YAML,
                          headers={"content-type": "application/yaml"})
    assert created.status_code == 201 and created.json()["project_id"] == "side"
    policy_id = created.json()["policy_id"]
    assert server.post(f"/v1/policies/{policy_id}:activate", key=ADMIN_KEY).status_code == 404  # not in default
    assert server.post(f"/v1/policies/{policy_id}:activate?project=side", key=ADMIN_KEY).status_code == 200
    side = server.get("/v1/policies", key=VIEWER_KEY, project="side").json()
    assert (side["project_id"], side["active_policy_id"]) == ("side", policy_id)
    assert policy_id not in {p["policy_id"] for p in server.get("/v1/policies", key=VIEWER_KEY).json()["policies"]}
    assert server.get("/v1/policies", key=VIEWER_KEY, project="").status_code == 400


def test_another_tenants_policy_cannot_be_read_or_activated(server: LiveServer) -> None:
    active = server.get("/v1/policies", key=ADMIN_KEY).json()["active_policy_id"]
    assert server.get(f"/v1/policies/{active}", key=OTHER_TENANT_APPROVER_KEY).status_code == 404
    assert server.get("/v1/policies", key=OTHER_TENANT_APPROVER_KEY).json()["policies"] == []


# ---------------------------------------------------------------- decisions


def test_allow_returns_a_token_that_verifies_with_the_public_jwks(server: LiveServer) -> None:
    trace, span = new_ids()
    response = server.post("/v1/decisions", json={"tool_name": "payments.send", "args": {"amount": 40},
                                                   "trace_id": trace, "span_id": span, "agent": "billing"})
    body = response.json()
    assert (body["decision"], body["reason_code"], body["rule_id"]) == ("allow", "small_payment", "small-payments")
    jwks = httpx.get(f"{server.api_url}/.well-known/jwks.json", timeout=10).json()
    claims = verify_token(jwks, body["token"])
    assert (claims.tenant, claims.project, claims.tool, claims.trace_id, claims.span_id) == (
        "default", "default", "payments.send", trace, span)
    assert claims.jti == body["token_id"] and claims.policy_version == body["policy_version"]
    assert not claims.break_glass and claims.decision == "allow"


def test_deny_and_require_approval(server: LiveServer) -> None:
    denied = decide(server, "rm_rf", {}).json()
    assert (denied["decision"], denied["reason_code"], denied["rule_id"]) == ("deny", "default_deny", None)
    assert "token" not in denied and "approval_id" not in denied
    pending = decide(server, "payments.send", {"amount": 5000}, context={
        "summary": "pay the supplier", "risk_score": 0.7, "evidence_links": ["https://example.com/inv/1"]}).json()
    assert pending["decision"] == "require_approval" and "token" not in pending
    approval = server.get(f"/v1/approvals/{pending['approval_id']}", key=APPROVER_KEY).json()
    assert approval["status"] == "pending" and approval["context"]["summary"] == "pay the supplier"
    assert approval["links"]["run"] == f"/v1/runs/{approval['run_id']}" and "token" not in approval


def test_no_active_policy_denies(server: LiveServer) -> None:
    body = decide(server, "search_docs", {"q": "x"}, key=BARE_PROJECT_INGEST_KEY).json()
    assert (body["decision"], body["reason_code"], body["policy_version"]) == ("deny", "no_active_policy", None)


def test_every_decision_is_a_policy_step_in_its_run_and_audited(server: LiveServer) -> None:
    trace, _ = new_ids()
    decide(server, "payments.send", {"amount": 7, "api_key": "sk-live-abc"}, trace_id=trace)
    decide(server, "rm_rf", {"path": "/"}, trace_id=trace)
    steps = wait_steps(server, trace, lambda s: len(s) == 2)
    assert [(s["type"], s["name"]) for s in steps] == [("policy", "decision payments.send"),
                                                      ("policy", "decision rm_rf")]
    payload = steps[0]["payload"]
    assert (payload["decision"], payload["rule_id"], payload["args"]["amount"]) == ("allow", "small-payments", 7)
    assert payload["jti"] and "token" not in payload
    assert steps[1]["payload"]["decision"] == "deny"
    assert [a for a in audit_actions(server) if a == ("policy.decision", trace)] == [("policy.decision", trace)] * 2


@pytest.mark.parametrize("change, field", [
    ({"unknown": 1}, "unknown"),
    ({"trace_id": "XYZ"}, "trace_id"),
    ({"span_id": "0" * 16}, "span_id"),
    ({"args": ["not", "an", "object"]}, "args"),
    ({"args": {"blob": "x" * 70_000}}, "args"),
    ({"tool_name": ""}, "tool_name"),
    ({"action_class": "teleport"}, "action_class"),
    ({"context": {"summary": "s", "mood": "bad"}}, "context.mood"),
])
def test_bad_decision_requests_are_400_and_write_nothing(server: LiveServer, change: dict[str, Any],
                                                         field: str) -> None:
    trace, span = new_ids()
    body = {"tool_name": "payments.send", "args": {"amount": 1}, "trace_id": trace, "span_id": span} | change
    response = server.post("/v1/decisions", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_input" and field in error["message"] + str(error["details"])
    assert ("policy.decision", body["trace_id"]) not in audit_actions(server)


@pytest.mark.parametrize("args_json", ['{"a":' * 5000 + "1" + "}" * 5000, '{"a": 1180591620717411303424}',
                                       '{"a": NaN}', "[1"])
def test_hostile_decision_bodies_are_400(server: LiveServer, args_json: str) -> None:
    trace, span = new_ids()
    body = f'{{"tool_name": "t", "trace_id": "{trace}", "span_id": "{span}", "args": {args_json}}}'
    response = server.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_input"


def test_only_ingest_keys_decide(server: LiveServer) -> None:
    trace, span = new_ids()
    body = {"tool_name": "search_docs", "args": {}, "trace_id": trace, "span_id": span}
    assert server.post("/v1/decisions", key=ADMIN_KEY, json=body).status_code == 403
    assert server.post("/v1/decisions", key=VIEWER_KEY, json=body).status_code == 403


# ---------------------------------------------------------------- approvals


def test_approve_with_edited_args_issues_the_token_once_and_records_the_step(server: LiveServer) -> None:
    trace, _ = new_ids()
    approval_id = decide(server, "payments.send", {"amount": 5000, "to": "bob"}, trace_id=trace).json()["approval_id"]
    approved = server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY,
                           json={"args": {"amount": 4000, "to": "bob"}, "reason": "trimmed"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and "token" not in approved.json()
    agent_view = server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY).json()
    assert agent_view["args"] == {"amount": 4000, "to": "bob"} and agent_view["requested_args"]["amount"] == 5000
    again = server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY).json()
    assert again["token"] == agent_view["token"]  # issued once: polling twice can't mint two tokens
    claims = verify_token(httpx.get(f"{server.api_url}/.well-known/jwks.json").json(), agent_view["token"])
    assert (claims.decision, claims.approval_id) == ("approved", approval_id)
    steps = wait_steps(server, trace, lambda s: any(x["type"] == "approval" for x in s))
    step = next(s for s in steps if s["type"] == "approval")
    assert step["name"] == "approval approved payments.send" and step["payload"]["edited"] is True
    assert ("approval.approve", approval_id) in audit_actions(server)
    twice = server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY)
    assert twice.status_code == 409 and error_of(twice)["code"] == "conflict"


def test_edited_args_that_the_policy_denies_are_422_and_the_approval_stays_pending(server: LiveServer) -> None:
    approval_id = decide(server, "payments.send", {"amount": 5000}).json()["approval_id"]
    response = server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY,
                           json={"args": {"amount": 10_000_000}})
    assert response.status_code == 422 and error_of(response)["details"]["edited_args"] == "default_deny"
    assert server.get(f"/v1/approvals/{approval_id}", key=APPROVER_KEY).json()["status"] == "pending"


def test_deny_keeps_the_reason_as_feedback(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v42"}).json()["approval_id"]
    denied = server.post(f"/v1/approvals/{approval_id}:deny", key=APPROVER_KEY, json={"reason": "not on Friday"})
    assert denied.json()["status"] == "denied"
    agent_view = server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY).json()
    assert (agent_view["status"], agent_view["reason"]) == ("denied", "not on Friday") and "token" not in agent_view
    assert server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY).status_code == 409


def test_the_requester_and_viewers_cannot_approve(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v43"}).json()["approval_id"]
    self_approval = server.post(f"/v1/approvals/{approval_id}:approve", key=INGEST_KEY)
    assert self_approval.status_code == 403 and error_of(self_approval)["code"] == "permission_denied"
    assert server.post(f"/v1/approvals/{approval_id}:approve", key=VIEWER_KEY).status_code == 403
    assert server.post(f"/v1/approvals/{approval_id}:deny", key=VIEWER_KEY).status_code == 403
    assert server.get(f"/v1/approvals/{approval_id}", key=VIEWER_KEY).json()["status"] == "pending"


def test_foreign_tenant_and_foreign_project_approval_ids_are_404(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v44"}).json()["approval_id"]
    for key in (OTHER_TENANT_APPROVER_KEY, OTHER_TENANT_INGEST_KEY, BARE_PROJECT_INGEST_KEY):
        assert server.get(f"/v1/approvals/{approval_id}", key=key).status_code == 404
    response = server.post(f"/v1/approvals/{approval_id}:approve", key=OTHER_TENANT_APPROVER_KEY)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert server.get("/v1/approvals/no-such-id", key=APPROVER_KEY).status_code == 404
    assert server.post(f"/v1/approvals/{approval_id}:frobnicate", key=APPROVER_KEY).status_code == 404


def test_bad_approval_bodies_are_400(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v45"}).json()["approval_id"]
    for verb, body in (("approve", {"args": {}, "colour": "red"}), ("deny", {"args": {"a": 1}}),
                       ("approve", {"args": {"blob": "x" * 70_000}})):
        response = server.post(f"/v1/approvals/{approval_id}:{verb}", key=APPROVER_KEY, json=body)
        assert response.status_code == 400, response.text
    assert server.get(f"/v1/approvals/{approval_id}", key=APPROVER_KEY).json()["status"] == "pending"


def test_list_approvals_filters_and_pages(server: LiveServer) -> None:
    trace, _ = new_ids()
    ids = [decide(server, "db.migrate", {"n": i}, trace_id=trace, agent="migrator").json()["approval_id"]
           for i in range(3)]
    server.post(f"/v1/approvals/{ids[0]}:deny", key=APPROVER_KEY, json={})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"run": trace, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = server.get("/v1/approvals", key=VIEWER_KEY, **params).json()
        seen += [a["approval_id"] for a in page["approvals"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    pending = server.get("/v1/approvals", key=VIEWER_KEY, run=trace, status="pending", agent="migrator").json()
    assert [a["approval_id"] for a in pending["approvals"]] == ids[:0:-1]
    assert server.get("/v1/approvals", key=VIEWER_KEY, status="maybe").status_code == 400
    assert server.get("/v1/approvals", key=VIEWER_KEY, cursor="!!").status_code == 400
    assert server.get("/v1/approvals", key=OTHER_TENANT_APPROVER_KEY, run=trace).json()["approvals"] == []
    assert server.get("/v1/approvals", key=INGEST_KEY).status_code == 403


def test_long_poll_answers_as_soon_as_someone_decides(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v46"}).json()["approval_id"]
    timer = threading.Timer(0.5, lambda: server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY))
    timer.start()
    started = time.monotonic()
    response = server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY, wait=20)
    elapsed = time.monotonic() - started
    timer.join()
    assert response.json()["status"] == "approved" and response.json()["token"]
    assert 0.4 < elapsed < 5


def test_long_poll_times_out_pending_and_rejects_waits_over_60s(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v47"}).json()["approval_id"]
    started = time.monotonic()
    assert server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY, wait=1).json()["status"] == "pending"
    assert 0.9 < time.monotonic() - started < 4
    assert server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY, wait=61).status_code == 400


def test_many_concurrent_long_polls_do_not_starve_the_api(server: LiveServer) -> None:
    approval_id = decide(server, "db.migrate", {"target": "v48"}).json()["approval_id"]
    results: list[str] = []
    pollers = [threading.Thread(target=lambda: results.append(
        server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY, wait=15).json()["status"])) for _ in range(60)]
    for poller in pollers:
        poller.start()
    time.sleep(0.5)
    started = time.monotonic()  # more waiters than the sync thread pool has threads: other routes still answer
    assert decide(server, "search_docs", {"q": "x"}).json()["decision"] == "allow"
    assert time.monotonic() - started < 2
    server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY)
    for poller in pollers:
        poller.join(timeout=10)
    assert results == ["approved"] * 60


# ---------------------------------------------------------------- kill switch and break-glass


def test_the_tenant_kill_switch_denies_external_writes_whatever_the_policy_says(server: LiveServer) -> None:
    pending = decide(server, "payments.send", {"amount": 5000}).json()["approval_id"]
    approved = decide(server, "payments.send", {"amount": 6000}).json()["approval_id"]
    server.post(f"/v1/approvals/{approved}:approve", key=APPROVER_KEY)
    assert put_kill_switch(server, VIEWER_KEY, enabled=True).status_code == 403
    on = server.post("/v1/kill-switch", key=ADMIN_KEY, json={"enabled": True, "reason": "incident 7"})
    try:
        assert on.json()["enabled"] is True
        assert server.get("/v1/kill-switch", key=VIEWER_KEY).json()["reason"] == "incident 7"
        small = decide(server, "payments.send", {"amount": 1}).json()
        assert (small["decision"], small["reason_code"]) == ("deny", "kill_switch")
        assert decide(server, "search_docs", {"q": "x"}).json()["decision"] == "allow"  # reads still run
        blocked = server.post(f"/v1/approvals/{pending}:approve", key=APPROVER_KEY)
        assert blocked.status_code == 409 and blocked.json()["error"]["details"] == {"kill_switch": "on"}
        agent_view = server.get(f"/v1/approvals/{approved}", key=INGEST_KEY).json()
        assert (agent_view["status"], agent_view["reason"]) == ("denied", "kill_switch") and "token" not in agent_view
    finally:
        put_kill_switch(server, ADMIN_KEY, enabled=False).raise_for_status()
    assert decide(server, "payments.send", {"amount": 1}).json()["decision"] == "allow"
    actions = [a for a, _ in audit_actions(server)]
    assert "kill_switch.enable" in actions and "kill_switch.disable" in actions


def test_only_admins_flip_the_kill_switch(server: LiveServer) -> None:
    for key in (APPROVER_KEY, VIEWER_KEY, INGEST_KEY):
        assert server.post("/v1/kill-switch", key=key, json={"enabled": True}).status_code == 403
    assert server.post("/v1/kill-switch", key=ADMIN_KEY, json={"on": True}).status_code == 400
    assert server.get("/v1/kill-switch", key=VIEWER_KEY).json()["enabled"] is False


def test_break_glass_needs_an_admin_and_a_justification_and_is_marked(server: LiveServer) -> None:
    trace, span = new_ids()
    body = {"tool_name": "rm_rf", "args": {"path": "/tmp/cache"}, "trace_id": trace, "span_id": span}
    assert server.post("/v1/break-glass", key=APPROVER_KEY, json=body | {"justification": "x"}).status_code == 403
    assert server.post("/v1/break-glass", key=ADMIN_KEY, json=body).status_code == 400
    assert server.post("/v1/break-glass", key=ADMIN_KEY, json=body | {"justification": "  "}).status_code == 400
    issued = server.post("/v1/break-glass", key=ADMIN_KEY, json=body | {"justification": "outage INC-9"})
    assert issued.status_code == 201, issued.text
    claims = verify_token(httpx.get(f"{server.api_url}/.well-known/jwks.json").json(), issued.json()["token"])
    assert claims.break_glass and claims.policy_version is None and claims.approval_id is None
    steps = wait_steps(server, trace, lambda s: len(s) == 1)
    assert steps[0]["name"] == "BREAK-GLASS rm_rf" and steps[0]["payload"]["break_glass"] is True
    assert steps[0]["payload"]["justification"] == "outage INC-9"
    assert ("break_glass.issue", trace) in audit_actions(server)


def test_jwks_is_public_and_the_signing_key_file_is_private(server: LiveServer) -> None:
    response = httpx.get(f"{server.api_url}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200 and response.json()["keys"][0]["crv"] == "Ed25519"
    mode = stat.S_IMODE(os.stat(server.data_dir / "signing-keys.pem").st_mode)
    assert mode == 0o600


# ---------------------------------------------------------------- expiry and the global kill switch


def test_an_overdue_approval_expires_and_can_no_longer_be_approved(strict_server: LiveServer) -> None:
    trace, _ = new_ids()
    approval_id = decide(strict_server, "db.migrate", {"target": "v1"}, trace_id=trace).json()["approval_id"]
    polled = strict_server.get(f"/v1/approvals/{approval_id}", key=INGEST_KEY, wait=5).json()
    assert polled["status"] == "expired"
    late = strict_server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY)
    assert late.status_code == 409
    steps = wait_steps(strict_server, trace, lambda s: any(x["type"] == "approval" for x in s))
    assert [s["name"] for s in steps if s["type"] == "approval"] == ["approval expired db.migrate"]
    assert ("approval.expire", approval_id) in audit_actions(strict_server)


def test_the_expiry_job_expires_approvals_nobody_looks_at(strict_server: LiveServer) -> None:
    approval_id = decide(strict_server, "db.migrate", {"target": "v2"}).json()["approval_id"]
    wait_until(lambda: ("approval.expire", approval_id) in audit_actions(strict_server), 10,
               what="the expiry job")
    assert strict_server.get(f"/v1/approvals/{approval_id}", key=APPROVER_KEY).json()["status"] == "expired"


def test_the_global_kill_switch_denies_external_writes_in_every_tenant(strict_server: LiveServer) -> None:
    state = strict_server.get("/v1/kill-switch", key=VIEWER_KEY).json()
    assert (state["enabled"], state["global_enabled"], state["tenant_enabled"]) == (True, True, False)
    assert decide(strict_server, "payments.send", {"amount": 1}).json()["reason_code"] == "kill_switch"
    other = decide(strict_server, "anything", {}, key=OTHER_TENANT_INGEST_KEY).json()
    assert other["reason_code"] == "kill_switch"
    assert decide(strict_server, "search_docs", {"q": "x"}).json()["decision"] == "allow"
