"""Version comparison: metrics side by side, deltas and regression flags."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from analysis.aggregate import Filters
from analysis.compare import MIN_RUNS, compare_versions
from tests.analysis.factories import T0_NS, S, run, runs_frame, step, steps_frame


def version_runs(
    version: str, count: int, *, seconds: int, cost: float, failed: int = 0, **fields: Any
) -> list[dict[str, Any]]:
    return [
        run(
            f"{version}-{i}",
            service_version=version,
            duration_ns=seconds * S,
            cost_usd=cost,
            tokens_in=100,
            status="failed" if i < failed else "succeeded",
            started_ns=T0_NS + i * S,
            **fields,
        )
        for i in range(count)
    ]


def frames(count: int = MIN_RUNS) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    rows = [
        *version_runs("1.0.0", count, seconds=1, cost=1.0, failed=1),
        *version_runs("1.1.0", count, seconds=2, cost=1.5),
        *version_runs("1.1.0", 3, seconds=99, cost=99.0, agent="other"),
    ]
    steps = [step("1.1.0-0", 0, service_version="1.1.0", tool_name="t")]
    return runs_frame(rows).lazy(), steps_frame(steps).lazy()


def test_metrics_side_by_side_with_deltas_and_regressions() -> None:
    runs, steps = frames()
    got = compare_versions(
        runs, steps, agent="a1", service=None, version_a="1.0.0", version_b="1.1.0", filters=Filters()
    )
    assert (got["agent"], got["service"], got["version_a"], got["version_b"]) == (
        "a1",
        None,
        "1.0.0",
        "1.1.0",
    )
    metrics = got["metrics"]
    assert metrics["runs"] == {"a": 20, "b": 20, "delta": 0, "relative_delta": 0.0, "regression": None}
    assert metrics["run_p50_ms"] == {
        "a": 1000.0,
        "b": 2000.0,
        "delta": 1000.0,
        "relative_delta": 1.0,
        "regression": True,
    }
    assert metrics["error_rate"] == {
        "a": 0.05,
        "b": 0.0,
        "delta": -0.05,
        "relative_delta": -1.0,
        "regression": False,
    }
    assert metrics["cost_per_run_usd"] == {
        "a": 1.0,
        "b": 1.5,
        "delta": 0.5,
        "relative_delta": 0.5,
        "regression": True,
    }
    assert metrics["tool_calls"]["b"] == 1 and metrics["tool_calls"]["regression"] is None
    assert metrics["step_p50_ms"] == {
        "a": None,
        "b": 100.0,
        "delta": None,
        "relative_delta": None,
        "regression": None,
    }


def test_too_few_runs_flag_no_regression() -> None:
    runs, steps = frames(count=MIN_RUNS - 1)
    got = compare_versions(
        runs, steps, agent="a1", service=None, version_a="1.0.0", version_b="1.1.0", filters=Filters()
    )
    assert got["metrics"]["run_p50_ms"]["regression"] is None


def test_a_version_without_runs_shows_zero_counts() -> None:
    runs, steps = frames()
    got = compare_versions(
        runs, steps, agent="a1", service="svc", version_a="0.9.0", version_b="1.1.0", filters=Filters()
    )
    metrics = got["metrics"]
    assert metrics["runs"]["a"] == 0 and metrics["cost_usd"]["a"] == 0.0
    assert metrics["run_p90_ms"]["a"] is None and metrics["cost_per_run_usd"]["a"] is None
    assert metrics["runs"]["relative_delta"] is None


@pytest.mark.parametrize("agent", [None, "a1"])
def test_agent_comes_from_the_argument_or_the_filters(agent: str | None) -> None:
    runs, steps = frames()
    got = compare_versions(
        runs,
        steps,
        agent=agent,
        service=None,
        version_a="1.0.0",
        version_b="1.1.0",
        filters=Filters(agent="a1"),
    )
    assert got["metrics"]["runs"]["b"] == 20
