"""Shared fixtures: real Traceward servers on loopback ports.

No autouse ``random.seed``: the OTel SDK's id generator draws from ``random``, and a global seed
made every test emit the same trace ids. Tests that need determinism use their own Random(seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole test module (tests must not depend on each other's data)."""
    server = LiveServer(tmp_path_factory.mktemp("shared") / "data").start()
    try:
        yield server
    finally:
        server.stop()
