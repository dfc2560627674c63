"""Per-credential rate limits (GCRA) for the HTTP apps and the OTLP gRPC receiver.

Why not Litestar's ``RateLimitConfig``: it keys buckets by client address and applies one global
limit, runs before authentication (so it cannot know the role or the key), and names its headers
``RateLimit-*``. We need a bucket per credential (API key id, or tenant + ``sub`` of a JWT) whose
size depends on the role or on the key's own setting, the ``X-RateLimit-*`` headers on *every*
response (404s and 401s included) and the same limit on gRPC. So this module is a small generic
cell rate algorithm (GCRA, a token bucket that stores one timestamp per bucket):

- a limit of N per minute allows a burst of N and refills one request every 60/N seconds;
- ``X-RateLimit-Limit`` is N, ``X-RateLimit-Remaining`` the requests allowed right now,
  ``X-RateLimit-Reset`` the seconds until the bucket is full again;
- over the limit: 429 in the error envelope (``rate_limited``, retryable) with ``Retry-After``
  seconds; on gRPC, RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo`` (raised as OverloadedError).

Requests without a valid credential are charged to a bucket per client address (the anonymous
limit), which also slows down key guessing. Public routes (health, OpenAPI, OPTIONS) only report
the caller's bucket, they don't consume it. The client address is the TCP peer: behind a reverse
proxy, limit anonymous traffic at the proxy.

Where the state lives: ``memory`` (default) keeps buckets in this process, which is exact for the
single ``traceward serve`` process we run. With several worker processes, set
TRACEWARD_RATE_LIMIT_STORE=sqlite: buckets then live in ``ratelimit.sqlite3`` in the data directory
and every decision is one short ``BEGIN IMMEDIATE`` transaction, so the limits hold across processes.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from otlp_receiver.errors import AuthenticationError, OverloadedError
from otlp_receiver.service import Authenticate, IngestIdentity
from server.auth import PUBLIC, Authenticator, Principal, resolve_principal, route_permissions
from server.settings import Settings

WINDOW_S = 60.0
SCOPE_LIMIT = "traceward.ratelimit"
"""ASGI scope key: the request's :class:`Decision`."""
_PRUNE_EVERY = 10_000


class RateLimitedError(OverloadedError):
    """This credential sent more requests than its limit allows; retry after ``retry_after_s``."""

    code = "rate_limited"


@dataclass(frozen=True, slots=True)
class Decision:
    """One rate-limit decision."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float = 0.0

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers (and Retry-After when refused)."""
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(math.ceil(self.reset_s))}
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


def gcra(tat: float | None, now: float, limit_per_min: int, *, consume: bool) -> tuple[Decision, float | None]:
    """Decide one request against a bucket whose theoretical arrival time is ``tat``.

    Returns the decision and the bucket's new ``tat`` (None when unchanged).
    """
    interval = WINDOW_S / limit_per_min
    tat = now if tat is None else max(tat, now)
    if not consume:
        return Decision(True, limit_per_min, _remaining(now, tat, interval, limit_per_min), tat - now), None
    new_tat = tat + interval
    allow_at = new_tat - WINDOW_S
    if allow_at > now + 1e-9:
        return Decision(False, limit_per_min, 0, tat - now, allow_at - now), None
    return Decision(True, limit_per_min, _remaining(now, new_tat, interval, limit_per_min), new_tat - now), new_tat


def _remaining(now: float, tat: float, interval: float, limit: int) -> int:
    return max(0, min(limit, int((now - (tat - WINDOW_S)) / interval + 1e-9)))


class BucketStore(Protocol):
    """Where bucket timestamps live; ``update`` is an atomic read-modify-write of one bucket."""

    def update(self, key: str, fn: Callable[[float | None], tuple[Decision, float | None]]) -> Decision:
        """Apply ``fn`` to the bucket's tat and store the new tat it returns (if any)."""
        ...


class MemoryBuckets:
    """Buckets in this process's memory (exact for one process)."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._updates = 0

    def update(self, key: str, fn: Callable[[float | None], tuple[Decision, float | None]]) -> Decision:
        """See :class:`BucketStore`."""
        with self._lock:
            decision, new_tat = fn(self._tats.get(key))
            if new_tat is not None:
                self._tats[key] = new_tat
            self._updates += 1
            if self._updates % _PRUNE_EVERY == 0:
                now = time.time()
                self._tats = {k: v for k, v in self._tats.items() if v > now}
            return decision


class SqliteBuckets:
    """Buckets in a SQLite file shared by every worker process on the machine."""

    def __init__(self, path: str | Path) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF", "PRAGMA busy_timeout=10000"):
            self._conn.execute(pragma)
        self._conn.execute("CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tat REAL NOT NULL)")
        self._lock = threading.Lock()
        self._updates = 0

    def update(self, key: str, fn: Callable[[float | None], tuple[Decision, float | None]]) -> Decision:
        """See :class:`BucketStore`: one BEGIN IMMEDIATE transaction, so processes serialise on the bucket."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT tat FROM buckets WHERE key = ?", [key]).fetchone()
                decision, new_tat = fn(row[0] if row else None)
                if new_tat is not None:
                    self._conn.execute("INSERT INTO buckets (key, tat) VALUES (?, ?) "
                                       "ON CONFLICT(key) DO UPDATE SET tat = excluded.tat", [key, new_tat])
                self._updates += 1
                if self._updates % _PRUNE_EVERY == 0:
                    self._conn.execute("DELETE FROM buckets WHERE tat < ?", [time.time()])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return decision


class RateLimiter:
    """Limits per credential: the key's own limit, else its role's; anonymous callers per address."""

    def __init__(self, store: BucketStore, role_limits: Mapping[str, int], anonymous_per_min: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.role_limits = dict(role_limits)
        self.anonymous_per_min = anonymous_per_min
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """The limiter the settings describe."""
        store: BucketStore = (SqliteBuckets(settings.ratelimit_path) if settings.rate_limit_store == "sqlite"
                              else MemoryBuckets())
        roles = {"ingest": settings.rate_limit_ingest_per_min, "viewer": settings.rate_limit_viewer_per_min,
                 "approver": settings.rate_limit_approver_per_min, "admin": settings.rate_limit_admin_per_min}
        return cls(store, roles, settings.rate_limit_anonymous_per_min)

    def limit_of(self, principal: Principal) -> int:
        """Requests per minute this principal may send."""
        return principal.rate_limit_per_min or self.role_limits.get(principal.role, self.anonymous_per_min)

    def decide(self, principal: Principal | None, client: str, *, consume: bool = True) -> Decision:
        """Charge (or with ``consume=False`` just look at) the caller's bucket."""
        if principal is None:
            key, limit = f"addr:{client}", self.anonymous_per_min
        else:
            key, limit = principal.limit_key, self.limit_of(principal)
        now = self.clock()
        return self.store.update(key, lambda tat: gcra(tat, now, limit, consume=consume))

    def enforce(self, principal: Principal | None, client: str) -> Decision:
        """Charge the caller; RateLimitedError when over the limit."""
        decision = self.decide(principal, client)
        if not decision.allowed:
            raise RateLimitedError(f"rate limit of {decision.limit} requests per minute exceeded; retry in "
                                   f"{max(1, math.ceil(decision.retry_after_s))} s",
                                   retry_after_s=decision.retry_after_s)
        return decision


def limited_ingest_identity(authenticator: Authenticator, limiter: RateLimiter) -> Authenticate:
    """The OTLP gRPC authenticate callable: authenticate, require ingest, charge the key's bucket."""

    def authenticate(header: str | None) -> IngestIdentity:
        principal = authenticator.principal(header)
        identity = authenticator.ingest_identity_of(principal)
        limiter.enforce(principal, "grpc")
        return identity

    return authenticate


# -- HTTP ----------------------------------------------------------------------------------------------------

def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _runtime(scope: Scope) -> Any:
    return scope["app"].state.runtime


def rate_limit_middleware(app: ASGIApp) -> ASGIApp:
    """Route middleware: authenticate once, charge the caller's bucket, refuse with 429 when empty."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            runtime = _runtime(scope)
            authenticator: Authenticator = runtime.authenticator
            if authenticator.may_block:
                auth = await anyio.to_thread.run_sync(resolve_principal, authenticator, scope)
            else:
                auth = resolve_principal(authenticator, scope)
            principal = None if isinstance(auth, AuthenticationError) else auth
            handler = scope.get("route_handler")
            permissions = route_permissions(handler) if handler is not None else None
            public = permissions is not None and PUBLIC in permissions
            decision = runtime.limiter.decide(principal, _client(scope), consume=not public)
            scope[SCOPE_LIMIT] = decision  # type: ignore[literal-required]
            if not decision.allowed:
                raise RateLimitedError(f"rate limit of {decision.limit} requests per minute exceeded; retry in "
                                       f"{max(1, math.ceil(decision.retry_after_s))} s",
                                       retry_after_s=decision.retry_after_s)
        await app(scope, receive, send)

    return middleware


async def rate_limit_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: put the X-RateLimit-* headers on every response, matched route or not."""
    if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP:
        return
    decision: Decision | None = scope.get(SCOPE_LIMIT)  # type: ignore[assignment]
    if decision is None:  # no route matched (404/405): the middleware never ran, charge the caller here
        runtime = _runtime(scope)
        auth = resolve_principal(runtime.authenticator, scope)
        principal = None if isinstance(auth, AuthenticationError) else auth
        decision = runtime.limiter.decide(principal, _client(scope))
        scope[SCOPE_LIMIT] = decision  # type: ignore[literal-required]
    headers = MutableScopeHeaders.from_message(message)
    for name, value in decision.headers().items():
        if name != "Retry-After" or message["status"] == 429:
            headers[name] = value
