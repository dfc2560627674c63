"""Schemathesis fuzzing of the served OpenAPI document with valid credentials: no 5xx, every error in the envelope.

Each documented operation is called with the credential of a role allowed to call it (the ingest key for
ingest/decide routes, an admin key otherwise), with bodies, queries and path parameters generated from the
schema. Bounded: a few examples per operation and an overall time budget, so it stays well under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis

from server.app import create_app
from server.auth import PERMISSIONS, route_permissions
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 6
BUDGET_S = 60.0
ENVELOPE_KEYS = {"code", "message", "details", "retryable"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {f"TRACEWARD_RATE_LIMIT_{r}_PER_MIN": "1000000"
           for r in ("INGEST", "VIEWER", "APPROVER", "ADMIN", "ANONYMOUS")}
    server = LiveServer(tmp_path_factory.mktemp("fuzz") / "data", extra_env=env).start()
    try:
        yield server
    finally:
        server.stop()


def ingest_operations(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path) of the routes only the ingest key may call."""
    app = create_app(Runtime(Settings(data_dir=tmp_path)))
    found = set()
    for route in app.routes:
        for handler in route.route_handlers:  # type: ignore[union-attr]
            permissions = route_permissions(handler) or frozenset()
            if permissions and permissions <= PERMISSIONS["ingest"]:
                found.update((m, route.path_format) for m in handler.http_methods)
    return found


def problem(response: Any) -> str | None:
    """Why a response breaks the contract (5xx, or an error outside the envelope), or None."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} not JSON: {response.text[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    if list(body) != ["error"] or not isinstance(error, dict) or set(error) != ENVELOPE_KEYS:
        return f"{response.status_code} outside the envelope: {response.text[:300]}"
    if not isinstance(error["retryable"], bool) or not all(isinstance(v, str) for v in error["details"].values()):
        return f"{response.status_code} envelope with wrong types: {response.text[:300]}"
    return None


def call(client: httpx.Client, case: Any, base_url: str, key: str) -> str | None:
    """Send one generated request, streaming: a 2xx body is never read (event streams don't end)."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers={"authorization": f"Bearer {key}"})
    data = kwargs.pop("data", None)
    if data is not None:
        kwargs["content" if isinstance(data, bytes | str) else "data"] = data
    kwargs.pop("timeout", None)
    with client.stream(**kwargs) as response:
        if response.status_code < 400:
            return None
        response.read()
        return problem(response)


def test_fuzzing_finds_no_500_and_no_bare_errors(fuzz_server: LiveServer, tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.api_url}/schema/openapi.json")
    ingest_ops = ingest_operations(tmp_path)
    operations = [result.ok() for result in schema.get_all_operations()]
    end = time.monotonic() + BUDGET_S
    share = BUDGET_S / len(operations)  # a slow operation can't starve the others
    failures: list[str] = []
    called: dict[str, int] = {}
    client = httpx.Client(timeout=30)

    def fuzz_operation(strategy: Any, label: str, key: str, until: float) -> None:
        @hypothesis.given(case=strategy)
        @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        def fuzz(case: Any) -> None:
            if time.monotonic() > until:
                return
            why = call(client, case, fuzz_server.api_url, key)
            called[label] = called.get(label, 0) + 1
            if why:
                failures.append(f"{label} {case.path_parameters} {case.query} {str(case.body)[:120]} → {why}")

        fuzz()

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        key = INGEST_KEY if (operation.method.upper(), operation.path) in ingest_ops else ADMIN_KEY
        fuzz_operation(operation.as_strategy(), label, key, min(time.monotonic() + 2 * share, end))
    client.close()
    assert len(called) >= 0.8 * len(operations), (len(operations), called)
    assert not failures, "\n".join(sorted(set(failures))[:40])
