"""Tamper evidence against a real server and its real files.

Each test sends its own finished run (so it is sealed), then tampers with what is on disk the way an attacker
with file access would — a payload edited inside a Parquet file (rewritten with pyarrow under the same name),
a step deleted, two steps swapped, a chain rewritten consistently, a whole run deleted (Delta delete + SQLite
rows, its seal remains), an audit row edited in SQLite — and checks that both ``GET /v1/runs/{id}/verify`` and
``traceward verify`` report the right first broken seq and why. An exported run verifies offline with the
public key and fails once the export is edited.

Every run is dated on its own day, so each sits alone in its Delta partition (and compaction never touches it).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from otlp_receiver.chain import chain_hash, encode_payload, genesis_hash, step_record
from otlp_receiver.encode import encode_request
from otlp_receiver.model import Span, SpanId, StatusCode, TraceId
from server.cli import main as cli_main
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

DAY_NS = 86_400 * 1_000_000_000
SECRET_NOTE = "the weather in Lisbon"


@dataclass
class SentRun:
    """A finished run this test sent."""

    run_id: str
    steps: int
    day: str


def make_run_spans(start_ns: int, children: int = 5) -> list[Span]:
    """A finished root (status OK) and ``children`` tool spans with small JSON payloads."""
    trace = TraceId(os.urandom(16).hex())
    root_id = SpanId(os.urandom(8).hex())
    spans = [Span(trace_id=trace, span_id=root_id, parent_span_id=None, name="invoke_agent planner", kind=1,
                  start_ns=start_ns, end_ns=start_ns + 10**9 * (children + 2), status_code=StatusCode.OK,
                  attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
                  resource={"service.name": "tamper-test"}, scope_name="tests")]
    for i in range(children):
        spans.append(Span(trace_id=trace, span_id=SpanId(os.urandom(8).hex()), parent_span_id=root_id,
                          name="execute_tool get_weather", kind=1, start_ns=start_ns + 10**9 * (i + 1),
                          end_ns=start_ns + 10**9 * (i + 1) + 5_000_000,
                          attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                                      "gen_ai.tool.call.arguments": orjson.dumps({"city": "Lisbon", "i": i}).decode(),
                                      "gen_ai.tool.call.result": SECRET_NOTE},
                          resource={"service.name": "tamper-test"}, scope_name="tests"))
    return spans


def send_run(server: LiveServer, days_ago: int, *, children: int = 5) -> SentRun:
    """Send one finished run over OTLP/HTTP protobuf and wait until it is stored (and sealed)."""
    start_ns = (time.time_ns() // DAY_NS - days_ago) * DAY_NS + 3_600 * 10**9
    spans = make_run_spans(start_ns, children)
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", content=encode_request(spans).SerializeToString(),
                          headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/x-protobuf"},
                          timeout=30)
    assert response.status_code == 200, response.text
    run_id = spans[0].trace_id
    server.wait_run(run_id, lambda r: r["status"] == "succeeded" and r["step_count"] == len(spans))
    day = time.strftime("%Y-%m-%d", time.gmtime(start_ns / 1e9))
    return SentRun(run_id, len(spans), day)


def api_verify(server: LiveServer, run_id: str) -> dict[str, Any]:
    response = server.get(f"/v1/runs/{run_id}/verify")
    assert response.status_code == 200, response.text
    return response.json()


def cli_verify(capsys: pytest.CaptureFixture[str], server: LiveServer, *args: str) -> tuple[int, str]:
    """``traceward verify`` in-process against the live server's data directory."""
    capsys.readouterr()
    code = cli_main(["verify", "--data-dir", str(server.data_dir), *args])
    return code, capsys.readouterr().out


# -- tampering with real files -----------------------------------------------------------------------------
def run_files(server: LiveServer, run: SentRun) -> list[Path]:
    """The Parquet files of the current Delta snapshot that hold rows of this run."""
    files = [Path(uri.removeprefix("file://")) for uri in DeltaTable(str(server.data_dir / "steps")).file_uris()]
    return [f for f in files if f"day={run.day}" in str(f) and run.run_id in pq.read_table(f, columns=["run_id"])
            .column("run_id").to_pylist()]


def rewrite_run_rows(server: LiveServer, run: SentRun, change: Any) -> None:
    """Rewrite the run's Parquet file in place (same name, same schema), rows changed by ``change(rows)``."""
    (path,) = run_files(server, run)
    table = pq.read_table(path)
    rows = table.to_pylist()
    mine = sorted((r for r in rows if r["run_id"] == run.run_id), key=lambda r: r["seq"])
    others = [r for r in rows if r["run_id"] != run.run_id]
    pq.write_table(pa.Table.from_pylist(others + change(mine), schema=table.schema), path)


def sqlite(server: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "traceward.sqlite3", timeout=30, isolation_level=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("tamper") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


# -- the tests -----------------------------------------------------------------------------------------------
def test_an_untampered_run_verifies(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=1)
    body = api_verify(server, run.run_id)
    assert body["ok"] and body["first_break"] is None and body["steps_checked"] == run.steps
    assert body["sealed"] and body["seal_ok"] and body["seal"]["step_count"] == run.steps
    assert body["head_hash"] == server.get(f"/v1/runs/{run.run_id}").json()["head_hash"] == body["seal"]["head_hash"]
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 0 and f"run {run.run_id}: OK, {run.steps} steps verified" in out and "seal OK" in out


def test_a_payload_edited_inside_a_parquet_file(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=2)

    def edit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert SECRET_NOTE in rows[3]["payload"]
        rows[3]["payload"] = rows[3]["payload"].replace(SECRET_NOTE, "the weather in Porto")
        return rows

    rewrite_run_rows(server, run, edit)
    body = api_verify(server, run.run_id)
    assert not body["ok"] and body["first_break"] == {"seq": 3, "reason": "payload_hash mismatch (payload altered)"}
    assert body["sealed"] and not body["seal_ok"] and body["steps_checked"] == 3
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 1 and "BROKEN at seq 3: payload_hash mismatch (payload altered)" in out
    failures = server.get("/v1/audit", action="verify.failure").json()
    assert {(e["target"], e["details"]["seq"], e["details"]["source"]) for e in failures["entries"]} >= {
        (run.run_id, 3, "api"), (run.run_id, 3, "cli")}


def test_a_payload_damaged_into_invalid_json(server: LiveServer) -> None:
    """The steps API serves stored payloads as they are (no decode): damaged text must be a clear error
    naming the step, not a body that is not JSON. Steps before it still page; /verify names it."""
    run = send_run(server, days_ago=2)  # shares a partition only with tests that rewrite files: retention never reads it

    def damage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[3]["payload"] = rows[3]["payload"][:-7]  # truncated, as a torn write would leave it
        return rows

    rewrite_run_rows(server, run, damage)
    response = server.get(f"/v1/runs/{run.run_id}/steps")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "corrupt_data" and not error["retryable"]
    assert error["details"] == {"run_id": run.run_id, "seq": "3", "column": "payload"}
    assert f"/v1/runs/{run.run_id}/verify" in error["message"]
    before = server.get(f"/v1/runs/{run.run_id}/steps", limit=3)
    assert before.status_code == 200 and [s["seq"] for s in before.json()["steps"]] == [0, 1, 2]
    assert api_verify(server, run.run_id)["first_break"] == {"seq": 3, "reason": "malformed row (payload is not JSON)"}
    assert server.get("/healthz").status_code == 200


def test_a_step_deleted(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=3)
    rewrite_run_rows(server, run, lambda rows: rows[:2] + rows[3:])
    body = api_verify(server, run.run_id)
    assert not body["ok"] and body["first_break"] == {"seq": 2, "reason": "seq gap (expected 2, got 3)"}
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 1 and "BROKEN at seq 2: seq gap (expected 2, got 3)" in out


def test_two_steps_swapped(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=4)

    def swap(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[1]["seq"], rows[4]["seq"] = rows[4]["seq"], rows[1]["seq"]
        return rows

    rewrite_run_rows(server, run, swap)
    body = api_verify(server, run.run_id)
    assert not body["ok"] and body["first_break"] == {"seq": 1,
                                                      "reason": "prev_hash does not link to the previous step"}
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 1 and "BROKEN at seq 1: prev_hash does not link to the previous step" in out


def test_a_consistently_rewritten_chain_is_caught_by_the_seal(server: LiveServer,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker re-hashes every step after the edit and updates the run index: only the signed seal disagrees."""
    run = send_run(server, days_ago=5)

    def rechain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[2]["payload"], rows[2]["payload_hash"] = encode_payload(
            {**orjson.loads(rows[2]["payload"]), "name": "nothing to see"})
        prev = genesis_hash("default", run.run_id)
        for row in rows:
            row["prev_hash"] = prev
            row["chain_hash"] = prev = chain_hash(prev, step_record(**{k: row[k] for k in (
                "seq", "type", "name", "trace_id", "span_id", "parent_span_id", "start_ns", "payload_hash",
                "redaction_meta")}))
        with sqlite(server) as db:
            db.execute("UPDATE runs SET head_hash = ? WHERE tenant_id = 'default' AND run_id = ?", [prev, run.run_id])
        return rows

    rewrite_run_rows(server, run, rechain)
    body = api_verify(server, run.run_id)
    last = run.steps - 1
    assert not body["ok"] and body["sealed"] and not body["seal_ok"] and body["steps_checked"] == run.steps
    assert body["first_break"] == {"seq": last, "reason": f"chain head at seq {last} differs from the signed seal "
                                                          "(chain rewritten)"}
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 1 and f"BROKEN at seq {last}: chain head at seq {last} differs from the signed seal" in out


def test_a_whole_run_deleted(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=6)
    # Stopped meanwhile: a second Delta writer makes the server's next append fail its conflict check (its
    # snapshot is stale after a foreign delete), and the flusher retries with that stale snapshot forever.
    server.stop()
    DeltaTable(str(server.data_dir / "steps")).delete(f"day = '{run.day}' AND run_id = '{run.run_id}'")
    with sqlite(server) as db:
        tables = [r[0] for r in db.execute("SELECT m.name FROM sqlite_master m WHERE m.type = 'table' AND EXISTS "
                                           "(SELECT 1 FROM pragma_table_info(m.name) WHERE name = 'run_id')")]
        for table in tables:
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run.run_id])  # everything but the audit log
    server.start()
    assert server.get(f"/v1/runs/{run.run_id}").status_code == 404
    body = api_verify(server, run.run_id)
    assert not body["ok"] and body["deleted"] == "missing" and body["sealed"] and body["first_break"]["seq"] == 0
    assert "run missing" in body["first_break"]["reason"] and "no retention tombstone" in body["first_break"]["reason"]
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 1 and f"run {run.run_id}: BROKEN at seq 0: run missing" in out
    code, out = cli_verify(capsys, server, "--tenant", "default")
    assert code == 1 and f"run {run.run_id}: BROKEN at seq 0: run missing" in out


def test_a_run_deleted_by_retention_is_explained_by_its_tombstone(server: LiveServer,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=9)
    response = httpx.put(f"{server.api_url}/v1/admin/retention", json={"retention_days": 7},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert server.post("/v1/admin/retention:run", key=ADMIN_KEY).status_code == 200
    httpx.put(f"{server.api_url}/v1/admin/retention", json={"retention_days": None},
              headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    body = api_verify(server, run.run_id)
    assert body["ok"] and body["deleted"] == "retention" and body["sealed"]
    code, out = cli_verify(capsys, server, "--run", run.run_id)
    assert code == 0 and "deleted by retention" in out


def test_an_audit_row_edited(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = send_run(server, days_ago=0)
    seal_id = api_verify(server, run.run_id)["seal"]["audit_id"]
    with sqlite(server) as db:
        (details,) = db.execute("SELECT details FROM audit_log WHERE id = ?", [seal_id]).fetchone()
        doc = orjson.loads(details)
        doc["seal"]["step_count"] = run.steps - 1  # "it only ever had these steps"
        db.execute("UPDATE audit_log SET details = ? WHERE id = ?", [orjson.dumps(doc).decode(), seal_id])
    body = api_verify(server, run.run_id)
    assert not body["ok"] and body["sealed"] and not body["seal_ok"]
    assert body["first_break"]["reason"] == (f"seal signature invalid (audit row {seal_id}): the seal record was "
                                             "altered")
    code, out = cli_verify(capsys, server, "--tenant", "default")
    assert code == 1
    assert f"audit log BROKEN at row {seal_id}: row_hash mismatch: the row was edited" in out
    assert f"seal signature invalid (audit row {seal_id})" in out
    assert not server.get("/v1/audit/verify").json()["ok"]


def test_offline_verification_of_an_export(server: LiveServer, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    run = send_run(server, days_ago=8)
    export, jwks, pem = tmp_path / "export", tmp_path / "jwks.json", tmp_path / "key.pem"
    assert cli_main(["export-run", run.run_id, "--out", str(export), "--data-dir", str(server.data_dir)]) == 0
    assert cli_main(["admin", "public-key", "--out", str(jwks), "--data-dir", str(server.data_dir)]) == 0
    assert cli_main(["admin", "public-key", "--format", "pem", "--out", str(pem),
                     "--data-dir", str(server.data_dir)]) == 0
    assert sorted(p.name for p in export.iterdir()) == ["jwks.json", "manifest.json", "seals.json", "steps.jsonl"]
    for key in (jwks, pem):
        code, out = cli_verify(capsys, server, "--offline", str(export), "--public-key", str(key))
        assert code == 0 and f"run {run.run_id}: OK, {run.steps} steps verified" in out

    other = tmp_path / "other.json"
    other.write_bytes(orjson.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519",
                                              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}))
    code, out = cli_verify(capsys, server, "--offline", str(export), "--public-key", str(other))
    assert code == 1 and "signed by unknown key" in out

    lines = (export / "steps.jsonl").read_bytes().splitlines()
    row = orjson.loads(lines[2])
    row["payload"] = row["payload"].replace("Lisbon", "Porto")
    (export / "steps.jsonl").write_bytes(b"\n".join([*lines[:2], orjson.dumps(row), *lines[3:]]) + b"\n")
    code, out = cli_verify(capsys, server, "--offline", str(export), "--public-key", str(jwks))
    assert code == 1 and "BROKEN at seq 2: payload_hash mismatch (payload altered)" in out

    (export / "steps.jsonl").write_bytes(b"\n".join(lines[:-1]) + b"\n")  # the last step cut off
    code, out = cli_verify(capsys, server, "--offline", str(export), "--public-key", str(jwks))
    assert code == 1 and f"BROKEN at seq {run.steps - 1}: step count {run.steps - 1} differs from expected" in out
