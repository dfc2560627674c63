"""Ingest over HTTP: OTLP/HTTP ``POST /v1/traces`` and ``POST /v1/logs``, and the REST contract for clients
without OTel.

The REST functions are routed by ``routes/runs.py`` (one controller owns the /v1/runs paths).

REST: ``POST /v1/runs``, ``POST /v1/runs/{run_id}/steps`` (batch; seq assigned per index),
``POST /v1/runs/{run_id}:finish`` (idempotent). Same pipeline and storage as OTLP.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from typing import Any

from litestar import Controller, Request, Response, post

from otlp_receiver.errors import InvalidInputError, NotFoundError
from otlp_receiver.model import RunStatus, SpanId, StepDraft, StepType, TraceId, make_step_id
from otlp_receiver.service import IngestIdentity, handle_http_export, handle_http_logs_export
from server.auth import Principal, current_principal
from server.runtime import Runtime
from server.schemas import AppendSteps, CreateRun, FinishRun, StepIn, parse_time, run_to_json

INGEST = {"permission": "ingest"}
MAX_STEPS_PER_BATCH = 1000
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_RUN_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


class OtlpHttpController(Controller):
    """OTLP/HTTP traces receiver."""

    path = "/v1/traces"
    tags = ["otlp"]

    @post("/", summary="OTLP/HTTP trace export (protobuf or JSON, gzip)", opt=INGEST, sync_to_thread=True,
          status_code=200, request_max_body_size=None)
    def export(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> Response[bytes]:
        """Decode and store an ExportTraceServiceRequest; answers in the request's content type."""
        principal = current_principal(request)
        reply = handle_http_export(
            body, content_type=request.headers.get("content-type", ""),
            content_encoding=request.headers.get("content-encoding", ""),
            identity=IngestIdentity(principal.tenant_id, principal.project_id),
            sink=runtime.ingest_spans, max_body_bytes=runtime.settings.max_http_body_bytes)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


class OtlpHttpLogsController(Controller):
    """OTLP/HTTP logs receiver: GenAI content events become steps of their trace's run."""

    path = "/v1/logs"
    tags = ["otlp"]

    @post("/", summary="OTLP/HTTP logs export (protobuf or JSON, gzip): GenAI content events",
          opt=INGEST, sync_to_thread=True, status_code=200, request_max_body_size=None)
    def export(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> Response[bytes]:
        """Decode an ExportLogsServiceRequest and store its GenAI content; answers in the request's content type."""
        principal = current_principal(request)
        reply = handle_http_logs_export(
            body, content_type=request.headers.get("content-type", ""),
            content_encoding=request.headers.get("content-encoding", ""),
            identity=IngestIdentity(principal.tenant_id, principal.project_id),
            sink=runtime.ingest_logs, max_body_bytes=runtime.settings.max_http_body_bytes)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def create_run(runtime: Runtime, principal: Principal, data: CreateRun) -> dict[str, Any]:
    """Create a run; returns the Run object once it is stored."""
    run_id = normalise_run_id(data.run_id) if data.run_id else uuid.uuid4().hex
    started = parse_time(data.started_at, field="started_at") if data.started_at else time.time_ns()
    run = {"run_id": run_id, "trace_id": run_id, "name": data.name, "started_ns": started,
           "tags": dict(data.tags), "parent_run_id": data.parent_run_id, "agent": data.agent}
    position = runtime.pipeline.create_run(principal.tenant_id, principal.project_id, run)
    runtime.flusher.wait_flushed(position)
    stored = runtime.index.get_run(principal.tenant_id, run_id)
    if stored is None:
        raise NotFoundError(f"run {run_id} not yet visible; retry")
    return run_to_json(stored)


def append_steps(runtime: Runtime, principal: Principal, run_ref: str, data: AppendSteps) -> dict[str, Any]:
    """Append steps; each gets its step_id and seq in request order."""
    run_id = normalise_run_id(run_ref)
    if not data.steps or len(data.steps) > MAX_STEPS_PER_BATCH:
        raise InvalidInputError(f"steps must hold 1 to {MAX_STEPS_PER_BATCH} items",
                                details={"steps": f"1..{MAX_STEPS_PER_BATCH} items"})
    drafts = [_to_draft(run_id, i, s) for i, s in enumerate(data.steps)]
    seqs, _ = runtime.pipeline.append_steps(principal.tenant_id, principal.project_id, run_id, drafts)
    assigned = [{"index": i, "step_id": make_step_id(principal.tenant_id, run_id, d.span_id), "seq": seq}
                for i, (d, seq) in enumerate(zip(drafts, seqs, strict=True))]
    return {"run_id": run_id, "assigned": assigned}


def finish_run(runtime: Runtime, principal: Principal, run_ref: str, data: FinishRun | None) -> dict[str, Any]:
    """Mark the run finished with a final status; repeating the call changes nothing."""
    run_id, sep, verb = run_ref.partition(":")
    if not sep or verb != "finish":
        raise NotFoundError(f"no such action {run_ref!r}: use POST /v1/runs/{{run_id}}:finish")
    run_id = normalise_run_id(run_id)
    data = data or FinishRun()
    status = _final_status(data.status)
    finished = parse_time(data.finished_at, field="finished_at") if data.finished_at else time.time_ns()
    position = runtime.pipeline.finish_run(principal.tenant_id, run_id, status, finished)
    runtime.flusher.wait_flushed(position)
    run = runtime.index.get_run(principal.tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return run_to_json(run)


def normalise_run_id(value: str) -> str:
    """A run id as stored: 32 lower-case hex (a UUID's dashes dropped)."""
    if not _RUN_ID.match(value):
        raise InvalidInputError("run_id must be a UUID or 32 hex characters", details={"run_id": "invalid"})
    hex_id = value.replace("-", "").lower()
    if not _HEX32.match(hex_id):
        raise InvalidInputError("run_id must be a UUID or 32 hex characters", details={"run_id": "invalid"})
    return hex_id


def _final_status(value: str) -> RunStatus:
    allowed = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)
    if value not in {s.value for s in allowed}:
        raise InvalidInputError(f"unknown final status {value!r}",
                                details={"status": "one of succeeded, failed, canceled"})
    return RunStatus(value)


def _to_draft(run_id: str, index: int, step: StepIn) -> StepDraft:
    field = f"steps[{index}]"
    known = {t.value for t in StepType} - {StepType.SPAN.value}
    if step.type not in known:
        raise InvalidInputError(f"{field}.type: unknown step type {step.type!r}",
                                details={f"{field}.type": "one of " + ", ".join(sorted(known))})
    if step.schema_version != 1:
        raise InvalidInputError(f"{field}.schema_version: only 1 is supported", details={f"{field}.schema_version": "1"})
    if step.status not in ("ok", "error", "unset"):
        raise InvalidInputError(f"{field}.status: one of ok, error, unset", details={f"{field}.status": "invalid"})
    for name in ("span_id", "parent_span_id"):
        value = getattr(step, name)
        if value is not None and not _HEX16.match(value):
            raise InvalidInputError(f"{field}.{name}: 16 lower-case hex characters", details={f"{field}.{name}": "invalid"})
    if len(step.name) > 1024:
        raise InvalidInputError(f"{field}.name: at most 1024 characters", details={f"{field}.name": "too long"})
    start = parse_time(step.ts, field=f"{field}.ts")
    end = parse_time(step.end_ts, field=f"{field}.end_ts") if step.end_ts else start
    return StepDraft(
        trace_id=TraceId(run_id), span_id=SpanId(step.span_id or secrets.token_hex(8)),
        parent_span_id=SpanId(step.parent_span_id) if step.parent_span_id else None, type=StepType(step.type),
        name=step.name, start_ns=start, end_ns=max(start, end), status=step.status, tool_name=step.tool_name,
        tool_call_id=step.tool_call_id, model_name=step.model_name, tokens_in=step.tokens_in,
        tokens_out=step.tokens_out, cost_usd=step.cost_usd, decision_token=step.decision_token,
        payload=step.payload)
