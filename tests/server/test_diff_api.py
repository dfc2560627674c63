"""GET /v1/diff and `traceward diff` against a live server, with runs sent over REST ingest."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.e2e


def _step(i: int, kind: str, name: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": kind, "name": name, "ts": f"2026-11-01T10:00:{i:02d}Z", "payload": payload, **extra}


def _agent_steps(city: str, *, retry: bool = False, model: str = "gpt-4o") -> list[dict[str, Any]]:
    steps = [
        _step(0, "prompt", "user prompt", {"input": f"Book me a flight to {city}"}),
        _step(1, "model", f"chat {model}", {"output": "calling search"}, model_name=model),
        _step(2, "tool", "execute_tool search_flights", {"input": {"to": city, "id": str(uuid.uuid4())}},
              tool_name="search_flights"),
    ]
    if retry:
        steps.append(_step(3, "tool", "execute_tool search_flights", {"input": {"to": city}},
                           tool_name="search_flights"))
    steps.append(_step(4, "model", f"chat {model}", {"output": "booked"}, model_name=model))
    return steps


def _make_run(server: LiveServer, steps: list[dict[str, Any]]) -> str:
    run = server.post("/v1/runs", json={"name": "travel"}).json()
    assert server.post(f"/v1/runs/{run['run_id']}/steps", json={"steps": steps}).status_code == 200
    server.wait_run(run["run_id"], lambda r: r["step_count"] == len(steps))
    return str(run["run_id"])


def test_diff_reports_changed_argument_and_inserted_retry(shared_server: LiveServer) -> None:
    a = _make_run(shared_server, _agent_steps("Lisbon"))
    b = _make_run(shared_server, _agent_steps("Porto", retry=True))
    resp = shared_server.get("/v1/diff", runA=a, runB=b)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    statuses = [p["status"] for p in body["pairs"]]
    assert statuses.count("added") == 1 and statuses.count("removed") == 0
    changed = [c for p in body["pairs"] if p["status"] == "changed" for c in p["changes"]]
    paths = {c["path"] for c in changed}
    assert "$.payload.input.to" in paths  # the tool argument
    assert not any("id" in p.rsplit(".", 1)[-1] for p in paths)  # ids are ignored by `default`
    assert body["profile"]["name"] == "default"
    assert body["summary"]["first_divergence"] is not None


def test_identical_runs_with_different_ids_and_times_diff_empty(shared_server: LiveServer) -> None:
    a = _make_run(shared_server, _agent_steps("Rome"))
    b = _make_run(shared_server, _agent_steps("Rome"))
    body = shared_server.get("/v1/diff", runA=a, runB=b, normalize_profile="default").json()
    assert {p["status"] for p in body["pairs"]} == {"equal"}
    strict = shared_server.get("/v1/diff", runA=a, runB=b, normalize_profile="strict").json()
    assert any(p["status"] == "changed" for p in strict["pairs"])  # strict sees the uuid


def test_unknown_profile_is_422_listing_known_profiles(shared_server: LiveServer) -> None:
    a = _make_run(shared_server, _agent_steps("Oslo"))
    resp = shared_server.get("/v1/diff", runA=a, runB=a, normalize_profile="nope")
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert "default" in error["message"] and "structure" in error["message"]


def test_missing_run_is_404_in_the_envelope(shared_server: LiveServer) -> None:
    a = _make_run(shared_server, _agent_steps("Nice"))
    resp = shared_server.get("/v1/diff", runA=a, runB=uuid.uuid4().hex)
    assert resp.status_code == 404
    assert set(resp.json()["error"]) == {"code", "message", "details", "retryable"}


def test_cli_diff_matches_the_api(shared_server: LiveServer) -> None:
    a = _make_run(shared_server, _agent_steps("Madrid"))
    b = _make_run(shared_server, _agent_steps("Seville", model="gpt-4o-mini"))
    api = shared_server.get("/v1/diff", runA=a, runB=b).json()
    cli = subprocess.run([sys.executable, "-m", "server", "diff", a, b, "--data-dir", str(shared_server.data_dir),
                          "--format", "json"], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(cli.stdout) == api
    text = subprocess.run([sys.executable, "-m", "server", "diff", a, b, "--data-dir", str(shared_server.data_dir),
                           "--color", "always"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "gpt-4o-mini" in text and "\x1b[" in text
