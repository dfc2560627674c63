"""Column layout of the steps table (Parquet in Delta Lake), shared by the store and analysis.

Typed "dedicated columns" for everything filters and analytics touch (as Tempo keeps beside
its generic attribute store); the rest of the span lives in ``payload`` as JSON text.
Partitioned by ``tenant_id`` and ``day`` (UTC date of ``start_ns``) so one tenant's day is
cheap to scan and to delete. Pure data: imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Final

# (name, polars/arrow type name, nullable)
STEP_COLUMNS: Final[tuple[tuple[str, str, bool], ...]] = (
    ("tenant_id", "string", False),
    ("project_id", "string", False),
    ("day", "string", False),  # "YYYY-MM-DD" of start_ns, UTC
    ("run_id", "string", False),
    ("step_id", "string", False),
    ("seq", "int64", False),
    ("type", "string", False),  # StepType value
    ("name", "string", False),
    ("status", "string", False),  # ok | error | unset
    ("kind", "int32", False),  # OTLP SpanKind
    ("trace_id", "string", False),
    ("span_id", "string", False),
    ("parent_span_id", "string", True),
    ("start_ns", "int64", False),
    ("end_ns", "int64", False),
    ("duration_ns", "int64", False),
    ("tool_name", "string", True),
    ("tool_call_id", "string", True),
    ("model_name", "string", True),
    ("provider", "string", True),
    ("agent_name", "string", True),
    ("tokens_in", "int64", True),
    ("tokens_out", "int64", True),
    ("tokens_total", "int64", True),
    ("tokens_cache_read", "int64", True),
    ("tokens_cache_write", "int64", True),
    ("tokens_reasoning", "int64", True),
    ("cost_usd", "float64", True),
    ("cost_source", "string", True),  # reported | computed | unknown
    ("error_type", "string", True),
    ("error_message", "string", True),
    ("decision_token_id", "string", True),
    ("binding", "string", True),
    ("redaction_count", "int32", False),
    ("redaction_meta", "string", True),  # JSON {"paths": [...], "rules": [...]}
    ("payload", "string", False),  # JSON text
    ("payload_hash", "string", False),  # "sha256:<hex>"
    ("prev_hash", "string", False),
    ("chain_hash", "string", False),
    ("schema_version", "int32", False),
    ("ingested_ns", "int64", False),
    ("service", "string", True),  # resource service.name
    ("service_version", "string", True),
    ("environment", "string", True),  # deployment.environment(.name)
)

STEP_COLUMN_NAMES: Final[tuple[str, ...]] = tuple(name for name, _, _ in STEP_COLUMNS)
PARTITION_COLUMNS: Final[tuple[str, ...]] = ("tenant_id", "day")

# The runs frame analytics receive (``otlp_receiver/store/frames.py`` builds it from the run index):
# (name, type name, nullable). One definition for the store and ``analysis``.
RUN_COLUMNS: Final[tuple[tuple[str, str, bool], ...]] = (
    ("tenant_id", "string", False),
    ("project_id", "string", False),
    ("run_id", "string", False),
    ("status", "string", False),
    ("name", "string", True),
    ("service", "string", True),
    ("service_version", "string", True),
    ("environment", "string", True),
    ("agent", "string", True),
    ("started_ns", "int64", False),
    ("finished_ns", "int64", True),
    ("duration_ns", "int64", True),
    ("tokens_in", "int64", False),
    ("tokens_out", "int64", False),
    ("tokens_cache_read", "int64", False),
    ("tokens_cache_write", "int64", False),
    ("tokens_reasoning", "int64", False),
    ("cost_usd", "float64", True),
    ("cost_source", "string", True),
    ("tool_count", "int64", False),
    ("step_count", "int64", False),
    ("error_count", "int64", False),
    ("model_names", "list[string]", False),
    ("tool_names", "list[string]", False),
)
