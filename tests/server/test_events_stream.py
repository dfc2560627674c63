"""GET /v1/streams/events: SSE of runs, steps, approvals, findings and feedback; resume; tenants; heartbeats.

The resume test reads part of the stream, disconnects, lets more happen, reconnects with
Last-Event-ID and checks that both sessions together are exactly the full history: nothing missed,
nothing twice, ids increasing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until
from tests.server.test_analytics_api import OtlpRun, Tool, send_otlp_json
from tests.server.test_governance_api import (
    APPROVER_KEY,
    OTHER_TENANT_APPROVER_KEY,
    OTHER_TENANT_INGEST_KEY,
    VIEWER_KEY,
    decide,
    start_governed_server,
)

pytestmark = pytest.mark.e2e
SECOND = 10**9


@dataclass(frozen=True)
class Sse:
    """One server-sent event (``id`` None for comments and id-less events)."""

    id: int | None
    event: str | None
    data: dict[str, Any] | None
    comment: str | None = None


def sse(server: LiveServer, *, key: str = VIEWER_KEY, headers: dict[str, str] | None = None,
        read_s: float = 10.0, **params: Any) -> Iterator[Sse]:
    """Messages of the stream until the caller stops iterating (which closes the connection)."""
    with httpx.stream("GET", f"{server.api_url}/v1/streams/events", params=params,
                      headers={"authorization": f"Bearer {key}", **(headers or {})},
                      timeout=httpx.Timeout(10.0, read=read_s)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name or "comment"] = value.removeprefix(" ")
                continue
            if fields:
                yield Sse(int(fields["id"]) if "id" in fields else None, fields.get("event"),
                          orjson.loads(fields["data"]) if fields.get("data") else None, fields.get("comment"))
            fields = {}


def take_events(stream: Iterator[Sse], count: int) -> list[Sse]:
    """The next ``count`` events (comments skipped)."""
    found: list[Sse] = []
    for message in stream:
        if message.event is not None:
            found.append(message)
            if len(found) == count:
                break
    return found


def until_idle(stream: Iterator[Sse]) -> list[Sse]:
    """Events until the first heartbeat (the stream caught up and went quiet)."""
    found = []
    for message in stream:
        if message.comment == "heartbeat":
            break
        if message.event is not None:
            found.append(message)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_governed_server(tmp_path_factory.mktemp("events") / "data",
                                 env={"TRACEWARD_EVENTS_HEARTBEAT_S": "1"})
    try:
        yield live
    finally:
        live.stop()


def history(server: LiveServer, key: str = VIEWER_KEY) -> list[Sse]:
    stream = sse(server, key=key, from_seq=0)
    try:
        return until_idle(stream)
    finally:
        stream.close()


def test_resume_with_last_event_id_misses_nothing_and_repeats_nothing(server: LiveServer) -> None:
    now = time.time_ns()
    first_runs = [OtlpRun(start_ns=now - (20 - n) * SECOND, agent="streamer", output="ok") for n in range(3)]
    send_otlp_json(server, first_runs)
    stream = sse(server, from_seq=0)
    seen = take_events(stream, 5)
    stream.close()  # disconnect mid-history
    more = [OtlpRun(start_ns=now - (10 - n) * SECOND, agent="streamer", tools=(Tool("x", error=True),))
            for n in range(2)]
    send_otlp_json(server, more)
    resumed_stream = sse(server, headers={"Last-Event-ID": str(seen[-1].id)})
    resumed = until_idle(resumed_stream)
    resumed_stream.close()
    everything = history(server)
    ids = [e.id for e in seen + resumed]
    assert ids == [e.id for e in everything]
    assert ids == sorted(set(ids))  # increasing, no repeats
    runs = {e.data["run_id"] for e in everything if e.event == "run.finished" and e.data}
    assert {r.trace for r in first_runs + more} <= runs


def test_each_run_logs_started_steps_finished_and_findings(server: LiveServer) -> None:
    run = OtlpRun(start_ns=time.time_ns() - 5 * SECOND, agent="streamer", model="gpt-4o")  # no output: abrupt_end
    stream = sse(server)  # only what happens from now on
    next(stream)  # ": connected": the stream is open before the run is sent
    send_otlp_json(server, [run])
    events = []
    for message in stream:
        if message.event is not None and message.data and message.data.get("run_id") == run.trace:
            events.append(message)
        if any(e.event == "finding.raised" for e in events):
            break
    stream.close()
    kinds = [e.event for e in events]
    assert kinds[:3] == ["run.started", "step.appended", "run.finished"]
    step = events[1].data
    assert step is not None and (step["first_seq"], step["last_seq"], step["count"]) == (0, 1, 2)
    finished = events[2].data
    assert finished is not None and finished["status"] == "succeeded" and finished["agent"] == "streamer"
    assert "finding.raised" in kinds


def test_approvals_created_and_decided_are_streamed(server: LiveServer) -> None:
    stream = sse(server)
    next(stream)
    decided = decide(server, "db.migrate", {"target": "prod"})
    assert decided.status_code == 200, decided.text
    approval_id = decided.json()["approval_id"]
    approved = server.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY, json={"reason": "ok"})
    assert approved.status_code == 200, approved.text
    found = []
    for message in stream:
        if message.data and message.data.get("approval_id") == approval_id:
            found.append(message)
            if len(found) == 2:
                break
    stream.close()
    assert [m.event for m in found] == ["approval.created", "approval.decided"]
    assert found[0].data is not None and found[0].data["status"] == "pending"
    assert found[1].data is not None and found[1].data["status"] == "approved"
    assert found[1].data["tool"] == "db.migrate" and "token" not in found[1].data


def test_streams_are_per_tenant(server: LiveServer) -> None:
    ours = OtlpRun(start_ns=time.time_ns() - 3 * SECOND, agent="ours")
    theirs = OtlpRun(start_ns=time.time_ns() - 3 * SECOND, agent="theirs")
    send_otlp_json(server, [ours])
    send_otlp_json(server, [theirs], key=OTHER_TENANT_INGEST_KEY, wait=False)
    wait_until(lambda: any(e.data and e.data.get("run_id") == theirs.trace
                           for e in history(server, key=OTHER_TENANT_APPROVER_KEY)), 30, what="acme's run events")
    acme = {e.data["run_id"] for e in history(server, key=OTHER_TENANT_APPROVER_KEY) if e.data and "run_id" in e.data}
    default = {e.data["run_id"] for e in history(server) if e.data and "run_id" in e.data}
    assert theirs.trace in acme and ours.trace not in acme
    assert ours.trace in default and theirs.trace not in default


def test_event_ids_are_numbered_per_tenant(server: LiveServer) -> None:
    """A tenant's ids run 1, 2, 3… whatever other tenants do: no gaps to read their activity from."""
    send_otlp_json(server, [OtlpRun(start_ns=time.time_ns() - 3 * SECOND, agent=f"busy-{i}") for i in range(3)])
    send_otlp_json(server, [OtlpRun(start_ns=time.time_ns() - 3 * SECOND, agent="quiet")],
                   key=OTHER_TENANT_INGEST_KEY, wait=False)
    send_otlp_json(server, [OtlpRun(start_ns=time.time_ns() - 3 * SECOND, agent="busy-again")])
    wait_until(lambda: any(e.data and e.data.get("agent") == "quiet"
                           for e in history(server, key=OTHER_TENANT_APPROVER_KEY)), 30, what="acme's run events")
    for key in (OTHER_TENANT_APPROVER_KEY, VIEWER_KEY):
        ids = [e.id for e in history(server, key=key) if e.id is not None]
        assert ids == list(range(1, len(ids) + 1)), key


def test_idle_stream_sends_heartbeats(server: LiveServer) -> None:
    stream = sse(server, read_s=5)
    started = time.monotonic()
    comments = []
    for message in stream:
        if message.comment:
            comments.append(message.comment)
        if "heartbeat" in comments:
            break
    stream.close()
    assert comments[0] == "connected" and "heartbeat" in comments
    assert time.monotonic() - started < 4


def test_bad_requests(server: LiveServer) -> None:
    headers = {"authorization": f"Bearer {VIEWER_KEY}", "last-event-id": "abc"}
    bad = httpx.get(f"{server.api_url}/v1/streams/events", headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
    assert server.get("/v1/streams/events", key=INGEST_KEY).status_code == 403
    assert server.get("/v1/streams/events", key=ADMIN_KEY, from_seq=-1).status_code == 400


def test_pruned_history_is_announced_and_shutdown_ends_streams(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", extra_env={"TRACEWARD_EVENTS_RETENTION_S": "1", "TRACEWARD_EVENTS_HEARTBEAT_S": "0.5",
                                                    "TRACEWARD_FINDINGS_IDLE_S": "1"}).start()
    try:
        send_otlp_json(live, [OtlpRun(start_ns=time.time_ns() - SECOND, agent="old")])
        wait_until(lambda: not [e for e in history(live, key=ADMIN_KEY) if e.id is not None], 30, what="events pruned")
        stream = sse(live, key=ADMIN_KEY, headers={"Last-Event-ID": "1"})
        first = next(stream)
        assert first.event == "stream.gap" and first.id is None
        assert first.data is not None and first.data["pruned_through"] >= 1
        started = time.monotonic()
        live.stop()  # with the stream still open
        assert time.monotonic() - started < 10
        assert live.proc is not None and live.proc.returncode == 0
        stream.close()
    finally:
        live.stop()
