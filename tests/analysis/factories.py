"""Builders of small runs and steps frames for analysis tests.

``step(...)`` and ``run(...)`` return one row as a dict with every column set to a plain
default, overridable by keyword; ``steps_frame(rows)`` / ``runs_frame(rows)`` turn rows into
frames with exactly ``STEP_COLUMNS`` / ``RUN_COLUMNS``. Ids and times are deterministic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import polars as pl

from analysis.frames import RUN_SCHEMA, STEP_SCHEMA

T0_NS = 1_790_000_000 * 10**9
"""A fixed instant (2026-09-21 14:13:20 UTC) that every test time is relative to."""
MS = 1_000_000
S = 1_000 * MS


def step(run_id: str = "r1", seq: int = 0, **overrides: Any) -> dict[str, Any]:
    """One steps row; ``start_ns`` defaults to ``T0_NS + seq s`` and ``duration_ns`` to 100 ms."""
    start_ns = overrides.pop("start_ns", T0_NS + seq * S)
    duration_ns = overrides.pop("duration_ns", 100 * MS)
    payload = overrides.pop("payload", {})
    row: dict[str, Any] = {
        "tenant_id": "t1",
        "project_id": "p1",
        "day": dt.datetime.fromtimestamp(start_ns // 10**9, tz=dt.UTC).strftime("%Y-%m-%d"),
        "run_id": run_id,
        "step_id": f"{run_id}-{seq}",
        "seq": seq,
        "type": "tool",
        "name": "step",
        "status": "ok",
        "kind": 1,
        "trace_id": run_id,
        "span_id": f"{run_id}-s{seq}",
        "parent_span_id": None,
        "start_ns": start_ns,
        "end_ns": start_ns + duration_ns,
        "duration_ns": duration_ns,
        "redaction_count": 0,
        "payload": payload if isinstance(payload, str) else orjson.dumps(payload).decode(),
        "payload_hash": "",
        "prev_hash": "",
        "chain_hash": "",
        "schema_version": 1,
        "ingested_ns": start_ns,
    }
    row.update(overrides)
    return row


def run(run_id: str = "r1", **overrides: Any) -> dict[str, Any]:
    """One runs row: a succeeded run of agent ``a1`` that took 1 s, no tokens, no cost."""
    started_ns = overrides.pop("started_ns", T0_NS)
    duration_ns = overrides.pop("duration_ns", 1 * S)
    status = overrides.pop("status", "succeeded")
    finished = status != "running"
    row: dict[str, Any] = {
        "tenant_id": "t1",
        "project_id": "p1",
        "run_id": run_id,
        "status": status,
        "name": "run",
        "service": "svc",
        "service_version": "1.0.0",
        "environment": "prod",
        "agent": "a1",
        "started_ns": started_ns,
        "finished_ns": started_ns + duration_ns if finished else None,
        "duration_ns": duration_ns if finished else None,
        "tokens_in": 0,
        "tokens_out": 0,
        "tokens_cache_read": 0,
        "tokens_cache_write": 0,
        "tokens_reasoning": 0,
        "cost_usd": None,
        "cost_source": None,
        "tool_count": 0,
        "step_count": 0,
        "error_count": 0,
        "model_names": [],
        "tool_names": [],
    }
    row.update(overrides)
    return row


def steps_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows (from :func:`step`) as a DataFrame with exactly ``STEP_COLUMNS``."""
    return pl.DataFrame(rows, schema=STEP_SCHEMA)


def runs_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows (from :func:`run`) as a DataFrame with exactly ``RUN_COLUMNS``."""
    return pl.DataFrame(rows, schema=RUN_SCHEMA)


def messages(*turns: tuple[str, str]) -> dict[str, Any]:
    """A model step payload whose input is the chat ``turns`` ((role, text) pairs, semconv parts)."""
    return {"input": [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in turns]}
