"""Retention and the audit log.

Live: a per-tenant plan decides what expires; expired runs disappear from the API, from SQLite and from
every Parquet file on disk; each leaves a tombstone (run id, final head hash, deleted_at) in the audit
log, whose chain still verifies, as do the remaining runs' step chains. Deleting a tenant's data on
request works the same way. Key create/rotate/revoke, plan changes and audit reads are audited;
a rotated key works during its grace period only; an edited audit row is caught and the failure
itself is audited. In-process: the scheduled job, ``traceward admin retention`` and audit pruning.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from otlp_receiver.chain import verify_chain
from otlp_receiver.model import Span, SpanId, TraceId
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.retention import NS_PER_DAY, prune_audit
from otlp_receiver.store.steps import StepTable
from server.cli import main as cli_main
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until

SECOND = 1_000_000_000
RUN_TABLES = ("runs", "run_models", "run_tools", "run_tags", "spans")


def attr(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}}


def trace_json(trace: str, start_ns: int, marker: str) -> dict[str, Any]:
    """A root, a model call and a tool call whose payloads carry ``marker``."""
    root = os.urandom(8).hex()
    spans = [{"traceId": trace, "spanId": root, "name": "invoke_agent", "kind": 1, "startTimeUnixNano": str(start_ns),
              "endTimeUnixNano": str(start_ns + 5 * SECOND), "attributes": [attr("app.marker", marker)],
              "status": {"code": 1}}]
    for i, (name, attrs) in enumerate((
            ("chat gpt-4o", [attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", "gpt-4o")]),
            ("execute_tool search", [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", "search")]),
    )):
        spans.append({"traceId": trace, "spanId": os.urandom(8).hex(), "parentSpanId": root, "name": name, "kind": 3,
                      "startTimeUnixNano": str(start_ns + (i + 1) * SECOND),
                      "endTimeUnixNano": str(start_ns + (i + 1) * SECOND + 9),
                      "attributes": [*attrs, attr("app.marker", marker)], "status": {"code": 0}})
    return {"resource": {"attributes": [attr("service.name", "retention-svc")]},
            "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}


def send(server: LiveServer, key: str, traces: dict[str, tuple[int, str]]) -> None:
    body = {"resourceSpans": [trace_json(t, start, marker) for t, (start, marker) in traces.items()]}
    resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=orjson.dumps(body), timeout=60,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    for trace in traces:
        wait_until(lambda t=trace: _steps(server, key_for_reads(server, key), t) == 3, 30, what=f"run {trace}")


_READERS: dict[str, str] = {}


def key_for_reads(server: LiveServer, ingest_key: str) -> str:
    return _READERS.get(ingest_key, ADMIN_KEY)


def _steps(server: LiveServer, key: str, run_id: str) -> int:
    resp = server.get(f"/v1/runs/{run_id}", key=key)
    return int(resp.json()["step_count"]) if resp.status_code == 200 else -1


def parquet_rows(data_dir: Path) -> list[dict[str, Any]]:
    """Every row of every Parquet file under the step table, referenced by the Delta log or not."""
    rows: list[dict[str, Any]] = []
    for path in (data_dir / "steps").rglob("*.parquet"):
        table = pq.read_table(path, columns=["run_id", "payload"])
        tenant = next((p.split("=", 1)[1] for p in path.parts if p.startswith("tenant_id=")), None)
        rows.extend({**r, "tenant_id": tenant} for r in table.to_pylist())
    return rows


def sqlite_run_rows(data_dir: Path, run_ids: list[str]) -> dict[str, int]:
    """Rows naming these runs in every table with a run_id column but the audit log."""
    marks = ",".join("?" * len(run_ids))
    with sqlite3.connect(f"file:{data_dir / 'traceward.sqlite3'}?mode=ro", uri=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if t != "audit_log" and "run_id" in {c[1] for c in conn.execute(f"PRAGMA table_info({t})")}]
        assert set(RUN_TABLES) <= set(tables)
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE run_id IN ({marks})", run_ids).fetchone()[0]
                for t in tables}


def audit_entries(server: LiveServer, key: str = ADMIN_KEY, **params: Any) -> list[dict[str, Any]]:
    entries, cursor = [], None
    while True:
        page = server.get("/v1/audit", key=key, limit=500, **params, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        entries.extend(page.json()["entries"])
        cursor = page.json()["next_cursor"]
        if not cursor:
            return entries


def put_plan(server: LiveServer, days: int | None) -> httpx.Response:
    return httpx.put(f"{server.api_url}/v1/admin/retention", json={"retention_days": days},
                     headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


@dataclass
class Scenario:
    server: LiveServer
    old: list[str]
    mid: str
    new: str
    other_admin: str
    other_old: str
    marker: str


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    server = LiveServer(tmp_path_factory.mktemp("retention") / "data",
                        extra_env={"TRACEWARD_RETENTION_INTERVAL_S": "0"}).start()
    try:
        out = subprocess.run([sys.executable, "-m", "server", "admin", "bootstrap-tenant", "--data-dir",
                              str(server.data_dir), "--tenant", "keeper"], capture_output=True, text=True, check=True)
        other_admin = out.stdout.strip().splitlines()[-1]
        other_ingest = server.post("/v1/admin/keys", key=other_admin, json={"role": "ingest"}).json()["key"]
        _READERS[other_ingest] = other_admin
        now, marker = time.time_ns(), f"OLD-SECRET-{os.urandom(6).hex()}"
        old = [os.urandom(16).hex() for _ in range(2)]
        mid, new, other_old = (os.urandom(16).hex() for _ in range(3))
        send(server, INGEST_KEY, {old[0]: (now - 40 * NS_PER_DAY, marker), old[1]: (now - 35 * NS_PER_DAY, marker),
                                  mid: (now - 20 * NS_PER_DAY, "mid"), new: (now - 60 * SECOND, "new")})
        send(server, other_ingest, {other_old: (now - 40 * NS_PER_DAY, marker)})
        yield Scenario(server, old, mid, new, other_admin, other_old, marker)
    finally:
        server.stop()


@pytest.mark.e2e
def test_retention_hard_deletes_expired_runs_everywhere(scenario: Scenario) -> None:
    s, data_dir = scenario.server, scenario.server.data_dir
    before = {r: s.get(f"/v1/runs/{r}").json() for r in scenario.old}
    assert {r["run_id"] for r in parquet_rows(data_dir)} >= set(scenario.old)  # the proof below can fail

    plan = put_plan(s, 60)
    assert plan.status_code == 200 and plan.json()["retention_days"] == 60 and plan.json()["source"] == "tenant"
    kept = s.post("/v1/admin/retention:run", key=ADMIN_KEY).json()
    assert kept["runs_deleted"] == 0 and kept["retention_days"] == 60

    assert put_plan(s, 0).status_code == 400
    reset = put_plan(s, None)
    assert reset.json() == {"retention_days": 30, "source": "default", "default_retention_days": 30,
                            "audit_retention_days": 365}
    done = s.post("/v1/admin/retention:run", key=ADMIN_KEY)
    assert done.status_code == 200, done.text
    assert done.json()["runs_deleted"] == 2 and done.json()["steps_deleted"] == 6 and done.json()["trigger"] == "manual"

    # the API
    for run_id in scenario.old:
        assert s.get(f"/v1/runs/{run_id}").status_code == 404
        assert s.get(f"/v1/runs/{run_id}/steps").status_code == 404
    listed = {r["run_id"] for r in s.get("/v1/runs", limit=500).json()["runs"]}
    assert listed == {scenario.mid, scenario.new}
    # SQLite
    assert not any(sqlite_run_rows(data_dir, scenario.old).values())
    assert sqlite_run_rows(data_dir, [scenario.mid])["spans"] == 3
    # every Parquet file on disk (vacuumed: no file of an older snapshot survives)
    rows = parquet_rows(data_dir)
    assert not {r["run_id"] for r in rows if r["tenant_id"] == "default"} & set(scenario.old)
    assert not any(scenario.marker in r["payload"] for r in rows if r["tenant_id"] == "default")
    assert {scenario.mid, scenario.new} <= {r["run_id"] for r in rows}
    assert not any(scenario.marker.encode() in p.read_bytes() for p in (data_dir / "steps" / "_delta_log").iterdir()
                   if p.is_file())
    # the other tenant's plan was not applied: its old run is still there
    assert s.get(f"/v1/runs/{scenario.other_old}", key=scenario.other_admin).status_code == 200

    # tombstones, the pass itself, and the plan changes are in the audit log, whose chain verifies
    tombstones = {e["target"]: e["details"] for e in audit_entries(s, action="retention.tombstone")}
    assert set(tombstones) == set(scenario.old)
    for run_id, details in tombstones.items():
        assert details["head_hash"] == before[run_id]["head_hash"] and details["head_hash"].startswith("sha256:")
        assert details["step_count"] == 3 and details["reason"] == "retention"
        assert abs(details["deleted_at_ns"] - time.time_ns()) < 120 * SECOND
    runs_logged = audit_entries(s, action="retention.run")
    assert [e["details"]["runs_deleted"] for e in runs_logged] == [2, 0]
    assert len(audit_entries(s, action="retention.plan_set")) == 2
    assert s.get("/v1/audit/verify").json()["ok"]
    # and the remaining runs' step chains still verify ("traceward verify" afterwards)
    steps = StepTable(data_dir / "steps")
    for run_id in (scenario.mid, scenario.new):
        run = s.get(f"/v1/runs/{run_id}").json()
        stored = steps.scan("default").filter(pl.col("run_id") == run_id).sort("seq").collect().to_dicts()
        verdict = verify_chain("default", run_id, stored, expected_head=run["head_hash"],
                               expected_count=run["step_count"])
        assert verdict.ok, verdict


@pytest.mark.e2e
def test_deleting_a_tenants_data_on_request(scenario: Scenario) -> None:
    s = scenario.server
    url = f"{s.api_url}/v1/admin/tenant-data"
    headers = {"authorization": f"Bearer {scenario.other_admin}"}
    wrong = httpx.delete(url, params={"confirm": "default"}, headers=headers, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"]["details"] == {"confirm": "your tenant id"}
    assert httpx.delete(url, headers=headers, timeout=30).status_code == 400
    done = httpx.delete(url, params={"confirm": "keeper"}, headers=headers, timeout=60)
    assert done.status_code == 200 and done.json() == {"tenant_id": "keeper", "runs_deleted": 1, "steps_deleted": 3,
                                                       "runs_held": 0, "damaged_files_removed": 0,
                                                       "damaged_files_kept": 0}
    assert s.get("/v1/runs", key=scenario.other_admin).json()["runs"] == []
    assert not [r for r in parquet_rows(s.data_dir) if r["tenant_id"] == "keeper"]
    tomb = audit_entries(s, key=scenario.other_admin, action="retention.tombstone")
    assert [(e["target"], e["details"]["reason"]) for e in tomb] == [(scenario.other_old, "tenant_data_request")]
    assert audit_entries(s, key=scenario.other_admin, action="tenant_data.delete")[0]["details"]["runs_deleted"] == 1
    assert s.get("/v1/audit/verify", key=scenario.other_admin).json()["ok"]
    assert s.get(f"/v1/runs/{scenario.mid}").status_code == 200  # the default tenant is untouched


@pytest.mark.e2e
def test_key_lifecycle_is_audited_and_rotation_has_a_grace_period(scenario: Scenario) -> None:
    s = scenario.server
    created = s.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": "viewer", "name": "rotating"}).json()
    old_key, key_id = created["key"], created["key_id"]
    listed = s.get("/v1/admin/keys", key=ADMIN_KEY).json()["keys"]
    assert key_id in {k["key_id"] for k in listed}
    assert not any(old_key.split("_", 2)[2] in orjson.dumps(k).decode() for k in listed)  # no secrets
    assert all("secret_hash" not in k for k in listed)
    rotated = s.post(f"/v1/admin/keys/{key_id}:rotate", key=ADMIN_KEY, json={"grace_s": 1.5})
    assert rotated.status_code == 200, rotated.text
    new_key, new_id = rotated.json()["key"], rotated.json()["key_id"]
    assert rotated.json()["replaces"]["state"] == "rotating" and rotated.json()["replaces"]["rotated_to"] == new_id
    assert s.get("/v1/runs", key=old_key).status_code == 200  # inside the grace period
    assert s.get("/v1/runs", key=new_key).status_code == 200
    assert s.post(f"/v1/admin/keys/{key_id}:rotate", key=ADMIN_KEY).status_code == 409
    time.sleep(1.7)
    expired = s.get("/v1/runs", key=old_key)
    assert expired.status_code == 401 and "rotated" in expired.json()["error"]["message"]
    assert s.post(f"/v1/admin/keys/{new_id}:revoke", key=ADMIN_KEY).status_code == 200
    assert s.get("/v1/runs", key=new_key).status_code == 401  # revocation is immediate
    assert s.post(f"/v1/admin/keys/{new_id}:frobnicate", key=ADMIN_KEY).status_code == 404
    assert s.get(f"/v1/admin/keys/{new_id}", key=ADMIN_KEY).json()["state"] == "revoked"
    assert new_id not in {k["key_id"] for k in s.get("/v1/admin/keys", key=ADMIN_KEY).json()["keys"]}
    assert new_id in {k["key_id"] for k in
                      s.get("/v1/admin/keys", key=ADMIN_KEY, include_inactive=True).json()["keys"]}
    log = audit_entries(s, action="key.")
    mine = [e for e in log if e["target"] in (key_id, new_id)]
    assert [(e["action"], e["target"]) for e in mine] == [("key.revoke", new_id), ("key.rotate", key_id),
                                                          ("key.create", key_id)]  # newest first
    assert mine[1]["details"]["new_key_id"] == new_id and mine[1]["details"]["grace_s"] == 1.5
    assert len({e["actor"] for e in mine}) == 1 and mine[0]["actor"].startswith("key:")


@pytest.mark.e2e
def test_audit_reads_are_audited_and_filtered(scenario: Scenario) -> None:
    s = scenario.server
    since = time.time_ns()
    s.get("/v1/audit", action="key.", limit=3)
    reads = audit_entries(s, action="audit.read", since=str(since))
    assert reads and reads[-1]["details"]["action"] == "key." and reads[-1]["details"]["returned"] <= 3
    assert all(e["action"].startswith("key.") for e in audit_entries(s, action="key."))
    assert audit_entries(s, actor="nobody") == []
    assert audit_entries(s, until=str(since - 10**15)) == []
    bad = s.get("/v1/audit", cursor="%%%")
    assert bad.status_code == 400


@pytest.mark.e2e
def test_an_edited_audit_row_is_caught_and_the_failure_audited(scenario: Scenario) -> None:
    s = scenario.server
    assert s.get("/v1/audit/verify", key=scenario.other_admin).json()["ok"]
    with sqlite3.connect(s.data_dir / "traceward.sqlite3", timeout=30) as conn:
        row_id = conn.execute("SELECT min(id) FROM audit_log WHERE tenant_id = 'keeper'").fetchone()[0]
        conn.execute("UPDATE audit_log SET details = '{\"role\":\"viewer\"}' WHERE id = ?", [row_id])
    verdict = s.get("/v1/audit/verify", key=scenario.other_admin).json()
    assert not verdict["ok"] and verdict["first_bad_id"] == row_id and "edited" in verdict["reason"]
    failures = audit_entries(s, key=scenario.other_admin, action="audit.verification_failed")
    assert failures and failures[0]["details"]["first_bad_id"] == row_id
    assert s.get("/v1/audit/verify").json()["ok"]  # the default tenant's chain is its own


# --- in-process: the scheduled job, the CLI, audit pruning ----------------------------------------------------
def _old_run(runtime: Runtime, tenant: str, age_days: int) -> str:
    trace = os.urandom(16).hex()
    start = time.time_ns() - age_days * NS_PER_DAY
    spans = [Span(trace_id=TraceId(trace), span_id=SpanId(os.urandom(8).hex()), parent_span_id=None, name="agent",
                  kind=1, start_ns=start, end_ns=start + SECOND, status_code=1)]
    result = runtime.ingest_spans(IngestIdentity(tenant, "p"), spans)
    assert runtime.flusher.wait_flushed(result.wal_position)
    return trace


def test_scheduled_job_deletes_expired_runs(tmp_path: Path) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, retention_interval_s=0.2, retention_days=7))
    runtime.start(grpc=False)
    try:
        old, fresh = _old_run(runtime, "t1", 8), _old_run(runtime, "t1", 1)
        wait_until(lambda: runtime.index.get_run("t1", old) is None, 10, what="the scheduled retention pass")
        assert runtime.index.get_run("t1", fresh) is not None
        rows, _ = runtime.audit.list("t1", action_prefix="retention.tombstone")
        assert [(r["target"], r["actor"]) for r in rows] == [(old, "system:retention")]
    finally:
        runtime.stop()


def test_cli_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path))
    runtime.start(grpc=False)
    try:
        old, fresh = _old_run(runtime, "t2", 45), _old_run(runtime, "t2", 2)
    finally:
        runtime.stop()
    assert cli_main(["admin", "retention", "--data-dir", str(tmp_path), "--tenant", "t2"]) == 0
    assert "t2: 1 runs, 1 steps deleted (older than 30 days)" in capsys.readouterr().out
    index = RunIndex(tmp_path / "traceward.sqlite3")
    assert index.get_run("t2", old) is None and index.get_run("t2", fresh) is not None
    assert AuditLog(index).verify("t2").ok


def test_audit_pruning_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    index = RunIndex(tmp_path / "a.sqlite3")
    audit = AuditLog(index)
    rows = [audit.append("t", actor="key:x", action="key.create", target=str(i)) for i in range(5)]
    audit.append("other", actor="key:y", action="key.create")
    assert prune_audit(index, audit, "t", rows[2]["ts_ns"] + 1, actor="system:retention") == 3
    verdict = audit.verify("t")
    assert verdict.ok and verdict.rows_checked == 3  # two survivors + the audit.pruned row
    assert [r["target"] for r in audit.list("t", action_prefix="key.")[0]] == ["4", "3"]
    pruned = audit.list("t", action_prefix="audit.pruned")[0][0]
    assert pruned["details"]["rows"] == 3 and pruned["details"]["anchor_hash"] == rows[2]["row_hash"]
    assert prune_audit(index, audit, "t", time.time_ns() + 1, actor="system:retention") == 3  # everything
    audit.append("t", actor="key:x", action="key.revoke")
    assert audit.verify("t").ok and audit.verify("other").ok
    with index.transaction() as db:
        db.execute("UPDATE audit_log SET actor = 'key:evil' WHERE tenant_id = 't' AND action = 'key.revoke'")
    assert not audit.verify("t").ok


def test_audit_retention_is_independent_of_run_retention(tmp_path: Path) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, retention_days=1, audit_retention_days=365))
    runtime.start(grpc=False)
    try:
        _old_run(runtime, "t3", 2)
        first = runtime.retention.run_tenant("t3")
        assert first["runs_deleted"] == 1 and first["audit_rows_pruned"] == 0
        later = runtime.retention.run_tenant("t3", now_ns=time.time_ns() + 366 * NS_PER_DAY)
        assert later["audit_rows_pruned"] >= 2  # the tombstone and the first pass are now over a year old
        assert runtime.audit.verify("t3").ok
    finally:
        runtime.stop()


def _approval_row(index: RunIndex, tenant: str, trace: str, args: str) -> None:
    with index.transaction() as db:
        db["approvals"].insert({"approval_id": os.urandom(8).hex(), "tenant_id": tenant, "project_id": "p",
                                "tool": "payments.send", "args": args, "trace_id": trace, "span_id": os.urandom(8).hex(),
                                "requested_by": "key:agent", "status": "approved", "created_ns": time.time_ns(),
                                "expires_ns": time.time_ns()})


def test_retention_deletes_the_approval_requests_of_expired_runs(tmp_path: Path) -> None:
    """Approval requests carry the tool arguments an agent sent: they go with their run."""
    runtime = Runtime(Settings(data_dir=tmp_path, retention_days=7))
    runtime.start(grpc=False)
    try:
        old, fresh = _old_run(runtime, "t3", 8), _old_run(runtime, "t3", 1)
        other_tenant_same_id = old
        _approval_row(runtime.index, "t3", old, '{"card": "old-run-secret"}')
        _approval_row(runtime.index, "t3", fresh, '{"card": "fresh"}')
        _approval_row(runtime.index, "t4", other_tenant_same_id, '{"card": "another tenant"}')
        summary = runtime.retention.run_tenant("t3", actor="test", trigger="manual")
        assert summary["runs_deleted"] == 1
        left = [(r["tenant_id"], r["trace_id"]) for r in runtime.index.query("SELECT * FROM approvals ORDER BY tenant_id")]
        assert sorted(left) == sorted([("t3", fresh), ("t4", old)])
    finally:
        runtime.stop()
