"""Every API error is the one envelope of specs/000 §6, and the OpenAPI document is complete.

    {"error": {"code": str, "message": str, "details": {field: message}, "retryable": bool}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

DOCUMENTED_OPERATIONS = {
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/v1/runs", "get"),
    ("/v1/runs", "post"),
    ("/v1/runs/{run_id}", "get"),
    ("/v1/runs/{run_id}", "post"),  # POST /v1/runs/{run_id}:finish
    ("/v1/runs/{run_id}/steps", "get"),
    ("/v1/runs/{run_id}/steps", "post"),
    ("/v1/traces", "post"),
    ("/v1/logs", "post"),
}
_HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
_LEAKS = ("Traceback", 'File "', "/work/", "site-packages", "litestar.", "msgspec.", "sqlite3.")


def assert_envelope(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is exactly the error envelope, with the given status (and code), and leaks nothing."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    body = resp.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"code", "message", "details", "retryable"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in error["details"].items())
    assert isinstance(error["retryable"], bool)
    for leak in _LEAKS:
        assert leak not in resp.text, f"{leak!r} leaked into {resp.text}"
    if code is not None:
        assert error["code"] == code
    return error


def new_run_id() -> str:
    return os.urandom(16).hex()


def _create_run(server: LiveServer) -> str:
    resp = server.post("/v1/runs", json={})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["run_id"])


def _api(server: LiveServer, method: str, path: str, *, key: str | None = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{server.api_url}{path}", headers={**headers, **kwargs.pop("headers", {})},
                         timeout=60, **kwargs)


# (name, request, status, code)
Case = tuple[str, Callable[[LiveServer], httpx.Response], int, str]
CASES: list[Case] = [
    ("400 limit 0", lambda s: s.get("/v1/runs", limit=0), 400, "invalid_input"),
    ("400 limit not int", lambda s: s.get("/v1/runs", limit="many"), 400, "invalid_input"),
    ("400 bad status filter", lambda s: s.get("/v1/runs", status="exploded"), 400, "invalid_input"),
    ("400 bad time filter", lambda s: s.get("/v1/runs", started_after="yesterday"), 400, "invalid_input"),
    ("400 bad cursor", lambda s: s.get("/v1/runs", cursor="%%%not-a-cursor"), 400, "invalid_input"),
    ("400 bad tag", lambda s: s.get("/v1/runs", tag="no-equals-sign"), 400, "invalid_input"),
    ("400 unknown field", lambda s: s.post("/v1/runs", json={"tenant_id": "evil"}), 400, "invalid_input"),
    ("400 malformed json", lambda s: s.post("/v1/runs", content=b"{not json",
                                            headers={"content-type": "application/json"}), 400, "invalid_input"),
    ("400 bad run_id", lambda s: s.post("/v1/runs", json={"run_id": "not-an-id"}), 400, "invalid_input"),
    ("400 wrong body type", lambda s: s.post("/v1/runs", json=[1, 2]), 400, "invalid_input"),
    ("401 no credentials", lambda s: _api(s, "GET", "/v1/runs", key=None), 401, "unauthenticated"),
    ("401 wrong key", lambda s: _api(s, "GET", "/v1/runs", key="tw_5e6f7a8b_wrong"), 401, "unauthenticated"),
    ("401 malformed header", lambda s: _api(s, "GET", "/v1/runs", key=None, headers={"authorization": "Token x"}),
     401, "unauthenticated"),
    ("401 on ingest route", lambda s: _api(s, "POST", "/v1/runs", key=None, json={}), 401, "unauthenticated"),
    ("403 ingest key reads", lambda s: s.get("/v1/runs", key=INGEST_KEY), 403, "permission_denied"),
    ("403 admin key ingests", lambda s: s.post("/v1/runs", key=ADMIN_KEY, json={}), 403, "permission_denied"),
    ("403 admin key exports", lambda s: httpx.post(f"{s.api_url}/v1/traces", content=b"{}", timeout=30, headers={
        "authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}), 403, "permission_denied"),
    ("404 unknown run", lambda s: s.get(f"/v1/runs/{new_run_id()}"), 404, "not_found"),
    ("404 unknown run steps", lambda s: s.get(f"/v1/runs/{new_run_id()}/steps"), 404, "not_found"),
    ("404 append to unknown run", lambda s: s.post(f"/v1/runs/{new_run_id()}/steps", json={"steps": [
        {"type": "tool", "name": "t", "ts": "2026-01-01T00:00:00Z"}]}), 404, "not_found"),
    ("404 finish unknown run", lambda s: s.post(f"/v1/runs/{new_run_id()}:finish", json={}), 404, "not_found"),
    ("404 unknown route", lambda s: s.get("/v1/nothing-here"), 404, "not_found"),
    ("404 unknown route no auth", lambda s: _api(s, "GET", "/definitely/not/a/route", key=None), 404, "not_found"),
    ("405 delete runs", lambda s: _api(s, "DELETE", "/v1/runs"), 405, "method_not_allowed"),
    ("405 put run", lambda s: _api(s, "PUT", f"/v1/runs/{new_run_id()}", json={}), 405, "method_not_allowed"),
    ("405 get traces", lambda s: _api(s, "GET", "/v1/traces"), 405, "method_not_allowed"),
    ("409 duplicate run", lambda s: s.post("/v1/runs", json={"run_id": _create_run(s)}), 409, "conflict"),
    ("413 body over 20 MiB", lambda s: s.post("/v1/runs", content=b" " * (20 * 1024 * 1024 + 1),
                                              headers={"content-type": "application/json"}), 413, "payload_too_large"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("request_fn", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_responses_use_the_envelope(shared_server: LiveServer, request_fn: Callable[[LiveServer], Any],
                                          status: int, code: str) -> None:
    error = assert_envelope(request_fn(shared_server), status, code)
    assert error["retryable"] is False  # none of these is worth retrying


@pytest.mark.e2e
def test_validation_errors_name_the_field(shared_server: LiveServer) -> None:
    error = assert_envelope(shared_server.get("/v1/runs", limit=501), 400)
    assert "limit" in error["details"]
    error = assert_envelope(shared_server.post("/v1/runs", json={"tenant_id": "evil"}), 400)
    assert "tenant_id" in json.dumps(error)
    run_id = _create_run(shared_server)
    error = assert_envelope(shared_server.post(f"/v1/runs/{run_id}/steps", json={"steps": [
        {"type": "tool", "name": "ok", "ts": "2026-01-01T00:00:00Z"},
        {"type": "teleport", "name": "bad", "ts": "2026-01-01T00:00:00Z"}]}), 400)
    assert "steps[1].type" in error["details"]


@pytest.mark.e2e
def test_otlp_http_errors_use_the_envelope_too(shared_server: LiveServer) -> None:
    url = f"{shared_server.otlp_http_url}/v1/traces"
    auth = {"authorization": f"Bearer {INGEST_KEY}"}
    cases = [
        (httpx.post(url, content=b"{bad", headers={**auth, "content-type": "application/json"}), 400),
        (httpx.post(url, content=b"{}", headers={"content-type": "application/json"}), 401),
        (httpx.post(url, content=b"{}", headers={**auth, "content-type": "text/csv"}), 400),
        (httpx.get(url, headers=auth), 405),
    ]
    for resp, status in cases:
        assert_envelope(resp, status)


# --- OpenAPI ------------------------------------------------------------------------------------------------
def _operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()
            if method in _HTTP_METHODS and not path.startswith("/schema")}


def _app_operations() -> set[tuple[str, str]]:
    """Every (path, method) the API app routes, except Litestar's own /schema pages and OPTIONS."""
    app = create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]  # only settings is read
    found = set()
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        for method in getattr(route, "methods", ()):
            if method.lower() in _HTTP_METHODS:
                found.add((route.path_format, method.lower()))
    return found


def test_openapi_lists_every_route_with_a_summary() -> None:
    """In-process: the generated document covers every route the app serves, each with a summary."""
    app = create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    operations = _operations(app.openapi_schema.to_schema())
    assert _app_operations() >= DOCUMENTED_OPERATIONS  # the README's routes exist (more may be added)
    assert set(operations) == _app_operations()
    for key, op in operations.items():
        assert op.get("summary"), f"{key} has no summary"
    list_params = {p["name"] for p in operations[("/v1/runs", "get")]["parameters"]}
    assert {"status", "service", "agent", "model", "tool", "tag", "started_after", "started_before", "has_error",
            "min_cost_usd", "limit", "cursor"} <= list_params


@pytest.mark.e2e
def test_openapi_is_served(shared_server: LiveServer) -> None:
    resp = shared_server.get("/schema/openapi.json")
    assert resp.status_code == 200, resp.text
    operations = _operations(resp.json())
    assert set(operations) == _app_operations()
    assert all(op.get("summary") for op in operations.values())
    assert shared_server.get("/schema").status_code == 200
