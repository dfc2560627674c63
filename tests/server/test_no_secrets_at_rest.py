"""Planted secrets sent through every ingest path never reach disk, logs or API responses.

gRPC, OTLP/HTTP protobuf, OTLP/HTTP JSON and REST ingest each carry the same planted values in
span names, attributes, JSON-in-string attributes, nested kvlists, events, status messages and
resource attributes; OTLP logs carry them in GenAI content events (bodies, structured messages,
record and resource attributes). Afterwards: every file under the data dir (Parquet decompressed column by
column, WAL and SQLite as raw bytes), the server log and every API response are searched.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import polars as pl
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.live import INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

PLANTED = {
    "email": "jane.doe.planted@example.com",
    "card": "4111 1111 1111 1111",
    "openai": "sk-proj-PlantedKey0123456789abcdefghijklmnop",
    "aws": "AKIAPLANTED0EXAMPLE9",
    "github": "ghp_Planted0123456789abcdefghijklmnopqrs",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlcGxhbnRlZA",
    "ssn": "078-05-1120",
    "iban": "GB82WEST12345698765432",
    "slack": "xoxb-123456789012-planted-secret",
    "google": "AIzaSyPlanted0123456789abcdefghijklmnop",  # AIza + 35
    "password": "hunter2-planted-pw",
}
AUTH_HEADER = f"Bearer {PLANTED['openai']}"


def _attrs(text: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_email",
        "gen_ai.tool.call.arguments": json.dumps({"to": PLANTED["email"], "card": PLANTED["card"],
                                                  "note": f"ssn {PLANTED['ssn']} iban {PLANTED['iban']}"}),
        "input.value": json.dumps({"messages": [{"role": "user", "content": text}]}),
        "http.request.header.authorization": AUTH_HEADER,
        "db.password": PLANTED["password"],
        "app.config": {"slack": PLANTED["slack"], "nested": {"google": PLANTED["google"]}},
    }


def _text() -> str:
    return " ".join(f"{k}={v}" for k, v in PLANTED.items() if k != "password")


def _any(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _any(v)} for k, v in value.items()]}}
    return {"stringValue": str(value)}


def _pb_value(target: Any, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            kv = target.kvlist_value.values.add()
            kv.key = k
            _pb_value(kv.value, v)
    else:
        target.string_value = str(value)


def _pb_request(trace_id: str) -> bytes:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in (("service.name", "planted-svc"), ("user.email", PLANTED["email"])):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(trace_id), secrets.token_bytes(8)
    span.name = f"send mail to {PLANTED['email']}"
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1000
    span.status.code, span.status.message = trace_pb2.Status.STATUS_CODE_ERROR, f"rejected {PLANTED['aws']}"
    for key, value in _attrs(_text()).items():
        kv = span.attributes.add()
        kv.key = key
        _pb_value(kv.value, value)
    event = span.events.add()
    event.name, event.time_unix_nano = "exception", span.start_time_unix_nano
    kv = event.attributes.add()
    kv.key, kv.value.string_value = "exception.message", f"token {PLANTED['jwt']} leaked"
    return req.SerializeToString()


def _json_request(trace_id: str) -> bytes:
    now = time.time_ns()
    span = {"traceId": trace_id, "spanId": secrets.token_hex(8), "name": f"call {PLANTED['github']}",
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
            "status": {"code": 2, "message": f"failed for {PLANTED['email']}"},
            "attributes": [{"key": k, "value": _any(v)} for k, v in _attrs(_text()).items()],
            "events": [{"name": "exception", "timeUnixNano": str(now),
                        "attributes": [{"key": "exception.message", "value": {"stringValue": PLANTED["jwt"]}}]}]}
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "user.email", "value": {"stringValue": PLANTED["email"]}}]},
        "scopeSpans": [{"spans": [span]}]}]}).encode()


def _logs_request(trace_id: str) -> bytes:
    now = str(time.time_ns())
    messages = [{"role": "user", "parts": [{"type": "text", "content": _text()}]}]
    user = {"traceId": trace_id, "spanId": secrets.token_hex(8), "eventName": "gen_ai.user.message",
            "timeUnixNano": now, "body": _any({"content": _text(), "role": "user"}),
            "attributes": [{"key": k, "value": _any(v)} for k, v in _attrs(_text()).items()]}
    details = {**user, "eventName": "gen_ai.client.inference.operation.details", "body": {},
               "attributes": [{"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(messages)}},
                              {"key": "gen_ai.system_instructions", "value": _any({"note": PLANTED["email"]})}]}
    return json.dumps({"resourceLogs": [{"resource": {"attributes": [
        {"key": "user.email", "value": {"stringValue": PLANTED["email"]}}]},
        "scopeLogs": [{"logRecords": [user, details]}]}]}).encode()


def _send_everywhere(server: LiveServer) -> list[str]:
    runs = [secrets.token_hex(16) for _ in range(4)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=None, response_deserializer=None)
        export(_pb_request(runs[0]), metadata=(("authorization", f"Bearer {INGEST_KEY}"),), timeout=30)
    for body, media, run in ((_pb_request(runs[1]), "application/x-protobuf", None),
                             (_json_request(runs[2]), "application/json", None)):
        assert run is None
        resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, timeout=30,
                          headers={"content-type": media, "authorization": f"Bearer {INGEST_KEY}"})
        assert resp.status_code == 200, resp.text
    resp = httpx.post(f"{server.otlp_http_url}/v1/logs", content=_logs_request(runs[3]), timeout=30,
                      headers={"content-type": "application/json", "authorization": f"Bearer {INGEST_KEY}"})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    rest = server.post("/v1/runs", json={"name": "rest run"}).json()["run_id"]
    steps = [{"type": "tool", "name": f"mail {PLANTED['email']}", "ts": "2026-11-01T10:00:00Z",
              "payload": {"input": _attrs(_text()), "headers": {"authorization": AUTH_HEADER}}}]
    assert server.post(f"/v1/runs/{rest}/steps", json={"steps": steps}).status_code == 200
    for run in runs:
        server.wait_run(run, lambda r: r["step_count"] == 1)
    server.wait_run(rest, lambda r: r["step_count"] == 1)
    return [*runs, rest]


def _api_responses(server: LiveServer, runs: list[str]) -> list[str]:
    bodies = [server.get("/v1/runs", limit=50).text]
    for run in runs:
        bodies += [server.get(f"/v1/runs/{run}").text, server.get(f"/v1/runs/{run}/steps").text]
    bodies.append(server.get("/v1/diff", runA=runs[0], runB=runs[1]).text)
    return bodies


def _disk_texts(data_dir: Path) -> list[tuple[str, bytes]]:
    found = []
    for path in data_dir.rglob("*"):
        if not path.is_file():
            continue
        found.append((str(path), path.read_bytes()))
        if path.suffix == ".parquet":  # compressed: search every column's decoded values too
            frame = pl.read_parquet(path)
            found.append((f"{path} (decoded)", frame.write_csv().encode()))
    return found


def test_planted_secrets_never_reach_disk_logs_or_responses(live_server: LiveServer) -> None:
    runs = _send_everywhere(live_server)
    responses = _api_responses(live_server, runs)
    steps = [s for run in runs for s in live_server.all_steps(run)]
    assert all(s["redaction_meta"] and s["redaction_meta"]["paths"] for s in steps)
    assert any("[REDACTED:" in r for r in responses)
    live_server.stop()  # flushes, closes files; the log is complete
    haystacks = [("log", live_server.log().encode()), *[("response", r.encode()) for r in responses],
                 *_disk_texts(live_server.data_dir)]
    for name, secret in PLANTED.items():
        needle = secret.encode()
        leaks = [where for where, data in haystacks if needle in data]
        assert not leaks, f"planted {name} found in {leaks}"


def test_same_secret_fingerprints_equal_across_runs_and_differ_for_other_secrets(shared_server: LiveServer) -> None:
    def run_with(value: str) -> str:
        run = shared_server.post("/v1/runs", json={"name": "fp"}).json()["run_id"]
        step = {"type": "tool", "name": "call", "ts": "2026-11-01T10:00:00Z", "payload": {"input": {"key": value}}}
        shared_server.post(f"/v1/runs/{run}/steps", json={"steps": [step]})
        shared_server.wait_run(run, lambda r: r["step_count"] == 1)
        return str(shared_server.all_steps(run)[0]["payload"]["input"]["key"])

    first, again, other = run_with(PLANTED["openai"]), run_with(PLANTED["openai"]), run_with(PLANTED["openai"] + "x")
    assert first.startswith("[REDACTED:") and first == again and first != other
