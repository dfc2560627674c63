"""Read API for runs and steps: GET /v1/runs, /v1/runs/{run_id}, /v1/runs/{run_id}/steps."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from otlp_receiver.errors import InvalidInputError, NotFoundError
from otlp_receiver.model import RunStatus, StepType
from otlp_receiver.store.cursor import decode_cursor, encode_cursor
from otlp_receiver.store.findings import run_findings
from otlp_receiver.store.index import RunFilters
from server.auth import current_principal
from server.routes import ingest
from server.runtime import Runtime
from server.schemas import (
    AppendSteps,
    CreateRun,
    FinishRun,
    finding_to_json,
    parse_time,
    run_to_json,
    step_to_json,
)
from server.verify import Verifier, verify_run_audited

READ = {"permission": "read"}
INGEST = {"permission": "ingest"}


def _filters(status: str | None, service: str | None, agent: str | None, model: str | None, tool: str | None,
             tag: str | None, started_after: str | None, started_before: str | None, has_error: bool | None,
             min_cost_usd: float | None) -> RunFilters:
    if status is not None and status not in {s.value for s in RunStatus}:
        raise InvalidInputError(f"unknown status {status!r}",
                                details={"status": "one of " + ", ".join(s.value for s in RunStatus)})
    tag_pair = None
    if tag is not None:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise InvalidInputError("tag filter must be key=value", details={"tag": "expected key=value"})
        tag_pair = (key, value)
    return RunFilters(
        status=status, service=service, agent=agent, model=model, tool=tool, tag=tag_pair,
        started_after_ns=parse_time(started_after, field="started_after") if started_after else None,
        started_before_ns=parse_time(started_before, field="started_before") if started_before else None,
        has_error=has_error, min_cost_usd=min_cost_usd)


def encode_seq_cursor(seq: int) -> str:
    """Opaque cursor after a step seq."""
    return encode_cursor(seq)


def decode_seq_cursor(cursor: str) -> int:
    """Inverse of :func:`encode_seq_cursor`."""
    (seq,) = decode_cursor(cursor, int)
    if seq < -1:
        raise InvalidInputError("malformed cursor", details={"cursor": "not a cursor from this API"})
    return int(seq)


class RunsController(Controller):
    """Runs and their steps."""

    path = "/v1/runs"
    tags = ["runs"]

    @get("/", summary="List runs, newest first", opt=READ, sync_to_thread=True)
    def list_runs(
        self, request: Request[Any, Any, Any], runtime: Runtime,
        status: str | None = None, service: str | None = None, agent: str | None = None,
        model: str | None = None, tool: str | None = None,
        tag: Annotated[str | None, Parameter(description="key=value")] = None,
        started_after: Annotated[str | None, Parameter(description="RFC 3339 or ns")] = None,
        started_before: Annotated[str | None, Parameter(description="RFC 3339 or ns")] = None,
        has_error: bool | None = None, min_cost_usd: float | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50, cursor: str | None = None,
    ) -> dict[str, Any]:
        """Cursor-paged runs ordered by (started_at desc, run_id desc), stable while new runs arrive."""
        principal = current_principal(request)
        filters = _filters(status, service, agent, model, tool, tag, started_after, started_before, has_error,
                           min_cost_usd)
        runs, next_cursor = runtime.index.list_runs(principal.tenant_id, filters, limit=limit, cursor=cursor)
        return {"runs": [run_to_json(r) for r in runs], "next_cursor": next_cursor}

    @get("/{run_id:str}", summary="Get one run", opt=READ, sync_to_thread=True)
    def get_run(self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str) -> dict[str, Any]:
        """The Run object, with the findings of the failure scan (``findings``)."""
        tenant = current_principal(request).tenant_id
        run = runtime.index.get_run(tenant, ingest.normalise_run_id(run_id))
        if run is None:
            raise NotFoundError(f"run {run_id} not found")
        findings = [finding_to_json(f, step_cursor=encode_seq_cursor) for f in run_findings(runtime.index, tenant, run.run_id)]
        return {**run_to_json(run), "findings": findings}

    @get("/{run_id:str}/steps", summary="List a run's steps in seq order", opt=READ, sync_to_thread=True)
    def list_steps(
        self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 200, cursor: str | None = None,
        type: Annotated[str | None, Parameter(description="comma-separated step types")] = None,  # noqa: A002
    ) -> dict[str, Any]:
        """A page of steps after the cursor; orphans (parent never arrived) are flagged."""
        tenant = current_principal(request).tenant_id
        run_id = ingest.normalise_run_id(run_id)
        run = runtime.index.get_run_row(tenant, run_id)
        if run is None:
            raise NotFoundError(f"run {run_id} not found")
        types = _types(type)
        after = decode_seq_cursor(cursor) if cursor else -1
        rows = read_step_page(runtime, tenant, run_id, after, limit + 1, types, step_count=run["step_count"])
        page = rows[:limit]
        orphans = _orphans(runtime, tenant, run_id, page)
        steps = [step_to_json(r, orphan=r["span_id"] in orphans) for r in page]
        next_cursor = encode_seq_cursor(page[-1]["seq"]) if len(rows) > limit else None
        return {"run_id": run_id, "steps": steps, "next_cursor": next_cursor}

    @get("/{run_id:str}/verify", summary="Verify a run's hash chain against the run index and its signed seal",
         opt=READ, sync_to_thread=True)
    def verify_run(self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str) -> dict[str, Any]:
        """{ok, steps_checked, head_hash, first_break: {seq, reason} | null, sealed, seal_ok}; failures are audited."""
        principal = current_principal(request)
        verifier = Verifier(runtime.index, runtime.steps, runtime.governance.keys.public_keys)
        return verify_run_audited(verifier, runtime.audit, principal.tenant_id, ingest.normalise_run_id(run_id),
                                  actor=principal.actor, source="api").to_json()


    @post("/", summary="Create a run (REST ingest)", opt=INGEST, sync_to_thread=True, status_code=201)
    def create_run(self, request: Request[Any, Any, Any], runtime: Runtime, data: CreateRun) -> dict[str, Any]:
        """Create a run; returns the Run object once stored."""
        return ingest.create_run(runtime, current_principal(request), data)

    @post("/{run_id:str}/steps", summary="Append a batch of steps to a run (REST ingest)", opt=INGEST,
          sync_to_thread=True, status_code=200)
    def append_steps(self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str,
                     data: AppendSteps) -> dict[str, Any]:
        """Append steps; the response assigns step_id and seq per index."""
        return ingest.append_steps(runtime, current_principal(request), run_id, data)

    @post("/{run_id:str}", summary="Finish a run: POST /v1/runs/{run_id}:finish (idempotent)", opt=INGEST,
          sync_to_thread=True, status_code=200)
    def finish_run(self, request: Request[Any, Any, Any], runtime: Runtime, run_id: str,
                   data: FinishRun | None = None) -> dict[str, Any]:
        """Mark the run finished with a final status (succeeded, failed or canceled)."""
        return ingest.finish_run(runtime, current_principal(request), run_id, data)


def _types(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    types = [t.strip() for t in spec.split(",") if t.strip()]
    known = {t.value for t in StepType}
    bad = [t for t in types if t not in known]
    if bad:
        raise InvalidInputError(f"unknown step type {bad[0]!r}", details={"type": "one of " + ", ".join(sorted(known))})
    return types


def read_step_page(runtime: Runtime, tenant: str, run_id: str, after: int, limit: int,
                   types: list[str] | None, *, step_count: int) -> list[dict[str, Any]]:
    """Read steps after ``after`` from the partitions (days) that hold them.

    Seqs of a run are dense (0 … step_count - 1), so an unfiltered page is the seq range (after, after + limit]:
    bounding the scan by it keeps a deep page of a 100,000-step run as cheap as the first. Should a page come
    back short of steps the run has, it is read again without the bound."""
    bound = None if types else after + limit
    rows = _read_steps(runtime, tenant, run_id, after, limit, types, bound)
    if bound is not None and len(rows) < limit and after + len(rows) + 1 < step_count:
        rows = _read_steps(runtime, tenant, run_id, after, limit, types, None)
    return rows


def _read_steps(runtime: Runtime, tenant: str, run_id: str, after: int, limit: int, types: list[str] | None,
                bound: int | None) -> list[dict[str, Any]]:
    # The span index says when the page's steps started: only the files and row groups of that time are read.
    started_within = runtime.index.step_start_ranges(tenant, [run_id], after_seq=after, max_seq=bound)
    if not started_within:
        return []
    return runtime.steps.read_run(tenant, run_id, after_seq=after, limit=limit, types=types, max_seq=bound,
                                  started_within=started_within).to_dicts()


def _orphans(runtime: Runtime, tenant: str, run_id: str, rows: list[dict[str, Any]]) -> set[str]:
    parents = {r["parent_span_id"] for r in rows if r["parent_span_id"]}
    if not parents:
        return set()
    found = runtime.index.existing_parents(tenant, run_id, sorted(parents))
    return {r["span_id"] for r in rows if r["parent_span_id"] and r["parent_span_id"] not in found}
