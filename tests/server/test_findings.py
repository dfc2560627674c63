"""Findings at ingest finalisation: queued with the flush that finished the run, scanned by the job,
stored idempotently, raised once as events; idle runs; GET /v1/findings and findings in run detail.

The first tests drive an in-process Runtime by hand (flush, scan) so every step is deterministic; the
last one goes through a live server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from otlp_receiver.model import Span, StatusCode
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.events import read_events
from otlp_receiver.store.findings import queue_depth, run_findings
from server import findings_job
from server.runtime import Runtime
from server.settings import Settings
from tests.factories import make_child, make_span
from tests.live import INGEST_KEY, LiveServer, wait_until
from tests.server.test_analytics_api import OtlpRun, Tool, send_otlp_json

pytestmark = pytest.mark.e2e
IDENTITY = IngestIdentity("default", "default")
SECOND = 10**9


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data", wal_fsync=False, findings_idle_s=600, flusher_process=False))
    try:
        yield rt
    finally:
        rt.stop()


def failing_run(*, start_ns: int, root_ends: bool = True) -> list[Span]:
    """A root with three identical failing tool calls (tool_error + loop) and, if it ends, no output."""
    root = make_span(name="invoke_agent", start_ns=start_ns, end_ns=start_ns + 5 * SECOND,
                     attributes={"gen_ai.agent.name": "finder"}, status_code=StatusCode.OK)
    tools = [make_child(root, name="execute_tool search", start_ns=start_ns + n * SECOND,
                        end_ns=start_ns + n * SECOND + 1000, status_code=StatusCode.ERROR,
                        status_message="permission denied",
                        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                                    "gen_ai.tool.call.arguments": '{"q": "same"}'})
             for n in range(1, 4)]
    return [root, *tools] if root_ends else tools


def event_types(rt: Runtime, after: int = 0) -> list[str]:
    return [e.type for e in read_events(rt.index, "default", after_id=after)]


def test_finished_run_is_queued_in_its_flush_and_scanned_once(runtime: Runtime) -> None:
    spans = failing_run(start_ns=time.time_ns() - 60 * SECOND)
    runtime.ingest_spans(IDENTITY, spans)
    runtime.flusher.drain()
    assert queue_depth(runtime.index) == 1  # committed with the batch: a crash now cannot lose the scan
    assert event_types(runtime) == ["run.started", "step.appended", "run.finished"]
    assert runtime.findings_job.run_once() == 1
    found = run_findings(runtime.index, "default", spans[0].trace_id)
    kinds = {f.kind for f in found}
    assert {"tool_error", "loop", "permission_denied"} <= kinds
    assert all(f.agent == "finder" and f.step_seqs for f in found)
    raised = [e for e in read_events(runtime.index, "default", after_id=0) if e.type == "finding.raised"]
    assert sorted(e.data["finding_id"] for e in raised) == sorted(f.finding_id for f in found)
    assert queue_depth(runtime.index) == 0


def test_rescanning_refreshes_without_duplicates_or_new_events(runtime: Runtime) -> None:
    spans = failing_run(start_ns=time.time_ns() - 60 * SECOND)
    runtime.ingest_spans(IDENTITY, spans)
    runtime.flusher.drain()
    runtime.findings_job.run_once()
    first = run_findings(runtime.index, "default", spans[0].trace_id)
    last_event = read_events(runtime.index, "default", after_id=0)[-1].id
    with runtime.index.transaction() as db:  # as if the run finished again (or the scan was lost in a crash)
        db.execute("UPDATE finding_scans SET scanned_ns = NULL, queued_ns = queued_ns + 1")
    assert runtime.findings_job.run_once() == 1
    assert run_findings(runtime.index, "default", spans[0].trace_id) == first
    assert event_types(runtime, after=last_event) == []


def test_queued_scan_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", wal_fsync=False, flusher_process=False)
    first = Runtime(settings)
    spans = failing_run(start_ns=time.time_ns() - 60 * SECOND)
    first.ingest_spans(IDENTITY, spans)
    first.flusher.drain()
    first.stop()  # never scanned
    second = Runtime(settings)
    try:
        assert queue_depth(second.index) == 1
        assert second.findings_job.run_once() == 1
        assert run_findings(second.index, "default", spans[0].trace_id)
    finally:
        second.stop()


def test_idle_running_run_gets_abrupt_end_once(runtime: Runtime) -> None:
    start = time.time_ns() - 60 * SECOND
    spans = failing_run(start_ns=start, root_ends=False)
    runtime.ingest_spans(IDENTITY, spans)
    runtime.flusher.drain()
    assert queue_depth(runtime.index) == 0  # still running: nothing to scan yet
    later = time.time_ns() + 700 * SECOND  # past the 600 s idle window
    runtime.findings_job.housekeeping(now_ns=later)
    assert runtime.findings_job.run_once(now_ns=later) == 1
    kinds = {f.kind for f in run_findings(runtime.index, "default", spans[0].trace_id)}
    assert "abrupt_end" in kinds
    runtime.findings_job.housekeeping(now_ns=later + SECOND)
    assert queue_depth(runtime.index) == 0  # unchanged since its scan: not queued again


def test_steps_added_to_a_running_run_log_update_and_seq_range(runtime: Runtime) -> None:
    start = time.time_ns() - 60 * SECOND
    tools = failing_run(start_ns=start, root_ends=False)
    runtime.ingest_spans(IDENTITY, tools[:1])
    runtime.flusher.drain()
    mark = read_events(runtime.index, "default", after_id=0)[-1].id
    runtime.ingest_spans(IDENTITY, tools[1:])
    runtime.flusher.drain()
    events = read_events(runtime.index, "default", after_id=mark)
    assert [e.type for e in events] == ["step.appended", "run.updated"]
    assert (events[0].data["first_seq"], events[0].data["last_seq"], events[0].data["count"]) == (1, 2, 2)


def test_findings_api_filters_pages_links_and_run_detail(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    try:
        now = time.time_ns()
        looping = [Tool("search", error=True, args='{"q": 1}')] * 3
        runs = [OtlpRun(start_ns=now - (10 - n) * SECOND, agent="finder", tools=looping) for n in range(3)]
        clean = OtlpRun(start_ns=now - SECOND, agent="finder", output="done")
        send_otlp_json(server, [*runs, clean])
        wait_until(lambda: len(server.get("/v1/findings", kind="loop").json()["findings"]) == 3, 30,
                   what="loop findings of the three runs")
        page = server.get("/v1/findings", kind="loop", limit=2).json()
        rest = server.get("/v1/findings", kind="loop", limit=2, cursor=page["next_cursor"]).json()
        assert len(page["findings"]) == 2 and len(rest["findings"]) == 1 and rest["next_cursor"] is None
        ids = {f["run_id"] for f in page["findings"] + rest["findings"]}
        assert ids == {r.trace for r in runs}
        one = server.get("/v1/findings", run=runs[0].trace, severity="error").json()["findings"]
        assert {f["kind"] for f in one} == {"tool_error"}
        link = one[0]["steps"][0]
        step = server.get(link["href"].split("?")[0], **dict(p.split("=", 1) for p in link["href"].split("?")[1].split("&")))
        assert step.json()["steps"][0]["seq"] == link["seq"]
        detail = server.get(f"/v1/runs/{runs[0].trace}").json()
        assert {f["kind"] for f in detail["findings"]} >= {"loop", "tool_error"}
        assert server.get(f"/v1/runs/{clean.trace}").json()["findings"] == []
        assert _error(server.get("/v1/findings", kind="nonsense")) == (400, "invalid_input")
        assert _error(server.get("/v1/findings", severity="fatal")) == (400, "invalid_input")
        assert _error(server.get("/v1/findings", cursor="zz")) == (400, "invalid_input")
        assert server.get("/v1/findings", detected_after=str(time.time_ns() + 10**12)).json()["findings"] == []
        assert server.get("/v1/findings", key=INGEST_KEY).status_code == 403
        assert server.get("/v1/findings", key="tw_00000000_nothing").status_code == 401
    finally:
        server.stop()


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, orjson.loads(response.content)["error"]["code"]


def test_a_run_that_breaks_the_scan_does_not_block_the_queue(runtime: Runtime,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = failing_run(start_ns=time.time_ns() - 60 * SECOND), failing_run(start_ns=time.time_ns() - 50 * SECOND)
    runtime.ingest_spans(IDENTITY, [*good, *bad])
    runtime.flusher.drain()
    real_scan = findings_job.scan_runs

    def fragile_scan(runs: Any, steps: Any, **kwargs: Any) -> Any:
        if bad[0].trace_id in runs["run_id"].to_list():
            raise ValueError("cannot scan this run")
        return real_scan(runs, steps, **kwargs)

    monkeypatch.setattr(findings_job, "scan_runs", fragile_scan)
    assert runtime.findings_job.run_once() == 2
    assert run_findings(runtime.index, "default", good[0].trace_id)
    assert run_findings(runtime.index, "default", bad[0].trace_id) == []
    assert queue_depth(runtime.index) == 0


def test_wakes_under_load_are_gathered_into_rounds(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher wakes the job after every batch; under load each wake must not cost a scan of the
    step files: wakes within ``min_round_s`` of a round's start join the next round. The first wake of a
    quiet job is served at once."""
    job = findings_job.FindingsJob(runtime.index, runtime.steps, idle_window_s=3600, events_retention_s=3600,
                                   idle_check_s=3600, min_round_s=0.4)
    rounds: list[float] = []

    def counted_round() -> int:
        rounds.append(time.monotonic())
        return 0

    monkeypatch.setattr(job, "run_once", counted_round)
    monkeypatch.setattr(job, "housekeeping", lambda: None)
    job.start()
    try:
        wait_until(lambda: len(rounds) == 1, 5, what="the first round")  # the first round starts with the thread
        time.sleep(0.5)
        woken = time.monotonic()
        job.wake()
        wait_until(lambda: len(rounds) == 2, 5, what="the woken round")
        assert rounds[1] - woken < 0.3, "a quiet job answers a wake at once"
        for _ in range(30):  # a flush every 40 ms for 1.2 s
            job.wake()
            time.sleep(0.04)
    finally:
        job.stop()
    gaps = [b - a for a, b in zip(rounds[1:], rounds[2:], strict=False)]
    assert len(rounds) <= 7, f"{len(rounds)} rounds for 31 wakes in 1.2 s"
    assert all(gap >= 0.35 for gap in gaps), gaps
