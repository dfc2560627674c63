"""Traceward's domain model: spans as received, steps and runs as stored.

Pure data. Imports nothing heavier than the standard library, so every package
(analysis, diff, governance, server) can share it at no cost.

Conventions:
- ids are lower-case hex strings: trace ids 32 chars, span ids 16 chars; a run id
  is the trace id of the trace it was built from (REST-created runs get a random one);
- times are integer nanoseconds since the Unix epoch (``*_ns``) — never floats;
- attribute values are plain Python (str, int, float, bool, bytes, list, dict).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NewType

TraceId = NewType("TraceId", str)
SpanId = NewType("SpanId", str)
RunId = NewType("RunId", str)
TenantId = NewType("TenantId", str)
ProjectId = NewType("ProjectId", str)

AttrValue = Any
"""A decoded OTLP AnyValue: str | int | float | bool | bytes | list[AttrValue] | dict[str, AttrValue] | None."""

STEP_SCHEMA_VERSION = 1
STEP_ID_NAMESPACE = uuid.UUID("6f1c7c4e-3d0b-4c53-9a57-2d5e1f0c7a11")


class StepType(StrEnum):
    """What a step is. The first seven are the wire contract's step types.

    ``span`` is Traceward's extension for *structural* spans (agent, chain, workflow,
    task wrappers): they are not steps in the product sense but are kept, hashed and
    returned so the timeline's nesting and timing stay complete.
    """

    PROMPT = "prompt"
    MODEL = "model"
    TOOL = "tool"
    POLICY = "policy"
    APPROVAL = "approval"
    ERROR = "error"
    ARTIFACT = "artifact"
    SPAN = "span"


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class StatusCode(IntEnum):
    """OTLP span status codes (opentelemetry.proto.trace.v1.Status.StatusCode)."""

    UNSET = 0
    OK = 1
    ERROR = 2


class SpanKind(IntEnum):
    """OTLP span kinds."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """A span event (e.g. ``exception``)."""

    name: str
    time_ns: int
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanLink:
    """A link from one span to another span, possibly in another trace."""

    trace_id: TraceId
    span_id: SpanId
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    """One OTLP span, decoded and validated, protocol-neutral (protobuf and JSON alike)."""

    trace_id: TraceId
    span_id: SpanId
    parent_span_id: SpanId | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int = StatusCode.UNSET
    status_message: str = ""
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    resource: Mapping[str, AttrValue] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    flags: int = 0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One OTLP log record, decoded and validated; ids are None when the record carries none."""

    trace_id: TraceId | None
    span_id: SpanId | None
    event_name: str
    """The record's ``event_name`` field, else its ``event.name`` attribute (older Events API), else empty."""
    time_ns: int
    observed_ns: int
    severity_number: int = 0
    severity_text: str = ""
    body: AttrValue = None
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    resource: Mapping[str, AttrValue] = field(default_factory=dict)
    scope_name: str = ""
    flags: int = 0
    """W3C trace flags of the record's span context (bit 0: sampled); kept so forwarding passes them on."""


@dataclass(frozen=True, slots=True)
class RedactionRuleHit:
    """Which redaction rule fired, and why (the wire contract's ``{rule_id, reason}``)."""

    rule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RedactionMeta:
    """Where a step's payload was redacted (JSONPath strings) and by which rules."""

    paths: tuple[str, ...] = ()
    rules: tuple[RedactionRuleHit, ...] = ()

    def is_empty(self) -> bool:
        """True when nothing was redacted."""
        return not self.paths


@dataclass(frozen=True, slots=True)
class StepDraft:
    """A step as the mapping produces it, before it gets its per-run seq and hashes.

    ``payload`` is a JSON-compatible dict: for OTLP spans ``{"input", "output",
    "attributes", "events", "links", "resource", "status"}`` (keys omitted when empty).
    """

    trace_id: TraceId
    span_id: SpanId
    parent_span_id: SpanId | None
    type: StepType
    name: str
    start_ns: int
    end_ns: int
    status: str = "unset"  # "ok" | "error" | "unset"
    kind: int = SpanKind.INTERNAL
    tool_name: str | None = None
    tool_call_id: str | None = None
    model_name: str | None = None
    provider: str | None = None
    agent_name: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_total: int | None = None
    tokens_cache_read: int | None = None
    tokens_cache_write: int | None = None
    tokens_reasoning: int | None = None
    cost_usd: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    decision_token: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    redaction_meta: RedactionMeta = field(default_factory=RedactionMeta)


@dataclass(frozen=True, slots=True)
class Step:
    """A stored, append-only step of a run: a draft plus identity, seq and chain hashes."""

    tenant_id: TenantId
    project_id: ProjectId
    run_id: RunId
    step_id: str
    seq: int
    draft: StepDraft
    payload_hash: str = ""
    prev_hash: str = ""
    chain_hash: str = ""
    ingested_ns: int = 0
    binding: str | None = None

    @property
    def type(self) -> StepType:
        """The step's type."""
        return self.draft.type


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the span → run mapping learns about a run from one batch of its spans.

    Fields are ``None`` when the batch says nothing about them; the store merges
    summaries of many batches into the run index.
    """

    run_id: RunId
    root_span_id: SpanId | None = None
    root_start_ns: int | None = None
    root_end_ns: int | None = None
    root_status: RunStatus | None = None
    name: str | None = None
    service: str | None = None
    agent: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    first_start_ns: int | None = None
    last_end_ns: int | None = None
    from_logs: bool = False
    """The batch's steps of this run were made from OTLP log records, not spans: a run opened this way has no
    root span to end it (``runs.log_only``), so it ends when idle."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run as the read API returns it (one per trace)."""

    tenant_id: TenantId
    project_id: ProjectId
    run_id: RunId
    trace_id: TraceId | None
    parent_run_id: RunId | None
    status: RunStatus
    name: str | None
    started_ns: int
    finished_ns: int | None
    tags: Mapping[str, str]
    model_names: tuple[str, ...]
    tool_names: tuple[str, ...]
    tool_count: int
    step_count: int
    error_count: int
    tokens_in: int
    tokens_out: int
    tokens_cache_read: int
    tokens_cache_write: int
    tokens_reasoning: int
    cost_usd: float | None
    cost_source: str | None  # "reported" | "computed" | "mixed" | "unknown" | None
    service: str | None = None
    agent: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    head_hash: str = ""
    updated_ns: int = 0

    @property
    def duration_ms(self) -> int | None:
        """Wall time from first start to finish, in milliseconds (None while running)."""
        if self.finished_ns is None:
            return None
        return max(0, (self.finished_ns - self.started_ns) // 1_000_000)

    @property
    def has_error(self) -> bool:
        """True when any step failed, even if the run as a whole succeeded."""
        return self.error_count > 0


def make_step_id(tenant_id: str, trace_id: str, span_id: str) -> str:
    """Deterministic step id (UUIDv5) so a re-sent span maps onto the same step.

    Exactly ``str(uuid.uuid5(STEP_ID_NAMESPACE, f"{tenant_id}/{trace_id}/{span_id}"))`` (RFC 4122 §4.3),
    computed without the UUID object: the flusher makes one per stored step.
    """
    name = f"{tenant_id}/{trace_id}/{span_id}".encode()
    digest = bytearray(hashlib.sha1(_STEP_ID_PREFIX + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_STEP_ID_PREFIX = STEP_ID_NAMESPACE.bytes
