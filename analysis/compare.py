"""Version comparison: the summary metrics of two ``service.version`` values side by side.

The regression view a release owner checks: for one agent (and/or service), every metric of
:func:`analysis.aggregate.summarize` for version A and version B, the absolute and relative
deltas, and per-run figures (cost, tokens, tool calls per run) so that versions with different
traffic compare fairly. A metric with a known "better" direction is flagged as a regression when
B is worse than A by more than ``REGRESSION_THRESHOLD`` (relative), provided both versions have
at least ``MIN_RUNS`` runs.

Pure polars over LazyFrames.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import polars as pl

from analysis.aggregate import ADDITIVE_METRICS, METRIC_SCHEMA, summarize
from analysis.filters import Filters

LOWER_IS_BETTER: Final = frozenset(
    {
        "error_rate",
        "run_p50_ms",
        "run_p90_ms",
        "run_p99_ms",
        "step_p50_ms",
        "step_p90_ms",
        "step_p99_ms",
        "tool_p50_ms",
        "tool_p90_ms",
        "cost_per_run_usd",
        "tokens_in_per_run",
        "tokens_out_per_run",
        "tool_errors_per_run",
        "policy_violations",
    }
)
"""Metrics where a higher value for version B is a regression."""
REGRESSION_THRESHOLD: Final = 0.10
"""Relative change in the bad direction above which a metric counts as regressed."""
MIN_RUNS: Final = 20
"""Runs each version needs before regressions are flagged (fewer: ``regression`` is None)."""
_PER_RUN: Final = {
    "cost_per_run_usd": "cost_usd",
    "tokens_in_per_run": "tokens_in",
    "tokens_out_per_run": "tokens_out",
    "tool_calls_per_run": "tool_calls",
    "tool_errors_per_run": "tool_errors",
}


def compare_versions(
    runs: pl.LazyFrame,
    steps: pl.LazyFrame,
    *,
    agent: str | None,
    service: str | None,
    version_a: str,
    version_b: str,
    filters: Filters,
) -> dict[str, Any]:
    """Metrics of ``version_a`` and ``version_b`` side by side, with deltas.

    Returns a JSON-ready dict: ``agent``, ``service``, ``version_a``, ``version_b`` and
    ``metrics``: ``{name: {"a", "b", "delta", "relative_delta", "regression"}}`` where
    ``relative_delta`` is None when A is 0 or either side is missing, and ``regression`` is
    None for metrics without a direction or with too few runs. A version with no runs in range
    shows ``runs`` 0 and null latencies.
    """
    scope = dataclasses.replace(
        filters,
        agent=agent if agent is not None else filters.agent,
        service=service if service is not None else filters.service,
    )
    table = summarize(runs, steps, filters=scope, group_by=("service_version",))
    side_a, side_b = _side(table, version_a), _side(table, version_b)
    enough = min(side_a["runs"], side_b["runs"]) >= MIN_RUNS
    return {
        "agent": scope.agent,
        "service": scope.service,
        "version_a": version_a,
        "version_b": version_b,
        "metrics": {name: _delta(name, side_a[name], side_b.get(name), enough) for name in side_a},
    }


def _side(table: pl.DataFrame, version: str) -> dict[str, Any]:
    """One version's metrics (counts 0 and the rest null when it has no data), plus per-run figures."""
    rows = table.filter(pl.col("service_version") == version)
    metrics: dict[str, Any]
    if rows.is_empty():
        metrics = {
            # additive metrics are Int64 or Float64: to_python() is int or float, not the stub's whole union
            name: (dtype.to_python()(0) if name in ADDITIVE_METRICS else None)  # type: ignore[call-arg]
            for name, dtype in METRIC_SCHEMA.items()
        }
    else:
        metrics = rows.drop("service_version").row(0, named=True)
    for name, total in _PER_RUN.items():
        metrics[name] = metrics[total] / metrics["runs"] if metrics["runs"] else None
    return metrics


def _delta(name: str, a: float | None, b: float | None, enough_runs: bool) -> dict[str, Any]:
    delta = None if a is None or b is None else b - a
    relative = None if delta is None or not a else delta / abs(a)
    regression = None
    if name in LOWER_IS_BETTER and enough_runs and delta is not None:
        regression = delta > 0 and (relative is None or relative > REGRESSION_THRESHOLD)
    return {"a": a, "b": b, "delta": delta, "relative_delta": relative, "regression": regression}
