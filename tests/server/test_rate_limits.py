"""Rate limits per credential: the GCRA arithmetic, shared SQLite buckets, and a live server.

Live: X-RateLimit-* on every response (both HTTP ports, errors included), 429 in the envelope with
Retry-After once a bucket is empty, limits that differ per role and per key, one bucket per credential,
anonymous callers per address, and RESOURCE_EXHAUSTED with RetryInfo on OTLP gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from server.auth import Principal
from server.ratelimit import MemoryBuckets, RateLimiter, SqliteBuckets, gcra
from tests.live import ADMIN_KEY, LiveServer

SECRET = "rate-limit-test-hs256-secret-0123456789ab"
ISSUER, AUDIENCE = "https://idp.rl.test/", "traceward"
LIMITS = {"INGEST": 50, "VIEWER": 5, "APPROVER": 8, "ADMIN": 1000, "ANONYMOUS": 4}
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


# --- the algorithm --------------------------------------------------------------------------------------------
def test_gcra_allows_a_burst_of_the_limit_then_one_per_interval() -> None:
    tat, now = None, 1000.0
    remaining = []
    for _ in range(60):
        decision, tat = gcra(tat, now, 60, consume=True)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == list(range(59, -1, -1))
    refused, unchanged = gcra(tat, now, 60, consume=True)
    assert not refused.allowed and unchanged is None
    assert refused.retry_after_s == pytest.approx(1.0)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.reset_s == pytest.approx(60.0)
    later, _ = gcra(tat, now + 1.0, 60, consume=True)
    assert later.allowed and later.remaining == 0
    full, _ = gcra(tat, now + 120, 60, consume=False)
    assert full.remaining == 60 and full.reset_s == 0


def test_peeking_does_not_consume() -> None:
    limiter = RateLimiter(MemoryBuckets(), {"viewer": 3}, 2, clock=lambda: 50.0)
    for _ in range(10):
        assert limiter.decide(None, "10.0.0.1", consume=False).remaining == 2
    assert limiter.decide(None, "10.0.0.1").remaining == 1
    assert limiter.decide(None, "10.0.0.2").remaining == 1  # one bucket per address


def test_sqlite_buckets_are_shared_between_processes(tmp_path: Path) -> None:
    """Two stores on one file stand for two worker processes: together they allow the limit, not twice it."""
    path = tmp_path / "ratelimit.sqlite3"
    workers = [RateLimiter(SqliteBuckets(path), {"viewer": 6}, 1, clock=lambda: 100.0) for _ in range(2)]
    viewer = Principal("t", "p", "viewer", "k1")
    allowed = [workers[i % 2].decide(viewer, "x").allowed for i in range(10)]
    assert allowed == [True] * 6 + [False] * 4


# --- live ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {f"TRACEWARD_RATE_LIMIT_{role}_PER_MIN": str(n) for role, n in LIMITS.items()}
    env.update(TRACEWARD_JWT_HS256_SECRET=SECRET, TRACEWARD_JWT_ISSUER=ISSUER, TRACEWARD_JWT_AUDIENCE=AUDIENCE)
    live = LiveServer(tmp_path_factory.mktemp("ratelimit") / "data", extra_env=env).start()
    try:
        yield live
    finally:
        live.stop()


def new_key(server: LiveServer, role: str, **extra: object) -> str:
    resp = server.post("/v1/admin/keys", key=ADMIN_KEY, json={"role": role, **extra})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def viewer_jwt(subject: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "tenant_id": "default", "role": "viewer", "iss": ISSUER, "aud": AUDIENCE,
                       "exp": now + 600}, SECRET, algorithm="HS256")


def call(server: LiveServer, method: str, path: str, key: str | None = None, *, port: str = "api",
         **kwargs: object) -> httpx.Response:
    base = server.api_url if port == "api" else server.otlp_http_url
    headers = {"authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.request(method, base + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_every_response_carries_the_headers(server: LiveServer) -> None:
    viewer = new_key(server, "viewer", rate_limit_per_min=100)
    responses = {
        "200 list": call(server, "GET", "/v1/runs", ADMIN_KEY),
        "201 create": call(server, "POST", "/v1/admin/keys", ADMIN_KEY, json={"role": "viewer"}),
        "400 bad query": call(server, "GET", "/v1/runs", ADMIN_KEY, params={"limit": 0}),
        "400 tenant_id in query": call(server, "GET", "/v1/runs", ADMIN_KEY, params={"tenant_id": "other"}),
        "401 no credential": call(server, "GET", "/v1/runs"),
        "403 wrong role": call(server, "GET", "/v1/admin/keys", viewer),
        "404 no such run": call(server, "GET", "/v1/runs/" + "ab" * 16, ADMIN_KEY),
        "404 no such route": call(server, "GET", "/v1/nothing-here", ADMIN_KEY),
        "405 wrong method": call(server, "DELETE", "/v1/runs", ADMIN_KEY),
        "200 health": call(server, "GET", "/healthz"),
        "200 schema": call(server, "GET", "/schema/openapi.json"),
        "204 options": call(server, "OPTIONS", "/v1/runs"),
        "otlp 401": call(server, "POST", "/v1/traces", port="otlp", content=b"{}",
                         headers={"content-type": "application/json"}),
        "otlp 404": call(server, "GET", "/nothing", port="otlp"),
        "otlp health": call(server, "GET", "/healthz", port="otlp"),
    }
    for name, resp in responses.items():
        assert name.split()[0] in (str(resp.status_code), "otlp"), (name, resp.status_code, resp.text)
        for header in HEADERS:
            assert header in resp.headers, f"{name}: no {header}"
        assert int(resp.headers["x-ratelimit-remaining"]) <= int(resp.headers["x-ratelimit-limit"])
        assert int(resp.headers["x-ratelimit-reset"]) >= 0
    assert responses["400 tenant_id in query"].json()["error"]["details"] == {"tenant_id": "not accepted"}
    assert responses["200 list"].headers["x-ratelimit-limit"] == str(LIMITS["ADMIN"])
    assert responses["401 no credential"].headers["x-ratelimit-limit"] == str(LIMITS["ANONYMOUS"])


@pytest.mark.e2e
def test_over_the_limit_is_429_with_retry_after_in_the_envelope(server: LiveServer) -> None:
    viewer = new_key(server, "viewer")
    seen = [call(server, "GET", "/v1/runs", viewer) for _ in range(LIMITS["VIEWER"])]
    assert [r.status_code for r in seen] == [200] * LIMITS["VIEWER"]
    assert [int(r.headers["x-ratelimit-remaining"]) for r in seen] == list(range(LIMITS["VIEWER"] - 1, -1, -1))
    refused = call(server, "GET", "/v1/runs", viewer)
    assert refused.status_code == 429
    assert refused.json() == {"error": {"code": "rate_limited", "message": refused.json()["error"]["message"],
                                        "details": {}, "retryable": True}}
    assert 1 <= int(refused.headers["retry-after"]) <= 60 // LIMITS["VIEWER"]
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-limit"] == str(LIMITS["VIEWER"])
    other_viewer = new_key(server, "viewer")
    assert call(server, "GET", "/v1/runs", other_viewer).status_code == 200  # buckets are per credential


@pytest.mark.e2e
def test_limits_differ_per_role_and_per_key(server: LiveServer) -> None:
    def limit_of(key: str) -> str:
        return call(server, "GET", "/v1/runs", key).headers["x-ratelimit-limit"]

    assert limit_of(new_key(server, "viewer")) == str(LIMITS["VIEWER"])
    assert limit_of(new_key(server, "approver")) == str(LIMITS["APPROVER"])
    assert limit_of(ADMIN_KEY) == str(LIMITS["ADMIN"])
    assert limit_of(viewer_jwt("carol")) == str(LIMITS["VIEWER"])
    tight = new_key(server, "approver", rate_limit_per_min=2)
    assert [call(server, "GET", "/v1/runs", tight).status_code for _ in range(3)] == [200, 200, 429]
    assert call(server, "GET", "/v1/runs", tight).headers["x-ratelimit-limit"] == "2"


@pytest.mark.e2e
def test_jwt_buckets_are_per_subject(server: LiveServer) -> None:
    dave = viewer_jwt("dave")
    codes = [call(server, "GET", "/v1/runs", dave).status_code for _ in range(LIMITS["VIEWER"] + 1)]
    assert codes[-1] == 429 and codes[:-1] == [200] * LIMITS["VIEWER"]
    assert call(server, "GET", "/v1/runs", viewer_jwt("erin")).status_code == 200


@pytest.mark.e2e
def test_retry_after_is_honest(server: LiveServer) -> None:
    key = new_key(server, "viewer", rate_limit_per_min=60)
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        codes = [client.get(f"{server.api_url}/v1/runs", params={"limit": 1}).status_code for _ in range(61)]
        assert codes[-1] == 429 and codes.count(200) == 60
        time.sleep(1.1)
        assert client.get(f"{server.api_url}/v1/runs", params={"limit": 1}).status_code == 200


@pytest.mark.e2e
def test_anonymous_callers_are_limited_per_address_but_public_routes_are_free(server: LiveServer) -> None:
    for _ in range(5):
        assert call(server, "GET", "/healthz").status_code == 200
    codes = [call(server, "GET", "/v1/runs", "tw_00000000_guessing").status_code for _ in range(LIMITS["ANONYMOUS"] + 2)]
    assert 429 in codes and set(codes) <= {401, 429}
    assert call(server, "GET", "/healthz").status_code == 200
    assert call(server, "GET", "/v1/runs", ADMIN_KEY).status_code == 200  # a valid key has its own bucket


@pytest.mark.e2e
def test_grpc_over_the_limit_is_resource_exhausted_with_retry_info(server: LiveServer) -> None:
    key = new_key(server, "ingest", rate_limit_per_min=2)
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        request = trace_service_pb2.ExportTraceServiceRequest()
        for _ in range(2):
            stub.Export(request, metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(request, metadata=metadata, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(details)
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert 1 <= retry.retry_delay.seconds <= 30
    http = call(server, "POST", "/v1/traces", key, port="otlp", content=b"{}",
                headers={"content-type": "application/json"})
    assert http.status_code == 429  # one bucket for the key, whichever transport it uses
