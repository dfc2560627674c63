"""A real Traceward server process on free loopback ports, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace.id_generator import IdGenerator

INGEST_KEY = "tw_1a2b3c4d_test-ingest-secret-0123456789abcdefghijklmn"
ADMIN_KEY = "tw_5e6f7a8b_test-admin-secret-0123456789abcdefghijklmnop"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on right now, and never one this process handed out before: the kernel may
    give a just-released port again at once, and a server given the same port twice cannot start."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class LiveServer:
    """A `traceward serve` subprocess."""

    data_dir: Path
    grpc_port: int = field(default_factory=free_port)
    otlp_http_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    own_process_group: bool = False
    """Start it in a session (process group) of its own, so a test can signal the whole group."""
    launcher: tuple[str, ...] = ()
    """A command that execs the server command it is given (it must keep the pid: ``unshare``, ``sh -c 'exec'``)."""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def api_url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http_url(self) -> str:
        """Base URL of the OTLP/HTTP receiver."""
        return f"http://127.0.0.1:{self.otlp_http_port}"

    def start(self, timeout_s: float = 60.0) -> LiveServer:
        """Start the process and wait until it answers /healthz."""
        self.launch()
        wait_until(self._healthy, timeout_s, what="server to answer /healthz")
        return self

    def launch(self) -> LiveServer:
        """Start the process, without waiting for it to serve."""
        env = {**os.environ, "TRACEWARD_BOOTSTRAP_INGEST_KEY": INGEST_KEY,
               "TRACEWARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, **self.extra_env}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "server", "serve", "--data-dir", str(self.data_dir),
             "--grpc-port", str(self.grpc_port), "--otlp-http-port", str(self.otlp_http_port),
             "--http-port", str(self.http_port)], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=self.own_process_group)
        log.close()
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200 and \
                httpx.get(f"{self.otlp_http_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str, *, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
        """GET on the API with a key."""
        return httpx.get(f"{self.api_url}{path}", params=params, headers={"authorization": f"Bearer {key}"},
                         timeout=30)

    def post(self, path: str, *, key: str = INGEST_KEY, **kwargs: Any) -> httpx.Response:
        """POST on the API with a key."""
        headers = {"authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return httpx.post(f"{self.api_url}{path}", headers=headers, timeout=30, **kwargs)

    def wait_run(self, run_id: str, predicate: Callable[[dict[str, Any]], bool] = lambda r: True,
                 timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll GET /v1/runs/{run_id} until it exists and ``predicate`` holds."""
        found: dict[str, Any] = {}

        def ready() -> bool:
            resp = self.get(f"/v1/runs/{run_id}")
            if resp.status_code != 200:
                return False
            found.update(resp.json())
            return predicate(found)

        wait_until(ready, timeout_s, what=f"run {run_id}")
        return found

    def all_steps(self, run_id: str, **params: Any) -> list[dict[str, Any]]:
        """Every step of a run, following cursors."""
        steps: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            body = self.get(f"/v1/runs/{run_id}/steps", **query).json()
            steps.extend(body["steps"])
            cursor = body["next_cursor"]
            if not cursor:
                return steps


def wait_until(predicate: Callable[[], bool], timeout_s: float, *, what: str) -> None:
    """Poll ``predicate`` every 50 ms until true; fail with a clear message after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class UniqueIds(IdGenerator):
    """OTel SDK ids from the OS: the autouse fixture re-seeds ``random`` per test, so the SDK's default generator
    would give every test the *same* trace and span ids (and the server would rightly dedupe them)."""

    def generate_span_id(self) -> int:
        return secrets.randbits(64) or 1

    def generate_trace_id(self) -> int:
        return secrets.randbits(128) or 1
