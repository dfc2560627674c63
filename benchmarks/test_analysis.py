"""Analysis benchmarks over seeded synthetic data (benchmarks/data.py), in memory.

Targets (issue 7): ``summarize`` over 10 million steps (30 days, 50 agents, ~200k runs) in
≤ 1 s; a timeseries of one day in 1-minute buckets over the same data in ≤ 1 s; the failure
scan keeps up with the ingest target of 40,000 spans/s (reported as runs/s and spans/s).

Size: ``TRACEWARD_BENCH_SCALE`` × 10M steps (default 1.0 for ``make bench``). Under
``--benchmark-disable`` (the smoke run of ``make test``) the default is 0.01. Each benchmark
also records the CPU time per call (``cpu_ms``): it stays meaningful when other jobs share the
cores, when wall time does not.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

from analysis.aggregate import Filters, summarize, timeseries
from analysis.findings import Baseline, scan_run, scan_runs
from benchmarks.data import (
    DAY_NS,
    END_NS,
    SyntheticSpec,
    make_dataset,
    make_scan_dataset,
    runs_lazy,
    steps_lazy,
)

FULL_STEPS = 10_000_000
SMOKE_SCALE = 0.01
SCAN_STEPS_PER_RUN = 50
IDLE_NS = 600 * 10**9


@dataclass(frozen=True)
class Dataset:
    """The session's synthetic data, as the store would hand it to analysis."""

    runs: pl.LazyFrame
    steps: pl.LazyFrame
    run_count: int
    step_count: int


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> float:
    default = SMOKE_SCALE if request.config.getoption("benchmark_disable", default=False) else 1.0
    return float(os.environ.get("TRACEWARD_BENCH_SCALE", default))


@pytest.fixture(scope="session")
def dataset(scale: float) -> Dataset:
    started = time.perf_counter()
    runs, steps = make_dataset(SyntheticSpec(steps=max(1_000, round(FULL_STEPS * scale))))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"\nbuilt {steps.height:,} steps / {runs.height:,} runs in {time.perf_counter() - started:.1f} s, peak RSS {rss_mib} MiB"
    )
    return Dataset(runs_lazy(runs), steps_lazy(steps), runs.height, steps.height)


def measure(benchmark: Any, function: Callable[[], Any], *, rounds: int = 5) -> Any:
    """Benchmark ``function`` and record its mean CPU time per call and the peak RSS so far."""
    cpu: list[float] = []

    def timed() -> Any:
        started = time.process_time()
        result = function()
        cpu.append(time.process_time() - started)
        return result

    result = benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["cpu_ms"] = round(1000 * sum(cpu) / len(cpu), 1)
    benchmark.extra_info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return result


def test_summary_over_all_steps(benchmark: Any, dataset: Dataset) -> None:
    got = measure(benchmark, lambda: summarize(dataset.runs, dataset.steps, filters=Filters()))
    assert got["runs"][0] == dataset.run_count
    assert got["steps"][0] + got["redactions"][0] > 0


@pytest.mark.parametrize("key", ["agent", "service_version", "model"])
def test_summary_by_group(benchmark: Any, dataset: Dataset, key: str) -> None:
    got = measure(
        benchmark, lambda: summarize(dataset.runs, dataset.steps, filters=Filters(), group_by=[key])
    )
    assert got["runs"].sum() >= dataset.run_count


def test_summary_of_the_last_week_for_one_agent(benchmark: Any, dataset: Dataset) -> None:
    week = Filters(started_after_ns=END_NS - 7 * DAY_NS, started_before_ns=END_NS, agent="agent-07")
    got = measure(benchmark, lambda: summarize(dataset.runs, dataset.steps, filters=week))
    assert got.height == 1


def test_timeseries_of_one_day_in_minutes(benchmark: Any, dataset: Dataset) -> None:
    day = Filters(started_after_ns=END_NS - DAY_NS, started_before_ns=END_NS)
    got = measure(benchmark, lambda: timeseries(dataset.runs, dataset.steps, filters=day, bucket="1m"))
    assert got.height in (1440, 1441)


def test_timeseries_of_one_day_in_minutes_by_agent(benchmark: Any, dataset: Dataset) -> None:
    day = Filters(started_after_ns=END_NS - DAY_NS, started_before_ns=END_NS)
    got = measure(
        benchmark,
        lambda: timeseries(dataset.runs, dataset.steps, filters=day, bucket="1m", group_by=["agent"]),
    )
    assert got.height % 1440 in (0, got["agent"].n_unique())


@pytest.fixture(scope="session")
def scan_data(scale: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_scan_dataset(1_000 if scale >= 0.1 else 100, steps_per_run=SCAN_STEPS_PER_RUN)


def test_scan_run_throughput(benchmark: Any, scan_data: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    runs, steps = scan_data
    per_run = steps.partition_by("run_id", as_dict=True)
    rows = list(runs.iter_rows(named=True))
    baseline = Baseline("agent-00", runs=100, cost_p99_usd=0.5, duration_p99_ns=60 * 10**9)

    def scan_all() -> int:
        return sum(
            len(
                scan_run(
                    row,
                    per_run[(row["run_id"],)],
                    now_ns=END_NS,
                    idle_window_ns=IDLE_NS,
                    agent_baseline=baseline,
                )
            )
            for row in rows
        )

    found = measure(benchmark, scan_all, rounds=3)
    _record_rates(benchmark, len(rows))
    assert found > 0


def test_scan_runs_batch_throughput(benchmark: Any, scan_data: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    runs, steps = scan_data
    found = measure(
        benchmark,
        lambda: scan_runs(runs, steps, now_ns=END_NS, idle_window_ns=IDLE_NS, baselines={}),
        rounds=3,
    )
    _record_rates(benchmark, runs.height)
    assert {f.kind for f in found} >= {"tool_error", "loop", "user_rejection", "unbound_execution"}


def _record_rates(benchmark: Any, run_count: int) -> None:
    """Runs/s and spans/s from the median wall time and from the CPU time."""
    if benchmark.stats:
        runs_per_s = run_count / benchmark.stats.stats.median
        benchmark.extra_info["runs_per_s"] = round(runs_per_s)
        benchmark.extra_info["spans_per_s"] = round(runs_per_s * SCAN_STEPS_PER_RUN)
    cpu_runs_per_s = run_count / (benchmark.extra_info["cpu_ms"] / 1000)
    benchmark.extra_info["spans_per_cpu_s"] = round(cpu_runs_per_s * SCAN_STEPS_PER_RUN)
