"""Analytics through the server, over data loaded into the real stores; the findings job's throughput.

Targets (issue 7): ``GET /v1/analytics/summary`` over 10 million steps (30 days, 50 agents, ~200k
runs) in ≤ 1 s; a 1-day timeseries in 1-minute buckets over the same data in ≤ 1 s; the findings job
keeps up with the ingest target (40,000 spans/s = 800 runs/s of 50 spans).

Data: ``benchmarks/data.py``'s seeded runs and steps written through the store (``StepTable.append``
into Delta, run rows into the SQLite index), then a live ``traceward serve`` answers over HTTP, so
each figure includes the runs frame (from the server's in-memory runs cache, warmed by the first
request; the cold load is printed), the Parquet scan, polars and JSON. Size:
``TRACEWARD_BENCH_SCALE`` × 10M steps (``make bench``: 1.0; under ``--benchmark-disable``: 0.01).

The findings job is measured in process: runs of 50 realistic ~1 KB spans (``benchmarks/spans.py``)
ingested and flushed as in production, then ``FindingsJob.run_once`` over the queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest

from benchmarks.data import DAY_NS, END_NS, SyntheticSpec, make_dataset, runs_lazy, steps_lazy
from benchmarks.spans import SPANS_PER_TRACE, make_agent_request
from otlp_receiver.decode import decode_request
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.findings import queue_depth
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, LiveServer

pytestmark = pytest.mark.timeout(3600)  # building and loading 10M steps takes minutes
FULL_STEPS = 10_000_000
SMOKE_SCALE = 0.01
CHUNK_ROWS = 1_000_000
TENANT = "default"


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> float:
    default = SMOKE_SCALE if request.config.getoption("benchmark_disable", default=False) else 1.0
    return float(os.environ.get("TRACEWARD_BENCH_SCALE", default))


def load_store(data_dir: Path, runs: pl.DataFrame, steps: pl.DataFrame) -> None:
    """Write the synthetic data as the flusher would have: steps into Delta, runs into SQLite."""
    table = StepTable(data_dir / "steps")
    ordered = steps.sort("start_ns")
    day = (pl.col("start_ns") // DAY_NS * DAY_NS).cast(pl.Datetime("ns")).dt.strftime("%Y-%m-%d")
    for n, start in enumerate(range(0, ordered.height, CHUNK_ROWS), start=1):
        chunk = steps_lazy(ordered.slice(start, CHUNK_ROWS)).with_columns(
            pl.lit(TENANT).alias("tenant_id"), pl.lit("default").alias("project_id"), day.alias("day"))
        table.append(chunk.collect().to_arrow(), wal_end=n)
    index = RunIndex(data_dir / "traceward.sqlite3")
    frame = runs_lazy(runs).with_columns(pl.lit(TENANT).alias("tenant_id"), pl.lit("default").alias("project_id"),
                                         pl.coalesce("finished_ns", "started_ns").alias("updated_ns"))
    rows = frame.with_columns(
        pl.col("model_names").map_elements(lambda v: orjson.dumps(list(v)).decode(), return_dtype=pl.String),
        pl.col("tool_names").map_elements(lambda v: orjson.dumps(list(v)).decode(), return_dtype=pl.String),
    ).drop("duration_ns").collect()
    columns = rows.columns
    with index.transaction() as db:
        db.conn.executemany(f"INSERT INTO runs ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                            rows.iter_rows())
    index.writer.conn.close()


@pytest.fixture(scope="module")
def server(scale: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = time.perf_counter()
    runs, steps = make_dataset(SyntheticSpec(steps=max(1_000, round(FULL_STEPS * scale))))
    data_dir = tmp_path_factory.mktemp("analytics-bench") / "data"
    load_store(data_dir, runs, steps)
    print(f"\nloaded {steps.height:,} steps / {runs.height:,} runs into the store in "
          f"{time.perf_counter() - started:.1f} s")
    del runs, steps
    live = LiveServer(data_dir, extra_env={"TRACEWARD_RETENTION_INTERVAL_S": "0",
                                           "TRACEWARD_RATE_LIMIT_ADMIN_PER_MIN": "1000000"}).start()
    try:
        cold = time.perf_counter()
        get(live, "/v1/analytics/summary", started_after=str(END_NS - 30 * DAY_NS), started_before=str(END_NS))
        print(f"first summary after start (loads the tenant's runs into the cache): {time.perf_counter() - cold:.2f} s")
        yield live
    finally:
        live.stop()


def get(server: LiveServer, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.api_url}{path}", params=params, timeout=120,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def measure(benchmark: Any, function: Any, *, rounds: int = 5) -> Any:
    return benchmark.pedantic(function, rounds=rounds, iterations=1, warmup_rounds=1)


def test_summary_of_30_days(benchmark: Any, server: LiveServer) -> None:
    window = {"started_after": str(END_NS - 30 * DAY_NS), "started_before": str(END_NS)}
    body = measure(benchmark, lambda: get(server, "/v1/analytics/summary", **window))
    assert body["groups"][0]["runs"] > 0


def test_summary_of_30_days_by_agent(benchmark: Any, server: LiveServer) -> None:
    window = {"started_after": str(END_NS - 30 * DAY_NS), "started_before": str(END_NS)}
    body = measure(benchmark, lambda: get(server, "/v1/analytics/summary", group_by="agent", **window))
    assert len(body["groups"]) == 50


def test_timeseries_of_one_day_in_minutes(benchmark: Any, server: LiveServer) -> None:
    window = {"started_after": str(END_NS - DAY_NS), "started_before": str(END_NS)}
    body = measure(benchmark, lambda: get(server, "/v1/analytics/timeseries", bucket="1m", **window))
    assert len(body["points"]) in (1440, 1441)  # END_NS is not minute-aligned


# --- the findings job ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_runtime(scale: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, int]]:
    runtime = Runtime(Settings(data_dir=tmp_path_factory.mktemp("scan-bench") / "data", wal_fsync=False,
                               flusher_process=False))
    runs = 1_000 if scale >= 0.1 else 100
    per_request = 100  # runs per export
    for seed in range(runs // per_request):
        spans = decode_request(make_agent_request(per_request * SPANS_PER_TRACE, seed=seed)).spans
        runtime.ingest_spans(IngestIdentity(TENANT, "default"), spans)
        runtime.flusher.drain()
    assert queue_depth(runtime.index) == runs
    try:
        yield runtime, runs
    finally:
        runtime.stop()


def test_findings_job_throughput(benchmark: Any, scan_runtime: tuple[Runtime, int]) -> None:
    runtime, runs = scan_runtime

    def requeue() -> tuple[tuple[()], dict[str, Any]]:
        with runtime.index.transaction() as db:
            db.execute("UPDATE finding_scans SET scanned_ns = NULL, queued_ns = queued_ns + 1")
        return (), {}

    def drain() -> int:
        scanned = 0
        while (done := runtime.findings_job.run_once()) > 0:
            scanned += done
        return scanned

    assert benchmark.pedantic(drain, setup=requeue, rounds=3, iterations=1) == runs
    if benchmark.stats:
        runs_per_s = runs / benchmark.stats.stats.median
        benchmark.extra_info["runs_per_s"] = round(runs_per_s)
        benchmark.extra_info["spans_per_s"] = round(runs_per_s * SPANS_PER_TRACE)
