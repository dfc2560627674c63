"""Online backup and restore on real servers: ``POST /v1/admin/backup``, ``traceward admin backup | verify-backup |
restore``, and ``traceward serve`` on the restored copy.

Under load from four OTel SDK exporters (OTLP/gRPC), a backup must hold every span acknowledged before it was
asked for, exactly once, with the chain hashes the original gave it; the copy must serve the same governance state
(policy, approval, keys), verify and seal, and take ingest on without duplicates. Hostile requests get the error
envelope and leave nothing behind. Killing the flusher process mid-backup: ``tests/server/test_backup_faults.py``.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from otlp_receiver.errors import ConfigError
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from server.cli import main as cli_main
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, wait_until
from tests.server.test_durability import BATCH, Load, exporter, key, stored_spans
from tests.server.test_flusher_process import load_threads, stop_load
from tests.server.test_flusher_watchdog import FAULTS, ROOT
from tests.server.test_governance_api import APPROVER_KEY, VIEWER_KEY, decide, start_governed_server

pytestmark = pytest.mark.e2e

OTHER_ADMIN_KEY = "tw_9c8d7e6f_other-tenant-admin-secret-0123456789abcd"
POLICY = """
default: {decision: deny, reason_code: default_deny}
tools:
  search: {action_class: read}
  db.migrate: {action_class: write}
rules:
  - {id: search, match: {tool: search}, decision: allow, reason_code: read_only}
  - {id: migrations, match: {tool: db.migrate}, decision: require_approval, reason_code: schema_change}
"""
"""The load's tool calls are allowed unconditionally (ungated: no violation steps); migrations need an approval."""


def backup(server: LiveServer, name: str | None = None, *, key: str = ADMIN_KEY, **body: Any) -> Any:
    return server.post("/v1/admin/backup", key=key, json={**({"name": name} if name else {}), **body})


def chain_of(server: LiveServer, run_id: str) -> list[tuple[int, str, str]]:
    return [(s["seq"], s["span_id"], s["chain_hash"]) for s in server.all_steps(run_id, limit=1000)]


def test_a_backup_under_load_restores_every_acknowledged_span_with_its_chain(servers: list[LiveServer],
                                                                             tmp_path: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    first = start_governed_server(tmp_path / "data", policy=POLICY, env={"TRACEWARD_BACKUP_DIR": str(root)})
    servers.append(first)
    approval_id = decide(first, "db.migrate", {"to": 7}).json()["approval_id"]
    assert first.post(f"/v1/approvals/{approval_id}:approve", key=APPROVER_KEY).status_code == 200
    made = first.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": "viewer", "name": "made before the backup"})
    policies = first.get("/v1/policies", key=VIEWER_KEY).json()

    load, stop = Load(), threading.Event()
    threads = load_threads(load, first, stop)
    try:
        wait_until(lambda: len(load.acked) >= 20 * BATCH, 60, what="some acknowledged batches")
        acked_before = {key(s) for s in list(load.acked)}
        response = backup(first, "under-load")
        wait_until(lambda: len(load.acked) >= len(acked_before) + 10 * BATCH, 60, what="ingest after the backup")
    finally:
        stop_load(threads, stop)
    assert response.status_code == 201, response.text
    summary = response.json()
    assert summary["name"] == "under-load" and summary["path"] == str(root / "under-load")
    assert summary["pause_ms"] < 2_000 and summary["files"] >= 5
    assert ("backup.create", str(root / "under-load"), summary["manifest_sha256"]) in backup_audit(first)
    assert cli_main(["admin", "verify-backup", str(root / "under-load")]) == 0
    assert cli_main(["admin", "restore", "--from", str(root / "under-load"), "--data-dir",
                     str(tmp_path / "restored")]) == 0

    second = LiveServer(tmp_path / "restored").start()  # new ports; replays the WAL copy on start
    servers.append(second)
    counts, runs = load_spans(second, load)
    missing = acked_before - set(counts)
    assert not missing, f"{len(missing)} spans acknowledged before the backup are missing, e.g. {sorted(missing)[:3]}"
    assert max(counts.values()) == 1
    assert set(counts) <= {key(s) for batch in load.sent for s in batch}
    assert set(counts) < {key(s) for s in load.acked}  # a point in time: what came later is not in it
    wait_until(lambda: {key(s) for s in load.acked} <= set(load_spans(first, load)[0]), 60, what="the original")
    for run_id in runs:
        restored = chain_of(second, run_id)
        assert restored == chain_of(first, run_id)[:len(restored)], run_id  # same seqs, spans, chain hashes
        assert second.get(f"/v1/runs/{run_id}/verify").json()["ok"], run_id

    # Governance state came back: the policy, the approval, the keys (and their signing keys: seals verify).
    assert second.get("/v1/policies", key=VIEWER_KEY).json() == policies
    assert second.get(f"/v1/approvals/{approval_id}", key=VIEWER_KEY).json()["status"] == "approved"
    assert second.get("/v1/runs", key=made.json()["key"]).status_code == 200
    assert second.get("/v1/audit/verify").json()["ok"]

    # Ingest continues on the copy: everything re-sent is stored once, seqs stay gap-free, final runs seal again.
    out = exporter(second, timeout=30)
    try:
        for batch in load.sent:
            assert out.export(batch) is SpanExportResult.SUCCESS
    finally:
        out.shutdown()
    attempted = {key(s) for batch in load.sent for s in batch}
    wait_until(lambda: set(load_spans(second, load)[0]) == attempted, 60, what="every re-sent span on the copy")
    counts, runs = load_spans(second, load)
    assert max(counts.values()) == 1
    for run_id, run in runs.items():
        if run["status"] == "succeeded":
            wait_until(lambda run_id=run_id, n=run["step_count"]: sealed_at(second, run_id) == n, 30,
                       what=f"run {run_id} sealed at its new head")
            assert second.get(f"/v1/runs/{run_id}/verify").json()["seal_ok"]


def load_spans(server: LiveServer, load: Load) -> tuple[Counter[tuple[str, str]], dict[str, dict[str, Any]]]:
    """``stored_spans`` (which checks seqs and step counts) of the load's runs only (not the decision's)."""
    ours = {format(t, "032x") for t in load.trace_ids}

    def stored() -> tuple[Counter[tuple[str, str]], dict[str, dict[str, Any]]]:
        counts, runs = stored_spans(server)
        return Counter({k: n for k, n in counts.items() if k[0] in ours}), \
            {r: run for r, run in runs.items() if r in ours}

    found: list[tuple[Counter[tuple[str, str]], dict[str, dict[str, Any]]]] = []

    def read() -> bool:
        try:
            found.append(stored())
        except AssertionError:  # a run read while a batch of it was being flushed: its count moved on
            return False
        return True
    wait_until(read, 30, what="a consistent read of the stored spans")
    return found[-1]


def sealed_at(server: LiveServer, run_id: str) -> int | None:
    verdict = server.get(f"/v1/runs/{run_id}/verify").json()
    return verdict["seal"]["step_count"] if verdict["ok"] and verdict["sealed"] and verdict["seal"] else None


def backup_audit(server: LiveServer) -> list[tuple[str, str | None, str | None]]:
    entries = server.get("/v1/audit", action="backup.", limit=100).json()["entries"]
    return [(e["action"], e["target"], e["details"].get("manifest_sha256")) for e in entries]


def test_hostile_backup_requests_are_refused_and_leave_nothing_behind(servers: list[LiveServer],
                                                                      tmp_path: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    (root / "taken").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    data = tmp_path / "data"
    index = RunIndex(data / "traceward.sqlite3")
    KeyStore(index).create(tenant_id="acme", project_id="default", role="admin", key_text=OTHER_ADMIN_KEY)
    index.writer.conn.close()
    server = start_governed_server(data, policy=None, env={"TRACEWARD_BACKUP_DIR": str(root)})
    servers.append(server)

    for name in ("../escape", "/tmp/abs", "a/b", ".hidden", "", "..", "a..b", "x" * 101, "bad\x00name", "sp ace"):
        response = server.post("/v1/admin/backup", key=ADMIN_KEY, json={"name": name})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] == "invalid_input"
    unknown = backup(server, path=str(tmp_path / "chosen-by-the-client"))
    assert unknown.status_code == 400
    for name in ("taken", "link"):
        taken = backup(server, name)
        assert taken.status_code == 409 and "already exists" in taken.json()["error"]["message"]
    for key_ in (VIEWER_KEY, APPROVER_KEY, INGEST_KEY):
        assert backup(server, "by-a-non-admin", key=key_).status_code == 403
    other = backup(server, "by-another-tenant", key=OTHER_ADMIN_KEY)
    assert other.status_code == 403 and "operator tenant" in other.json()["error"]["message"]
    assert sorted(p.name for p in root.iterdir()) == ["link", "taken"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data", "data-server.log"]

    with read_only(root):
        refused = backup(server, "no-permission")
    assert refused.status_code == 500, refused.text
    assert refused.json()["error"]["code"] == "backup_failed"
    assert "Operation not permitted" in refused.json()["error"]["message"] or \
        "Permission denied" in refused.json()["error"]["message"]
    assert sorted(p.name for p in root.iterdir()) == ["link", "taken"]
    assert ("backup.failed", str(root / "no-permission"), None) in backup_audit(server)
    assert server.get("/healthz").json()["status"] == "ok"
    assert backup(server, "once-allowed").status_code == 201  # the server carried on


class read_only:  # noqa: N801 - used as a context manager, like contextlib's
    """The directory refuses new entries, even to root (the immutable attribute; chmod for anyone else)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(self.path)], check=True)
        else:
            self.path.chmod(0o500)

    def __exit__(self, *_: object) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        else:
            self.path.chmod(0o700)


def test_without_a_backup_dir_the_api_refuses_clearly(live_server: LiveServer) -> None:
    response = backup(live_server, "anything")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "backup_not_configured" and "TRACEWARD_BACKUP_DIR" in error["message"]


def test_a_relative_backup_dir_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="TRACEWARD_BACKUP_DIR=backups: must be an absolute path"):
        Settings.from_env({"TRACEWARD_BACKUP_DIR": "backups"})


def test_cli_backs_up_a_stopped_data_dir_and_a_running_server_through_the_api(
        servers: list[LiveServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, data = tmp_path / "backups", tmp_path / "data"
    root.mkdir()
    server = LiveServer(data, extra_env={"TRACEWARD_BACKUP_DIR": str(root)}).start()
    servers.append(server)
    run_id = server.post("/v1/runs", json={"name": "cli"}).json()["run_id"]
    server.post(f"/v1/runs/{run_id}/steps", json={"steps": [
        {"type": "tool", "name": "lookup", "ts": "2026-01-01T00:00:00Z", "payload": {"i": i}} for i in range(7)]})
    wait_until(lambda: server.get(f"/v1/runs/{run_id}").json().get("step_count") == 7, 30, what="the steps")

    offline = tmp_path / "offline"
    assert cli_main(["admin", "backup", "--data-dir", str(data), "--to", str(offline)]) == 2
    assert "use `traceward admin backup --api URL" in capsys.readouterr().err and not offline.exists()
    key_file = tmp_path / "admin.key"
    key_file.write_text(ADMIN_KEY + "\n")
    assert cli_main(["admin", "backup", "--api", server.api_url, "--key-file", str(key_file), "--name", "via"]) == 0
    assert f"backup written to {root / 'via'}" in capsys.readouterr().out
    key_file.write_text(server.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": "viewer"}).json()["key"])
    assert cli_main(["admin", "backup", "--api", server.api_url, "--key-file", str(key_file)]) == 2
    assert "403 permission_denied" in capsys.readouterr().err

    expected = chain_of(server, run_id)
    server.stop()
    assert cli_main(["admin", "backup", "--data-dir", str(data), "--to", str(offline)]) == 0
    for copy in (root / "via", offline):
        assert cli_main(["admin", "verify-backup", str(copy)]) == 0
        restored = tmp_path / f"restored-{copy.name}"
        assert cli_main(["admin", "restore", "--from", str(copy), "--data-dir", str(restored)]) == 0
        started = LiveServer(restored).start()
        servers.append(started)
        assert chain_of(started, run_id) == expected
        started.stop()
    assert cli_main(["admin", "restore", "--from", str(offline), "--data-dir", str(data)]) == 2  # not empty


def test_a_backup_with_the_flusher_as_a_thread_replays_what_was_only_in_the_wal(servers: list[LiveServer],
                                                                                 tmp_path: Path) -> None:
    """The flusher a thread of the server, and slow (a fault: each round waits 2 s): the spans acknowledged just
    before the backup are in the WAL only, and come back from the WAL copy."""
    root = tmp_path / "backups"
    root.mkdir()
    server = LiveServer(tmp_path / "data", extra_env={
        "TRACEWARD_BACKUP_DIR": str(root), "TRACEWARD_FLUSHER_PROCESS": "false", "TW_FAULT_FLUSH_DELAY_S": "2",
        "PYTHONPATH": f"{FAULTS}:{ROOT}"}).start()
    servers.append(server)
    load = Load()
    out = exporter(server)
    try:
        for seed in range(5):
            batch = load.batch(random.Random(seed))
            assert out.export(batch) is SpanExportResult.SUCCESS
            load.acked.extend(batch)
    finally:
        out.shutdown()
    response = backup(server, "threaded")
    assert response.status_code == 201, response.text
    assert response.json()["wal"]["records"] >= 1
    assert cli_main(["admin", "restore", "--from", str(root / "threaded"), "--data-dir",
                     str(tmp_path / "restored")]) == 0
    restored = LiveServer(tmp_path / "restored").start()
    servers.append(restored)
    assert set(stored_spans(restored)[0]) == {key(s) for s in load.acked}
