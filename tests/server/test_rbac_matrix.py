"""Every route of both HTTP apps × every kind of caller → the status its declared permission implies.

The routes come from the apps themselves (``create_app(...).routes``, every method), so a route added
later is covered without touching this file, and a route without a declared permission fails. The
expectation of each cell is derived from the route's ``opt["permission"]`` and ``server.auth.PERMISSIONS``:

- no credential, a bad one, a revoked key, an expired JWT           → 401
- a role whose permissions include none of the route's               → 403
- a role that may call it                                            → not 401/403 and no 5xx (the requests carry
  no valid body, so 400/404/422 are fine), or the exact status of the explicit table below
- another tenant's admin on a path naming one of our resources       → exactly what a nonexistent resource gets:
  404 for a valid request, the same 400/422 for an invalid one (existence doesn't leak); never 2xx
- public routes                                                      → anything but 401/403/5xx, for everyone
Every response carries the X-RateLimit-* headers, and every error the envelope.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar

from server.app import create_app, create_otlp_http_app
from server.auth import PERMISSIONS, PUBLIC, route_permissions
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

SECRET = "matrix-test-hs256-secret-0123456789abcdef"
ISSUER, AUDIENCE = "https://idp.matrix.test/", "traceward"
OTHER_TENANT = "othertenant"
NOT_FOUND_ID = "0123456789abcdef0123456789abcdef"
ALLOWED = "allowed"  # any status but 401/403 and 5xx
AS_IF_MISSING = "as if missing"  # a 4xx, the same one a resource nobody has gets (404 when the request is valid)
ANONYMOUS = ("none", "bad", "revoked", "expired_jwt")
CALLERS = (*ANONYMOUS, "ingest", "viewer", "approver", "admin", "other_admin")
ROLE_OF = {"ingest": "ingest", "viewer": "viewer", "approver": "approver", "admin": "admin", "other_admin": "admin"}
KNOWN_PERMISSIONS = frozenset().union(*PERMISSIONS.values()) | {PUBLIC}

# Explicit expectations where the generic rule only says "allowed": (method, path) → {caller: status}.
EXPLICIT: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/healthz"): dict.fromkeys(CALLERS, 200),
    ("GET", "/readyz"): dict.fromkeys(CALLERS, 200),
    ("GET", "/schema/openapi.json"): dict.fromkeys(CALLERS, 200),
    ("GET", "/v1/runs"): {"viewer": 200, "approver": 200, "admin": 200, "other_admin": 200},
    ("GET", "/v1/runs/{run_id}"): {"viewer": 200, "approver": 200, "admin": 200, "other_admin": 404},
    ("GET", "/v1/runs/{run_id}/steps"): {"viewer": 200, "approver": 200, "admin": 200, "other_admin": 404},
    ("GET", "/v1/admin/keys"): {"admin": 200, "other_admin": 200},
    ("GET", "/v1/admin/keys/{key_id}"): {"admin": 200, "other_admin": 404},
    ("GET", "/v1/audit"): {"admin": 200, "other_admin": 200},
    ("GET", "/v1/audit/verify"): {"admin": 200, "other_admin": 200},
    ("GET", "/v1/admin/retention"): {"admin": 200, "other_admin": 200},
    ("GET", "/v1/admin/tenant"): {"admin": 200, "other_admin": 200},
    ("POST", "/v1/admin/backup"): {"admin": 409, "other_admin": 403},  # no TRACEWARD_BACKUP_DIR; operator tenant only
    ("POST", "/v1/traces"): {"ingest": 400},  # no body, no content type
    ("POST", "/v1/logs"): {"ingest": 400},  # no body, no content type
}
# Routes whose permission the app-wide guard can't see (they carry their own guard): the effective one.
EFFECTIVE_PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/v1/approvals/{approval_ref}"): frozenset({"read", "decide"}),
}


@dataclass(frozen=True)
class Operation:
    app: str  # "api" or "otlp"
    method: str
    path: str  # path_format, e.g. /v1/runs/{run_id}
    params: tuple[str, ...]
    permissions: frozenset[str] | None


def _operations(app: Litestar, name: str) -> list[Operation]:
    found = []
    for route in app.routes:
        for handler in route.route_handlers:  # type: ignore[union-attr]
            for method in sorted(handler.http_methods):
                permissions = route_permissions(handler)
                permissions = EFFECTIVE_PERMISSIONS.get((method, route.path_format), permissions)
                found.append(Operation(name, method, route.path_format, tuple(route.path_parameters), permissions))
    return found


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> list[Operation]:
    runtime = Runtime(Settings(data_dir=tmp_path_factory.mktemp("routes")))
    ops = _operations(create_app(runtime), "api") + _operations(create_otlp_http_app(runtime), "otlp")
    assert len(ops) > 40
    return ops


def test_every_route_declares_a_known_permission(operations: list[Operation]) -> None:
    undeclared = [f"{o.method} {o.path}" for o in operations if o.permissions is None]
    unknown = [f"{o.method} {o.path}: {sorted(o.permissions)}" for o in operations
               if o.permissions is not None and not o.permissions <= KNOWN_PERMISSIONS]
    assert not undeclared, f"routes without opt['permission']: {undeclared}"
    assert not unknown, f"routes declaring permissions no role has: {unknown}"


# --- the live server and its callers ------------------------------------------------------------------------
def _token(role: str, tenant: str, *, exp_in_s: int) -> str:
    now = int(time.time())
    return jwt.encode({"sub": f"{role}@{tenant}", "tenant_id": tenant, "role": role, "iss": ISSUER, "aud": AUDIENCE,
                       "iat": now, "exp": now + exp_in_s}, SECRET, algorithm="HS256")


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str | None]
    resources: dict[str, str]  # path parameter name → a resource of our tenant


def _bootstrap_tenant(server: LiveServer, tenant: str) -> str:
    out = subprocess.run([sys.executable, "-m", "server", "admin", "bootstrap-tenant", "--data-dir",
                          str(server.data_dir), "--tenant", tenant], capture_output=True, text=True, check=True,
                         env={**os.environ, "TRACEWARD_JWT_HS256_SECRET": SECRET, "TRACEWARD_JWT_ISSUER": ISSUER,
                              "TRACEWARD_JWT_AUDIENCE": AUDIENCE})
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {"TRACEWARD_JWT_HS256_SECRET": SECRET, "TRACEWARD_JWT_ISSUER": ISSUER, "TRACEWARD_JWT_AUDIENCE": AUDIENCE,
           "TRACEWARD_JWT_LEEWAY_S": "5", **{f"TRACEWARD_RATE_LIMIT_{r}_PER_MIN": "100000"
                                            for r in ("INGEST", "VIEWER", "APPROVER", "ADMIN", "ANONYMOUS")}}
    server = LiveServer(tmp_path_factory.mktemp("matrix") / "data", extra_env=env).start()
    try:
        run = server.post("/v1/runs", json={"name": "matrix run"})
        assert run.status_code == 201, run.text
        run_id = run.json()["run_id"]
        steps = server.post(f"/v1/runs/{run_id}/steps", json={"steps": [
            {"type": "tool", "name": "lookup", "ts": "2026-01-01T00:00:00Z", "payload": {"q": 1}}]})
        assert steps.status_code == 200, steps.text
        approver = server.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": "approver", "name": "matrix approver"})
        revoked = server.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": "viewer", "name": "to revoke"})
        assert approver.status_code == revoked.status_code == 201
        assert server.post(f"/v1/admin/keys/{revoked.json()['key_id']}:revoke", key=ADMIN_KEY).status_code == 200
        tokens: dict[str, str | None] = {
            "none": None, "bad": "tw_0badc0de_not-a-real-secret-at-all", "revoked": revoked.json()["key"],
            "expired_jwt": _token("admin", "default", exp_in_s=-3600), "ingest": INGEST_KEY,
            "viewer": _token("viewer", "default", exp_in_s=3600), "approver": approver.json()["key"],
            "admin": ADMIN_KEY, "other_admin": _bootstrap_tenant(server, OTHER_TENANT),
        }
        yield World(server, tokens, {"run_id": run_id, "key_id": approver.json()["key_id"]})
    finally:
        server.stop()


def expected_status(op: Operation, caller: str, resources: dict[str, str]) -> int | str:
    """The cell of the matrix: an exact status or ALLOWED."""
    assert op.permissions is not None
    if PUBLIC in op.permissions:
        return EXPLICIT.get((op.method, op.path), {}).get(caller, ALLOWED)
    if caller in ANONYMOUS:
        return 401
    granted = PERMISSIONS[ROLE_OF[caller]]
    if not op.permissions & granted:
        return 403
    if caller == "other_admin" and any(p in resources for p in op.params):
        return EXPLICIT.get((op.method, op.path), {}).get(caller, AS_IF_MISSING)
    return EXPLICIT.get((op.method, op.path), {}).get(caller, ALLOWED)


def _url(world: World, op: Operation, *, missing: bool = False) -> str:
    path = op.path
    for param in op.params:
        path = path.replace("{" + param + "}", NOT_FOUND_ID if missing else world.resources.get(param, NOT_FOUND_ID))
    base = world.server.api_url if op.app == "api" else world.server.otlp_http_url
    return base + path


def _call(client: httpx.Client, world: World, op: Operation, caller: str, *, missing: bool = False) -> httpx.Response:
    """One request; a 2xx body is not read (event streams never end), an error body is."""
    token = world.tokens[caller]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = ({"json": {}} if op.method in ("POST", "PUT", "PATCH")
                              and op.path not in ("/v1/traces", "/v1/logs") else {})
    with client.stream(op.method, _url(world, op, missing=missing), headers=headers, **kwargs) as resp:
        if resp.status_code >= 400:
            resp.read()
    return resp


def _is_envelope(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and list(body) == ["error"] and \
        set(body["error"]) == {"code", "message", "details", "retryable"}


def _check_cell(client: httpx.Client, world: World, op: Operation, caller: str) -> list[str]:
    want = expected_status(op, caller, world.resources)
    resp = _call(client, world, op, caller)
    got = resp.status_code
    problems = []
    if want == ALLOWED:
        ok = got not in (401, 403) and got < 500
    elif want == AS_IF_MISSING:
        ok = 400 <= got < 500 and got not in (401, 403) and \
            got == _call(client, world, op, caller, missing=True).status_code
    else:
        ok = got == want
    if not ok:
        problems.append(f"{op.method} {op.path} [{caller}]: expected {want}, got {got} {resp.text[:160]}")
    if got >= 400 and not _is_envelope(resp) and not op.path.startswith("/schema/"):
        # (Litestar's documentation pages answer an unknown /schema/<page> with an HTML 404)
        problems.append(f"{op.method} {op.path} [{caller}]: {got} outside the envelope: {resp.text[:160]}")
    if "x-ratelimit-limit" not in resp.headers:
        problems.append(f"{op.method} {op.path} [{caller}]: no X-RateLimit-* headers")
    return problems


def test_matrix(world: World, operations: list[Operation]) -> None:
    """One row per (route, method), one column per caller; all mismatches are reported together.

    The callers of one route are asked concurrently (routes one after another, so a mutating admin
    call never interleaves with another route's cells)."""
    mismatches: list[str] = []
    cells = 0
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=len(CALLERS))) as client, \
            ThreadPoolExecutor(max_workers=len(CALLERS)) as pool:
        for op in operations:
            if op.permissions is None:
                continue  # reported by test_every_route_declares_a_known_permission
            for problems in pool.map(lambda caller, op=op: _check_cell(client, world, op, caller), CALLERS):
                mismatches.extend(problems)
                cells += 1
    assert not mismatches, f"{len(mismatches)} of {cells} cells wrong:\n" + "\n".join(mismatches)
    assert cells >= 9 * 40


def test_other_tenants_resources_are_404_not_403(world: World) -> None:
    """Existence doesn't leak: the other tenant's admin gets the same 404 for our run as for a run nobody has."""
    s, other = world.server, world.tokens["other_admin"]
    assert other is not None
    ours = s.get(f"/v1/runs/{world.resources['run_id']}", key=other)
    nobody = s.get(f"/v1/runs/{NOT_FOUND_ID}", key=other)
    assert ours.status_code == nobody.status_code == 404
    assert ours.json()["error"]["code"] == nobody.json()["error"]["code"] == "not_found"
    revoke = s.post(f"/v1/admin/keys/{world.resources['key_id']}:revoke", key=other)
    assert revoke.status_code == 404
    approver = world.tokens["approver"]
    assert approver is not None
    assert s.get(f"/v1/runs/{world.resources['run_id']}", key=approver).status_code == 200  # still valid


def test_revoked_key_and_expired_jwt_say_why(world: World) -> None:
    s = world.server
    for caller, phrase in (("revoked", "revoked"), ("expired_jwt", "expired"), ("bad", "invalid")):
        token = world.tokens[caller]
        assert token is not None
        resp = s.get("/v1/runs", key=token)
        assert resp.status_code == 401
        assert phrase in resp.json()["error"]["message"]


def test_ingest_keys_reach_only_ingest_and_decide_routes(operations: list[Operation]) -> None:
    ingest = PERMISSIONS["ingest"]
    reachable = sorted(f"{o.method} {o.path}" for o in operations
                       if o.permissions and PUBLIC not in o.permissions and o.permissions & ingest)
    assert ingest == frozenset({"ingest", "decide"})
    assert all(not (o.permissions & ingest) or o.permissions & ingest <= {"ingest", "decide"}
               for o in operations if o.permissions)
    assert "POST /v1/traces" in reachable and "POST /v1/runs" in reachable
