"""The findings job's round cost against the size of the tenant-day partition it reads from.

One round scans the same 500 finished runs (50 realistic ~1 KB spans each, ``benchmarks/spans.py``,
ingested and flushed as in production) with a small or a large amount of *other* steps of the same
tenant and day already in the step table: steps written earlier that day, compacted as the flusher
compacts them. A round's cost should depend on the runs it scans, not on how much the tenant ingested
before them: the two figures should be about the same.

Two figures per size: the whole round (``run_once``: dominated by the scan itself, ~18 µs a step), and
its step read alone (``FindingsJob.read_steps``), the part that depends on the step table.

Size: ``other`` is 10,000 vs ``TRACEWARD_BENCH_SCALE`` × 500,000 steps (``--benchmark-only``: 1.0; under
``--benchmark-disable``, the smoke run of ``make test``: 0.04, and 100 runs instead of 500). Each figure
also records the CPU time per round (``cpu_ms``, all threads: meaningful when other jobs share the cores)
and the peak RSS of the process so far (``peak_rss_mib``, so mostly the fixture's).
"""

from __future__ import annotations

import os
import random
import resource
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import polars as pl
import pytest

from benchmarks.spans import SPANS_PER_TRACE, make_agent_request
from otlp_receiver.decode import decode_request
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.findings import queue_depth
from otlp_receiver.store.steps import STEP_SCHEMA
from server.runtime import Runtime
from server.settings import Settings

pytestmark = pytest.mark.timeout(1800)
TENANT = "default"
SMOKE_SCALE = 0.04
SMALL_OTHER = 10_000
LARGE_OTHER = 500_000
FLUSH_ROWS = 20_000  # the flusher's max_steps: one file per flush batch
SECOND = 10**9


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> float:
    default = SMOKE_SCALE if request.config.getoption("benchmark_disable", default=False) else 1.0
    return float(os.environ.get("TRACEWARD_BENCH_SCALE", default))


def other_steps(rows: range, *, total: int, first_ns: int, last_ns: int, day: str, seed: int = 11) -> pl.DataFrame:
    """Rows ``rows`` of ``total`` steps of runs of 50 steps (random hex run ids, as trace ids are) starting
    evenly between ``first_ns`` and ``last_ns``, as rows of ``TENANT``'s ``day``.

    Payloads are ~1 KB of JSON with ~300 random digits each, so that a step takes ~180-280 bytes in
    Parquet as the spans of ``benchmarks/spans.py`` do (real chat text takes more)."""
    run_ids = pl.Series([f"{random.Random(seed * 2**32 + r).getrandbits(128):032x}"
                         for r in range(rows.start // SPANS_PER_TRACE, rows.stop // SPANS_PER_TRACE + 1)])
    row = pl.int_range(rows.start, rows.stop, dtype=pl.Int64)
    run, seq = row // SPANS_PER_TRACE - rows.start // SPANS_PER_TRACE, row % SPANS_PER_TRACE
    start = pl.lit(first_ns) + row * ((last_ns - first_ns) // max(1, total))
    digits = pl.concat_str([row.hash(seed=seed + salt).cast(pl.String) for salt in range(16)])
    payload = pl.concat_str(pl.lit('{"input": {"query": "lisbon hotels ", "note": "' + "x" * 300 + '"}, '
                                   '"output": "' + "Here is an option. " * 20 + '", "trace": "'), digits, pl.lit('"}'))
    frame = pl.select(
        tenant_id=pl.lit(TENANT), project_id=pl.lit("default"), day=pl.lit(day),
        run_id=pl.lit(run_ids).gather(run), step_id=digits.str.head(32), seq=seq,
        type=pl.when(seq == 0).then(pl.lit("span")).when(seq % 2 == 1).then(pl.lit("model")).otherwise(pl.lit("tool")),
        name=pl.lit("step"), status=pl.lit("ok"), kind=pl.lit(1, pl.Int32), trace_id=pl.lit(run_ids).gather(run),
        span_id=digits.str.slice(32, 16), start_ns=start, end_ns=start + 250_000_000,
        duration_ns=pl.lit(250_000_000), tool_name=pl.lit("query_db"), redaction_count=pl.lit(0, pl.Int32),
        payload=payload, payload_hash=digits.str.head(64), prev_hash=digits.str.slice(64, 64),
        chain_hash=digits.str.slice(128, 64), schema_version=pl.lit(1, pl.Int32), ingested_ns=start,
    )
    return frame.select([frame[c] if c in frame.columns else pl.lit(None, dtype).alias(c)
                         for c, dtype in pl.Schema(STEP_SCHEMA).items()])


@pytest.fixture(scope="module", params=["small", "large", "large-compacted", "large-later"])
def busy_day(request: pytest.FixtureRequest, scale: float,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, int, int]]:
    """A runtime whose queue holds ``runs`` finished runs, after ``other`` steps of the same tenant-day.

    ``large-compacted``: the runs' files are compacted with the other steps' (as the flusher does every
    minute), so the runs' steps sit in the same 64 MiB files as the rest of the day. ``large-later``: the
    runs were active an hour ago and the other steps came after them (a round of idle runs, say), all
    compacted together."""
    other = SMALL_OTHER if request.param == "small" else max(2 * SMALL_OTHER, round(LARGE_OTHER * scale))
    runs = 500 if scale >= 0.1 else 100
    now = time.time_ns()
    midnight = now - now % (86_400 * SECOND)
    if now - midnight < 70 * 60 * SECOND:
        pytest.skip("too close to midnight UTC to put other steps on the runs' day")
    started = time.perf_counter()
    runtime = Runtime(Settings(data_dir=tmp_path_factory.mktemp(f"findings-{request.param}") / "data",
                               wal_fsync=False, flusher_process=False))
    later = request.param == "large-later"
    shift = -3_600 * SECOND if later else 0
    first, last = (now - 3_500 * SECOND, now - 60 * SECOND) if later else (now - 3_600 * SECOND, now - 300 * SECOND)
    day = time.strftime("%Y-%m-%d", time.gmtime(now // SECOND))

    def write_other() -> None:
        for start in range(0, other, FLUSH_ROWS):  # as the flusher writes them (wal_end 0: no WAL record)
            steps = other_steps(range(start, min(other, start + FLUSH_ROWS)), total=other, day=day,
                                first_ns=first, last_ns=last)
            runtime.steps.append(steps.to_arrow(), wal_end=0)
        runtime.steps.compact(min_files=2)

    if not later:
        write_other()
    per_request = 100
    for seed in range(runs // per_request):
        spans = decode_request(make_agent_request(per_request * SPANS_PER_TRACE, seed=seed)).spans
        spans = [replace(s, start_ns=s.start_ns + shift, end_ns=s.end_ns + shift) for s in spans]
        runtime.ingest_spans(IngestIdentity(TENANT, "default"), spans)
        runtime.flusher.drain()
    if later:
        write_other()
    if request.param == "large-compacted":
        runtime.steps.compact(min_files=2)
    assert queue_depth(runtime.index) == runs
    print(f"\n{request.param}: {other:,} other steps + {runs} runs in {len(runtime.steps.files(TENANT))} files, "
          f"built in {time.perf_counter() - started:.1f} s")
    try:
        yield runtime, runs, other
    finally:
        runtime.stop()


def requeue(runtime: Runtime) -> None:
    """Queue every run again, as if they had all just finished."""
    with runtime.index.transaction() as db:
        db.execute("UPDATE finding_scans SET scanned_ns = NULL, queued_ns = queued_ns + 1")


def record(benchmark: Any, other: int, cpu: list[float]) -> None:
    benchmark.extra_info["other_steps"] = other
    benchmark.extra_info["cpu_ms"] = round(1000 * min(cpu), 1)
    benchmark.extra_info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def test_findings_round(benchmark: Any, busy_day: tuple[Runtime, int, int]) -> None:
    """One round of the job over the queued runs: read their steps, scan them, store the findings."""
    runtime, runs, other = busy_day
    cpu: list[float] = []

    def one_round() -> int:
        before = time.process_time()
        scanned = runtime.findings_job.run_once()
        cpu.append(time.process_time() - before)
        return scanned

    scanned = benchmark.pedantic(one_round, setup=lambda: requeue(runtime), rounds=5, iterations=1, warmup_rounds=1)
    assert scanned == runs
    record(benchmark, other, cpu)


def test_findings_round_step_read(benchmark: Any, busy_day: tuple[Runtime, int, int]) -> None:
    """The part of a round that depends on the step table: reading the queued runs' steps."""
    runtime, runs, other = busy_day
    run_ids = [row["run_id"] for row in runtime.index.query("SELECT run_id FROM finding_scans")]
    cpu: list[float] = []

    def read() -> int:
        before = time.process_time()
        steps = runtime.findings_job.read_steps(TENANT, run_ids)
        cpu.append(time.process_time() - before)
        return steps.height

    assert benchmark.pedantic(read, rounds=10, iterations=1, warmup_rounds=1) == runs * SPANS_PER_TRACE
    record(benchmark, other, cpu)


def test_fixture_puts_other_steps_on_the_runs_day(busy_day: tuple[Runtime, int, int]) -> None:
    """The comparison means something only if the other steps share the runs' partition."""
    runtime, _, other = busy_day
    days = {r["day"] for r in runtime.index.query("SELECT DISTINCT day FROM spans")}
    frame = runtime.steps.scan(TENANT).group_by("day").len().collect()
    assert set(frame["day"].to_list()) == days and frame["len"].sum() > other
