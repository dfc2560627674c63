"""summarize / timeseries on small handmade frames with hand-computed expectations."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.aggregate import (
    ADDITIVE_METRICS,
    GROUP_KEYS,
    METRIC_SCHEMA,
    AnalysisQueryError,
    Filters,
    summarize,
    validate_group_by,
)
from analysis.frames import empty_runs, empty_steps
from otlp_receiver.errors import UnprocessableError
from tests.analysis.factories import MS, T0_NS, S, run, runs_frame, step, steps_frame


def metrics(**values: Any) -> dict[str, Any]:
    """A full metrics row: counts 0 and the rest null unless given."""
    row = {name: (0 if name in ADDITIVE_METRICS else None) for name in METRIC_SCHEMA}
    row.update(values)
    return row


def expected(rows: list[dict[str, Any]], keys: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={**(keys or {}), **METRIC_SCHEMA})


def basic_runs() -> pl.LazyFrame:
    """r1 ok 1 s, r2 failed 3 s, r3 ok 2 s, r4 running; usage on r1 and r2 (r2 unpriced)."""
    return runs_frame(
        [
            run("r1", duration_ns=1 * S, tokens_in=100, tokens_out=10, tokens_cache_read=40, cost_usd=0.5),
            run("r2", status="failed", duration_ns=3 * S, tokens_in=200, tokens_out=20, tokens_reasoning=5),
            run("r3", duration_ns=2 * S, agent="a2"),
            run("r4", status="running", agent="a2"),
        ]
    ).lazy()


def basic_steps() -> pl.LazyFrame:
    """Non-span steps of 100, 200, 400, 50 ms; tools of 200 ms and 400 ms (failed)."""
    return steps_frame(
        [
            step("r1", 0, type="span", duration_ns=5 * S),
            step("r1", 1, type="model", duration_ns=100 * MS, model_name="m1", redaction_count=2),
            step("r1", 2, type="tool", duration_ns=200 * MS, tool_name="search"),
            step("r2", 0, type="tool", duration_ns=400 * MS, tool_name="search", status="error"),
            step("r3", 0, type="policy", duration_ns=50 * MS, status="error", redaction_count=1),
        ]
    ).lazy()


def test_summary_without_groups_is_one_row_of_hand_computed_metrics() -> None:
    # runs latency [1000, 2000, 3000] ms: p50 2000, p90 = 2000 + 0.8 * 1000, p99 = 2000 + 0.98 * 1000
    # steps [50, 100, 200, 400] ms: p50 = 150, p90 = 200 + 0.7 * 200 = 340, p99 = 200 + 0.97 * 200 = 394
    # tools [200, 400] ms: p50 = 300, p90 = 380
    want = metrics(
        runs=4, finished_runs=3, failed_runs=1, error_rate=1 / 3,
        run_p50_ms=2000.0, run_p90_ms=2800.0, run_p99_ms=2980.0,
        steps=4, step_p50_ms=150.0, step_p90_ms=340.0, step_p99_ms=394.0,
        tokens_in=300, tokens_out=30, tokens_cache_read=40, tokens_reasoning=5,
        cost_usd=0.5, unpriced_runs=1,
        tool_calls=2, tool_errors=1, tool_p50_ms=300.0, tool_p90_ms=380.0,
        policy_violations=1, redactions=3,
    )  # fmt: skip
    got = summarize(basic_runs(), basic_steps(), filters=Filters())
    assert_frame_equal(got, expected([want]))


def test_summary_by_agent_attributes_steps_to_their_runs_agent() -> None:
    got = summarize(basic_runs(), basic_steps(), filters=Filters(), group_by=["agent"])
    a1 = metrics(
        runs=2, finished_runs=2, failed_runs=1, error_rate=0.5,
        run_p50_ms=2000.0, run_p90_ms=2800.0, run_p99_ms=2980.0,
        steps=3, step_p50_ms=200.0, step_p90_ms=360.0, step_p99_ms=396.0,
        tokens_in=300, tokens_out=30, tokens_cache_read=40, tokens_reasoning=5, cost_usd=0.5, unpriced_runs=1,
        tool_calls=2, tool_errors=1, tool_p50_ms=300.0, tool_p90_ms=380.0, redactions=2,
    )  # fmt: skip
    a2 = metrics(
        runs=2, finished_runs=1, error_rate=0.0, run_p50_ms=2000.0, run_p90_ms=2000.0, run_p99_ms=2000.0,
        steps=1, step_p50_ms=50.0, step_p90_ms=50.0, step_p99_ms=50.0, policy_violations=1, redactions=1,
    )  # fmt: skip
    assert_frame_equal(got, expected([{"agent": "a1", **a1}, {"agent": "a2", **a2}], {"agent": pl.String}))


def test_model_breakdown_counts_usage_leaves_only() -> None:
    # r1: wrapper w (100/10, $1) over leaf c (100/10, $1) -> only c counts; plain model p counts.
    # r2: a model step whose parent id is "r1-w" but in another run: r1's w is not its parent.
    runs = runs_frame([run("r1", model_names=["m1", "m2"]), run("r2", model_names=["m1"])]).lazy()
    usage = {"tokens_in": 100, "tokens_out": 10, "cost_usd": 1.0}
    steps = steps_frame(
        [
            step("r1", 1, type="model", model_name="m1", span_id="r1-w", **usage),
            step("r1", 2, type="model", model_name="m1", span_id="r1-c", parent_span_id="r1-w", **usage),
            step(
                "r1",
                3,
                type="model",
                model_name="m2",
                span_id="r1-p",
                tokens_in=7,
                tokens_out=3,
                cost_usd=0.25,
            ),
            step("r2", 1, type="model", model_name="m1", span_id="r2-x", parent_span_id="r1-w", **usage),
            step("r2", 2, type="tool", tool_name="t", tokens_in=999),  # tokens on a tool step never count
        ]
    ).lazy()
    got = summarize(runs, steps, filters=Filters(), group_by=("model",)).select(
        "model", "runs", "steps", "tokens_in", "tokens_out", "cost_usd"
    )
    want = pl.DataFrame(
        {
            "model": ["m1", "m2", None],
            "runs": [2, 1, 0],
            "steps": [3, 1, 1],
            "tokens_in": [200, 7, 0],
            "tokens_out": [20, 3, 0],
            "cost_usd": [2.0, 0.25, 0.0],
        }
    )
    assert_frame_equal(got, want)


def test_filters_select_runs_and_their_steps() -> None:
    runs = basic_runs()
    steps = basic_steps()
    by_agent = summarize(runs, steps, filters=Filters(agent="a2"))
    assert by_agent.select("runs", "steps", "policy_violations").row(0) == (2, 1, 1)
    by_tool = summarize(
        runs_frame([run("r1", tool_names=["search"]), run("r2", tool_names=[])]).lazy(),
        steps,
        filters=Filters(tool="search"),
    )
    assert by_tool.select("runs", "steps", "tool_calls").row(0) == (1, 2, 1)
    by_status = summarize(runs, steps, filters=Filters(status="failed"))
    assert by_status.select("runs", "steps", "tool_errors").row(0) == (1, 1, 1)


def test_time_range_uses_run_start_for_runs_and_step_start_for_steps() -> None:
    runs = runs_frame([run("early", started_ns=T0_NS - 10 * S), run("inside", started_ns=T0_NS)]).lazy()
    steps = steps_frame(
        [
            step("early", 0, start_ns=T0_NS - 10 * S),  # before the range
            step("early", 1, start_ns=T0_NS + 1 * S),  # a step of an earlier run, inside the range
            step("inside", 0, start_ns=T0_NS + 2 * S),
            step("inside", 1, start_ns=T0_NS + 5 * S),  # at the exclusive upper bound
        ]
    ).lazy()
    got = summarize(runs, steps, filters=Filters(started_after_ns=T0_NS, started_before_ns=T0_NS + 5 * S))
    assert got.select("runs", "steps").row(0) == (1, 2)


def test_service_filter_and_group_use_the_steps_own_resource() -> None:
    runs = runs_frame([run("r1", service="front")]).lazy()
    steps = steps_frame([step("r1", 0, service="front"), step("r1", 1, service="back")]).lazy()
    got = summarize(runs, steps, filters=Filters(), group_by=["service"]).select("service", "runs", "steps")
    assert_frame_equal(got, pl.DataFrame({"service": ["back", "front"], "runs": [0, 1], "steps": [1, 1]}))
    assert summarize(runs, steps, filters=Filters(service="back")).select("runs", "steps").row(0) == (0, 1)


def test_empty_frames_give_one_row_of_zeros_or_no_groups() -> None:
    got = summarize(empty_runs(), empty_steps(), filters=Filters())
    assert_frame_equal(got, expected([metrics()]))
    grouped = summarize(empty_runs(), empty_steps(), filters=Filters(), group_by=["agent", "tool"])
    assert_frame_equal(grouped, expected([], {"agent": pl.String, "tool": pl.String}))


def test_policy_violation_counts_failed_policy_steps_and_bad_bindings_only() -> None:
    steps = steps_frame(
        [
            step("r1", 0, type="policy", status="error"),
            step("r1", 1, type="policy", binding="replayed"),
            step("r1", 2, type="policy", binding="bound"),
            step("r1", 3, type="policy", binding="ungated"),
            step("r1", 4, type="policy"),
            step("r1", 5, type="tool", binding="expired"),  # a tool step: counted by findings, not here
        ]
    ).lazy()
    got = summarize(runs_frame([run("r1")]).lazy(), steps, filters=Filters())
    assert got["policy_violations"][0] == 2


@pytest.mark.parametrize("bad", ["agents", "service.version", "", "day"])
def test_unknown_group_key_is_rejected_naming_the_allowed_keys(bad: str) -> None:
    with pytest.raises(AnalysisQueryError) as caught:
        summarize(empty_runs(), empty_steps(), filters=Filters(), group_by=["agent", bad])
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UnprocessableError)
    assert all(key in str(caught.value) for key in GROUP_KEYS)


def test_group_keys_are_deduplicated_in_order() -> None:
    assert validate_group_by(["tool", "agent", "tool"]) == ("tool", "agent")
    assert validate_group_by("agent") == ("agent",)
