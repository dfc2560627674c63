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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from analysis.filters import (
    Filters,
    all_of,
    lookup_conditions,
    run_conditions,
    step_conditions,
)
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
OK_BINDINGS: Final = ("bound", "ungated")
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
    step_frame, gid, run_groups = _step_rows(runs, steps, filters, keys)
    step_frame = _bucketed(step_frame, "start_ns", bucket_ns)
    step_on = [k for k in on if k not in _JOINED_KEYS] + (["_gid"] if gid is not None else [])
    narrow = _with_gid(step_frame, gid).select(*step_on, *_step_features())
    if gid is not None:
        # Collected once: left lazy, the optimizer pushes each subset's filter under the run
        # lookup and repeats the lookup (the costliest part) per subset.
        narrow = narrow.collect().lazy()
    step_aggs = [
        _aggregate(narrow.filter(predicate), step_on, metrics, prefix, quantiles)
        for predicate, metrics, prefix, quantiles in _step_subsets()
    ]
    if by_step:
        leaves = _with_gid(_usage_leaves(step_frame), gid)
        step_aggs.append(_aggregate(leaves, step_on, _usage_metrics(), "", ()))
    if run_groups is not None:
        step_aggs = [agg.join(run_groups, on="_gid").drop("_gid") for agg in step_aggs]
    return _Parts(run_agg, tuple(step_aggs))


def _run_rows(runs: pl.LazyFrame, filters: Filters, keys: tuple[str, ...]) -> pl.LazyFrame:
    """Runs selected by the filters, one row per (run, model, tool) when those are keys."""
    frame = runs.filter(all_of(run_conditions(filters)))
    for key, column in (("model", "model_names"), ("tool", "tool_names")):
        if key in keys:
            frame = frame.explode(column, empty_as_null=True).rename({column: key})
    return frame


def _step_rows(
    runs: pl.LazyFrame, steps: pl.LazyFrame, filters: Filters, keys: tuple[str, ...]
) -> tuple[pl.LazyFrame, pl.Expr | None, pl.LazyFrame | None]:
    """Steps in the range, the run lookup expression (``_gid``) and the ``_gid`` → keys table.

    Steps need their run only for agent, status, model and tool (run filters) and for the agent
    and status keys: a step carries its own service, version and environment. The lookup table
    (one row per run) is collected first and applied as a hash lookup on ``run_id``, which
    gathers no other column the way a join would; grouping by the small integer it returns is
    also several times faster than by joined strings. Steps of unselected runs get a null id.
    """
    frame = steps.filter(all_of(step_conditions(filters))).rename(
        {"model_name": "model", "tool_name": "tool"}
    )
    run_keys = [key for key in keys if key in _JOINED_KEYS]
    lookup = lookup_conditions(filters)
    if not run_keys and not lookup:
        return frame, None, None
    ids = runs.filter(all_of(lookup)).select("run_id", *run_keys).collect()
    if not run_keys:
        return frame.filter(pl.col("run_id").is_in(ids["run_id"].implode())), None, None
    groups = ids.select(run_keys).unique(maintain_order=True).with_row_index("_gid")
    ids = ids.join(groups, on=run_keys, nulls_equal=True)
    gid = pl.col("run_id").replace_strict(ids["run_id"], ids["_gid"], default=None)
    return frame, gid, groups.lazy()


def _with_gid(frame: pl.LazyFrame, gid: pl.Expr | None) -> pl.LazyFrame:
    if gid is None:
        return frame
    return frame.with_columns(gid.alias("_gid")).filter(pl.col("_gid").is_not_null())


def _usage_leaves(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Model steps that count for tokens and cost (the step-level double-count rule).

    A model step is dropped when its (run_id, span_id) is the (run_id, parent_span_id) of a
    model step with tokens. The pairs are compared as 64-bit hashes (an ``is_in`` on integers
    is about three times faster than a two-string anti-join); a false match needs a hash
    collision, about 1 in 10^6 for 10M steps.
    """
    models = frame.filter(pl.col("type") == "model")
    has_tokens = pl.any_horizontal(
        pl.col(c).is_not_null() for c in ("tokens_in", "tokens_out", "tokens_total")
    )
    child_of = pl.struct("run_id", pl.col("parent_span_id").alias("span_id")).hash()
    wrapped = child_of.filter(has_tokens & pl.col("parent_span_id").is_not_null())
    return models.filter(~pl.struct("run_id", "span_id").hash().is_in(wrapped.implode()))


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


_SPAN, _TOOL, _POLICY, _OTHER = 0, 1, 2, 3


def _step_features() -> list[pl.Expr | str]:
    """What the step metrics read, as small columns: a kind code, failed, bad binding, duration,
    redactions (not the type, status and binding strings)."""
    kind = pl.col("type")
    code = (pl.when(kind == "span").then(_SPAN).when(kind == "tool").then(_TOOL)
            .when(kind == "policy").then(_POLICY).otherwise(_OTHER).cast(pl.Int8))
    bad_binding = pl.col("binding").is_not_null() & ~pl.col("binding").is_in(OK_BINDINGS)
    failed = pl.col("status") == "error"
    return [
        code.alias("_kind"),
        failed.alias("_failed"),
        bad_binding.alias("_bad_binding"),
        "duration_ns",
        "redaction_count",
    ]


def _step_subsets() -> list[tuple[pl.Expr, list[pl.Expr], str, Sequence[tuple[str, float]]]]:
    """(rows, metrics, latency prefix, percentiles) per subset of steps. Each subset is aggregated
    over its own pre-filtered rows: about twice as fast as filters inside one aggregation."""
    kind, failed = pl.col("_kind"), pl.col("_failed")
    tool_metrics = [pl.len().alias("tool_calls"), failed.sum().alias("tool_errors")]
    return [
        (kind != _SPAN, [pl.len().alias("steps")], "step", _QUANTILES),
        (kind == _TOOL, tool_metrics, "tool", _QUANTILES[:2]),
        (kind == _POLICY, [(failed | pl.col("_bad_binding")).sum().alias("policy_violations")], "", ()),
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


def _bucket_range(runs: pl.LazyFrame, steps: pl.LazyFrame, filters: Filters, width: int) -> tuple[int, int]:
    """First and last bucket start of the range (first > last when there is nothing to show)."""
    after, before = filters.started_after_ns, filters.started_before_ns
    if after is None or before is None:
        times = pl.concat(
            [
                runs.filter(all_of(run_conditions(filters))).select(t=pl.col("started_ns")),
                steps.filter(all_of(step_conditions(filters))).select(t=pl.col("start_ns")),
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
