"""Two tenants with look-alike data (the SAME trace ids, services, models, tools and tags) never see each other.

Tenant A is ``default`` (the bootstrap keys); tenant B is made with ``traceward admin bootstrap-tenant``.
Both send the same three traces (B's copies carry one extra step and B's marker in every payload) plus
one trace of their own. Every list, filter, cursor, run, steps, audit, verify and key call of one
tenant is checked to return only its own data; the other's run or key answers 404.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until

pytestmark = pytest.mark.e2e

SECOND = 1_000_000_000
SHARED = [os.urandom(16).hex() for _ in range(3)]
ONLY = {"A": os.urandom(16).hex(), "B": os.urandom(16).hex()}
START = time.time_ns() - 3600 * SECOND


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def trace_spans(trace: str, marker: str, *, extra_step: bool, index: int) -> list[dict[str, Any]]:
    """A root, a model call, a tool call (and a failing step in the second trace): same shape in both tenants."""
    root, start = os.urandom(8).hex(), START + index * 10 * SECOND
    secret = attr("app.marker", marker)

    def span(name: str, offset: int, attrs: list[dict[str, Any]], code: int = 0) -> dict[str, Any]:
        return {"traceId": trace, "spanId": os.urandom(8).hex(), "parentSpanId": root, "name": name, "kind": 3,
                "startTimeUnixNano": str(start + offset * SECOND), "endTimeUnixNano": str(start + offset * SECOND + 99),
                "attributes": [*attrs, secret], "status": {"code": code}}

    spans = [{"traceId": trace, "spanId": root, "name": "invoke_agent", "kind": 1, "startTimeUnixNano": str(start),
              "endTimeUnixNano": str(start + 9 * SECOND), "attributes": [attr("gen_ai.agent.name", "twin"), secret],
              "status": {"code": 2 if index == 1 else 1}},
             span("chat gpt-4o", 1, [attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", "gpt-4o"),
                                     attr("gen_ai.usage.input_tokens", 10), attr("gen_ai.usage.output_tokens", 2)]),
             span("execute_tool search", 2, [attr("gen_ai.operation.name", "execute_tool"),
                                             attr("gen_ai.tool.name", "search")])]
    if index == 1:
        spans.append(span("flaky", 3, [], code=2))
    if extra_step:
        spans.append(span("extra", 4, []))
    return spans


def send(server: LiveServer, key: str, tenant: str) -> dict[str, int]:
    """Send the tenant's traces; returns the step count expected per run."""
    traces = {t: trace_spans(t, f"{tenant}-secret", extra_step=tenant == "B", index=i) for i, t in enumerate(SHARED)}
    traces[ONLY[tenant]] = trace_spans(ONLY[tenant], f"{tenant}-secret", extra_step=tenant == "B", index=3)
    spans = [s for group in traces.values() for s in group]
    body = {"resourceSpans": [{"resource": {"attributes": [attr("service.name", "twin-svc"),
                                                           attr("deployment.environment", "prod")]},
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=orjson.dumps(body), timeout=60,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    return {t: len(group) for t, group in traces.items()}


@dataclass
class Tenant:
    name: str
    label: str  # "A" or "B"
    admin: str
    ingest: str
    viewer: str
    runs: dict[str, int]  # run id → step count


@dataclass
class Twins:
    server: LiveServer
    a: Tenant
    b: Tenant


def _key(server: LiveServer, admin: str, role: str) -> str:
    resp = server.post("/v1/admin/keys", key=admin, json={"role": role, "name": f"isolation {role}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    server = LiveServer(tmp_path_factory.mktemp("isolation") / "data").start()
    try:
        out = subprocess.run([sys.executable, "-m", "server", "admin", "bootstrap-tenant", "--data-dir",
                              str(server.data_dir), "--tenant", "acme"], capture_output=True, text=True, check=True)
        b_admin = out.stdout.strip().splitlines()[-1]
        again = subprocess.run([sys.executable, "-m", "server", "admin", "bootstrap-tenant", "--data-dir",
                                str(server.data_dir), "--tenant", "acme"], capture_output=True, text=True)
        assert again.returncode == 1 and "already has an admin key" in again.stderr
        a = Tenant("default", "A", ADMIN_KEY, INGEST_KEY, _key(server, ADMIN_KEY, "viewer"), {})
        b = Tenant("acme", "B", b_admin, _key(server, b_admin, "ingest"), _key(server, b_admin, "viewer"), {})
        a.runs, b.runs = send(server, a.ingest, "A"), send(server, b.ingest, "B")
        for tenant in (a, b):
            for run_id, count in tenant.runs.items():
                wait_until(lambda t=tenant, r=run_id, n=count: _step_count(server, t.viewer, r) == n, 30,
                           what=f"run {run_id} of {tenant.name}")
        yield Twins(server, a, b)
    finally:
        server.stop()


def _step_count(server: LiveServer, key: str, run_id: str) -> int:
    resp = server.get(f"/v1/runs/{run_id}", key=key)
    return int(resp.json()["step_count"]) if resp.status_code == 200 else -1


def pairs(twins: Twins) -> list[tuple[Tenant, Tenant]]:
    return [(twins.a, twins.b), (twins.b, twins.a)]


def run_ids(server: LiveServer, key: str, **params: Any) -> set[str]:
    resp = server.get("/v1/runs", key=key, limit=500, **params)
    assert resp.status_code == 200, resp.text
    return {r["run_id"] for r in resp.json()["runs"]}


def test_lists_and_filters_return_only_own_runs(twins: Twins) -> None:
    s = twins.server
    for me, other in pairs(twins):
        mine = set(me.runs)
        assert run_ids(s, me.viewer) == mine
        assert ONLY[other.label] not in run_ids(s, me.viewer)
        for params in ({"service": "twin-svc"}, {"model": "gpt-4o"}, {"tool": "search"}, {"agent": "twin"},
                       {"tag": "deployment.environment=prod"}, {"started_after": str(START - SECOND)}):
            assert run_ids(s, me.viewer, **params) == mine, params
        for params in ({"has_error": True}, {"status": "failed"}):
            assert run_ids(s, me.viewer, **params) == {SHARED[1]}, params
        assert run_ids(s, me.viewer, min_cost_usd=0) <= mine
        counts = {r["run_id"]: r["step_count"] for r in s.get("/v1/runs", key=me.viewer, limit=500).json()["runs"]}
        assert counts == me.runs  # B's copies of the shared traces have one more step: no mix-up


def test_cursors_never_cross_tenants(twins: Twins) -> None:
    s = twins.server
    cursors: dict[str, str] = {}
    for me, _ in pairs(twins):
        seen, cursor = [], None
        while True:
            page = s.get("/v1/runs", key=me.viewer, limit=1, **({"cursor": cursor} if cursor else {})).json()
            seen.extend(r["run_id"] for r in page["runs"])
            cursor = page["next_cursor"]
            if cursor and me.name not in cursors:
                cursors[me.name] = cursor
            if not cursor:
                break
        assert sorted(seen) == sorted(me.runs) and len(seen) == len(set(seen))
    for me, other in pairs(twins):  # the other tenant's cursor is only a position: it yields my runs
        page = s.get("/v1/runs", key=me.viewer, limit=500, cursor=cursors[other.name]).json()
        assert {r["run_id"] for r in page["runs"]} <= set(me.runs)


def test_same_run_id_reads_each_tenants_own_copy(twins: Twins) -> None:
    s = twins.server
    for me, _ in pairs(twins):
        marker, foreign = f"{me.label}-secret", f"{'B' if me.label == 'A' else 'A'}-secret"
        for run_id in SHARED:
            run = s.get(f"/v1/runs/{run_id}", key=me.viewer).json()
            assert run["step_count"] == me.runs[run_id]
            steps = s.get(f"/v1/runs/{run_id}/steps", key=me.viewer, limit=1000).json()["steps"]
            assert len(steps) == me.runs[run_id]
            text = orjson.dumps(steps).decode()
            assert marker in text and foreign not in text
            for step_type in ("model", "tool"):
                typed = s.get(f"/v1/runs/{run_id}/steps", key=me.viewer, type=step_type).json()["steps"]
                assert typed and marker in orjson.dumps(typed).decode()


def test_other_tenants_run_is_404_everywhere(twins: Twins) -> None:
    s = twins.server
    for me, other in pairs(twins):
        theirs = ONLY[other.label]
        assert s.get(f"/v1/runs/{theirs}", key=me.viewer).status_code == 404
        assert s.get(f"/v1/runs/{theirs}", key=me.admin).status_code == 404
        assert s.get(f"/v1/runs/{theirs}/steps", key=me.viewer).status_code == 404
        append = s.post(f"/v1/runs/{theirs}/steps", key=me.ingest, json={"steps": [
            {"type": "tool", "name": "sneak", "ts": "2026-01-01T00:00:00Z"}]})
        assert append.status_code == 404, append.text
        assert s.post(f"/v1/runs/{theirs}:finish", key=me.ingest, json={}).status_code == 404
    assert _step_count(s, twins.a.viewer, ONLY["A"]) == twins.a.runs[ONLY["A"]]  # untouched


def test_tenant_cannot_be_chosen_by_the_client(twins: Twins) -> None:
    s = twins.server
    for params in ({"tenant_id": "default"}, {"tenant": "default"}):
        resp = s.get("/v1/runs", key=twins.b.viewer, **params)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_input"
    body = s.post("/v1/runs", key=twins.b.ingest, json={"tenant_id": "default", "name": "x"})
    assert body.status_code == 400
    key = s.post("/v1/admin/keys", key=twins.b.admin, json={"role": "admin", "tenant_id": "default"})
    assert key.status_code == 400


def test_audit_keys_and_verify_are_per_tenant(twins: Twins) -> None:
    s = twins.server
    logs: dict[str, list[dict[str, Any]]] = {}
    for me, _ in pairs(twins):
        entries, cursor = [], None
        while True:
            page = s.get("/v1/audit", key=me.admin, limit=2, **({"cursor": cursor} if cursor else {})).json()
            entries.extend(page["entries"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        logs[me.name] = entries
        verdict = s.get("/v1/audit/verify", key=me.admin).json()
        assert verdict["ok"], verdict
    a_ids = {e["row_hash"] for e in logs["default"]}
    b_ids = {e["row_hash"] for e in logs["acme"]}
    assert a_ids and b_ids and not a_ids & b_ids
    a_keys = {k["key_id"] for k in s.get("/v1/admin/keys", key=twins.a.admin).json()["keys"]}
    b_keys = {k["key_id"] for k in s.get("/v1/admin/keys", key=twins.b.admin).json()["keys"]}
    assert a_keys and b_keys and not a_keys & b_keys
    assert {e["target"] for e in logs["acme"] if e["action"] == "key.create"} <= b_keys
    assert not {e["target"] for e in logs["default"]} & b_keys
    for key_id in list(a_keys)[:2]:
        assert s.get(f"/v1/admin/keys/{key_id}", key=twins.b.admin).status_code == 404
        assert s.post(f"/v1/admin/keys/{key_id}:revoke", key=twins.b.admin).status_code == 404
        assert s.post(f"/v1/admin/keys/{key_id}:rotate", key=twins.b.admin).status_code == 404
    a_cursor = s.get("/v1/audit", key=twins.a.admin, limit=1).json()["next_cursor"]
    crossed = s.get("/v1/audit", key=twins.b.admin, cursor=a_cursor).json()["entries"]
    assert not {e["row_hash"] for e in crossed} & a_ids


def test_tenant_summary_counts_only_own(twins: Twins) -> None:
    s = twins.server
    for me, _ in pairs(twins):
        summary = s.get("/v1/admin/tenant", key=me.admin).json()
        assert summary["tenant_id"] == me.name and summary["runs"] == len(me.runs)


def test_governance_lists_are_per_tenant(twins: Twins) -> None:
    """Policies, approvals and the kill switch (when the app has them) show nothing of the other tenant."""
    s = twins.server
    for path in ("/v1/policies", "/v1/approvals", "/v1/kill-switch"):
        a, b = s.get(path, key=twins.a.viewer), s.get(path, key=twins.b.viewer)
        if a.status_code == 404 and b.status_code == 404:
            continue  # not in this build
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        for run_id in ONLY.values():
            assert run_id not in b.text or run_id == ONLY["B"]
            assert run_id not in a.text or run_id == ONLY["A"]
