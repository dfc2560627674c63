"""The flusher in a process of its own (the default): crashes, locks, key rotation, shutdown.

Real servers on loopback (``tests.live.LiveServer``) under the durability test's load: every acknowledged
span must be stored exactly once whichever process is SIGKILLed. The flusher process is the server's only
child (it is started with subprocess, not multiprocessing: no resource tracker).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from otlp_receiver.errors import ConfigError
from otlp_receiver.model import Span as ModelSpan
from otlp_receiver.model import SpanId, TraceId
from server.cli import main as cli_main
from server.locks import FLUSHER_LOCK, DataDirLock
from server.runtime import Runtime
from server.sealing import latest_seal
from server.settings import Settings
from tests.live import LiveServer, wait_until
from tests.server.test_durability import BATCH, THREADS, Load, key, stored_spans

pytestmark = pytest.mark.e2e




def flusher_of(server: LiveServer) -> psutil.Process:
    """The server's flusher process (its one child)."""
    assert server.proc is not None
    (child,) = psutil.Process(server.proc.pid).children()
    return child


def load_threads(load: Load, server: LiveServer, stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=load.run_thread, args=(server, stop, seed), daemon=True)
               for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    return threads


def stop_load(threads: list[threading.Thread], stop: threading.Event) -> None:
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def assert_exactly_once(server: LiveServer, load: Load) -> None:
    acked = {key(s) for s in load.acked}
    attempted = {key(s) for batch in load.sent for s in batch}

    def all_there() -> bool:
        try:
            return acked <= set(stored_spans(server)[0])
        except AssertionError:  # a run read while a batch of it was being flushed: its count moved on
            return False
    wait_until(all_there, 60, what="every acknowledged span to be stored")
    counts, _ = stored_spans(server)
    assert max(counts.values()) == 1, f"duplicated: {[k for k, n in counts.items() if n > 1][:5]}"
    assert set(counts) <= attempted


def test_sigkill_of_the_flusher_process_mid_load_restarts_it_and_loses_nothing(servers: list[LiveServer],
                                                                               tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    servers.append(server)
    first = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 20 * BATCH, 30, what="some acknowledged batches")
    first.send_signal(signal.SIGKILL)  # mid-flush, most likely: it flushes continuously under this load
    time.sleep(1.5)  # acknowledging goes on while no flusher runs: the WAL holds it
    stop_load(threads, stop)

    wait_until(lambda: flusher_of(server).pid != first.pid, 30, what="a new flusher process")
    assert_exactly_once(server, load)
    assert "flusher process exited (code -9); restarting it" in server.log()
    health = server.get("/healthz").json()
    assert health["spans_accepted"] >= len({key(s) for s in load.acked}) and health["flusher_restarts"] == 1


def test_sigkill_of_the_server_leaves_a_flusher_that_drains_and_exits(servers: list[LiveServer],
                                                                      tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir).start()
    servers.append(server)
    child = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 20 * BATCH, 30, what="some acknowledged batches")
    server.kill9()
    stop_load(threads, stop)

    child.wait(timeout=30)  # the orphan drains what the WAL held and exits on its own
    assert "the server went away; draining the write-ahead log" in server.log()
    second = LiveServer(data_dir).start()  # replays whatever the orphan had not flushed
    servers.append(second)
    assert_exactly_once(second, load)


def test_a_new_flusher_waits_for_the_one_still_holding_the_lock(servers: list[LiveServer], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    orphan = DataDirLock(data_dir, FLUSHER_LOCK)  # stands in for an orphaned flusher still draining
    orphan.acquire(what="test")
    server = LiveServer(data_dir)
    servers.append(server)
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    wait_until(lambda: "flusher process: waiting for process" in server.log(), 30, what="the flusher to wait")
    assert starting.is_alive()  # not serving: it would replay the WAL under the orphan's feet
    orphan.release()
    starting.join(timeout=60)
    assert server.get("/healthz").status_code == 200


def test_a_second_server_on_the_same_data_dir_is_refused(servers: list[LiveServer], tmp_path: Path) -> None:
    first = LiveServer(tmp_path / "data").start()
    servers.append(first)
    second = LiveServer(tmp_path / "data")
    servers.append(second)
    with pytest.raises(RuntimeError, match="server.lock is locked by process"):
        second.start()
    assert first.get("/healthz").status_code == 200


def test_cli_retention_is_refused_while_a_server_runs(servers: list[LiveServer], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    servers.append(LiveServer(tmp_path / "data").start())
    assert cli_main(["admin", "retention", "--data-dir", str(tmp_path / "data")]) == 2
    assert "use POST /v1/admin/retention:run" in capsys.readouterr().err


def test_sigterm_stops_the_flusher_process_with_the_server(servers: list[LiveServer], tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    servers.append(server)
    child = flusher_of(server)
    server.stop()
    assert server.proc is not None and server.proc.returncode == 0
    assert not child.is_running()


def test_sigterm_to_the_whole_process_group_lets_the_server_stop_its_flusher(servers: list[LiveServer],
                                                                              tmp_path: Path) -> None:
    """systemd's default stop (KillMode=control-group), `timeout` and container stops signal every process at
    once: the flusher must not die mid-flush and be "restarted" while the server shuts down; the server stops
    it after its final drain, as on a SIGTERM to the server alone."""
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir, own_process_group=True).start()
    servers.append(server)
    child = flusher_of(server)
    load, stop = Load(), threading.Event()
    threads = load_threads(load, server, stop)
    wait_until(lambda: len(load.acked) >= 10 * BATCH, 30, what="some acknowledged batches")
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGTERM)
    stop_load(threads, stop)

    assert server.proc.wait(timeout=60) == 0
    child.wait(timeout=60)  # (not our child: psutil cannot tell its exit code)
    assert "flusher process exited" not in server.log(), server.log()
    second = LiveServer(data_dir).start()
    servers.append(second)
    assert_exactly_once(second, load)


def test_rotated_signing_keys_seal_in_the_flusher_process(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path / "data", wal_fsync=False, seal_interval_s=0))
    rt.start(grpc=False)
    try:
        before = rt.governance.keys.current_kid
        first = finished_run(rt, "0" * 31 + "1")
        rt.governance.keys = rt.governance.keys.rotate()
        second = finished_run(rt, "0" * 31 + "2")
        assert seal_kid(rt, first) == before
        assert seal_kid(rt, second) == rt.governance.keys.current_kid != before
    finally:
        rt.stop()


def finished_run(rt: Runtime, trace_id: str) -> str:
    now = time.time_ns()
    root = ModelSpan(trace_id=TraceId(trace_id), span_id=SpanId("a" * 16), parent_span_id=None, name="agent",
                     kind=1, start_ns=now - 10**9, end_ns=now, status_code=1)
    result = rt.pipeline.ingest_spans("default", "default", [root])
    assert rt.flusher.wait_flushed(result.wal_position)
    return trace_id


def seal_kid(rt: Runtime, run_id: str) -> str:
    seal = latest_seal(rt.index, "default", run_id)
    assert seal is not None, f"run {run_id} was not sealed"
    return str(seal.seal["key_id"])


def test_the_flusher_process_setting_is_validated() -> None:
    assert Settings().flusher_process
    assert not Settings.from_env({"TRACEWARD_FLUSHER_PROCESS": "false"}).flusher_process
    with pytest.raises(ConfigError, match="TRACEWARD_FLUSHER_PROCESS='thread'"):
        Settings.from_env({"TRACEWARD_FLUSHER_PROCESS": "thread"})
