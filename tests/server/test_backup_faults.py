"""A backup interrupted by a SIGKILL of the flusher process, on a real server, with a fault holding the backup
between the flusher's pause and the end of its copy (``TW_FAULT_BLOCK_BACKUP_COPY_FILE`` in
``tests/server/faults/sitecustomize.py``: a slow backup disk).

While it is held there, the flusher goes on (its pause is over: new exports become queryable) and a second
backup is refused. Killed then, it leaves only its hidden partial directory, which does not verify; the server
restarts the flusher process, answers the request with a retryable error, audits the failure, and the next
backup works.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from otlp_receiver.backup import verify_backup
from server.cli import main as cli_main
from tests.live import ADMIN_KEY, LiveServer, wait_until
from tests.server.test_durability import Load, exporter, key
from tests.server.test_flusher_process import flusher_of
from tests.server.test_flusher_watchdog import FAULTS, ROOT, flusher_pid

pytestmark = pytest.mark.e2e


def export(server: LiveServer, load: Load, seed: int) -> set[tuple[str, str]]:
    out = exporter(server)
    try:
        batch = load.batch(random.Random(seed))
        assert out.export(batch) is SpanExportResult.SUCCESS
    finally:
        out.shutdown()
    return {key(s) for s in batch}


def stored(server: LiveServer, load: Load) -> set[tuple[str, str]]:
    found = set()
    for trace_id in load.trace_ids:
        run_id = format(trace_id, "032x")
        if server.get(f"/v1/runs/{run_id}").status_code == 200:
            found |= {(run_id, s["span_id"]) for s in server.all_steps(run_id, limit=1000)}
    return found


def test_a_backup_killed_mid_copy_leaves_no_complete_backup_and_the_server_recovers(servers: list[LiveServer],
                                                                                   tmp_path: Path) -> None:
    root, block = tmp_path / "backups", tmp_path / "slow-disk"
    root.mkdir()
    block.touch()
    server = LiveServer(tmp_path / "data", extra_env={
        "TRACEWARD_BACKUP_DIR": str(root), "TW_FAULT_BLOCK_BACKUP_COPY_FILE": str(block),
        "PYTHONPATH": f"{FAULTS}:{ROOT}"}).start()
    servers.append(server)
    load = Load()
    before = export(server, load, 1)
    wait_until(lambda: before <= stored(server, load), 30, what="the first spans to be flushed (data files)")

    answer: dict[str, Any] = {}
    asking = threading.Thread(target=lambda: answer.update(response=server.post(
        "/v1/admin/backup", key=ADMIN_KEY, json={"name": "interrupted"})), daemon=True)
    asking.start()
    wait_until(lambda: "fault: backup copy blocked" in server.log(), 30, what="the backup to be copying")
    during = export(server, load, 2)
    wait_until(lambda: during <= stored(server, load), 30, what="spans sent during the copy to be flushed")
    busy = server.post("/v1/admin/backup", key=ADMIN_KEY, json={"name": "concurrent"})
    assert busy.status_code == 409 and "already running" in busy.json()["error"]["message"]
    (partial,) = root.iterdir()
    assert partial.name.startswith(".interrupted.partial-")

    child = flusher_of(server)
    child.send_signal(signal.SIGKILL)
    asking.join(timeout=60)
    response = answer["response"]
    assert response.status_code == 503 and response.json()["error"]["retryable"], response.text
    assert not (root / "interrupted").exists()
    assert not (partial / "manifest.json").exists()
    assert verify_backup(partial).problems == ("no manifest.json: not a complete backup",)
    assert cli_main(["admin", "verify-backup", str(partial)]) == 1

    wait_until(lambda: flusher_pid(server) not in (None, child.pid), 30, what="a new flusher process")
    block.unlink()
    after = export(server, load, 3)
    wait_until(lambda: after <= stored(server, load), 30, what="ingest after the restart")
    retried = server.post("/v1/admin/backup", key=ADMIN_KEY, json={"name": "after"})
    assert retried.status_code == 201, retried.text
    assert verify_backup(root / "after").ok
    actions = [(e["action"], e["target"]) for e in
               server.get("/v1/audit", action="backup.", limit=10).json()["entries"]]
    assert ("backup.failed", str(root / "interrupted")) in actions and ("backup.create", str(root / "after")) in actions
    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["flusher_restarts"] == 1
