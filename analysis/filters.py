"""Which runs and steps an analytics query reads: the ``Filters`` and their polars predicates.

Runs are filtered on their own columns; steps on their time (``start_ns``, plus the ``day``
partition so a partitioned scan can skip whole days) and their own service and environment
(resource attributes). Agent, status, model and tool are run facts a step can only answer
through its run: :func:`lookup_conditions` selects those runs for the lookup.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Filters:
    """Which runs to analyse. Every field is optional; unset means "any"."""

    started_after_ns: int | None = None
    """Inclusive lower bound on run ``started_ns`` (and step ``start_ns``)."""
    started_before_ns: int | None = None
    """Exclusive upper bound on run ``started_ns`` (and step ``start_ns``)."""
    agent: str | None = None
    service: str | None = None
    model: str | None = None
    """Runs that called this model at least once."""
    tool: str | None = None
    """Runs that called this tool at least once."""
    status: str | None = None
    """Run status: running | succeeded | failed | canceled."""
    environment: str | None = None


def all_of(conditions: list[pl.Expr]) -> pl.Expr:
    """The conjunction of ``conditions`` (true when there are none)."""
    return pl.all_horizontal(conditions) if conditions else pl.lit(True)


def run_conditions(filters: Filters) -> list[pl.Expr]:
    """Every filter, on the run's columns."""
    equal = [("service", filters.service), ("environment", filters.environment)]
    conditions = [pl.col(column) == value for column, value in equal if value is not None]
    return conditions + lookup_conditions(filters) + time_conditions("started_ns", filters)


def lookup_conditions(filters: Filters) -> list[pl.Expr]:
    """The filters a step can only answer through its run."""
    conditions = [
        pl.col(column) == value
        for column, value in (("agent", filters.agent), ("status", filters.status))
        if value is not None
    ]
    if filters.model is not None:
        conditions.append(pl.col("model_names").list.contains(filters.model))
    if filters.tool is not None:
        conditions.append(pl.col("tool_names").list.contains(filters.tool))
    return conditions


def step_conditions(filters: Filters) -> list[pl.Expr]:
    """Time range, service and environment on the step's own columns. The ``day`` bounds are
    redundant with ``start_ns`` but let a scan of the day-partitioned table skip whole days."""
    equal = [("service", filters.service), ("environment", filters.environment)]
    conditions = [pl.col(column) == value for column, value in equal if value is not None]
    if filters.started_after_ns is not None:
        conditions.append(pl.col("day") >= utc_day(filters.started_after_ns))
    if filters.started_before_ns is not None:
        conditions.append(pl.col("day") <= utc_day(filters.started_before_ns - 1))
    return conditions + time_conditions("start_ns", filters)


def time_conditions(column: str, filters: Filters) -> list[pl.Expr]:
    """``column`` within the filter's time range (inclusive start, exclusive end)."""
    conditions = []
    if filters.started_after_ns is not None:
        conditions.append(pl.col(column) >= filters.started_after_ns)
    if filters.started_before_ns is not None:
        conditions.append(pl.col(column) < filters.started_before_ns)
    return conditions


def utc_day(ns: int) -> str:
    """The UTC date of ``ns`` as the steps table's ``day`` partition value (YYYY-MM-DD)."""
    return dt.datetime.fromtimestamp(ns // 10**9, tz=dt.UTC).strftime("%Y-%m-%d")
