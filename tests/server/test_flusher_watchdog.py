"""The flusher watchdog end to end: a stuck flusher is found, and a busy or idle one is left alone.

Real servers on loopback (``tests.live.LiveServer``) with the stall limit cut to 3 s, under the durability
test's load (stock OTLP gRPC exporters). Faults other than SIGSTOP are injected by
``tests/server/faults/sitecustomize.py`` (on PYTHONPATH), which patches the server and its flusher process.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.live import LiveServer, wait_until
from tests.server.test_durability import BATCH, Load
from tests.server.test_flusher_process import assert_exactly_once, flusher_of, load_threads, stop_load

pytestmark = pytest.mark.e2e

STALL_S = 3.0  # long enough that one flush phase on a loaded 2-core CI machine is not a stall
FAULTS = Path(__file__).parent / "faults"
ROOT = Path(__file__).resolve().parents[2]




def start(servers: list[LiveServer], tmp_path: Path, **env: str) -> LiveServer:
    extra = {"TRACEWARD_FLUSHER_STALL_S": str(STALL_S), **env}
    if any(name.startswith("TW_FAULT_") for name in env):
        extra["PYTHONPATH"] = f"{FAULTS}:{ROOT}"
    server = LiveServer(tmp_path / "data", extra_env=extra)
    servers.append(server)
    return server.start()


def is_gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def flusher_pid(server: LiveServer) -> int | None:
    """The flusher process's pid; None between one's death and its successor's start."""
    assert server.proc is not None
    children = psutil.Process(server.proc.pid).children()
    return children[0].pid if children else None


def metric(server: LiveServer, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", server.get("/metrics").text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_a_sigstopped_flusher_process_is_killed_and_replaced_and_loses_nothing(servers: list[LiveServer],
                                                                              tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    first = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 20 * BATCH, 30, what="some acknowledged batches")
    first.send_signal(signal.SIGSTOP)  # alive, holding its lock and socket, doing nothing
    stopped = time.monotonic()
    seen: dict[str, object] = {}

    def stall_reported() -> bool:
        seen.update(server.get("/healthz").json())
        return seen["flusher_stalls"] == 1
    wait_until(stall_reported, STALL_S + 10, what="/healthz to report the stall")
    assert seen["status"] == "degraded" and seen["flusher_stalled"] is True
    wait_until(lambda: is_gone(first), 5, what="the stopped flusher to be killed")
    killed_after = time.monotonic() - stopped
    wait_until(lambda: flusher_pid(server) not in (None, first.pid), 30, what="a new flusher process")
    stop_load(threads, stop)

    assert_exactly_once(server, load)
    assert STALL_S <= killed_after < STALL_S + 6, killed_after
    log = server.log()
    assert "flusher stalled: no progress for" in log and "bytes of write-ahead log unflushed" in log
    assert f"killed flusher process {first.pid} (SIGKILL)" in log
    health = server.get("/healthz").json()
    assert (health["status"], health["flusher_stalls"], health["flusher_restarts"]) == ("ok", 1, 1)
    assert metric(server, "traceward_flusher_stalls_total") == 1
    assert metric(server, "traceward_flusher_stalled") == 0


def test_an_idle_flusher_with_an_empty_wal_is_never_stalled(servers: list[LiveServer], tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    child = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 4 * BATCH, 30, what="some acknowledged batches")
    stop_load(threads, stop)
    assert_exactly_once(server, load)

    time.sleep(4 * STALL_S)  # its last flush gets ever older; the WAL stays empty
    health = server.get("/healthz").json()
    assert (health["status"], health["flusher_stalls"], health["flusher_restarts"]) == ("ok", 0, 0)
    assert flusher_of(server).pid == child.pid
    assert "flusher stalled" not in server.log()


def test_a_slow_compaction_under_load_heartbeats_and_is_not_killed(servers: list[LiveServer],
                                                                   tmp_path: Path) -> None:
    server = start(servers, tmp_path, TW_FAULT_COMPACT_EVERY_S="1", TW_FAULT_SLOW_COMPACT_S=str(3 * STALL_S))
    child = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)  # the WAL fills while the compaction holds the flusher

    def compaction_done() -> bool:
        log = server.log()
        assert "flusher stalled" not in log, "the compaction was taken for a stall"
        return "fault: slow compaction done" in log
    wait_until(compaction_done, 30, what="the slow compaction")
    wait_until(lambda: len(load.acked) >= 20 * BATCH, 30, what="some acknowledged batches")
    stop_load(threads, stop)

    assert_exactly_once(server, load)
    health = server.get("/healthz").json()
    assert (health["flusher_stalls"], health["flusher_restarts"]) == (0, 0), server.log()
    assert flusher_of(server).pid == child.pid


def test_a_wedged_flusher_thread_is_reported_until_it_moves_again(servers: list[LiveServer],
                                                                  tmp_path: Path) -> None:
    block = tmp_path / "block-appends"
    server = start(servers, tmp_path, TRACEWARD_FLUSHER_PROCESS="false", TW_FAULT_BLOCK_APPEND_FILE=str(block))
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 4 * BATCH, 30, what="some acknowledged batches")
    block.touch()  # the step table's appends now hang, as on a wedged disk

    wait_until(lambda: server.get("/healthz").json()["flusher_stalled"], STALL_S + 10, what="the stall")
    health = server.get("/healthz").json()
    assert (health["status"], health["flusher_stalls"], health["flusher_restarts"]) == ("degraded", 1, 0)
    assert metric(server, "traceward_flusher_stalls_total") == 1
    assert metric(server, "traceward_flusher_stalled") == 1
    time.sleep(2 * STALL_S)
    assert server.get("/healthz").json()["flusher_stalls"] == 1  # reported once, not again each check
    assert "the flusher is a thread, which cannot be killed" in server.log()

    block.unlink()
    wait_until(lambda: server.get("/healthz").json()["status"] == "ok", 30, what="the flusher to move again")
    stop_load(threads, stop)
    assert_exactly_once(server, load)
    assert metric(server, "traceward_flusher_stalled") == 0
