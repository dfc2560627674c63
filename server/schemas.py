"""API shapes: request bodies (msgspec structs, unknown fields rejected) and JSON converters.

Objects follow the wire contract of specs/000 §6 (Run, Step, error envelope), plus
documented extras (tokens, name, service, chain hashes, …). Times are RFC 3339 strings in
UTC with nanosecond precision; ``*_ns`` integer twins are included so nothing is rounded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from otlp_receiver.errors import CorruptDataError, InvalidInputError
from otlp_receiver.model import Run
from otlp_receiver.store.findings import StoredFinding

_NS = 1_000_000_000


_SECOND_TEXT: dict[int, str] = {}
"""Second → ``2026-11-22T23:49:01``: steps of a page mostly share their seconds (bounded, cleared when full)."""


def rfc3339(ns: int | None) -> str | None:
    """Integer nanoseconds → ``2026-11-22T23:49:01.123456789Z``."""
    if ns is None:
        return None
    seconds, frac = divmod(ns, _NS)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_SECOND_TEXT) >= 4096:
            _SECOND_TEXT.clear()
        _SECOND_TEXT[seconds] = text
    return f"{text}.{frac:09d}Z"


def parse_time(text: str, *, field: str) -> int:
    """RFC 3339 (any fraction length) or integer nanoseconds → nanoseconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        main, frac, tz = _split_fraction(text)
        stamp = datetime.fromisoformat(main + tz)
    except ValueError as exc:
        raise InvalidInputError(f"{field}: not an RFC 3339 time", details={field: "expected RFC 3339"}) from exc
    if stamp.tzinfo is None:
        raise InvalidInputError(f"{field}: time zone required", details={field: "add Z or an offset"})
    return int(stamp.timestamp()) * _NS + int(frac.ljust(9, "0")[:9] or 0)


def _split_fraction(text: str) -> tuple[str, str, str]:
    text = text.replace("z", "Z")
    if "." not in text:
        return text, "", ""
    main, rest = text.split(".", 1)
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return main, rest[:digits], rest[digits:]


def run_to_json(run: Run) -> dict[str, Any]:
    """Run → the API object."""
    return {
        "run_id": run.run_id, "project_id": run.project_id, "status": run.status.value,
        "name": run.name, "started_at": rfc3339(run.started_ns), "finished_at": rfc3339(run.finished_ns),
        "started_at_ns": run.started_ns, "finished_at_ns": run.finished_ns, "duration_ms": run.duration_ms,
        "trace_id": run.trace_id, "parent_run_id": run.parent_run_id, "tags": dict(run.tags),
        "service": run.service, "agent": run.agent, "session_id": run.session_id, "user_id": run.user_id,
        "model_names": list(run.model_names), "tool_names": list(run.tool_names), "tool_count": run.tool_count,
        "step_count": run.step_count, "error_count": run.error_count, "has_error": run.has_error,
        "tokens": {"input": run.tokens_in, "output": run.tokens_out, "cache_read": run.tokens_cache_read,
                   "cache_write": run.tokens_cache_write, "reasoning": run.tokens_reasoning},
        "cost_usd": run.cost_usd, "cost_source": run.cost_source, "head_hash": run.head_hash or None,
    }


_RAW_JSON = msgspec.json.Decoder(msgspec.Raw)


def _stored_json(row: dict[str, Any], column: str) -> msgspec.Raw:
    """A stored JSON text column as ``msgspec.Raw``, once it is known to be exactly one JSON value."""
    try:
        return _RAW_JSON.decode(row[column])
    except msgspec.DecodeError as exc:
        raise CorruptDataError(
            f"the stored {column} of step {row['seq']} of run {row['run_id']} is not valid JSON ({exc}): the "
            f"step files were damaged or edited; GET /v1/runs/{row['run_id']}/verify names the first broken step",
            details={"run_id": row["run_id"], "seq": str(row["seq"]), "column": column}) from None


def step_to_json(row: dict[str, Any], *, orphan: bool = False) -> dict[str, Any]:
    """A steps-table row → the API Step object.

    The payload and redaction_meta go out as the JSON text stored (``msgspec.Raw``, which the response
    encoder writes as is): the canonical JSON the chain hashes, not decoded and encoded again per step.
    They are checked to be one JSON value each (a C scan, ~0.6 µs per KB) so that text damaged on disk is
    a clear error, never a response body that is not JSON."""
    tokens = {k: row[f"tokens_{k}"] for k in ("in", "out", "total", "cache_read", "cache_write", "reasoning")}
    return {
        "step_id": row["step_id"], "run_id": row["run_id"], "seq": row["seq"], "ts": rfc3339(row["start_ns"]),
        "end_ts": rfc3339(row["end_ns"]), "ts_ns": row["start_ns"], "end_ts_ns": row["end_ns"],
        "duration_ms": row["duration_ns"] / 1e6, "type": row["type"], "name": row["name"],
        "status": row["status"], "schema_version": row["schema_version"], "payload": _stored_json(row, "payload"),
        "payload_hash": row["payload_hash"], "prev_hash": row["prev_hash"], "chain_hash": row["chain_hash"],
        "redaction_meta": _stored_json(row, "redaction_meta") if row["redaction_meta"] else None,
        "tool_name": row["tool_name"], "tool_call_id": row["tool_call_id"], "model_name": row["model_name"],
        "provider": row["provider"], "agent_name": row["agent_name"], "trace_id": row["trace_id"],
        "span_id": row["span_id"], "parent_span_id": row["parent_span_id"], "orphan": orphan,
        "tokens": {k: v for k, v in tokens.items() if v is not None} or None, "cost_usd": row["cost_usd"],
        "error": {"type": row["error_type"], "message": row["error_message"]}
        if row["error_type"] or row["error_message"] else None,
        "decision_token_id": row["decision_token_id"], "binding": row["binding"],
    }


def finding_to_json(f: StoredFinding, *, step_cursor: Callable[[int], str]) -> dict[str, Any]:
    """A stored finding → the API object; ``steps`` link each step it is about (a one-step page of
    ``GET /v1/runs/{run_id}/steps`` starting at that seq; ``step_cursor(seq)`` is the cursor after ``seq``)."""
    return {
        "finding_id": f.finding_id, "run_id": f.run_id, "kind": f.kind, "severity": f.severity,
        "message": f.message, "agent": f.agent, "detected_at": rfc3339(f.detected_ns), "detected_at_ns": f.detected_ns,
        "step_seqs": list(f.step_seqs),
        "steps": [{"seq": seq, "href": f"/v1/runs/{f.run_id}/steps?limit=1&cursor={step_cursor(seq - 1)}"}
                  for seq in f.step_seqs],
        "run_href": f"/v1/runs/{f.run_id}",
    }

# -- request bodies ------------------------------------------------------------------------------------------

class CreateRun(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/runs."""

    run_id: str | None = None
    name: str | None = None
    started_at: str | None = None
    tags: dict[str, str] = {}
    parent_run_id: str | None = None
    agent: str | None = None


class StepIn(msgspec.Struct, forbid_unknown_fields=True):
    """One step of POST /v1/runs/{run_id}/steps."""

    type: str
    name: str
    ts: str
    schema_version: int = 1
    payload: dict[str, Any] = {}
    end_ts: str | None = None
    status: str = "unset"
    span_id: str | None = None
    parent_span_id: str | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    model_name: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    decision_token: str | None = None


class AppendSteps(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/runs/{run_id}/steps."""

    steps: list[StepIn]


class FinishRun(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/runs/{run_id}:finish."""

    status: str = "succeeded"
    finished_at: str | None = None
