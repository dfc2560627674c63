"""The two frames analysis reads: the steps table and the runs index, as polars schemas.

Both column lists live in ``otlp_receiver/columns.py``: ``STEP_COLUMNS`` is the steps table and
``RUN_COLUMNS`` the run index as the store hands it to analysis (one row per run with its
deduplicated totals). ``empty_runs()`` is the reference frame.

Pure data and polars; no file, socket or database access.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from otlp_receiver.columns import RUN_COLUMNS, STEP_COLUMNS

__all__ = ["RUN_COLUMNS", "RUN_SCHEMA", "STEP_COLUMNS", "STEP_SCHEMA", "empty_runs", "empty_steps", "polars_dtype"]

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
