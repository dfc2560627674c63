"""GET /readyz end to end: ready after start, not ready while it should get no traffic, ready again after.

Real servers on loopback (``tests.live.LiveServer``) fed by the stock OTLP gRPC exporter (the durability
test's load). Faults: SIGSTOP / SIGKILL of the flusher process, ``tests/server/faults/sitecustomize.py`` (a
flusher start held, a step-table append wedged), a full tmpfs and a read-only bind mount over the data dir.
The two storage faults are real file systems: the server runs in user and mount namespaces of its own
(``unshare``, no root needed where unprivileged user namespaces are allowed), where the test mounts them.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.live import INGEST_KEY, LiveServer, wait_until
from tests.server.test_durability import Load, exporter
from tests.server.test_error_envelope import assert_envelope
from tests.server.test_flusher_process import assert_exactly_once, flusher_of

pytestmark = pytest.mark.e2e

FAULTS = Path(__file__).parent / "faults"
ROOT = Path(__file__).resolve().parents[2]
STALL_S = 3.0
TMPFS_BYTES = 32 * 1024 * 1024
EXPORT_LIMIT = 1024 * 1024
"""TRACEWARD_MAX_{MESSAGE,HTTP_BODY}_BYTES in the storage tests: less free space than this is a full disk."""


def start(servers: list[LiveServer], tmp_path: Path, *, launcher: tuple[str, ...] = (), **env: str) -> LiveServer:
    extra = dict(env)
    if any(name.startswith("TW_FAULT_") for name in env):
        extra["PYTHONPATH"] = f"{FAULTS}:{ROOT}"
    server = LiveServer(tmp_path / "data", extra_env=extra, launcher=launcher)
    servers.append(server)
    return server.start()


def readyz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=30)


def reasons(resp: httpx.Response) -> list[str]:
    """The reasons of a not-ready answer (the error envelope's details, in order); [] when ready."""
    if resp.status_code == 200:
        assert resp.json() == {"status": "ready"}
        return []
    error = assert_envelope(resp, 503, "not_ready")
    assert error["retryable"] is True
    assert error["message"] == "not ready: " + ", ".join(error["details"])
    return list(error["details"])


def wait_reasons(server: LiveServer, expected: list[str], timeout_s: float = 30.0) -> httpx.Response:
    """Wait until /readyz on the API port gives exactly these reasons; the OTLP/HTTP port must agree then."""
    seen: list[httpx.Response] = []

    def matches() -> bool:
        seen.append(readyz(server.api_url))
        return reasons(seen[-1]) == expected
    try:
        wait_until(matches, timeout_s, what=f"/readyz reasons {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answer: {seen[-1].text if seen else None}") from None
    assert reasons(readyz(server.otlp_http_url)) == expected
    return seen[-1]


def metric(server: LiveServer, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", server.get("/metrics").text, re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


def export_ok(server: LiveServer, load: Load, rng: random.Random) -> None:
    """One batch over OTLP gRPC, acknowledged."""
    batch = load.batch(rng)
    load.sent.append(batch)
    assert exporter(server).export(batch) is SpanExportResult.SUCCESS
    load.acked.extend(batch)


def test_nothing_answers_before_start_then_ready_on_both_ports(servers: list[LiveServer], tmp_path: Path) -> None:
    hold = tmp_path / "hold-start"
    hold.touch()  # the first flusher process waits before its start-up drain: the server is not started
    server = LiveServer(tmp_path / "data", extra_env={"TW_FAULT_HOLD_START_FILE": str(hold),
                                                       "PYTHONPATH": f"{FAULTS}:{ROOT}"})
    servers.append(server)
    server.launch()
    wait_until(lambda: "fault: flusher start held" in server.log(), 60, what="the held flusher start")
    for url in (server.api_url, server.otlp_http_url):
        with pytest.raises(httpx.ConnectError):  # a probe counts a refused connection as not ready
            readyz(url)

    hold.unlink()
    wait_until(server._healthy, 60, what="the server to start")
    for url in (server.api_url, server.otlp_http_url):
        resp = readyz(url)
        assert resp.status_code == 200 and resp.json() == {"status": "ready"}
        assert "retry-after" not in resp.headers
    assert metric(server, "traceward_ready") == 1
    assert metric(server, 'traceward_not_ready{reason="flusher_restarting"}') == 0


def test_not_ready_while_the_flusher_process_restarts_yet_exports_are_taken(servers: list[LiveServer],
                                                                            tmp_path: Path) -> None:
    hold = tmp_path / "hold-start"
    server = start(servers, tmp_path, TW_FAULT_HOLD_START_FILE=str(hold))
    load, rng = Load(), random.Random(3)
    export_ok(server, load, rng)
    hold.touch()  # the successor waits before its drain, for as long as the test looks
    flusher_of(server).send_signal(signal.SIGKILL)

    resp = wait_reasons(server, ["flusher_restarting"])
    assert resp.headers["retry-after"] == "1"
    assert "replays the write-ahead log" in resp.json()["error"]["details"]["flusher_restarting"]
    assert metric(server, "traceward_ready") == 0
    assert metric(server, 'traceward_not_ready{reason="flusher_restarting"}') == 1
    assert server.get("/healthz").status_code == 200  # alive: liveness must not restart it
    export_ok(server, load, rng)  # ingest goes on into the write-ahead log
    assert reasons(readyz(server.api_url)) == ["flusher_restarting"]

    hold.unlink()
    wait_reasons(server, [])
    assert_exactly_once(server, load)
    assert server.get("/healthz").json()["flusher_restarts"] == 1
    assert metric(server, "traceward_ready") == 1


def test_not_ready_while_the_flusher_process_is_stalled_until_its_successor_is_ready(
        servers: list[LiveServer], tmp_path: Path) -> None:
    hold = tmp_path / "hold-start"
    server = start(servers, tmp_path, TRACEWARD_FLUSHER_STALL_S=str(STALL_S), TW_FAULT_HOLD_START_FILE=str(hold))
    load, rng = Load(), random.Random(5)
    export_ok(server, load, rng)
    flusher_of(server).send_signal(signal.SIGSTOP)  # alive, holding its lock, doing nothing
    hold.touch()
    export_ok(server, load, rng)  # work waiting: a stall after STALL_S

    resp = wait_reasons(server, ["flusher_restarting", "flusher_stalled"], timeout_s=STALL_S + 30)
    assert resp.headers["retry-after"] == "1"  # a stalled process is killed and restarted by itself
    assert metric(server, 'traceward_not_ready{reason="flusher_stalled"}') == 1
    health = server.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "degraded"

    hold.unlink()
    wait_reasons(server, [])
    assert_exactly_once(server, load)
    assert server.get("/healthz").json()["status"] == "ok"


def test_a_stalled_flusher_thread_is_not_ready_without_retry_after(servers: list[LiveServer],
                                                                   tmp_path: Path) -> None:
    block = tmp_path / "block-appends"
    server = start(servers, tmp_path, TRACEWARD_FLUSHER_PROCESS="false", TRACEWARD_FLUSHER_STALL_S=str(STALL_S),
                   TW_FAULT_BLOCK_APPEND_FILE=str(block))
    load, rng = Load(), random.Random(7)
    export_ok(server, load, rng)
    assert_exactly_once(server, load)  # the table's first write is done (it heartbeats for up to 10 stall limits)
    block.touch()  # the step table's appends hang, as on a wedged disk
    export_ok(server, load, rng)

    resp = wait_reasons(server, ["flusher_stalled"], timeout_s=STALL_S + 30)
    assert "retry-after" not in resp.headers  # a thread cannot be restarted: it takes the I/O or an operator

    block.unlink()
    wait_reasons(server, [])
    assert_exactly_once(server, load)


def test_not_ready_exactly_while_ingest_refuses_exports_for_overload(servers: list[LiveServer],
                                                                     tmp_path: Path) -> None:
    limit = 256 * 1024
    server = start(servers, tmp_path, TRACEWARD_WAL_MAX_BYTES=str(limit), TRACEWARD_FLUSHER_STALL_S="0")
    child = flusher_of(server)
    load, rng = Load(), random.Random(11)
    child.send_signal(signal.SIGSTOP)  # nothing is flushed: the backlog only grows (no watchdog: 0)
    try:
        while not server.get("/healthz").json()["ingest_overloaded"]:
            assert reasons(readyz(server.api_url)) == []  # ready as long as ingest takes exports
            export_ok(server, load, rng)

        refused = httpx.post(f"{server.otlp_http_url}/v1/traces",
                             content=encode_spans(load.batch(rng)).SerializeToString(),
                             headers={"authorization": f"Bearer {INGEST_KEY}",
                                      "content-type": "application/x-protobuf"}, timeout=30)
        assert refused.status_code == 429
        resp = wait_reasons(server, ["ingest_overloaded"], timeout_s=5)
        assert resp.headers["retry-after"] == refused.headers["retry-after"] == "2"
        assert f"over TRACEWARD_WAL_MAX_BYTES ({limit})" in resp.json()["error"]["details"]["ingest_overloaded"]
        health = server.get("/healthz").json()
        assert health["wal_max_bytes"] == limit < health["wal_backlog_bytes"]
        assert metric(server, 'traceward_not_ready{reason="ingest_overloaded"}') == 1
    finally:
        child.send_signal(signal.SIGCONT)

    wait_reasons(server, [])
    assert server.get("/healthz").json()["ingest_overloaded"] is False
    export_ok(server, load, rng)
    assert_exactly_once(server, load)


# -- storage: real file systems in a mount namespace of the server's own ---------------------------------------

@pytest.fixture
def namespaces() -> None:
    """Skip where user and mount namespaces cannot be made (no ``unshare``, or unprivileged ones forbidden)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("util-linux unshare and nsenter are needed to give the server file systems of its own")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create user and mount namespaces here: {probe.stderr.strip()}")


def in_namespace(data_dir: Path, *, tmpfs_bytes: int | None = None) -> tuple[str, ...]:
    """A launcher: the server in user and mount namespaces of its own, with a tmpfs of that size as data dir."""
    mount = f'mkdir -p "$1" && mount -t tmpfs -o size={tmpfs_bytes} tmpfs "$1" && ' if tmpfs_bytes else ""
    return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount + 'shift && exec "$@"', "sh",
            str(data_dir))


def nsenter(server: LiveServer, *command: str) -> None:
    """Run a command in the server's namespaces (as their root)."""
    assert server.proc is not None
    subprocess.run(["nsenter", "-t", str(server.proc.pid), "-U", "-m", "--", *command], check=True)


@pytest.fixture
def filler(servers: list[LiveServer]) -> Iterator[list[Path]]:
    """Filler files written into servers' tmpfs data dirs: removed at teardown."""
    made: list[Path] = []
    yield made
    for path in made:
        path.unlink(missing_ok=True)


def fill(server: LiveServer, made: list[Path], name: str, *, leave_bytes: int) -> None:
    """Write a file into the server's tmpfs data dir until ``leave_bytes`` are free (0: until it is full).
    Written through /proc/<pid>/root, which resolves in the server's mount namespace; the file's file system
    is checked to be that small tmpfs before a byte is written (never fill anyone else's disk)."""
    assert server.proc is not None
    path = Path(f"/proc/{server.proc.pid}/root{server.data_dir}") / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    made.append(path)
    try:
        fs = os.fstatvfs(fd)
        assert fs.f_blocks * fs.f_frsize == TMPFS_BYTES, "not the server's tmpfs: not filling it"
        chunk = 64 * 1024
        while (free := os.fstatvfs(fd).f_bavail * fs.f_frsize) > leave_bytes:
            try:
                os.write(fd, b"\0" * min(chunk, free - leave_bytes))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)


@pytest.mark.usefixtures("namespaces")
def test_not_ready_while_the_disk_is_full_and_ready_once_space_is_freed(servers: list[LiveServer], tmp_path: Path,
                                                                        filler: list[Path]) -> None:
    server = start(servers, tmp_path, launcher=in_namespace(tmp_path / "data", tmpfs_bytes=TMPFS_BYTES),
                   TRACEWARD_MAX_MESSAGE_BYTES=str(EXPORT_LIMIT), TRACEWARD_MAX_HTTP_BODY_BYTES=str(EXPORT_LIMIT))
    load, rng = Load(), random.Random(13)
    export_ok(server, load, rng)
    assert reasons(readyz(server.api_url)) == []

    fill(server, filler, "filler-1", leave_bytes=EXPORT_LIMIT // 2)  # writes still work, one more export won't fit
    resp = wait_reasons(server, ["disk_full"], timeout_s=10)
    assert "retry-after" not in resp.headers  # space has to be freed by someone
    assert f"less than one export of the largest size accepted ({EXPORT_LIMIT} bytes)" in \
        resp.json()["error"]["details"]["disk_full"]
    fill(server, filler, "filler-2", leave_bytes=0)  # now nothing fits
    wait_until(lambda: "No space left on device" in readyz(server.api_url).json()["error"]["details"]["disk_full"],
               10, what="the test write to fail for lack of space")
    assert metric(server, 'traceward_not_ready{reason="disk_full"}') == 1
    assert server.get("/healthz").status_code == 200
    assert "not ready: disk_full" in server.log()
    refused = [load.batch(rng) for _ in range(2)]
    for batch in refused:  # UNAVAILABLE (retryable): "write-ahead log append failed: No space left on device"
        load.sent.append(batch)
        assert exporter(server, timeout=2).export(batch) is SpanExportResult.FAILURE

    for path in filler:
        path.unlink()
    wait_reasons(server, [], timeout_s=60)
    for batch in refused:  # the clients' retries: stored, not taken for duplicates of what was never stored
        assert exporter(server).export(batch) is SpanExportResult.SUCCESS
        load.acked.extend(batch)
    export_ok(server, load, rng)
    assert_exactly_once(server, load)


@pytest.mark.usefixtures("namespaces")
def test_not_ready_while_the_data_dir_is_read_only_and_ready_once_writable(servers: list[LiveServer],
                                                                           tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start(servers, tmp_path, launcher=in_namespace(data_dir))
    load, rng = Load(), random.Random(17)
    export_ok(server, load, rng)
    wait_reasons(server, [])

    # A read-only bind mount over the data dir (remounting its file system read-only is refused while files
    # are open for writing): new files cannot be made there; descriptors opened before keep writing.
    nsenter(server, "sh", "-c", f'mount --bind "{data_dir}" "{data_dir}" && mount -o remount,bind,ro "{data_dir}"')
    wait_until(lambda: "data_dir_not_writable" in reasons(readyz(server.api_url)), 10,
               what="the data dir to be found read-only")
    resp = readyz(server.api_url)
    assert "Read-only file system" in resp.json()["error"]["details"]["data_dir_not_writable"]
    assert str(data_dir) not in resp.text  # public: no paths
    assert server.get("/healthz").status_code == 200

    nsenter(server, "umount", "-l", str(data_dir))
    wait_reasons(server, [], timeout_s=60)
    export_ok(server, load, rng)
    assert_exactly_once(server, load)
