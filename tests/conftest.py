"""Shared fixtures: real Traceward servers on loopback ports.

No autouse ``random.seed``: the OTel SDK's id generator draws from ``random``, and a global seed
made every test emit the same trace ids. Tests that need determinism use their own Random(seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.live import LiveServer


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A fresh `traceward serve` process with its own data dir (bootstrap ingest + admin keys)."""
    server = LiveServer(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    """Live servers a test starts itself (append them): each is stopped at teardown."""
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole test module (tests must not depend on each other's data)."""
    server = LiveServer(tmp_path_factory.mktemp("shared") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(shared_server: LiveServer) -> Iterator[grpc.Channel]:
    """A gRPC channel to the module's shared server."""
    ch = grpc.insecure_channel(f"127.0.0.1:{shared_server.grpc_port}")
    try:
        yield ch
    finally:
        ch.close()
