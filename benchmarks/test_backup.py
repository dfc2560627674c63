"""Backing up a running store of 200,000 steps (``POST /v1/admin/backup``): how long it takes, and how long the
flusher is paused (the manifest's ``pause_ms``: the stores' gate held while the backup opens its SQLite snapshot,
brings the Delta table to its current version and copies that version's log; the data files, the SQLite snapshot
and the WAL are copied after it, with the flusher running).

The store is filled through a real ``traceward serve`` over OTLP/gRPC (4 clients, 1,000-span exports of realistic
~1 KB agent spans: ``benchmarks.spans``), so the Delta table has the files and commits flushing really makes. The
second benchmark backs it up while 2 clients keep exporting. With ``--benchmark-disable`` the store has 4,000 steps.

    .venv/bin/python -m pytest benchmarks/test_backup.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.spans import make_agent_request
from benchmarks.test_ingest import _flushed_steps, _send_all
from tests.live import ADMIN_KEY, LiveServer

FULL_STEPS, QUICK_STEPS, PER_REQUEST, CLIENTS = 200_000, 4_000, 1_000, 4
_names = itertools.count(1)


@pytest.fixture(scope="module")
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    steps = QUICK_STEPS if request.config.getoption("benchmark_disable", default=False) else FULL_STEPS
    root = tmp_path_factory.mktemp("backup-bench")
    (root / "backups").mkdir()
    srv = LiveServer(root / "data", extra_env={"TRACEWARD_BACKUP_DIR": str(root / "backups")}).start()
    per_client = steps // PER_REQUEST // CLIENTS or 1
    started = time.perf_counter()
    _export(srv, [[make_agent_request(PER_REQUEST, seed=c * 10_000 + i).SerializeToString()
                   for i in range(per_client)] for c in range(CLIENTS)])
    total = CLIENTS * per_client * PER_REQUEST
    while _flushed_steps(srv) < total:
        time.sleep(0.1)
    print(f"\nstore of {total} steps ingested and flushed in {time.perf_counter() - started:.1f} s")
    yield srv
    srv.stop()


def _export(srv: LiveServer, batches: list[list[bytes]]) -> None:
    threads = [threading.Thread(target=_send_all, args=(srv.grpc_port, b)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _backup(srv: LiveServer) -> dict[str, Any]:
    response = httpx.post(f"{srv.api_url}/v1/admin/backup", json={"name": f"bench-{next(_names)}"},
                          headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=600)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _report(benchmark: Any, label: str, summaries: list[dict[str, Any]]) -> None:
    pauses = [s["pause_ms"] for s in summaries]
    durations = [s["duration_ms"] for s in summaries]
    last = summaries[-1]
    benchmark.extra_info.update(pause_ms_max=max(pauses), duration_ms_max=max(durations), files=last["files"],
                                mib=round(last["bytes"] / 2**20, 1), wal_records=last["wal"]["records"])
    print(f"\n{label}: {len(summaries)} backups of {last['bytes'] / 2**20:.0f} MiB in {last['files']} files: "
          f"{min(durations):.0f}-{max(durations):.0f} ms each (as the backup measured itself); flusher paused "
          f"{min(pauses):.1f}-{max(pauses):.1f} ms; WAL records to replay in the last: {last['wal']['records']}")


def test_backup_of_a_200k_step_store(benchmark: Any, store: LiveServer) -> None:
    summaries: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: summaries.append(_backup(store)), rounds=3, iterations=1)
    _report(benchmark, "idle store", summaries)


def test_backup_of_a_200k_step_store_while_ingesting(benchmark: Any, store: LiveServer) -> None:
    """2 clients export 1,000-span requests the whole time; the pause is taken between two of their flushes."""
    stop = threading.Event()
    sent = [0]

    def keep_exporting(client: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            _send_all(store.grpc_port, [make_agent_request(PER_REQUEST, seed=10**6 + client * 10_000 + i)
                                        .SerializeToString()])
            sent[0] += PER_REQUEST

    clients = [threading.Thread(target=keep_exporting, args=(c,), daemon=True) for c in range(2)]
    for thread in clients:
        thread.start()
    summaries: list[dict[str, Any]] = []
    try:
        time.sleep(2.0)
        benchmark.pedantic(lambda: summaries.append(_backup(store)), rounds=3, iterations=1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
    _report(benchmark, f"while ingesting ({sent[0]} spans exported meanwhile)", summaries)
