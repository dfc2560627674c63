"""Properties of the aggregates on random frames (hypothesis): groups and buckets add up."""

from __future__ import annotations

from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis.aggregate import Filters, summarize, timeseries
from tests.analysis.factories import MS, S, run, runs_frame, step, steps_frame

DAY0 = 1_789_948_800 * 10**9
ADDITIVE_STEP_METRICS = ["steps", "tool_calls", "tool_errors", "policy_violations", "redactions"]
ADDITIVE_RUN_METRICS = ["runs", "finished_runs", "failed_runs", "tokens_in", "tokens_out"]

run_strategy = st.fixed_dictionaries(
    {
        "agent": st.sampled_from(["a1", "a2", "a3"]),
        "status": st.sampled_from(["running", "succeeded", "failed", "canceled"]),
        "offset_s": st.integers(0, 3_599),
        "tokens_in": st.integers(0, 1_000),
        "steps": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["span", "model", "tool", "policy", "error"]),
                    "status": st.sampled_from(["ok", "error", "unset"]),
                    "offset_s": st.integers(0, 600),
                    "duration_ms": st.integers(0, 5_000),
                    "redactions": st.integers(0, 3),
                }
            ),
            max_size=6,
        ),
    }
)


def build(drafts: list[dict[str, Any]]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    runs, steps = [], []
    for i, draft in enumerate(drafts):
        started = DAY0 + draft["offset_s"] * S
        runs.append(
            run(
                f"r{i}",
                agent=draft["agent"],
                status=draft["status"],
                started_ns=started,
                tokens_in=draft["tokens_in"],
            )
        )
        for seq, s in enumerate(draft["steps"]):
            steps.append(
                step(
                    f"r{i}",
                    seq,
                    type=s["type"],
                    status=s["status"],
                    start_ns=started + s["offset_s"] * S,
                    duration_ns=s["duration_ms"] * MS,
                    redaction_count=s["redactions"],
                )
            )
    return runs_frame(runs).lazy(), steps_frame(steps).lazy()


@settings(max_examples=25, deadline=None)
@given(st.lists(run_strategy, max_size=12))
def test_groups_add_up_to_the_total(drafts: list[dict[str, Any]]) -> None:
    runs, steps = build(drafts)
    total = summarize(runs, steps, filters=Filters())
    for key in ("agent", "status"):
        grouped = summarize(runs, steps, filters=Filters(), group_by=[key])
        columns = ADDITIVE_RUN_METRICS + ADDITIVE_STEP_METRICS
        assert_frame_equal(grouped.select(columns).sum(), total.select(columns))


@settings(max_examples=25, deadline=None)
@given(st.lists(run_strategy, max_size=12), st.sampled_from(["1m", "5m", "15m", "1h"]))
def test_buckets_add_up_to_the_summary_of_the_range(drafts: list[dict[str, Any]], bucket: str) -> None:
    runs, steps = build(drafts)
    window = Filters(started_after_ns=DAY0 + 7 * S, started_before_ns=DAY0 + 3_000 * S)
    series = timeseries(runs, steps, filters=window, bucket=bucket)
    total = summarize(runs, steps, filters=window)
    columns = ADDITIVE_RUN_METRICS + ADDITIVE_STEP_METRICS
    assert_frame_equal(series.select(columns).sum(), total.select(columns))
    starts = series["bucket_start_ns"]
    assert starts.is_sorted() and starts.n_unique() == starts.len()
