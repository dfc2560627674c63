"""Summary, timeseries and group-by aggregates over the runs index and the steps table.

Two sources, each measured at its own time:

- **run metrics** (runs, error rate = failed / finished, run latency, tokens, cost) come from
  ``runs`` and count at the run's ``started_ns``; the run totals are already deduplicated;
- **step metrics** (step latency, tool calls, errors and durations, policy violations,
  redactions) come from ``steps`` and count at the step's own ``start_ns``. Structural ``span``
  steps (agent/chain wrappers) are left out of step counts and step latency.

Filters select runs: time range on ``started_ns`` (steps: on ``start_ns``), agent, service,
environment, status, and model/tool as "the run called it". Steps follow their run for agent,
status, model and tool; service, service_version and environment are resource attributes that a
step carries itself, so steps are filtered and grouped by their own.

``model`` and ``tool`` group keys are step attributes: a run counts under every model/tool it
called, step metrics under the step's own model/tool, and tokens and cost then come from steps
under the **step-level double-count rule**: only ``model`` steps count, and a model step is
dropped when it is the parent (``parent_span_id``) of another model step of the same run that
reports tokens (a wrapper repeating its child's usage).

Percentiles interpolate linearly between closest ranks. In an empty group or bucket, counts and
sums are 0 and rates and percentiles are null (there is nothing to measure).

Pure polars over LazyFrames: no file, socket or database access.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from otlp_receiver.errors import UnprocessableError

GROUP_KEYS: Final = ("agent", "service", "service_version", "environment", "model", "tool", "status")
BUCKETS: Final[dict[str, int]] = {
    "1m": 60 * 10**9,
    "5m": 5 * 60 * 10**9,
    "15m": 15 * 60 * 10**9,
    "1h": 3_600 * 10**9,
    "6h": 6 * 3_600 * 10**9,
    "1d": 86_400 * 10**9,
}
"""Timeseries bucket widths in ns; buckets are aligned on the Unix epoch (UTC)."""
MAX_BUCKETS: Final = 20_000
"""Largest number of buckets a timeseries may span (30 days of 1 m buckets is 43,200: too many)."""
TOKEN_COLUMNS: Final = (
    "tokens_in",
    "tokens_out",
    "tokens_cache_read",
    "tokens_cache_write",
    "tokens_reasoning",
)
UNBOUND_BINDINGS: Final = ("bound", "ungated")
"""Binding values that are *not* a violation (null, no gate involved, is not one either)."""
_QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
BUCKET: Final = "bucket_start_ns"
_ALL: Final = "_all"
_JOINED_KEYS: Final = frozenset({"agent", "status"})
"""Group keys a step takes from its run; service, version and environment are on the step."""
_NS_PER_MS: Final = 1_000_000

METRIC_SCHEMA: Final[dict[str, pl.DataType]] = {
    "runs": pl.Int64(),
    "finished_runs": pl.Int64(),
    "failed_runs": pl.Int64(),
    "error_rate": pl.Float64(),
    "run_p50_ms": pl.Float64(),
    "run_p90_ms": pl.Float64(),
    "run_p99_ms": pl.Float64(),
    "steps": pl.Int64(),
    "step_p50_ms": pl.Float64(),
    "step_p90_ms": pl.Float64(),
    "step_p99_ms": pl.Float64(),
    **{name: pl.Int64() for name in TOKEN_COLUMNS},
    "cost_usd": pl.Float64(),
    "unpriced_runs": pl.Int64(),
    "tool_calls": pl.Int64(),
    "tool_errors": pl.Int64(),
    "tool_p50_ms": pl.Float64(),
    "tool_p90_ms": pl.Float64(),
    "policy_violations": pl.Int64(),
    "redactions": pl.Int64(),
}
"""Every metric column, in output order, with its type. Rates and percentiles may be null."""
ADDITIVE_METRICS: Final = frozenset(n for n in METRIC_SCHEMA if n != "error_rate" and not n.endswith("_ms"))
"""Counts and sums: 0 in an empty group (the rest, rates and percentiles, are null there)."""


class AnalysisQueryError(UnprocessableError, ValueError):
    """An analytics request names an unknown group key or bucket, or spans too many buckets."""

    code = "invalid_analytics_query"


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


def summarize(
    runs: pl.LazyFrame, steps: pl.LazyFrame, *, filters: Filters, group_by: Sequence[str] = ()
) -> pl.DataFrame:
    """Every metric of ``METRIC_SCHEMA`` per group, sorted by the keys (one row without keys).

    Raises:
        AnalysisQueryError: a group key is not one of ``GROUP_KEYS``.
    """
    keys = validate_group_by(group_by)
    on = keys or (_ALL,)
    parts = _aggregates(runs, steps, filters, keys, bucket_ns=None)
    base = _groups(parts, on) if keys else pl.LazyFrame({_ALL: [0]}, schema={_ALL: pl.Int32})
    return _assemble(base, on, parts).sort(list(on), nulls_last=True).drop(_ALL, strict=False)


def timeseries(
    runs: pl.LazyFrame,
    steps: pl.LazyFrame,
    *,
    filters: Filters,
    bucket: str,
    group_by: Sequence[str] = (),
) -> pl.DataFrame:
    """The metrics of :func:`summarize` per time bucket (``bucket_start_ns``) and group.

    Every bucket of the range is present, for every group seen in the range. The range is the
    filter's time range, or the data's when a bound is unset. Sorted by keys, then time.

    Raises:
        AnalysisQueryError: unknown bucket or group key, or more than ``MAX_BUCKETS`` buckets.
    """
    if bucket not in BUCKETS:
        raise AnalysisQueryError(f"unknown bucket {bucket!r}; allowed: {', '.join(BUCKETS)}")
    keys, width = validate_group_by(group_by), BUCKETS[bucket]
    first, last = _bucket_range(runs, steps, filters, width)
    parts = _aggregates(runs, steps, filters, keys, bucket_ns=width)
    base = pl.LazyFrame({BUCKET: pl.int_range(first, last + width, width, eager=True)})
    if keys:
        base = base.join(_groups(parts, keys), how="cross")
    return _assemble(base, (BUCKET, *keys), parts).sort(*keys, BUCKET, nulls_last=True)


def validate_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """The group keys, deduplicated, in order.

    Raises:
        AnalysisQueryError: a key is not one of ``GROUP_KEYS`` (the message names the allowed keys).
    """
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    unknown = [key for key in keys if key not in GROUP_KEYS]
    if unknown:
        raise AnalysisQueryError(
            f"unknown group key {unknown[0]!r}; allowed: {', '.join(GROUP_KEYS)}",
            details={"group_by": unknown[0]},
        )
    return tuple(dict.fromkeys(keys))


# --- aggregates: runs, steps (one per subset of steps), usage-leaf model steps -----------------


@dataclass(frozen=True)
class _Parts:
    """Lazy aggregates, each keyed by the group keys (and the bucket, in a timeseries)."""

    runs: pl.LazyFrame
    steps: tuple[pl.LazyFrame, ...]
    """One aggregate per subset of steps (non-span, tool, policy, redacted, usage leaves)."""


def _aggregates(
    runs: pl.LazyFrame, steps: pl.LazyFrame, filters: Filters, keys: tuple[str, ...], *, bucket_ns: int | None
) -> _Parts:
    by_step = bool({"model", "tool"} & set(keys))
    on = [*keys, BUCKET] if bucket_ns else list(keys)
    run_frame = _bucketed(_run_rows(runs, filters, keys), "started_ns", bucket_ns)
    run_agg = _aggregate(run_frame, on, _run_metrics(with_usage=not by_step), "run", _QUANTILES)
    step_frame, run_groups = _step_rows(runs, steps, filters, keys)
    step_frame = _bucketed(step_frame, "start_ns", bucket_ns)
    step_on = [k for k in on if k not in _JOINED_KEYS] + (["_gid"] if run_groups is not None else [])
    step_aggs = [
        _aggregate(step_frame.filter(predicate), step_on, metrics, prefix, quantiles)
        for predicate, metrics, prefix, quantiles in _step_subsets()
    ]
    if by_step:
        step_aggs.append(_aggregate(_usage_leaves(step_frame), step_on, _usage_metrics(), "", ()))
    if run_groups is not None:
        step_aggs = [agg.join(run_groups, on="_gid").drop("_gid") for agg in step_aggs]
    return _Parts(run_agg, tuple(step_aggs))


def _run_rows(runs: pl.LazyFrame, filters: Filters, keys: tuple[str, ...]) -> pl.LazyFrame:
    """Runs selected by the filters, one row per (run, model, tool) when those are keys."""
    frame = runs.filter(_all_of(_run_conditions(filters)))
    for key, column in (("model", "model_names"), ("tool", "tool_names")):
        if key in keys:
            frame = frame.explode(column, empty_as_null=True).rename({column: key})
    return frame


def _step_rows(
    runs: pl.LazyFrame, steps: pl.LazyFrame, filters: Filters, keys: tuple[str, ...]
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """Steps in the range (of the runs the filters select), and the ``_gid`` → agent/status table.

    Steps need their run only for agent, status, model and tool (run filters) and for the agent
    and status keys: a step carries its own service, version and environment. The run is found
    through a left join that adds one integer per step and keeps the steps in place, rather than
    an inner join that gathers every column; grouping by that integer is also several times
    faster than by joined strings.
    """
    frame = steps.filter(_all_of(_step_conditions(filters))).rename(
        {"model_name": "model", "tool_name": "tool"}
    )
    run_keys = [key for key in keys if key in _JOINED_KEYS]
    lookup = _lookup_conditions(filters)
    if not run_keys and not lookup:
        return frame, None
    selected = runs.filter(_all_of(lookup))
    groups = None
    if run_keys:
        groups = selected.select(run_keys).unique(maintain_order=True).with_row_index("_gid")
        ids = selected.select("run_id", *run_keys).join(groups, on=run_keys, nulls_equal=True)
    else:
        ids = selected.select("run_id", pl.lit(0, dtype=pl.UInt32).alias("_gid"))
    frame = frame.join(ids.select("run_id", "_gid"), on="run_id", how="left", maintain_order="left")
    return frame.filter(pl.col("_gid").is_not_null()), groups


def _usage_leaves(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Model steps that count for tokens and cost (the step-level double-count rule)."""
    models = frame.filter(pl.col("type") == "model")
    has_tokens = pl.any_horizontal(
        pl.col(c).is_not_null() for c in ("tokens_in", "tokens_out", "tokens_total")
    )
    wrappers = (
        models.filter(has_tokens & pl.col("parent_span_id").is_not_null())
        .select("run_id", span_id=pl.col("parent_span_id"))
        .unique()
    )
    return models.join(wrappers, on=["run_id", "span_id"], how="anti")


def _aggregate(
    frame: pl.LazyFrame,
    on: Sequence[str],
    metrics: list[pl.Expr],
    prefix: str,
    quantiles: Sequence[tuple[str, float]],
) -> pl.LazyFrame:
    """``metrics`` and latency percentiles of ``duration_ns`` (as ``{prefix}_{name}_ms``) per group.

    Without keys the whole frame is one group, under the constant key ``_all``. Percentiles then
    come from one list-valued quantile: polars computes them in one pass, about 3x faster than
    three quantiles, but only outside a group-by.
    """
    if on:
        return frame.group_by(on).agg(*metrics, *_ms_quantiles(pl.col("duration_ns"), prefix, quantiles))
    names = [metric.meta.output_name() for metric in metrics]
    percentiles = [f"{prefix}_{name}_ms" for name, _ in quantiles]
    if quantiles:
        metrics = [*metrics, pl.col("duration_ns").quantile([q for _, q in quantiles], "linear").alias("_q")]
    one_row = frame.select(metrics).select(
        pl.lit(0, dtype=pl.Int32).alias(_ALL),
        *names,
        *[(pl.col("_q").list.get(i) / _NS_PER_MS).alias(name) for i, name in enumerate(percentiles)],
    )
    return one_row


def _bucketed(frame: pl.LazyFrame, time_column: str, bucket_ns: int | None) -> pl.LazyFrame:
    if bucket_ns is None:
        return frame
    return frame.with_columns(((pl.col(time_column) // bucket_ns) * bucket_ns).alias(BUCKET))


# --- metric expressions ---------------------------------------------------------------------------


def _run_metrics(*, with_usage: bool) -> list[pl.Expr]:
    """Run counts and usage; latency percentiles are added by :func:`_aggregate`."""
    unpriced = pl.col("cost_usd").is_null() & (pl.col("tokens_in") + pl.col("tokens_out") > 0)
    exprs = [
        pl.len().alias("runs"),
        (pl.col("status") != "running").sum().alias("finished_runs"),
        (pl.col("status") == "failed").sum().alias("failed_runs"),
        unpriced.sum().alias("unpriced_runs"),
    ]
    return exprs + _usage_metrics() if with_usage else exprs


def _step_subsets() -> list[tuple[pl.Expr, list[pl.Expr], str, Sequence[tuple[str, float]]]]:
    """(rows, metrics, latency prefix, percentiles) per subset of steps. Each subset is aggregated
    over its own pre-filtered rows: about twice as fast as filters inside one aggregation."""
    kind, failed = pl.col("type"), pl.col("status") == "error"
    bad_binding = pl.col("binding").is_not_null() & ~pl.col("binding").is_in(UNBOUND_BINDINGS)
    return [
        (kind != "span", [pl.len().alias("steps")], "step", _QUANTILES),
        (
            kind == "tool",
            [pl.len().alias("tool_calls"), failed.sum().alias("tool_errors")],
            "tool",
            _QUANTILES[:2],
        ),
        (kind == "policy", [(failed | bad_binding).sum().alias("policy_violations")], "", ()),
        (pl.col("redaction_count") > 0, [pl.col("redaction_count").sum().alias("redactions")], "", ()),
    ]


def _usage_metrics() -> list[pl.Expr]:
    return [pl.col(c).sum() for c in TOKEN_COLUMNS] + [pl.col("cost_usd").sum()]


def _ms_quantiles(values: pl.Expr, prefix: str, quantiles: Sequence[tuple[str, float]]) -> list[pl.Expr]:
    return [(values.quantile(q, "linear") / _NS_PER_MS).alias(f"{prefix}_{name}_ms") for name, q in quantiles]


# --- assembly ---------------------------------------------------------------------------------


def _groups(parts: _Parts, keys: Sequence[str]) -> pl.LazyFrame:
    """Every key combination seen by the run or a step aggregate."""
    found = pl.concat([agg.select(keys) for agg in (parts.runs, *parts.steps)], how="vertical_relaxed")
    return found.unique(maintain_order=True)


def _assemble(base: pl.LazyFrame, on: Sequence[str], parts: _Parts) -> pl.DataFrame:
    """Left-join every aggregate onto the group rows of ``base`` and give each metric its type."""
    frame = base
    for agg in (parts.runs, *parts.steps):
        frame = frame.join(agg, on=list(on), how="left", nulls_equal=True)
    finished, failed = pl.col("finished_runs"), pl.col("failed_runs")
    frame = frame.with_columns(pl.when(finished > 0).then(failed / finished).alias("error_rate"))
    metrics = [
        (pl.col(name).fill_null(0) if name in ADDITIVE_METRICS else pl.col(name)).cast(dtype).alias(name)
        for name, dtype in METRIC_SCHEMA.items()
    ]
    return frame.select(*on, *metrics).collect()


# --- filters --------------------------------------------------------------------------------


def _all_of(conditions: list[pl.Expr]) -> pl.Expr:
    return pl.all_horizontal(conditions) if conditions else pl.lit(True)


def _run_conditions(filters: Filters) -> list[pl.Expr]:
    """Every filter, on the run's columns."""
    equal = [("service", filters.service), ("environment", filters.environment)]
    conditions = [pl.col(column) == value for column, value in equal if value is not None]
    return conditions + _lookup_conditions(filters) + _time_conditions("started_ns", filters)


def _lookup_conditions(filters: Filters) -> list[pl.Expr]:
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


def _step_conditions(filters: Filters) -> list[pl.Expr]:
    """Time range, service and environment on the step's own columns. The ``day`` bounds are
    redundant with ``start_ns`` but let a scan of the day-partitioned table skip whole days."""
    equal = [("service", filters.service), ("environment", filters.environment)]
    conditions = [pl.col(column) == value for column, value in equal if value is not None]
    if filters.started_after_ns is not None:
        conditions.append(pl.col("day") >= _utc_day(filters.started_after_ns))
    if filters.started_before_ns is not None:
        conditions.append(pl.col("day") <= _utc_day(filters.started_before_ns - 1))
    return conditions + _time_conditions("start_ns", filters)


def _time_conditions(column: str, filters: Filters) -> list[pl.Expr]:
    conditions = []
    if filters.started_after_ns is not None:
        conditions.append(pl.col(column) >= filters.started_after_ns)
    if filters.started_before_ns is not None:
        conditions.append(pl.col(column) < filters.started_before_ns)
    return conditions


def _utc_day(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // 10**9, tz=dt.UTC).strftime("%Y-%m-%d")


def _bucket_range(runs: pl.LazyFrame, steps: pl.LazyFrame, filters: Filters, width: int) -> tuple[int, int]:
    """First and last bucket start of the range (first > last when there is nothing to show)."""
    after, before = filters.started_after_ns, filters.started_before_ns
    if after is None or before is None:
        times = pl.concat(
            [
                runs.filter(_all_of(_run_conditions(filters))).select(t=pl.col("started_ns")),
                steps.filter(_all_of(_step_conditions(filters))).select(t=pl.col("start_ns")),
            ]
        )
        seen = times.select(lo=pl.col("t").min(), hi=pl.col("t").max() + 1).collect()
        if seen["lo"][0] is None:
            return 0, -width
        after = seen["lo"][0] if after is None else after
        before = seen["hi"][0] if before is None else before
    first, last = after // width * width, (before - 1) // width * width
    count = (last - first) // width + 1
    if count > MAX_BUCKETS:
        raise AnalysisQueryError(
            f"{count} buckets of {width // 10**9} s is over {MAX_BUCKETS}; use a wider bucket"
        )
    return first, last
