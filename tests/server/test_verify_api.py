"""Run seals and verification: when runs are sealed, the seal chain, the verify API's shape and errors.

In-process (a Runtime on a temp dir): a seal commits atomically with the batch that finished the run; seals
chain per tenant and a removed seal is caught; idle runs are sealed once per head; big runs are read in
seq ranges. Live: an idle run is sealed, new steps are covered by a new seal, a late step after the final
status is sealed at once, a truncated tail is caught, and the endpoint answers 404/403 like its siblings.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from otlp_receiver.encode import encode_request
from otlp_receiver.model import Span, SpanId, StatusCode, TraceId
from server.cli import main as cli_main
from server.runtime import Runtime
from server.settings import Settings
from server.steps import run_days
from server.verify import Verifier, iter_run_rows
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until
from tests.server.test_tamper import make_run_spans, rewrite_run_rows, send_run

NOW_NS = time.time_ns()


def child_of(root: Span, i: int) -> Span:
    return Span(trace_id=root.trace_id, span_id=SpanId(os.urandom(8).hex()), parent_span_id=root.span_id,
                name=f"step {i}", kind=1, start_ns=root.start_ns + i * 1000, end_ns=root.start_ns + i * 1000 + 10,
                attributes={"i": i}, resource={"service.name": "verify-test"})


def seals_of(runtime: Runtime, tenant: str = "default") -> list[dict[str, Any]]:
    rows = runtime.index.query("SELECT id, target, details FROM audit_log WHERE tenant_id = ? AND action = 'run.seal' "
                               "ORDER BY id", [tenant])
    return [{"id": r["id"], "run_id": r["target"], **orjson.loads(r["details"])} for r in rows]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data", seal_interval_s=0, wal_fsync=False))
    rt.start(grpc=False)
    try:
        yield rt
    finally:
        rt.stop()


def ingest(rt: Runtime, spans: list[Span], tenant: str = "default") -> None:
    result = rt.pipeline.ingest_spans(tenant, "default", spans)
    assert rt.flusher.wait_flushed(result.wal_position)


def verifier(rt: Runtime) -> Verifier:
    return Verifier(rt.index, rt.steps, rt.governance.keys.public_keys)


# -- in-process ------------------------------------------------------------------------------------------------
def test_a_seal_commits_atomically_with_the_batch_that_finished_the_run(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path / "data", seal_interval_s=0, wal_fsync=False, flusher_process=False))

    def fail(db: Any, batch: Any) -> None:
        raise RuntimeError("crash after the seal was written, before the commit")

    rt.flusher.hooks.append(fail)
    spans = make_run_spans(NOW_NS, children=2)
    rt.pipeline.ingest_spans("default", "default", spans)
    with pytest.raises(RuntimeError):
        rt.flusher.flush_once()
    assert seals_of(rt) == [] and rt.index.get_run_row("default", spans[0].trace_id) is None
    rt.flusher.hooks.remove(fail)
    assert rt.flusher.flush_once()  # the replay: same batch, applied once, sealed once
    (seal,) = seals_of(rt)
    assert seal["seal"]["step_count"] == 3 and seal["trigger"] == "final" and seal["status"] == "succeeded"
    assert verifier(rt).run("default", spans[0].trace_id).ok
    rt.wal.close()


def test_seals_chain_per_tenant_and_a_removed_seal_is_caught(runtime: Runtime) -> None:
    for _ in range(3):
        ingest(runtime, make_run_spans(NOW_NS, children=1))
    ingest(runtime, make_run_spans(NOW_NS, children=1), tenant="other")
    seals = seals_of(runtime)
    assert len(seals) == 3 and seals_of(runtime, "other")[0]["seal"]["prev_seal_hash"] != seals[0]["seal"]["prev_seal_hash"]
    report = verifier(runtime).tenant("default")
    assert report.ok and report.seals == 3 and report.runs_checked == 3 and report.steps_checked == 6
    with sqlite3.connect(runtime.settings.index_path, isolation_level=None) as db:
        db.execute("DELETE FROM audit_log WHERE id = ?", [seals[1]["id"]])
    report = verifier(runtime).tenant("default")
    assert report.seal_chain_problem == (f"seal at audit row {seals[2]['id']} does not link to the previous seal "
                                         "(a seal was removed)")
    assert not report.audit.ok and not report.ok
    assert verifier(runtime).tenant("other").ok


def test_idle_runs_are_sealed_once_per_head(runtime: Runtime) -> None:
    root = make_run_spans(NOW_NS, children=0)[0]
    ingest(runtime, [child_of(root, 1), child_of(root, 2)])  # the root never ends: the run stays running
    assert runtime.sealer.seal_idle() == 0  # not idle yet
    later = time.time_ns() + 10**12
    assert runtime.sealer.seal_idle(now_ns=later) == 1
    assert runtime.sealer.seal_idle(now_ns=later) == 0
    ingest(runtime, [child_of(root, 3)])
    report = verifier(runtime).run("default", root.trace_id)
    assert report.ok and report.sealed and report.seal_ok and report.seal.step_count == 2  # the seal covers a prefix
    assert runtime.sealer.seal_idle(now_ns=later + 10**12) == 1
    assert [s["seal"]["step_count"] for s in seals_of(runtime)] == [2, 3]
    assert {s["trigger"] for s in seals_of(runtime)} == {"idle"}


def test_big_runs_are_read_in_seq_ranges(runtime: Runtime) -> None:
    root = make_run_spans(NOW_NS, children=0)[0]
    ingest(runtime, [root, *(child_of(root, i) for i in range(1, 10))])
    days = run_days(runtime.index, "default", root.trace_id)
    rows = list(iter_run_rows(runtime.steps, "default", root.trace_id, days, expected_steps=10**9, chunk=3))
    assert [r["seq"] for r in rows] == list(range(10))


# -- live ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("verify") / "data",
                     extra_env={"TRACEWARD_SEAL_IDLE_S": "1", "TRACEWARD_SEAL_INTERVAL_S": "0.3"}).start()
    try:
        yield srv
    finally:
        srv.stop()


def post_spans(server: LiveServer, spans: list[Span]) -> None:
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", content=encode_request(spans).SerializeToString(),
                          headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/x-protobuf"},
                          timeout=30)
    assert response.status_code == 200, response.text


def verify(server: LiveServer, run_id: str) -> dict[str, Any]:
    return server.get(f"/v1/runs/{run_id}/verify").json()


@pytest.mark.e2e
def test_idle_then_more_steps_then_final(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    root = Span(trace_id=TraceId(os.urandom(16).hex()), span_id=SpanId(os.urandom(8).hex()), parent_span_id=None,
                name="invoke_agent", kind=1, start_ns=NOW_NS, end_ns=NOW_NS + 10**9, status_code=StatusCode.OK)
    post_spans(live, [child_of(root, 1), child_of(root, 2)])
    wait_until(lambda: verify(live, root.trace_id).get("sealed", False), 15, what="the idle run to be sealed")
    body = verify(live, root.trace_id)
    assert body["ok"] and body["seal_ok"] and body["seal"]["step_count"] == 2
    post_spans(live, [child_of(root, 3)])
    live.wait_run(root.trace_id, lambda r: r["step_count"] == 3)
    assert verify(live, root.trace_id)["ok"]  # the older seal still matches the chain's prefix
    wait_until(lambda: verify(live, root.trace_id)["seal"]["step_count"] == 3, 15, what="a new seal")
    post_spans(live, [root])
    live.wait_run(root.trace_id, lambda r: r["status"] == "succeeded")
    body = verify(live, root.trace_id)  # sealed by the flush that finished it, not by the idle job
    assert body["ok"] and body["seal"]["step_count"] == 4
    late = child_of(root, 5)
    post_spans(live, [late])
    live.wait_run(root.trace_id, lambda r: r["step_count"] == 5)
    assert verify(live, root.trace_id)["seal"]["step_count"] == 5  # a late step after the final status: resealed
    entries = live.get("/v1/audit", action="run.seal", limit=50).json()["entries"]
    mine = [e for e in entries if e["target"] == root.trace_id]
    assert sorted(e["details"]["trigger"] for e in mine) == ["final", "final", "idle", "idle"]
    capsys.readouterr()
    assert cli_main(["verify", "--data-dir", str(live.data_dir), "--tenant", "default"]) == 0
    assert "tenant default: OK" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_truncated_tail_is_caught(live: LiveServer) -> None:
    run = send_run(live, days_ago=2)
    rewrite_run_rows(live, run, lambda rows: rows[:-1])
    body = verify(live, run.run_id)
    assert not body["ok"] and body["steps_checked"] == run.steps - 1
    assert body["first_break"] == {"seq": run.steps - 1, "reason": f"step count {run.steps - 1} differs from expected "
                                   f"{run.steps} (steps deleted or added at the tail)"}


@pytest.mark.e2e
def test_the_endpoint_answers_like_its_siblings(live: LiveServer) -> None:
    missing = os.urandom(16).hex()
    response = live.get(f"/v1/runs/{missing}/verify")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert live.get(f"/v1/runs/{missing}/verify", key=INGEST_KEY).status_code == 403
    assert httpx.get(f"{live.api_url}/v1/runs/{missing}/verify", timeout=10).status_code == 401
    run = send_run(live, days_ago=1)
    assert set(verify(live, run.run_id)) >= {"ok", "steps_checked", "head_hash", "first_break", "sealed", "seal_ok"}
    assert live.get(f"/v1/runs/{run.run_id.upper()}/verify", key=ADMIN_KEY).json()["ok"]
