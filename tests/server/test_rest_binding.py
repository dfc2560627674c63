"""The binding check for tool steps sent over the REST ingest contract (not only OTLP spans).

A client without OTel asks ``POST /v1/decisions`` with its run id as the trace id, then appends the tool
step with ``decision_token`` and the executed arguments in ``payload.input``: the stored step must say
bound, and every way of getting it wrong must be the matching violation (a policy step and an audit row).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live import INGEST_KEY, LiveServer
from tests.server.test_governance_api import audit_actions, start_governed_server, wait_steps

pytestmark = pytest.mark.e2e

SMALL = {"amount": 40, "to": "bob"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_governed_server(tmp_path_factory.mktemp("rest-binding") / "data")
    try:
        yield srv
    finally:
        srv.stop()


def _run(server: LiveServer) -> str:
    created = server.post("/v1/runs", key=INGEST_KEY, json={"run_id": uuid.uuid4().hex, "name": "rest agent"})
    assert created.status_code == 201, created.text
    return str(created.json()["run_id"])


def _token(server: LiveServer, run_id: str, span_id: str, tool: str = "payments.send",
           args: dict[str, Any] = SMALL) -> str:
    decided = server.post("/v1/decisions", key=INGEST_KEY,
                          json={"tool_name": tool, "args": args, "trace_id": run_id, "span_id": span_id})
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"] == "allow", decided.json()
    return str(decided.json()["token"])


def _append(server: LiveServer, run_id: str, **step: Any) -> None:
    body = {"type": "tool", "name": f"execute_tool {step.get('tool_name', '')}", "ts": str(time.time_ns()), **step}
    appended = server.post(f"/v1/runs/{run_id}/steps", key=INGEST_KEY, json={"steps": [body]})
    assert appended.status_code in (200, 201), appended.text


def _tool_step(server: LiveServer, run_id: str, span_id: str) -> dict[str, Any]:
    steps = wait_steps(server, run_id, lambda s: any(x["span_id"] == span_id and x["type"] == "tool" for x in s))
    return next(x for x in steps if x["span_id"] == span_id and x["type"] == "tool")


def test_a_rest_tool_step_with_its_token_and_the_approved_args_is_bound(server: LiveServer) -> None:
    run_id, span_id = _run(server), secrets.token_hex(8)
    token = _token(server, run_id, span_id)
    _append(server, run_id, span_id=span_id, tool_name="payments.send", decision_token=token,
            payload={"input": SMALL})
    step = _tool_step(server, run_id, span_id)
    assert step["binding"] == "bound" and step["decision_token_id"]


@pytest.mark.parametrize(("case", "expected"), [
    ("no token", "missing"),
    ("tampered args", "args_mismatch"),
    ("forged token", "invalid"),
    ("other run's token", "invalid"),
])
def test_rest_tool_steps_that_do_not_match_their_decision_are_violations(server: LiveServer, case: str,
                                                                          expected: str) -> None:
    run_id, span_id = _run(server), secrets.token_hex(8)
    token = _token(server, run_id, span_id)
    step: dict[str, Any] = {"span_id": span_id, "tool_name": "payments.send", "decision_token": token,
                            "payload": {"input": SMALL}}
    if case == "no token":
        del step["decision_token"]
    elif case == "tampered args":
        step["payload"] = {"input": {"amount": 40_000, "to": "mallory"}}
    elif case == "forged token":
        header, claims, signature = token.split(".")
        step["decision_token"] = f"{header}.{claims}.{signature[::-1]}"
    else:
        step["decision_token"] = _token(server, _run(server), span_id)
    _append(server, run_id, **step)
    assert _tool_step(server, run_id, span_id)["binding"] == expected
    steps = wait_steps(server, run_id, lambda s: any(x["type"] == "policy" and x["name"] == f"binding {expected}"
                                                     for x in s))
    violation = next(x for x in steps if x["name"] == f"binding {expected}")
    assert violation["status"] == "error" and violation["parent_span_id"] == span_id
    assert ("binding.violation", f"{run_id}/{span_id}") in audit_actions(server)


def test_a_token_used_by_a_second_rest_step_is_replayed(server: LiveServer) -> None:
    run_id, first, second = _run(server), secrets.token_hex(8), secrets.token_hex(8)
    token = _token(server, run_id, first)
    _append(server, run_id, span_id=first, tool_name="payments.send", decision_token=token, payload={"input": SMALL})
    _append(server, run_id, span_id=second, tool_name="payments.send", decision_token=token, payload={"input": SMALL})
    assert _tool_step(server, run_id, first)["binding"] == "bound"
    assert _tool_step(server, run_id, second)["binding"] == "replayed"


def test_a_tool_run_long_after_its_token_expired_is_expired(server: LiveServer) -> None:
    run_id, span_id = _run(server), secrets.token_hex(8)
    token = _token(server, run_id, span_id)
    _append(server, run_id, span_id=span_id, tool_name="payments.send", decision_token=token,
            payload={"input": SMALL}, ts=str(time.time_ns() + 2 * 86_400 * 10**9))
    assert _tool_step(server, run_id, span_id)["binding"] == "expired"


def test_ungated_tools_and_other_rest_steps_are_not_flagged(server: LiveServer) -> None:
    run_id, tool_span, model_span = _run(server), secrets.token_hex(8), secrets.token_hex(8)
    _append(server, run_id, span_id=tool_span, tool_name="search_docs", payload={"input": {"q": "refund policy"}})
    _append(server, run_id, type="model", name="chat", span_id=model_span, model_name="gpt-4o")
    assert _tool_step(server, run_id, tool_span)["binding"] == "ungated"
    steps = wait_steps(server, run_id, lambda s: any(x["span_id"] == model_span for x in s))
    assert next(x for x in steps if x["span_id"] == model_span)["binding"] is None
    assert not any(x["type"] == "policy" for x in steps)


@pytest.mark.parametrize("recorded", [12345, "not json at all", "[1, 2, 3]", {"amount": "40", "to": "bob"}])
def test_rest_arguments_that_are_not_the_approved_object_are_an_args_mismatch(server: LiveServer,
                                                                                recorded: Any) -> None:
    run_id, span_id = _run(server), secrets.token_hex(8)
    token = _token(server, run_id, span_id)
    _append(server, run_id, span_id=span_id, tool_name="payments.send", decision_token=token,
            payload={"input": recorded})
    assert _tool_step(server, run_id, span_id)["binding"] == "args_mismatch"
    assert server.get("/healthz").status_code == 200
