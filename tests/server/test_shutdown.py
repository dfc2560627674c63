"""SIGTERM stops `traceward serve` promptly, even with an event stream open.

The CLI's one SIGINT/SIGTERM handler sets ``runtime.closing`` (which ends the event streams) and asks every
uvicorn server to exit. If it did not run (uvicorn >= 0.29 installs its own handlers with signal.signal()
while serving; ours still runs through asyncio's wakeup fd), an open stream would hold the API server for
its whole graceful-shutdown timeout (5 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import ADMIN_KEY, LiveServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "data").start()
    try:
        yield live
    finally:
        live.stop()


def test_sigterm_ends_open_event_streams_and_exits_promptly(server: LiveServer) -> None:
    connected, ended = threading.Event(), threading.Event()

    def read_stream() -> None:
        with httpx.stream("GET", f"{server.api_url}/v1/streams/events",
                          headers={"authorization": f"Bearer {ADMIN_KEY}"},
                          timeout=httpx.Timeout(10.0, read=30.0)) as response:
            assert response.status_code == 200
            try:
                for line in response.iter_lines():
                    if line.startswith((":connected", ": connected")):
                        connected.set()
            except httpx.HTTPError:
                pass
        ended.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert connected.wait(10), "the event stream never said it was connected"
    assert server.proc is not None
    started = time.monotonic()
    server.proc.terminate()
    code = server.proc.wait(timeout=30)
    took = time.monotonic() - started
    assert code == 0, server.log()
    assert took < 3.0, f"shutdown took {took:.1f}s with an open event stream (graceful timeout is 5 s)"
    assert ended.wait(5), "the event stream was not closed"
