"""Analytics, findings and feedback over HTTP (issue 7).

    GET  /v1/analytics/summary        read    metrics per group (group_by), time range and run filters
    GET  /v1/analytics/timeseries     read    the same per time bucket (bucket=1m|5m|15m|1h|6h|1d)
    GET  /v1/analytics/compare        read    two service.version values of one agent side by side
    GET  /v1/analytics/health         read    the health pulse (cached HEALTH_CACHE_S per tenant)
    GET  /v1/findings                 read    filters kind, run, severity, detected_after/before; cursor
    POST /v1/runs/{run_id}/feedback   read or ingest   score / label / comment on a run
    GET  /v1/feedback                 read    filters run, label; cursor

Time range: ``started_after`` (inclusive) / ``started_before`` (exclusive), RFC 3339 or integer ns,
on the run's start (a step's own start for step metrics). Without either bound the window is the
last 24 hours (compare: 7 days); ``started_after`` alone runs to now, ``started_before`` alone covers
the 24 hours (7 days) before it.

Feedback: anyone who may read runs (viewer, approver, admin) may annotate them, and so may an
application with its ingest key (end-user thumbs up/down); the author is recorded.

Unknown group keys, buckets or too many buckets answer 422 ``invalid_analytics_query``; malformed
parameters 400. The frames come from the store (``RunFrameCache`` in ``otlp_receiver/store/frames.py``,
``StepTable.scan`` over the range's day partitions) and every number from ``analysis/``.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Final

import msgspec
import polars as pl
from litestar import Controller, Request, get, post
from litestar.params import Parameter

from analysis import aggregate
from analysis.aggregate import GROUP_KEYS, validate_group_by
from analysis.compare import compare_versions
from analysis.filters import Filters
from analysis.findings import SEVERITY
from analysis.health import health_pulse
from otlp_receiver.errors import InvalidInputError, NotFoundError
from otlp_receiver.model import RunStatus
from otlp_receiver.store import findings as finding_store
from otlp_receiver.store.frames import RunScope, pending_approvals, step_days
from server.auth import current_principal
from server.routes.ingest import normalise_run_id
from server.routes.runs import encode_seq_cursor
from server.runtime import Runtime
from server.schemas import finding_to_json, parse_time, rfc3339

READ = {"permission": "read"}
FEEDBACK_WRITE = {"permission": ("read", "ingest")}
DAY_NS: Final = 86_400 * 10**9
DEFAULT_WINDOW_NS: Final = DAY_NS
COMPARE_WINDOW_NS: Final = 7 * DAY_NS
HEALTH_CACHE_S: Final = 5.0
MAX_LABEL_CHARS: Final = 64
MAX_COMMENT_CHARS: Final = 4000
SEVERITIES: Final = ("info", "warning", "error")
TimeParam = Annotated[str | None, Parameter(description="RFC 3339 or integer ns")]
GroupParam = Annotated[str | None, Parameter(description="comma-separated: " + ", ".join(GROUP_KEYS))]


def _window(after: str | None, before: str | None, default_ns: int) -> tuple[int, int]:
    now = time.time_ns()
    after_ns = parse_time(after, field="started_after") if after else None
    before_ns = parse_time(before, field="started_before") if before else None
    if before_ns is None:
        before_ns = now + 1 if after_ns is None else max(now + 1, after_ns + 1)
    if after_ns is None:
        after_ns = before_ns - default_ns
    if before_ns <= after_ns:
        raise InvalidInputError("started_before must be after started_after",
                                details={"started_before": "not after started_after"})
    return after_ns, before_ns


def _status(status: str | None) -> str | None:
    if status is not None and status not in {s.value for s in RunStatus}:
        raise InvalidInputError(f"unknown status {status!r}",
                                details={"status": "one of " + ", ".join(s.value for s in RunStatus)})
    return status


def _group_by(spec: str | None) -> tuple[str, ...]:
    return validate_group_by([k.strip() for k in (spec or "").split(",") if k.strip()])


def _check_buckets(bucket: str, after_ns: int, before_ns: int) -> None:
    """Refuse a bucket/range mix analysis would refuse, before loading anything for it."""
    width = aggregate.BUCKETS.get(bucket)
    if width is None:
        raise aggregate.AnalysisQueryError(f"unknown bucket {bucket!r}; allowed: {', '.join(aggregate.BUCKETS)}")
    count = (before_ns - 1) // width - after_ns // width + 1
    if count > aggregate.MAX_BUCKETS:
        raise aggregate.AnalysisQueryError(
            f"{count} buckets of {bucket} is over {aggregate.MAX_BUCKETS}; use a wider bucket or a shorter range")


def _frames(runtime: Runtime, tenant: str, filters: Filters) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The runs (from the in-memory runs cache) and the steps of the range's day partitions."""
    scope = RunScope(started_after_ns=filters.started_after_ns, started_before_ns=filters.started_before_ns,
                     agent=filters.agent, service=filters.service, status=filters.status,
                     environment=filters.environment)
    days = step_days(filters.started_after_ns, filters.started_before_ns, now_ns=time.time_ns())
    return runtime.run_frames.runs(tenant, scope), runtime.steps.scan(tenant, days)


def _range(filters: Filters) -> dict[str, Any]:
    return {"started_after": rfc3339(filters.started_after_ns), "started_before": rfc3339(filters.started_before_ns),
            "started_after_ns": filters.started_after_ns, "started_before_ns": filters.started_before_ns}


def _finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON has no NaN/inf: they become null (polars can produce NaN for a 0/0 rate)."""
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    return rows


class AnalyticsController(Controller):
    """Aggregates over runs and steps."""

    path = "/v1/analytics"
    tags = ["analytics"]

    @get("/summary", summary="Run and step metrics per group over a time range", opt=READ, sync_to_thread=True)
    def summary(
        self, request: Request[Any, Any, Any], runtime: Runtime, started_after: TimeParam = None,
        started_before: TimeParam = None, group_by: GroupParam = None, agent: str | None = None,
        service: str | None = None, environment: str | None = None, model: str | None = None,
        tool: str | None = None, status: str | None = None,
    ) -> dict[str, Any]:
        """Runs, error rate, p50/p90/p99 run and step latency, tokens, cost, tool calls, violations, redactions."""
        tenant = current_principal(request).tenant_id
        keys = _group_by(group_by)
        after, before = _window(started_after, started_before, DEFAULT_WINDOW_NS)
        filters = Filters(started_after_ns=after, started_before_ns=before, agent=agent, service=service,
                          model=model, tool=tool, status=_status(status), environment=environment)
        runs, steps = _frames(runtime, tenant, filters)
        table = aggregate.summarize(runs, steps, filters=filters, group_by=keys)
        feedback = finding_store.feedback_summary(runtime.index, tenant, started_after_ns=after, started_before_ns=before,
                                    agent=agent)
        return {"range": _range(filters), "group_by": list(keys), "groups": _finite(table.to_dicts()),
                "feedback": feedback}

    @get("/timeseries", summary="Run and step metrics per time bucket and group", opt=READ, sync_to_thread=True)
    def timeseries(
        self, request: Request[Any, Any, Any], runtime: Runtime, bucket: str = "1h", started_after: TimeParam = None,
        started_before: TimeParam = None, group_by: GroupParam = None, agent: str | None = None,
        service: str | None = None, environment: str | None = None, model: str | None = None,
        tool: str | None = None, status: str | None = None,
    ) -> dict[str, Any]:
        """Every bucket of the range (aligned on the Unix epoch, UTC), for every group seen in it."""
        tenant = current_principal(request).tenant_id
        keys = _group_by(group_by)
        after, before = _window(started_after, started_before, DEFAULT_WINDOW_NS)
        filters = Filters(started_after_ns=after, started_before_ns=before, agent=agent, service=service,
                          model=model, tool=tool, status=_status(status), environment=environment)
        _check_buckets(bucket, after, before)
        runs, steps = _frames(runtime, tenant, filters)
        table = aggregate.timeseries(runs, steps, filters=filters, bucket=bucket, group_by=keys)
        return {"range": _range(filters), "bucket": bucket, "group_by": list(keys),
                "points": _finite(table.to_dicts())}

    @get("/compare", summary="Two service.version values of one agent side by side, with deltas", opt=READ,
         sync_to_thread=True)
    def compare(
        self, request: Request[Any, Any, Any], runtime: Runtime, version_a: str, version_b: str,
        agent: str | None = None, service: str | None = None, started_after: TimeParam = None,
        started_before: TimeParam = None,
    ) -> dict[str, Any]:
        """The regression view: every summary metric for A and B, absolute and relative deltas, regressions."""
        if agent is None and service is None:
            raise InvalidInputError("name the agent (or the service) whose versions to compare",
                                    details={"agent": "required (or service)"})
        tenant = current_principal(request).tenant_id
        after, before = _window(started_after, started_before, COMPARE_WINDOW_NS)
        filters = Filters(started_after_ns=after, started_before_ns=before, agent=agent, service=service)
        runs, steps = _frames(runtime, tenant, filters)
        result = compare_versions(runs, steps, agent=agent, service=service, version_a=version_a,
                                  version_b=version_b, filters=filters)
        return {"range": _range(filters), **result}

    @get("/health", summary="Health pulse: green/yellow/red fields and one sentence", opt=READ, sync_to_thread=True)
    def health(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """Agents, error rate, p90 latency, cost today, approvals waiting, stalled runs, violations."""
        tenant = current_principal(request).tenant_id
        cached = runtime.health_cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < HEALTH_CACHE_S:
            return cached[1]
        now = time.time_ns()
        midnight = now // DAY_NS * DAY_NS
        runs = runtime.run_frames.runs(tenant, RunScope(started_after_ns=midnight - 7 * DAY_NS,
                                                         started_before_ns=now + 1, with_running=True))
        steps = runtime.steps.scan(tenant, step_days(now - 3_600 * 10**9, now + 1, now_ns=now))
        pulse = health_pulse(runs, steps, now_ns=now, pending_approvals=pending_approvals(runtime.index, tenant,
                                                                                           now_ns=now))
        body = {**pulse.to_dict(), "as_of": rfc3339(now), "as_of_ns": now}
        runtime.health_cache[tenant] = (time.monotonic(), body)
        return body


class FindingsController(Controller):
    """The failure scan's findings."""

    path = "/v1/findings"
    tags = ["findings"]

    @get("/", summary="List findings, newest first", opt=READ, sync_to_thread=True)
    def list_findings(
        self, request: Request[Any, Any, Any], runtime: Runtime, kind: str | None = None, run: str | None = None,
        severity: str | None = None, detected_after: TimeParam = None, detected_before: TimeParam = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50, cursor: str | None = None,
    ) -> dict[str, Any]:
        """Cursor-paged findings (keyset over detection time, id); each links to its run and steps."""
        if kind is not None and kind not in SEVERITY:
            raise InvalidInputError(f"unknown finding kind {kind!r}", details={"kind": "one of " + ", ".join(SEVERITY)})
        if severity is not None and severity not in SEVERITIES:
            raise InvalidInputError(f"unknown severity {severity!r}",
                                    details={"severity": "one of " + ", ".join(SEVERITIES)})
        filters = finding_store.FindingFilters(
            kind=kind, severity=severity, run_id=normalise_run_id(run) if run else None,
            detected_after_ns=parse_time(detected_after, field="detected_after") if detected_after else None,
            detected_before_ns=parse_time(detected_before, field="detected_before") if detected_before else None)
        page, next_cursor = finding_store.list_findings(runtime.index, current_principal(request).tenant_id, filters, limit=limit,
                                          cursor=cursor)
        return {"findings": [finding_to_json(f, step_cursor=encode_seq_cursor) for f in page],
                "next_cursor": next_cursor}


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/runs/{run_id}/feedback: at least one field."""

    score: float | None = None
    label: str | None = None
    comment: str | None = None


def _check_feedback(data: FeedbackIn) -> None:
    if data.score is None and data.label is None and data.comment is None:
        raise InvalidInputError("give a score, a label or a comment", details={"body": "empty feedback"})
    if data.score is not None and not math.isfinite(data.score):
        raise InvalidInputError("score must be a finite number", details={"score": "not finite"})
    if data.label is not None and not 0 < len(data.label) <= MAX_LABEL_CHARS:
        raise InvalidInputError(f"label: 1 to {MAX_LABEL_CHARS} characters", details={"label": "length"})
    if data.comment is not None and len(data.comment) > MAX_COMMENT_CHARS:
        raise InvalidInputError(f"comment: at most {MAX_COMMENT_CHARS} characters", details={"comment": "too long"})


def _feedback_json(item: Any) -> dict[str, Any]:
    return {"feedback_id": item.feedback_id, "run_id": item.run_id, "score": item.score, "label": item.label,
            "comment": item.comment, "created_at": rfc3339(item.created_ns), "created_at_ns": item.created_ns,
            "created_by": item.created_by}


class FeedbackController(Controller):
    """Feedback on runs: a person's or an application's score, label and comment."""

    path = "/v1"
    tags = ["feedback"]

    @post("/runs/{run_id:str}/feedback", summary="Attach feedback (score, label, comment) to a run",
          opt=FEEDBACK_WRITE, sync_to_thread=True, status_code=201)
    def add_feedback(self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str,
                     data: FeedbackIn) -> dict[str, Any]:
        """Viewers and up, or an application's ingest key; the run must exist in the caller's tenant."""
        principal = current_principal(request)
        run_id = normalise_run_id(run_id)
        _check_feedback(data)
        if runtime.index.get_run_row(principal.tenant_id, run_id) is None:
            raise NotFoundError(f"run {run_id} not found")
        item = finding_store.add_feedback(runtime.index, principal.tenant_id, run_id, score=data.score, label=data.label,
                            comment=data.comment, actor=principal.actor)
        return _feedback_json(item)

    @get("/feedback", summary="List feedback, newest first", opt=READ, sync_to_thread=True)
    def list_feedback(
        self, request: Request[Any, Any, Any], runtime: Runtime, run: str | None = None, label: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50, cursor: str | None = None,
    ) -> dict[str, Any]:
        """Cursor-paged feedback of the caller's tenant."""
        page, next_cursor = finding_store.list_feedback(runtime.index, current_principal(request).tenant_id,
                                          run_id=normalise_run_id(run) if run else None, label=label, limit=limit,
                                          cursor=cursor)
        return {"feedback": [_feedback_json(f) for f in page], "next_cursor": next_cursor}


ANALYTICS_HANDLERS: Final = [AnalyticsController, FindingsController, FeedbackController]
