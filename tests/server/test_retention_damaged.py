"""Retention and tenant-data deletes past a damaged step file, against a real server and its real files.

A Parquet file of the step table truncated, emptied, removed from disk (while the Delta log still lists it)
or overwritten with garbage used to fail the Delta delete of its partition, and with it the tenant's whole
retention pass: its expired runs stayed on disk indefinitely. Now every file whose rows the run index shows
to be past retention goes (the damaged one included, from the Delta log and from disk), a damaged file that
may hold steps still within retention is kept (and the expired runs sharing it are retried every pass), and
the operator is told: an error log naming the file, a ``retention.damaged_file`` audit row, the
``damaged_step_files`` field of /healthz and the ``traceward_damaged_step_files`` gauge.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from otlp_receiver.errors import StorageError
from otlp_receiver.model import Span, SpanId, TraceId
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.damaged import DAMAGED_ACTION
from otlp_receiver.store.retention import NS_PER_DAY
from otlp_receiver.store.steps import StepTable
from server.cli import main as cli_main
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until

SECOND = 1_000_000_000


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def remove(path: Path) -> None:
    path.unlink()


def garble(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def garble_page_index(path: Path) -> None:
    """Random bytes over the page index (between the data pages and the footer): size, footer and data pages
    are intact, and other readers read the file, but Delta's reader uses the index for a delete's predicate."""
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(0)
    data_end = max((c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size
                   for c in (group.column(i) for i in range(group.num_columns)))
    footer_start = path.stat().st_size - 8 - metadata.serialized_size
    data = bytearray(path.read_bytes())
    data[data_end:footer_start] = os.urandom(footer_start - data_end)
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {"truncated": truncate, "zero-byte": empty, "missing": remove,
                                             "garbage": garble, "page-index": garble_page_index}


# -- sending runs ------------------------------------------------------------------------------------------------
def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _span(trace: str, start_ns: int, name: str, marker: str, parent: str | None = None) -> dict[str, Any]:
    span = {"traceId": trace, "spanId": os.urandom(8).hex(), "name": name, "kind": 1,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + SECOND),
            "attributes": [_attr("app.marker", marker)], "status": {"code": 1}}
    return {**span, "parentSpanId": parent} if parent else span


def send(server: LiveServer, runs: dict[str, list[int]], marker: str) -> None:
    """One export: for each run, a root at its first start time and a child step at each later one."""
    spans = []
    for trace, starts in runs.items():
        root = _span(trace, starts[0], "invoke_agent", marker)
        spans.append(root)
        spans.extend(_span(trace, start, "execute_tool search", marker, root["spanId"]) for start in starts[1:])
    body = {"resourceSpans": [{"resource": {"attributes": [_attr("service.name", "damaged-svc")]},
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", content=orjson.dumps(body), timeout=60,
                          headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/json"})
    assert response.status_code == 200, response.text
    for trace, starts in runs.items():
        count = len(starts)
        server.wait_run(trace, lambda r, n=count: r["step_count"] == n)


def day_start(days_ago: int) -> int:
    return (time.time_ns() // NS_PER_DAY - days_ago) * NS_PER_DAY


# -- looking at the files ----------------------------------------------------------------------------------------
def parquet_files(server: LiveServer) -> list[Path]:
    return sorted((server.data_dir / "steps").rglob("*.parquet"))


def files_of(server: LiveServer, run_id: str) -> list[Path]:
    """The (readable) Parquet files on disk holding rows of this run."""
    return [f for f in parquet_files(server) if run_id in pq.read_table(f, columns=["run_id"]).column("run_id")
            .to_pylist()]


def bytes_on_disk(server: LiveServer, marker: str) -> list[Path]:
    """Files under the step table (data and log, readable or not) whose bytes contain ``marker``."""
    return [f for f in (server.data_dir / "steps").rglob("*") if f.is_file() and marker.encode() in f.read_bytes()]


def metric(server: LiveServer, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", server.get("/metrics").text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def audit(server: LiveServer, action: str) -> list[dict[str, Any]]:
    page = server.get("/v1/audit", action=action, limit=500)
    assert page.status_code == 200, page.text
    return list(page.json()["entries"])


def retention_run(server: LiveServer) -> dict[str, Any]:
    response = server.post("/v1/admin/retention:run", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    return dict(response.json())


@dataclass
class Damaged:
    """A server whose default tenant has an expired run alone in a damaged file, an expired run and a fresh
    run in healthy files, and an expired run sharing a damaged file with a run still within retention."""

    server: LiveServer
    alone: str
    """Expired; the only run in its file, which is damaged."""
    healthy_old: str
    fresh: str
    shared_old: str
    """Expired, but its file is damaged and also holds a step of ``shared_live``."""
    shared_live: str
    """Active within retention (its last step is recent); its first step sits in the damaged shared file."""
    alone_file: Path
    shared_file: Path
    shared_bytes: bytes
    """The shared file as it was written (a backup)."""
    marker: str


def start_damaged(servers: list[LiveServer], tmp_path: Path, kind: str) -> Damaged:
    server = LiveServer(tmp_path / "data", extra_env={"TRACEWARD_RETENTION_INTERVAL_S": "0"}).start()
    servers.append(server)
    alone, healthy_old, fresh, shared_old, shared_live = (os.urandom(16).hex() for _ in range(5))
    marker = f"EXPIRED-{os.urandom(6).hex()}"
    send(server, {alone: [day_start(40) + 3_600 * SECOND, day_start(40) + 3_700 * SECOND]}, marker)
    send(server, {healthy_old: [day_start(36) + 3_600 * SECOND]}, marker)
    send(server, {fresh: [time.time_ns() - 60 * SECOND]}, "fresh")
    # one export: both runs' first steps land in the same file of day -38
    send(server, {shared_old: [day_start(38) + 3_600 * SECOND],
                  shared_live: [day_start(38) + 7_200 * SECOND, time.time_ns() - 30 * SECOND]}, marker)
    (alone_file,) = files_of(server, alone)
    (shared_file,) = files_of(server, shared_old)
    assert files_of(server, shared_live)[0] == shared_file
    backup = shared_file.read_bytes()
    DAMAGE[kind](alone_file)
    DAMAGE[kind](shared_file)
    return Damaged(server, alone, healthy_old, fresh, shared_old, shared_live, alone_file, shared_file, backup,
                   marker)


# -- the tests ---------------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_retention_deletes_past_a_damaged_file(servers: list[LiveServer], tmp_path: Path, kind: str) -> None:
    d = start_damaged(servers, tmp_path, kind)
    s = d.server
    summary = retention_run(s)
    # Delta's delete trips on a damaged page index only when it must copy rows out of the file: the file of
    # `alone` has none to keep, so it goes as any other would; every other kind of damage fails that delete.
    removed = [] if kind == "page-index" else [d.alone_file]

    # what must go is gone: the expired runs, the damaged file that held only expired rows (log and disk)
    assert summary["runs_deleted"] == 2 and summary["runs_held"] == 1, summary
    assert summary["damaged_files_removed"] == len(removed) and summary["damaged_files_kept"] == 1
    for run_id in (d.alone, d.healthy_old):
        assert s.get(f"/v1/runs/{run_id}").status_code == 404
    assert not d.alone_file.exists()
    assert d.alone_file.name not in {f.name for f in parquet_files(s)}
    readable = [f for f in parquet_files(s) if f != d.shared_file]
    assert not any(d.healthy_old in pq.read_table(f, columns=["run_id"]).column("run_id").to_pylist()
                   for f in readable)
    # nothing within retention is lost, and the run sharing the damaged file is kept (and retried)
    assert s.get(f"/v1/runs/{d.fresh}/verify").json()["ok"]
    assert s.get(f"/v1/runs/{d.shared_old}").status_code == 200
    assert d.shared_file.exists() or kind == "missing"
    # the operator is told: log, audit, /healthz, /metrics
    assert all(str(f) in s.log() for f in (*removed, d.shared_file))
    entries = {e["target"]: e["details"] for e in audit(s, "retention.damaged_file")}
    relative = {f: str(f.relative_to(s.data_dir / "steps")) for f in (d.alone_file, d.shared_file)}
    assert set(entries) == {relative[f] for f in (*removed, d.shared_file)}
    assert all(entries[relative[f]]["removed"] is True for f in removed)
    assert entries[relative[d.shared_file]]["removed"] is False
    assert all(e["problem"] and str(s.data_dir) not in e["problem"] for e in entries.values())
    health = s.get("/healthz").json()
    assert health["damaged_step_files"] == 1 and health["status"] == "ok"
    assert metric(s, "traceward_damaged_step_files") == 1
    tombstones = {e["target"] for e in audit(s, "retention.tombstone")}
    assert tombstones == {d.alone, d.healthy_old}
    assert s.get("/v1/audit/verify").json()["ok"]

    # the next pass tries again, and is told the same (no new audit row for a file it already reported)
    again = retention_run(s)
    assert (again["runs_deleted"], again["runs_held"], again["damaged_files_kept"]) == (0, 1, 1)
    assert len(audit(s, "retention.damaged_file")) == len(entries)
    assert s.get("/healthz").json()["damaged_step_files"] == 1


@pytest.mark.e2e
def test_verify_still_names_the_damaged_file_of_a_kept_run(servers: list[LiveServer], tmp_path: Path) -> None:
    d = start_damaged(servers, tmp_path, "truncated")
    s = d.server
    before = s.get(f"/v1/runs/{d.shared_live}/verify")
    retention_run(s)
    after = s.get(f"/v1/runs/{d.shared_live}/verify")
    assert (after.status_code, after.json()) == (before.status_code, before.json())
    assert after.status_code == 503 and "step table read failed" in after.json()["error"]["message"]


@pytest.mark.e2e
def test_a_restored_file_lets_the_held_run_go_and_loses_nothing(servers: list[LiveServer], tmp_path: Path) -> None:
    d = start_damaged(servers, tmp_path, "missing")
    s = d.server
    assert retention_run(s)["runs_held"] == 1
    d.shared_file.write_bytes(d.shared_bytes)  # the operator restores it from a backup
    summary = retention_run(s)
    assert (summary["runs_deleted"], summary["runs_held"], summary["damaged_files_kept"]) == (1, 0, 0)
    assert s.get(f"/v1/runs/{d.shared_old}").status_code == 404
    live = s.get(f"/v1/runs/{d.shared_live}/verify").json()
    assert live["ok"] and live["steps_checked"] == 2  # its step in the restored file was copied, not lost
    assert s.get("/healthz").json()["damaged_step_files"] == 0
    assert metric(s, "traceward_damaged_step_files") == 0
    stored = {r for f in parquet_files(s) for r in pq.read_table(f, columns=["run_id"]).column("run_id").to_pylist()}
    assert stored == {d.fresh, d.shared_live}  # of the expired runs nothing is left, in any file on disk


@pytest.mark.e2e
def test_a_tenant_delete_removes_damaged_files_too(servers: list[LiveServer], tmp_path: Path) -> None:
    d = start_damaged(servers, tmp_path, "garbage")
    s = d.server
    retention_run(s)
    assert s.get("/healthz").json()["damaged_step_files"] == 1
    done = httpx.delete(f"{s.api_url}/v1/admin/tenant-data", params={"confirm": "default"},
                        headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
    assert done.status_code == 200, done.text
    assert done.json()["runs_deleted"] == 3 and done.json()["runs_held"] == 0
    assert s.get("/v1/runs").json()["runs"] == []
    assert parquet_files(s) == []
    assert not bytes_on_disk(s, d.marker)
    assert s.get("/healthz").json()["damaged_step_files"] == 0
    assert metric(s, "traceward_damaged_step_files") == 0
    removed = [e for e in audit(s, "retention.damaged_file") if e["details"]["removed"]]
    assert {e["target"] for e in removed} == {str(d.shared_file.relative_to(s.data_dir / "steps")),
                                              str(d.alone_file.relative_to(s.data_dir / "steps"))}
    wait_until(lambda: s.get("/healthz").status_code == 200, 5, what="the server to keep serving")


# -- in-process: a held run's file goes once everything in it has expired; the CLI; other failures -------------
def _spans(trace: str, starts: list[int]) -> list[Span]:
    root = SpanId(os.urandom(8).hex())
    return [Span(trace_id=TraceId(trace), span_id=root if i == 0 else SpanId(os.urandom(8).hex()),
                 parent_span_id=None if i == 0 else root, name="agent" if i == 0 else "execute_tool search", kind=1,
                 start_ns=start, end_ns=start + SECOND, status_code=1) for i, start in enumerate(starts)]


def ingest(runtime: Runtime, tenant: str, runs: dict[str, list[int]]) -> None:
    """One export (so one flush batch: one file per day) holding these runs."""
    spans = [span for trace, starts in runs.items() for span in _spans(trace, starts)]
    result = runtime.ingest_spans(IngestIdentity(tenant, "p"), spans)
    assert runtime.flusher.wait_flushed(result.wal_position)


def tenant_files(data_dir: Path, tenant: str) -> list[Path]:
    return sorted((data_dir / "steps" / f"tenant_id={tenant}").rglob("*.parquet"))


def run_file(data_dir: Path, tenant: str, run_id: str, days_ago: int) -> Path:
    """The one file of that day holding rows of the run."""
    day = time.strftime("%Y-%m-%d", time.gmtime(day_start(days_ago) / 1e9))
    (found,) = [f for f in tenant_files(data_dir, tenant) if f.parent.name == f"day={day}"
                and run_id in pq.read_table(f, columns=["run_id"]).column("run_id").to_pylist()]
    return found


def damaged_rows(runtime: Runtime) -> list[dict[str, Any]]:
    return runtime.index.query("SELECT * FROM damaged_step_files ORDER BY path")


def test_a_kept_damaged_file_goes_once_every_run_in_it_has_expired(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, flusher_process=False, retention_interval_s=0, retention_days=7))
    runtime.start(grpc=False)
    try:
        t0 = day_start(20) + 3_600 * SECOND
        held, live, healthy, exact, other_day = (os.urandom(16).hex() for _ in range(5))
        ingest(runtime, "t", {held: [t0], live: [t0 + 3_600 * SECOND, time.time_ns() - 60 * SECOND]})
        ingest(runtime, "t", {healthy: [t0 + 2 * 3_600 * SECOND]})
        ingest(runtime, "t", {exact: [t0 + 3 * 3_600 * SECOND]})
        ingest(runtime, "t", {other_day: [day_start(21) + SECOND]})
        shared, exact_file = run_file(tmp_path, "t", held, 20), run_file(tmp_path, "t", exact, 20)
        assert run_file(tmp_path, "t", live, 20) == shared
        truncate(shared)
        garble(exact_file)

        first = runtime.retention.run_tenant("t", trigger="manual")
        # `exact`'s file shares its day with `live`, but its statistics exclude `live`: it goes at once. The
        # expired runs of that day wait for the kept file (a Delta delete there would read it); other days don't.
        assert (first["runs_deleted"], first["runs_held"]) == (1, 3)
        assert (first["damaged_files_removed"], first["damaged_files_kept"]) == (1, 1)
        assert runtime.index.get_run("t", other_day) is None
        assert all(runtime.index.get_run("t", r) is not None for r in (held, live, healthy, exact))
        assert not exact_file.exists() and shared.exists()
        assert [r["path"] for r in damaged_rows(runtime)] == [str(shared.relative_to(tmp_path / "steps"))]
        assert str(shared) in caplog.text and str(exact_file) in caplog.text

        later = runtime.retention.run_tenant("t", trigger="manual", now_ns=time.time_ns() + 31 * NS_PER_DAY)
        assert (later["runs_deleted"], later["runs_held"], later["damaged_files_removed"]) == (4, 0, 1)
        assert all(runtime.index.get_run("t", r) is None for r in (held, live, healthy, exact))
        assert tenant_files(tmp_path, "t") == []
        assert damaged_rows(runtime) == []
        rows, _ = runtime.audit.list("t", action_prefix=DAMAGED_ACTION)
        assert sorted((r["target"] == str(shared.relative_to(tmp_path / "steps")), r["details"]["removed"])
                      for r in rows) == [(False, True), (True, False), (True, True)]
        assert runtime.audit.verify("t").ok
    finally:
        runtime.stop()


def test_cli_retention_past_a_damaged_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, flusher_process=False))
    runtime.start(grpc=False)
    try:
        old, fresh = os.urandom(16).hex(), os.urandom(16).hex()
        ingest(runtime, "t", {old: [day_start(45) + SECOND]})
        ingest(runtime, "t", {fresh: [time.time_ns() - 60 * SECOND]})
    finally:
        runtime.stop()
    empty(run_file(tmp_path, "t", old, 45))
    assert cli_main(["admin", "retention", "--data-dir", str(tmp_path), "--tenant", "t"]) == 0
    assert "t: 1 runs, 1 steps deleted (older than 30 days); 0 audit rows pruned; 1 damaged step files removed" in \
        capsys.readouterr().out
    assert [f.parent.name for f in tenant_files(tmp_path, "t")] == [f"day={time.strftime('%Y-%m-%d', time.gmtime())}"]


def test_another_step_table_failure_still_prunes_the_audit_log(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a damaged file (a full disk, say): the tenant's pass fails as before, is retried next pass, but its
    audit log is still pruned and the failure recorded."""
    runtime = Runtime(Settings(data_dir=tmp_path, flusher_process=False, retention_interval_s=0))
    runtime.start(grpc=False)
    try:
        ingest(runtime, "t", {os.urandom(16).hex(): [day_start(45) + SECOND]})

        def disk_full(self: StepTable, predicate: str) -> None:
            raise StorageError("step table delete failed: No space left on device (os error 28)")

        monkeypatch.setattr(StepTable, "delete", disk_full)
        with pytest.raises(StorageError, match="No space left"):
            runtime.retention.run_tenant("t", trigger="manual", now_ns=time.time_ns() + 400 * NS_PER_DAY)
        (row,), _ = runtime.audit.list("t", action_prefix="retention.run")
        assert row["details"]["audit_rows_pruned"] > 0 and "No space left" in row["details"]["error"]
        assert row["details"]["runs_deleted"] == 0
        assert runtime.audit.verify("t").ok
    finally:
        runtime.stop()
