"""The REST ingest contract (specs/000 §6–7): POST /v1/runs, POST /v1/runs/{id}/steps, POST /v1/runs/{id}:finish."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import httpx
import orjson
import pytest

from otlp_receiver.model import make_step_id
from tests.live import INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

TENANT = "default"  # the bootstrap keys' tenant
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS = "2026-03-01T12:00:00Z"
TS_NS = 1_772_366_400_000_000_000


def new_id() -> str:
    return os.urandom(16).hex()


def span_id() -> str:
    return os.urandom(8).hex()


def step(type_: str = "tool", name: str = "search", ts: str = TS, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "name": name, "ts": ts, **fields}


def create(server: LiveServer, **body: Any) -> dict[str, Any]:
    resp = server.post("/v1/runs", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def append(server: LiveServer, run_id: str, steps: list[dict[str, Any]]) -> httpx.Response:
    return server.post(f"/v1/runs/{run_id}/steps", json={"steps": steps})


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return dict(resp.json()["error"])


def wait_steps(server: LiveServer, run_id: str, n: int) -> list[dict[str, Any]]:
    server.wait_run(run_id, lambda r: r["step_count"] == n)
    return server.all_steps(run_id, limit=1000)


# --- POST /v1/runs ------------------------------------------------------------------------------------------
def test_create_run_without_run_id(shared_server: LiveServer) -> None:
    run = create(shared_server, name="nightly eval", tags={"env": "ci", "release": "1.2"})
    assert re.fullmatch(r"[0-9a-f]{32}", run["run_id"])
    assert run["trace_id"] == run["run_id"]
    assert (run["status"], run["name"], run["tags"]) == ("running", "nightly eval", {"env": "ci", "release": "1.2"})
    assert run["finished_at"] is None and run["duration_ms"] is None
    assert run["started_at"].endswith("Z")
    fetched = shared_server.get(f"/v1/runs/{run['run_id']}").json()
    assert fetched.pop("findings") == [] and fetched == run  # run detail also inlines its findings
    assert create(shared_server)["run_id"] != run["run_id"]


@pytest.mark.parametrize("form", ["hex", "uuid", "upper"])
def test_create_run_with_run_id(shared_server: LiveServer, form: str) -> None:
    run_id = new_id()
    given = {"hex": run_id, "upper": run_id.upper(), "uuid": str(uuid.UUID(run_id))}[form]
    run = create(shared_server, run_id=given, started_at="2026-03-01T12:00:00.5+01:00", agent="planner",
                 parent_run_id=None)
    assert run["run_id"] == run_id  # normalised to 32 lower-case hex
    assert run["started_at"] == "2026-03-01T11:00:00.500000000Z"
    assert run["agent"] == "planner"
    fetched = shared_server.get(f"/v1/runs/{run_id}").json()
    assert fetched.pop("findings") == [] and fetched == run


def test_a_run_created_with_a_uuid_is_readable_by_that_uuid(shared_server: LiveServer) -> None:
    run_id = str(uuid.uuid4())
    create(shared_server, run_id=run_id)
    assert append(shared_server, run_id, [step()]).status_code == 200  # the write side accepts the uuid form
    assert shared_server.post(f"/v1/runs/{run_id}:finish", json={}).status_code == 200
    assert shared_server.get(f"/v1/runs/{run_id}").status_code == 200
    assert shared_server.get(f"/v1/runs/{run_id}/steps").status_code == 200


def test_tenant_id_in_the_body_is_rejected(shared_server: LiveServer) -> None:
    run_id = new_id()
    error = error_of(shared_server.post("/v1/runs", json={"run_id": run_id, "tenant_id": "someone-else"}), 400)
    assert "tenant_id" in orjson.dumps(error).decode()
    assert shared_server.get(f"/v1/runs/{run_id}").status_code == 404
    for field in ("project_id", "status", "unknown"):
        error_of(shared_server.post("/v1/runs", json={field: "x"}), 400)


def test_duplicate_run_is_409(shared_server: LiveServer) -> None:
    run = create(shared_server, name="first")
    error = error_of(shared_server.post("/v1/runs", json={"run_id": run["run_id"], "name": "second"}), 409)
    assert error["code"] == "conflict"
    assert shared_server.get(f"/v1/runs/{run['run_id']}").json()["name"] == "first"


# --- POST /v1/runs/{id}/steps -------------------------------------------------------------------------------
def test_steps_get_step_id_and_seq_per_index_in_order_across_batches(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    first = [step(span_id=span_id()), step("model", "chat", model_name="gpt-4o", tokens_in=10, tokens_out=3),
             step("prompt", "template")]
    resp = append(shared_server, run_id, first)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["run_id"] == run_id
    assert [a["index"] for a in body["assigned"]] == [0, 1, 2]
    assert [a["seq"] for a in body["assigned"]] == [0, 1, 2]
    assert body["assigned"][0]["step_id"] == make_step_id(TENANT, run_id, first[0]["span_id"])
    second = append(shared_server, run_id, [step("error", "boom"), step("artifact", "report.pdf")]).json()
    assert [(a["index"], a["seq"]) for a in second["assigned"]] == [(0, 3), (1, 4)]
    step_ids = [a["step_id"] for a in body["assigned"] + second["assigned"]]
    assert len(set(step_ids)) == 5 and all(UUID_RE.match(s) for s in step_ids)

    steps = wait_steps(shared_server, run_id, 5)
    assert [s["seq"] for s in steps] == [0, 1, 2, 3, 4]
    assert [s["step_id"] for s in steps] == step_ids
    assert [s["type"] for s in steps] == ["tool", "model", "prompt", "error", "artifact"]


def test_steps_come_back_in_seq_order_with_their_payload(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    parent = span_id()
    sent = [
        step("tool", "lookup", ts="2026-03-01T12:00:02Z", end_ts="2026-03-01T12:00:03.25Z", span_id=parent,
             tool_name="lookup", tool_call_id="call-1", status="ok",
             payload={"input": {"q": "weather"}, "output": [1, 2.5, None, True], "nested": {"a": {"b": "c"}}}),
        step("model", "chat", ts="2026-03-01T12:00:01Z", parent_span_id=parent, model_name="gpt-4o", tokens_in=100,
             tokens_out=20, cost_usd=0.25, status="error", payload={"messages": [{"role": "user", "content": "hi"}]}),
        step("policy", "guard", payload={}),
    ]
    assert append(shared_server, run_id, sent).status_code == 200
    steps = wait_steps(shared_server, run_id, 3)
    assert [s["seq"] for s in steps] == [0, 1, 2]  # request order, not timestamp order
    tool, model, policy = steps
    assert tool["payload"] == sent[0]["payload"]
    assert (tool["ts"], tool["end_ts"]) == ("2026-03-01T12:00:02.000000000Z", "2026-03-01T12:00:03.250000000Z")
    assert (tool["tool_name"], tool["tool_call_id"], tool["status"], tool["span_id"]) == (
        "lookup", "call-1", "ok", parent)
    assert model["payload"] == sent[1]["payload"]
    assert (model["model_name"], model["parent_span_id"], model["status"], model["cost_usd"]) == (
        "gpt-4o", parent, "error", 0.25)
    assert model["tokens"]["in"] == 100 and model["tokens"]["out"] == 20
    assert policy["payload"] == {}
    assert all(s["schema_version"] == 1 and s["run_id"] == run_id for s in steps)
    assert all(s["payload_hash"].startswith("sha256:") for s in steps)
    run = shared_server.get(f"/v1/runs/{run_id}").json()
    assert run["model_names"] == ["gpt-4o"] and run["tool_count"] == 1


@pytest.mark.parametrize(("bad", "field"), [
    (step("teleport"), "steps[1].type"),
    (step("span"), "steps[1].type"),  # structural spans are OTLP-only
    (step(schema_version=2), "steps[1].schema_version"),
    (step(status="exploded"), "steps[1].status"),
    (step(span_id="XYZ"), "steps[1].span_id"),
    (step(ts="yesterday"), "steps[1].ts"),
    (step(ts="2026-03-01T12:00:00"), "steps[1].ts"),  # no time zone
])
def test_invalid_step_is_400_with_a_field_path(shared_server: LiveServer, bad: dict[str, Any], field: str) -> None:
    run_id = create(shared_server)["run_id"]
    error = error_of(append(shared_server, run_id, [step(), bad]), 400)
    assert field in error["details"], error
    assert field in error["message"]
    # Nothing of the refused batch was stored: the next batch starts at seq 0.
    assert [a["seq"] for a in append(shared_server, run_id, [step()]).json()["assigned"]] == [0]


@pytest.mark.parametrize("body", [
    {"steps": [{"type": "tool", "name": "x", "ts": TS, "surprise": 1}]},
    {"steps": [{"type": "tool", "name": "x"}]},
    {"steps": "none"},
    {},
])
def test_malformed_step_bodies_are_400(shared_server: LiveServer, body: dict[str, Any]) -> None:
    run_id = create(shared_server)["run_id"]
    error_of(shared_server.post(f"/v1/runs/{run_id}/steps", json=body), 400)


def test_batch_size_limits(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    error = error_of(append(shared_server, run_id, [step() for _ in range(1001)]), 400)
    assert "steps" in error["details"]
    error_of(append(shared_server, run_id, []), 400)
    resp = append(shared_server, run_id, [step(name=f"s{i}") for i in range(1000)])
    assert resp.status_code == 200
    assert [a["seq"] for a in resp.json()["assigned"]] == list(range(1000))


def test_steps_for_an_unknown_run_are_404(shared_server: LiveServer) -> None:
    assert error_of(append(shared_server, new_id(), [step()]), 404)["code"] == "not_found"
    error_of(append(shared_server, "not-a-run-id", [step()]), 400)


def test_duplicate_span_id_is_409(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    sid = span_id()
    assert append(shared_server, run_id, [step(span_id=sid)]).status_code == 200
    assert error_of(append(shared_server, run_id, [step(span_id=sid)]), 409)["code"] == "conflict"
    other = span_id()
    error_of(append(shared_server, run_id, [step(span_id=other), step(span_id=other)]), 409)  # within one batch
    assert len(wait_steps(shared_server, run_id, 1)) == 1


def test_a_refused_batch_leaves_no_trace(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    dup, fresh = span_id(), span_id()
    assert append(shared_server, run_id, [step(span_id=dup)]).status_code == 200
    error_of(append(shared_server, run_id, [step(span_id=fresh), step(span_id=dup)]), 409)
    resp = append(shared_server, run_id, [step(span_id=fresh)])  # the client drops the duplicate and retries
    assert resp.status_code == 200, resp.text
    assert resp.json()["assigned"][0]["seq"] == 1
    steps = wait_steps(shared_server, run_id, 2)
    assert [s["seq"] for s in steps] == [0, 1]


def test_otlp_spans_join_a_rest_run(shared_server: LiveServer) -> None:
    """Same model, same storage: an OTLP span whose trace id is a REST run's id extends that run."""
    run_id = create(shared_server)["run_id"]
    assert append(shared_server, run_id, [step()]).status_code == 200
    sid = span_id()
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": run_id, "spanId": sid, "name": "execute_tool fetch", "startTimeUnixNano": str(TS_NS),
        "endTimeUnixNano": str(TS_NS + 1000),
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                       {"key": "gen_ai.tool.name", "value": {"stringValue": "fetch"}}]}]}]}]}
    resp = httpx.post(f"{shared_server.otlp_http_url}/v1/traces", content=orjson.dumps(doc), timeout=30,
                      headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    steps = wait_steps(shared_server, run_id, 2)
    assert [(s["seq"], s["type"]) for s in steps] == [(0, "tool"), (1, "tool")]
    assert steps[1]["span_id"] == sid and steps[1]["tool_name"] == "fetch"


# --- POST /v1/runs/{id}:finish ------------------------------------------------------------------------------
def test_finish_is_idempotent(shared_server: LiveServer) -> None:
    run_id = create(shared_server, started_at="2026-03-01T12:00:00Z")["run_id"]
    assert append(shared_server, run_id, [step(), step()]).status_code == 200
    first = shared_server.post(f"/v1/runs/{run_id}:finish",
                               json={"status": "failed", "finished_at": "2026-03-01T12:00:05Z"})
    assert first.status_code == 200, first.text
    run = first.json()
    assert (run["status"], run["finished_at"], run["duration_ms"]) == ("failed", "2026-03-01T12:00:05.000000000Z",
                                                                       5000)
    again = shared_server.post(f"/v1/runs/{run_id}:finish", json={"status": "failed",
                                                                  "finished_at": "2026-03-01T12:00:05Z"})
    assert again.status_code == 200
    assert again.json() == run
    other = shared_server.post(f"/v1/runs/{run_id}:finish", json={"status": "succeeded"})
    assert other.status_code == 200
    assert (other.json()["status"], other.json()["finished_at"]) == ("failed", run["finished_at"])
    bare = shared_server.post(f"/v1/runs/{run_id}:finish")
    assert bare.status_code == 200 and bare.json()["status"] == "failed"
    fetched = shared_server.wait_run(run_id, lambda r: r["step_count"] == 2)
    assert (fetched["status"], fetched["finished_at"]) == ("failed", run["finished_at"])


@pytest.mark.parametrize("status", ["succeeded", "canceled"])
def test_finish_without_time_uses_now(shared_server: LiveServer, status: str) -> None:
    run = create(shared_server)
    done = shared_server.post(f"/v1/runs/{run['run_id']}:finish", json={"status": status}).json()
    assert done["status"] == status
    assert done["finished_at_ns"] >= run["started_at_ns"]


def test_finish_errors(shared_server: LiveServer) -> None:
    run_id = create(shared_server)["run_id"]
    assert "status" in error_of(shared_server.post(f"/v1/runs/{run_id}:finish", json={"status": "running"}),
                                400)["details"]
    error_of(shared_server.post(f"/v1/runs/{run_id}:finish", json={"finished_at": "soon"}), 400)
    error_of(shared_server.post(f"/v1/runs/{run_id}:explode", json={}), 404)
    error_of(shared_server.post(f"/v1/runs/{new_id()}:finish", json={}), 404)
    assert shared_server.get(f"/v1/runs/{run_id}").json()["status"] == "running"
