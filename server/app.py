"""Litestar applications: the API app (REST, OpenAPI at /schema) and the OTLP/HTTP app.

Both take a started :class:`~server.runtime.Runtime`; neither owns its lifecycle.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Response, Router, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from otlp_receiver.store.damaged import damaged_count
from server.auth import PUBLIC, permission_guard
from server.errors import EXCEPTION_HANDLERS, envelope
from server.metrics import metrics_middleware, metrics_route
from server.ratelimit import rate_limit_headers, rate_limit_middleware
from server.readiness import retry_after
from server.routes.admin import AdminController, AuditController, KeysController
from server.routes.analytics import ANALYTICS_HANDLERS
from server.routes.diff import DiffController
from server.routes.events import stream_events
from server.routes.governance import GOVERNANCE_HANDLERS
from server.routes.ingest import OtlpHttpController, OtlpHttpLogsController
from server.routes.runs import RunsController
from server.routes.ui import UiController
from server.runtime import Runtime


@get("/healthz", summary="Liveness and ingest counters", opt={"permission": PUBLIC}, sync_to_thread=False,
     tags=["ops"])
def healthz(runtime: Runtime) -> dict[str, Any]:
    """Always 200 while the process serves; includes counters useful to operators. ``status`` is ``degraded``
    while the flusher is stalled (``server/watchdog.py``): exports are acknowledged, not yet queryable.
    ``ingest_overloaded`` says whether exports are refused now (429 / RESOURCE_EXHAUSTED), and how close the
    unflushed write-ahead log is to the limit that decides it.
    ``damaged_step_files``: damaged step files retention had to keep, holding expired runs back (the log
    names them; ``otlp_receiver/store/damaged.py``)."""
    load = runtime.ingest_load()
    return {"status": "degraded" if runtime.flusher_stalled else "ok", "spans_accepted": runtime.spans_accepted,
            "spans_duplicate": runtime.spans_duplicate, "wal_bytes": runtime.wal.size_bytes(),
            "last_flush_s": runtime.flusher.last_flush_s, "flusher_restarts": runtime.flusher_restarts,
            "flusher_stalls": runtime.flusher_stalls, "flusher_stalled": runtime.flusher_stalled,
            "ingest_overloaded": load.overloaded, "wal_backlog_bytes": load.wal_backlog_bytes,
            "wal_max_bytes": load.wal_max_bytes,
            "damaged_step_files": damaged_count(runtime.index)}


@get("/readyz", summary="Readiness: whether to send this server traffic now", opt={"permission": PUBLIC},
     sync_to_thread=True, tags=["ops"])
def readyz(runtime: Runtime) -> Response[dict[str, Any]]:
    """200 ``{"status": "ready"}``, or 503 in the error envelope (``not_ready``) whose ``details`` map each
    reason (``server/readiness.py``) to a sentence, with ``Retry-After`` when every reason clears by itself.
    In a thread: the storage check writes and fsyncs a small file (at most once a second)."""
    reasons = runtime.readiness.check()
    if not reasons:
        return Response({"status": "ready"})
    wait = retry_after(reasons)
    return envelope("not_ready", "not ready: " + ", ".join(r.reason for r in reasons),
                    details={r.reason: r.message for r in reasons}, retryable=True, status=503,
                    headers={"Retry-After": str(wait)} if wait is not None else None)


def urgent_middleware(app: ASGIApp) -> ASGIApp:
    """Route middleware, outermost: requests of handlers marked ``opt={"urgent": True}`` (decisions, which
    agents block on) hold the runtime's ``PriorityGate`` until answered, so ingest threads pause meanwhile."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if handler is None or not handler.opt.get("urgent"):
            await app(scope, receive, send)
            return
        with scope["app"].state.runtime.priority.urgent():
            await app(scope, receive, send)

    return middleware


def _base(runtime: Runtime, handlers: list[Any], *, openapi: bool) -> Litestar:
    openapi_config = OpenAPIConfig(
        title="Traceward", version="0.1.0", path="/schema",
        openapi_router=Router(path="/schema", route_handlers=[], opt={"permission": PUBLIC}, include_in_schema=False),
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"bearer": []}],
    ) if openapi else None
    app = Litestar(
        route_handlers=handlers,
        dependencies={"runtime": Provide(lambda: runtime, sync_to_thread=False)},
        guards=[permission_guard],
        middleware=[urgent_middleware, metrics_middleware, rate_limit_middleware],
        before_send=[rate_limit_headers],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config,
        request_max_body_size=runtime.settings.max_http_body_bytes,
        debug=False,
    )
    app.state.runtime = runtime
    return app


def create_app(runtime: Runtime) -> Litestar:
    """The API app served on the HTTP port."""
    analytics = [*ANALYTICS_HANDLERS, stream_events, metrics_route(public=runtime.settings.metrics_are_public)]
    return _base(runtime, [*analytics, healthz, readyz, RunsController, DiffController, OtlpHttpController, OtlpHttpLogsController, *GOVERNANCE_HANDLERS, KeysController, AuditController,
                           AdminController, UiController], openapi=True)


def create_otlp_http_app(runtime: Runtime) -> Litestar:
    """The OTLP/HTTP app served on the OTLP/HTTP port (4318)."""
    return _base(runtime, [healthz, readyz, OtlpHttpController, OtlpHttpLogsController], openapi=False)
