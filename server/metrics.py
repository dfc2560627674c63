"""``GET /metrics``: Prometheus text exposition (prometheus_client) of ingest, storage, API and agent metrics.

Series (process-lifetime counters: they restart at 0 with the process, as Prometheus expects):

    traceward_spans_received_total                       spans in decodable OTLP exports (all outcomes)
    traceward_spans_accepted_total / _duplicate_total     made durable / already known (dropped)
    traceward_spans_rejected_total{reason}                invalid_trace_id | invalid_span_id |
                                                          invalid_parent_span_id | overloaded | other
    traceward_ingest_requests_rejected_total{transport,reason}   whole exports refused (http | grpc)
    traceward_wal_depth_bytes, traceward_wal_size_bytes   unflushed / held write-ahead-log bytes (gauges)
    traceward_flush_duration_seconds (histogram), traceward_flushed_steps_total
    traceward_flusher_stalls_total                        flusher found stalled by the watchdog (then restarted,
                                                          when it is a process)
    traceward_flusher_stalled                             gauge: 1 while it is stalled (until a thread moves again
                                                          or a process's successor is ready)
    traceward_ready                                       gauge: 1 while GET /readyz answers 200
    traceward_not_ready{reason}                           gauge: 1 while that reason holds (server/readiness.py:
                                                          flusher_restarting | flusher_stalled | ingest_overloaded |
                                                          data_dir_not_writable | disk_full)
    traceward_damaged_step_files                          gauge: damaged step files retention had to keep (they may
                                                          hold steps within retention; expired runs wait on them)
    traceward_http_request_duration_seconds{method,route,code}  route = the path *template*; code = 2xx…5xx
    traceward_decisions_total{outcome}                    allow | deny | require_approval | break_glass
    traceward_approvals_total{outcome}                    approved | denied | expired
    traceward_approvals_pending                           gauge, all tenants
    traceward_runs_started_total{agent}
    traceward_runs_total{status,agent}                    runs reaching a final status (succeeded|failed|canceled)
    traceward_run_duration_seconds{agent} (histogram)     observed when a run finishes
    traceward_tokens_total{direction,agent}               input|output|cache_read|cache_write|reasoning
    traceward_cost_usd_total{agent}                       priced cost of finished runs
    traceward_runs_running                                gauge, all tenants
    traceward_findings_total{kind}, traceward_findings_queue_depth
    traceward_event_stream_clients                        open SSE streams
    traceward_forward_queue_exports{signal}, traceward_forward_queue_bytes{signal}   forwarding queues (gauges;
                                                          signal = traces | logs; only with forwarding on)
    traceward_forward_exports_total{signal,outcome}       sent | dropped (queue full) | refused | failed
    traceward_forward_items_total{signal,outcome}         spans or log records sent | dropped

Cardinality is bounded: no tenant, run or raw-path label anywhere. ``agent`` takes the first
TRACEWARD_METRICS_MAX_AGENTS (default 50) distinct agent names this process sees; later ones are
reported as ``other`` and runs without an agent as ``unknown``. Usage, tokens and cost count a run
once, when it reaches its final status (later late spans do not change the counters).

Decisions are counted by tailing the audit log (``id`` > the last one seen) at scrape time, so the
governance code needs no hooks: cheap (a rowid range) and exact for this process's lifetime.

The route is public when TRACEWARD_METRICS_PUBLIC is true (the default when the server binds a
loopback address, as scrapers rarely send bearer tokens); otherwise it needs an ``admin``
credential, since the figures cover every tenant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import grpc
import orjson
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from otlp_receiver.errors import AppError
from otlp_receiver.ingest import IngestResult
from otlp_receiver.log_content import NOT_CONTENT, LogContent
from otlp_receiver.service import TraceServicer
from otlp_receiver.store.damaged import damaged_count
from otlp_receiver.store.events import FINAL_STATUSES
from otlp_receiver.store.findings import queue_depth
from otlp_receiver.store.index import RunIndex
from server.auth import PUBLIC
from server.errors import status_for
from server.flushing import FlushedSteps
from server.readiness import REASONS, NotReady

logger = logging.getLogger(__name__)

OTHER, UNKNOWN = "other", "unknown"
TOKEN_DIRECTIONS: Final = (("input", "tokens_in"), ("output", "tokens_out"), ("cache_read", "tokens_cache_read"),
                           ("cache_write", "tokens_cache_write"), ("reasoning", "tokens_reasoning"))
SPAN_REJECT_REASONS: Final = ("invalid_trace_id", "invalid_span_id", "invalid_parent_span_id")
_HTTP_REJECT: Final = {400: "invalid", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
                       413: "payload_too_large", 415: "unsupported_media_type", 429: "overloaded",
                       503: "unavailable"}
_EXPORT_ERROR_CODES: Final = frozenset({"decode_error", "invalid_input", "payload_too_large", "unauthenticated",
                                        "permission_denied", "rate_limited", "overloaded", "storage_unavailable"})
"""Error codes of a refused export, used as the ``reason`` label (a closed set)."""
_DECISION_ACTIONS: Final = {"break_glass.issue": ("decisions", "break_glass"),
                            "approval.approve": ("approvals", "approved"),
                            "approval.deny": ("approvals", "denied"),
                            "approval.expire": ("approvals", "expired")}
_RUN_DURATION_BUCKETS: Final = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_FLUSH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SKIP_ROUTES: Final = frozenset({"/v1/streams/events"})
"""Long-lived responses: their duration is the client's choice, not a latency."""
_PAIRS_PER_QUERY: Final = 400


class AgentLabels:
    """Bounded ``agent`` label values: the first ``limit`` names get their own, the rest ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, agent: str | None) -> str:
        """The label value for an agent name."""
        if not agent:
            return UNKNOWN
        with self._lock:
            if agent in self._known:
                return agent
            if len(self._known) < self.limit:
                self._known.add(agent)
                return agent
        return OTHER


class Metrics:
    """Every instrument, in a registry of its own (one per Runtime, so tests can run several)."""

    def __init__(self, *, max_agents: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.agent_label = AgentLabels(max_agents)
        r = self.registry
        self.spans_received = Counter("traceward_spans_received", "Spans in decodable OTLP exports", registry=r)
        self.spans_accepted = Counter("traceward_spans_accepted", "Spans made durable", registry=r)
        self.spans_duplicate = Counter("traceward_spans_duplicate", "Spans already known (dropped)", registry=r)
        self.spans_rejected = Counter("traceward_spans_rejected", "Spans refused", ["reason"], registry=r)
        self.log_records = Counter("traceward_log_records", "OTLP log records in decodable exports, by outcome "
                                   "(stored | not_content | no_trace_id)", ["outcome"], registry=r)
        self.log_content_steps = Counter("traceward_log_content_steps", "Artifact steps made from GenAI content "
                                         "log records (accepted | duplicate)", ["outcome"], registry=r)
        self.requests_rejected = Counter("traceward_ingest_requests_rejected", "OTLP exports refused whole",
                                         ["transport", "reason"], registry=r)
        self.flush_seconds = Histogram("traceward_flush_duration_seconds", "WAL → stores flush round duration",
                                       buckets=_FLUSH_BUCKETS, registry=r)
        self.flushed_steps = Counter("traceward_flushed_steps", "Steps moved into the stores", registry=r)
        self.flusher_stalls = Counter("traceward_flusher_stalls", "Flusher stalls found by the watchdog (work "
                                      "waiting, no progress for TRACEWARD_FLUSHER_STALL_S)", registry=r)
        self.flusher_stalled = Gauge("traceward_flusher_stalled", "1 while the flusher is stalled", registry=r)
        self.http_seconds = Histogram("traceward_http_request_duration_seconds", "API latency by route template",
                                      ["method", "route", "code"], registry=r)
        self.runs_started = Counter("traceward_runs_started", "Runs started", ["agent"], registry=r)
        self.runs = Counter("traceward_runs", "Runs that reached a final status", ["status", "agent"], registry=r)
        self.run_seconds = Histogram("traceward_run_duration_seconds", "Duration of finished runs", ["agent"],
                                     buckets=_RUN_DURATION_BUCKETS, registry=r)
        self.tokens = Counter("traceward_tokens", "Tokens of finished runs", ["direction", "agent"], registry=r)
        self.cost = Counter("traceward_cost_usd", "Priced cost of finished runs (USD)", ["agent"], registry=r)
        self.findings = Counter("traceward_findings", "Findings raised by the failure scan", ["kind"], registry=r)
        self.stream_clients = Gauge("traceward_event_stream_clients", "Open event streams", registry=r)

    # -- ingest ----------------------------------------------------------------------------------------------

    def observe_ingest(self, result: IngestResult) -> None:
        """Count an accepted OTLP batch."""
        self.spans_received.inc(result.accepted + result.duplicates)
        self.spans_accepted.inc(result.accepted)
        self.spans_duplicate.inc(result.duplicates)

    def observe_logs(self, content: LogContent, result: IngestResult | None) -> None:
        """Count a logs export: its records by outcome, and the content steps made from them."""
        self.log_records.labels("stored").inc(content.kept)
        for reason, count in content.not_kept.items():
            self.log_records.labels("not_content" if reason == NOT_CONTENT else "no_trace_id").inc(count)
        if result is not None:
            self.log_content_steps.labels("accepted").inc(result.accepted)
            self.log_content_steps.labels("duplicate").inc(result.duplicates)

    def observe_rejected_spans(self, count: int, reason: str) -> None:
        """Count spans refused one by one (or a whole batch shed because the WAL is full)."""
        if count > 0:
            self.spans_received.inc(count)
            self.spans_rejected.labels(reason).inc(count)

    def observe_partial_success(self, rejected: int, message: str) -> None:
        """Count an export's partial success; all its rejected spans go under the first reason given."""
        first = message.split(";", 1)[0].split(":", 1)[0].strip().replace(" ", "_")
        self.observe_rejected_spans(rejected, first if first in SPAN_REJECT_REASONS else OTHER)

    # -- flushes and runs ------------------------------------------------------------------------------------

    def observe_batch(self, index: RunIndex, batch: FlushedSteps, flush_s: float) -> None:
        """Flusher listener (after commit): flush timing, runs started and finished with their usage."""
        self.flush_seconds.observe(flush_s)
        self.flushed_steps.inc(batch.step_count)
        started = [key for key, (before, after) in batch.transitions.items() if before is None and after]
        finished = [key for key, (before, after) in batch.transitions.items()
                    if after in FINAL_STATUSES and before not in FINAL_STATUSES]
        if not started and not finished:
            return
        rows = _run_rows(index, sorted(set(started) | set(finished)))
        for key in started:
            self.runs_started.labels(self.agent_label(rows.get(key, {}).get("agent"))).inc()
        for key in finished:
            if key in rows:
                self._observe_finished(rows[key])

    def _observe_finished(self, row: dict[str, Any]) -> None:
        agent = self.agent_label(row["agent"])
        self.runs.labels(row["status"], agent).inc()
        if row["duration_ns"] is not None and row["duration_ns"] >= 0:
            self.run_seconds.labels(agent).observe(row["duration_ns"] / 1e9)
        for direction, column in TOKEN_DIRECTIONS:
            if row[column]:
                self.tokens.labels(direction, agent).inc(row[column])
        if row["cost_usd"]:
            self.cost.labels(agent).inc(row["cost_usd"])


def _run_rows(index: RunIndex, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    columns = ("tenant_id", "run_id", "status", "agent", "duration_ns", *(c for _, c in TOKEN_DIRECTIONS),
               "cost_usd")
    select = ", ".join("finished_ns - started_ns AS duration_ns" if c == "duration_ns" else c for c in columns)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(keys), _PAIRS_PER_QUERY):
        chunk = keys[start:start + _PAIRS_PER_QUERY]
        values = ",".join("(?, ?)" for _ in chunk)
        rows = index.reader.conn.execute(
            f"SELECT {select} FROM runs WHERE (tenant_id, run_id) IN (VALUES {values})",
            [part for key in chunk for part in key]).fetchall()
        for row in rows:
            found[(row[0], row[1])] = dict(zip(columns, row, strict=True))
    return found


class StoreCollector(Collector):
    """Scrape-time figures read from the stores: WAL depth, queues, pending approvals, decisions."""

    def __init__(self, index: RunIndex, *, wal_depth: Callable[[], int], wal_size: Callable[[], int]) -> None:
        self.index, self.wal_depth, self.wal_size = index, wal_depth, wal_size
        self._lock = threading.Lock()
        self._audit_id = self._newest_audit_id()
        self._counts: dict[tuple[str, str], int] = {}

    def _newest_audit_id(self) -> int:
        row = self.index.reader.conn.execute("SELECT max(id) FROM audit_log").fetchone()
        return int(row[0] or 0)

    def collect(self) -> Iterable[Any]:
        """Called by prometheus_client on every scrape."""
        yield _gauge("traceward_wal_depth_bytes", "Write-ahead-log bytes not yet flushed", self.wal_depth())
        yield _gauge("traceward_wal_size_bytes", "Write-ahead-log bytes held on disk", self.wal_size())
        yield _gauge("traceward_findings_queue_depth", "Runs waiting for the findings scan", queue_depth(self.index))
        conn = self.index.reader.conn
        now = time.time_ns()
        pending = conn.execute("SELECT count(*) FROM approvals WHERE status = 'pending' AND expires_ns > ?",
                               [now]).fetchone()[0]
        yield _gauge("traceward_approvals_pending", "Approvals waiting for a person (all tenants)", pending)
        running = conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
        yield _gauge("traceward_runs_running", "Runs still running (all tenants)", running)
        yield _gauge("traceward_damaged_step_files", "Damaged step files retention had to keep (the log names "
                     "them)", damaged_count(self.index))
        yield from self._decision_counters()

    def _decision_counters(self) -> Iterable[CounterMetricFamily]:
        with self._lock:
            self._tail_audit()
            counts = dict(self._counts)
        decisions = CounterMetricFamily("traceward_decisions", "Governance decisions by outcome", labels=["outcome"])
        approvals = CounterMetricFamily("traceward_approvals", "Approvals decided by outcome", labels=["outcome"])
        for outcome in ("allow", "deny", "require_approval", "break_glass"):
            decisions.add_metric([outcome], counts.get(("decisions", outcome), 0))
        for outcome in ("approved", "denied", "expired"):
            approvals.add_metric([outcome], counts.get(("approvals", outcome), 0))
        return (decisions, approvals)

    def _tail_audit(self) -> None:
        rows = self.index.reader.conn.execute(
            "SELECT id, action, json_extract(details, '$.decision') FROM audit_log WHERE id > ? AND action IN "
            "('policy.decision', 'break_glass.issue', 'approval.approve', 'approval.deny', 'approval.expire') "
            "ORDER BY id", [self._audit_id]).fetchall()
        for audit_id, action, decision in rows:
            family, outcome = _DECISION_ACTIONS.get(action, ("decisions", decision or OTHER))
            self._counts[(family, outcome)] = self._counts.get((family, outcome), 0) + 1
            self._audit_id = max(self._audit_id, audit_id)


class ReadinessCollector(Collector):
    """Scrape-time readiness: the same check as ``GET /readyz``, one gauge per reason (a closed set)."""

    def __init__(self, check: Callable[[], Sequence[NotReady]]) -> None:
        self.check = check

    def collect(self) -> Iterable[Any]:
        """Called by prometheus_client on every scrape."""
        holding = {r.reason for r in self.check()}
        yield _gauge("traceward_ready", "1 while GET /readyz answers 200", float(not holding))
        family = GaugeMetricFamily("traceward_not_ready", "1 while this reason keeps the server not ready",
                                   labels=["reason"])
        for reason in REASONS:
            family.add_metric([reason], float(reason in holding))
        yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# -- HTTP: latency middleware, OTLP/HTTP outcomes, the route -----------------------------------------------------

def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Route middleware: latency by route template; OTLP/HTTP export outcomes."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("path_template") in _SKIP_ROUTES:
            await app(scope, receive, send)
            return
        metrics: Metrics = scope["app"].state.runtime.metrics
        route = str(scope.get("path_template") or "unmatched")
        is_export = route.rstrip("/") == "/v1/traces"
        seen: dict[str, Any] = {"status": 500, "body": []}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and is_export:
                seen["body"].append(message.get("body", b""))
            await send(message)

        started = time.perf_counter()
        try:
            await app(scope, receive, observed_send)
        except AppError as exc:
            seen["status"], seen["code"] = status_for(exc), exc.code
            raise
        except HTTPException as exc:
            seen["status"] = exc.status_code
            raise
        finally:
            status = int(seen["status"])
            metrics.http_seconds.labels(scope["method"], route, f"{status // 100}xx").observe(
                time.perf_counter() - started)
            if is_export:
                _observe_export(metrics, status, seen.get("code"), b"".join(seen["body"]), _content_type(scope))

    return middleware


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


def _observe_export(metrics: Metrics, status: int, code: str | None, body: bytes, content_type: str) -> None:
    if status != 200:
        reason = code if code in _EXPORT_ERROR_CODES else _HTTP_REJECT.get(status, OTHER)
        metrics.requests_rejected.labels("http", reason).inc()
        return
    try:
        if content_type == "application/json":
            partial = orjson.loads(body or b"{}").get("partialSuccess") or {}
            rejected, message = int(partial.get("rejectedSpans") or 0), str(partial.get("errorMessage") or "")
        else:
            response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
            rejected, message = response.partial_success.rejected_spans, response.partial_success.error_message
    except (ValueError, TypeError, AttributeError) as exc:
        logger.debug("cannot read an OTLP/HTTP export response for metrics: %s", exc)
        return
    metrics.observe_partial_success(rejected, message)


class ObservedTraceServicer(TraceServicer):
    """The OTLP gRPC servicer, counting partial successes and refused exports."""

    def __init__(self, metrics: Metrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    def Export(self, body: bytes, context: grpc.ServicerContext  # noqa: N802 - gRPC method name
               ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Handle one export and count its outcome."""
        try:
            response = super().Export(body, context)
        except Exception:
            code = context.code() if hasattr(context, "code") else None
            reason = code.name.lower() if isinstance(code, grpc.StatusCode) else OTHER
            self.metrics.requests_rejected.labels("grpc", reason).inc()
            raise
        self.metrics.observe_partial_success(response.partial_success.rejected_spans,
                                             response.partial_success.error_message)
        return response


def metrics_route(*, public: bool) -> HTTPRouteHandler:
    """``GET /metrics``, public or admin-only (TRACEWARD_METRICS_PUBLIC)."""

    @get("/metrics", summary="Prometheus metrics (text exposition format)", sync_to_thread=True, tags=["ops"],
         opt={"permission": PUBLIC if public else "admin"}, include_in_schema=True)
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every Traceward series; see ``server/metrics.py`` for names, labels and limits."""
        registry = request.app.state.runtime.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
