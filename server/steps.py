"""Reading whole runs out of the stores as domain objects (for diff, verify, export).

Server-side glue: the store returns rows; diff and friends take ``Run`` and ``Step`` objects.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import orjson

from otlp_receiver.errors import NotFoundError
from otlp_receiver.ingest import redaction_meta_from_dict
from otlp_receiver.model import (
    ProjectId,
    RedactionMeta,
    Run,
    RunId,
    SpanId,
    Step,
    StepDraft,
    StepType,
    TenantId,
    TraceId,
)
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable

_DRAFT_COLUMNS = ("kind", "tool_name", "tool_call_id", "model_name", "provider", "agent_name", "tokens_in",
                  "tokens_out", "tokens_total", "tokens_cache_read", "tokens_cache_write", "tokens_reasoning",
                  "cost_usd", "error_type", "error_message")


def run_days(index: RunIndex, tenant_id: str, run_id: str) -> list[str]:
    """The partitions (days) that hold a run's steps."""
    rows = index.query("SELECT DISTINCT day FROM spans WHERE tenant_id = ? AND run_id = ?", [tenant_id, run_id])
    return [r["day"] for r in rows]


class RunStepCache:
    """Decoded steps of recently read runs, bounded by the total number of steps held.

    Steps are append-only and the chain head changes with every append, so an entry is valid
    exactly while the run's (step_count, head_hash) in the index are the ones it was read at.
    """

    def __init__(self, max_steps: int = 200_000) -> None:
        self.max_steps = max_steps
        self._entries: OrderedDict[tuple[str, str], tuple[int, str, list[Step]]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, run: Run) -> list[Step] | None:
        """The cached steps if they are still current for this run."""
        with self._lock:
            entry = self._entries.get((run.tenant_id, run.run_id))
            if entry is None or entry[:2] != (run.step_count, run.head_hash):
                return None
            self._entries.move_to_end((run.tenant_id, run.run_id))
            return entry[2]

    def put(self, run: Run, steps: list[Step]) -> None:
        """Remember a run's steps (skipped for runs bigger than the whole cache)."""
        if len(steps) > self.max_steps // 4:
            return
        with self._lock:
            old = self._entries.pop((run.tenant_id, run.run_id), None)
            self._held -= len(old[2]) if old else 0
            self._entries[(run.tenant_id, run.run_id)] = (run.step_count, run.head_hash, steps)
            self._held += len(steps)
            while self._held > self.max_steps:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self._held -= len(evicted)


def read_run(index: RunIndex, steps: StepTable, tenant_id: str, run_id: str,
             cache: RunStepCache | None = None) -> tuple[Run, list[Step]]:
    """A run and all its steps in seq order; NotFoundError when the tenant has no such run."""
    run = index.get_run(tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    cached = cache.get(run) if cache is not None else None
    if cached is not None:
        return run, cached
    started_within = index.step_start_ranges(tenant_id, [run_id])
    rows = steps.read_run(tenant_id, run_id, started_within=started_within).to_dicts() if started_within else []
    decoded = [row_to_step(r) for r in rows]
    if cache is not None and len(decoded) == run.step_count:
        cache.put(run, decoded)
    return run, decoded


def row_to_step(row: dict[str, Any]) -> Step:
    """A steps-table row → the domain Step."""
    meta = row["redaction_meta"]
    draft = StepDraft(
        trace_id=TraceId(row["trace_id"]), span_id=SpanId(row["span_id"]),
        parent_span_id=SpanId(row["parent_span_id"]) if row["parent_span_id"] else None,
        type=StepType(row["type"]), name=row["name"], start_ns=row["start_ns"], end_ns=row["end_ns"],
        status=row["status"], payload=orjson.loads(row["payload"]),
        redaction_meta=redaction_meta_from_dict(orjson.loads(meta)) if meta else RedactionMeta(),
        **{c: row[c] for c in _DRAFT_COLUMNS},
    )
    return Step(tenant_id=TenantId(row["tenant_id"]), project_id=ProjectId(row["project_id"]),
                run_id=RunId(row["run_id"]), step_id=row["step_id"], seq=row["seq"], draft=draft,
                payload_hash=row["payload_hash"], prev_hash=row["prev_hash"], chain_hash=row["chain_hash"],
                ingested_ns=row["ingested_ns"], binding=row["binding"])
