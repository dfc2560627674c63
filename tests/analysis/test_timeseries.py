"""timeseries: bucket edges, empty buckets, groups, range and validation."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.aggregate import BUCKETS, MAX_BUCKETS, AnalysisQueryError, Filters, summarize, timeseries
from analysis.frames import empty_runs, empty_steps
from tests.analysis.factories import MS, S, run, runs_frame, step, steps_frame

MINUTE = 60 * S
DAY0 = 1_789_948_800 * 10**9
"""2026-09-21 00:00:00 UTC: aligned on every bucket width."""


def frames() -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Runs at 00:00:00, 00:00:59.999999999 (same minute), 00:01:00 (next) and 00:03:00."""
    runs = runs_frame(
        [
            run("a", started_ns=DAY0, status="failed"),
            run("b", started_ns=DAY0 + MINUTE - 1),
            run("c", started_ns=DAY0 + MINUTE, agent="a2"),
            run("d", started_ns=DAY0 + 3 * MINUTE),
        ]
    ).lazy()
    steps = steps_frame(
        [
            step("a", 0, start_ns=DAY0 + 59 * S, duration_ns=10 * MS),
            step("b", 0, start_ns=DAY0 + MINUTE, duration_ns=30 * MS),  # run in minute 0, step in minute 1
            step("d", 0, start_ns=DAY0 + 3 * MINUTE + 1, duration_ns=20 * MS),
        ]
    ).lazy()
    return runs, steps


def test_buckets_are_left_closed_and_empty_buckets_are_zero() -> None:
    runs, steps = frames()
    got = timeseries(
        runs, steps, filters=Filters(started_after_ns=DAY0, started_before_ns=DAY0 + 5 * MINUTE), bucket="1m"
    )
    want = pl.DataFrame(
        {
            "bucket_start_ns": [DAY0 + i * MINUTE for i in range(5)],
            "runs": [2, 1, 0, 1, 0],
            "failed_runs": [1, 0, 0, 0, 0],
            "error_rate": [0.5, 0.0, None, 0.0, None],
            "steps": [1, 1, 0, 1, 0],
            "step_p50_ms": [10.0, 30.0, None, 20.0, None],
        }
    )
    assert_frame_equal(got.select(want.columns), want)


def test_bucket_sums_match_the_summary_of_the_same_range() -> None:
    runs, steps = frames()
    window = Filters(started_after_ns=DAY0, started_before_ns=DAY0 + 5 * MINUTE)
    series = timeseries(runs, steps, filters=window, bucket="1m").select("runs", "steps", "failed_runs").sum()
    total = summarize(runs, steps, filters=window).select("runs", "steps", "failed_runs")
    assert_frame_equal(series, total)


def test_unaligned_range_covers_partial_first_and_last_buckets() -> None:
    runs, steps = frames()
    got = timeseries(
        runs,
        steps,
        filters=Filters(started_after_ns=DAY0 + 30 * S, started_before_ns=DAY0 + MINUTE + 1),
        bucket="1m",
    )
    assert got.select("bucket_start_ns", "runs").rows() == [(DAY0, 1), (DAY0 + MINUTE, 1)]


def test_grouped_series_has_every_bucket_for_every_group() -> None:
    runs, steps = frames()
    got = timeseries(
        runs,
        steps,
        filters=Filters(started_after_ns=DAY0, started_before_ns=DAY0 + 4 * MINUTE),
        bucket="1m",
        group_by=["agent"],
    )
    assert got.height == 2 * 4
    assert got.filter(pl.col("agent") == "a2").select("bucket_start_ns", "runs").rows() == [
        (DAY0, 0),
        (DAY0 + MINUTE, 1),
        (DAY0 + 2 * MINUTE, 0),
        (DAY0 + 3 * MINUTE, 0),
    ]


def test_range_defaults_to_the_data() -> None:
    runs, steps = frames()
    got = timeseries(runs, steps, filters=Filters(), bucket="1m")
    assert got["bucket_start_ns"].to_list() == [DAY0 + i * MINUTE for i in range(4)]
    assert timeseries(empty_runs(), empty_steps(), filters=Filters(), bucket="1h").height == 0


@pytest.mark.parametrize(("bucket", "starts"), [("1h", [DAY0]), ("1d", [DAY0]), ("5m", [DAY0])])
def test_wider_buckets_align_on_the_epoch(bucket: str, starts: list[int]) -> None:
    runs, steps = frames()
    got = timeseries(runs, steps, filters=Filters(), bucket=bucket)
    assert got["bucket_start_ns"].to_list() == starts
    assert got["runs"].to_list() == [4]


def test_unknown_bucket_and_too_many_buckets_are_rejected() -> None:
    runs, steps = frames()
    with pytest.raises(AnalysisQueryError, match="allowed: 1m, 5m, 15m, 1h, 6h, 1d"):
        timeseries(runs, steps, filters=Filters(), bucket="2m")
    too_long = Filters(started_after_ns=DAY0, started_before_ns=DAY0 + (MAX_BUCKETS + 1) * BUCKETS["1m"])
    with pytest.raises(AnalysisQueryError, match="wider bucket"):
        timeseries(runs, steps, filters=too_long, bucket="1m")
    with pytest.raises(AnalysisQueryError, match="unknown group key"):
        timeseries(runs, steps, filters=Filters(), bucket="1m", group_by=["day"])
