"""The two frames analysis reads: the steps table and the runs index, as polars schemas.

``STEP_COLUMNS`` (otlp_receiver/columns.py) is the steps table. ``RUN_COLUMNS`` below is the
run index as the store hands it to analysis: one row per run with its deduplicated totals.
The store must produce exactly these columns and types (``empty_runs()`` is the reference).

Pure data and polars; no file, socket or database access.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from otlp_receiver.columns import STEP_COLUMNS

# (name, type name, nullable) — same shape as STEP_COLUMNS.
RUN_COLUMNS: Final[tuple[tuple[str, str, bool], ...]] = (
    ("tenant_id", "string", False),
    ("project_id", "string", False),
    ("run_id", "string", False),
    ("status", "string", False),  # running | succeeded | failed | canceled
    ("name", "string", True),
    ("service", "string", True),  # the root span's resource service.name
    ("service_version", "string", True),
    ("environment", "string", True),
    ("agent", "string", True),
    ("started_ns", "int64", False),  # first start of any span of the run
    ("finished_ns", "int64", True),  # null while running
    ("duration_ns", "int64", True),  # finished_ns - started_ns; null while running
    # Token and cost totals count usage-leaf model steps only (no double counting).
    ("tokens_in", "int64", False),
    ("tokens_out", "int64", False),
    ("tokens_cache_read", "int64", False),
    ("tokens_cache_write", "int64", False),
    ("tokens_reasoning", "int64", False),
    ("cost_usd", "float64", True),  # null when no step could be priced
    ("cost_source", "string", True),  # reported | computed | mixed | unknown
    ("tool_count", "int64", False),
    ("step_count", "int64", False),
    ("error_count", "int64", False),
    ("model_names", "list[string]", False),
    ("tool_names", "list[string]", False),
)

_DTYPES: Final[dict[str, pl.DataType]] = {
    "string": pl.String(),
    "int64": pl.Int64(),
    "int32": pl.Int32(),
    "float64": pl.Float64(),
    "bool": pl.Boolean(),
    "list[string]": pl.List(pl.String()),
}


def polars_dtype(type_name: str) -> pl.DataType:
    """The polars dtype for a type name used in ``STEP_COLUMNS`` / ``RUN_COLUMNS``."""
    return _DTYPES[type_name]


RUN_SCHEMA: Final[pl.Schema] = pl.Schema({name: polars_dtype(kind) for name, kind, _ in RUN_COLUMNS})
STEP_SCHEMA: Final[pl.Schema] = pl.Schema({name: polars_dtype(kind) for name, kind, _ in STEP_COLUMNS})


def empty_runs() -> pl.LazyFrame:
    """A runs frame with no rows and exactly ``RUN_COLUMNS``."""
    return pl.LazyFrame(schema=RUN_SCHEMA)


def empty_steps() -> pl.LazyFrame:
    """A steps frame with no rows and exactly ``STEP_COLUMNS``."""
    return pl.LazyFrame(schema=STEP_SCHEMA)
