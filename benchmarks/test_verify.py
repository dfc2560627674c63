"""Verifying a 1,000,000-step run end to end: Parquet read in seq ranges, re-chained, checked against the run
index and a signed seal — the code path of ``GET /v1/runs/{run_id}/verify`` and ``traceward verify --run``.

The run is written once per session through the store (StepTable appends of 100k rows, the run and span index
in SQLite): synthetic but really chained (``encode_payload``, ``step_record``, ``chain_hash``), ~1 KB unique
payloads. Target: under 30 s on this machine. With ``--benchmark-disable`` the run has 10,000 steps.

    .venv/bin/python -m pytest benchmarks/test_verify.py --benchmark-only -s
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from benchmarks.test_chain import META, START_NS, make_payload
from governance.tokens import SigningKeys
from otlp_receiver.chain import chain_hash, encode_payload, genesis_hash, step_record
from otlp_receiver.columns import STEP_COLUMN_NAMES
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from server.sealing import RunSealer
from server.verify import Verifier

TENANT, PROJECT, RUN = "bench", "default", "5bf92f3577b34da6a3ce929d0e0e4736"
FULL_STEPS, QUICK_STEPS, BATCH = 1_000_000, 10_000, 100_000
DAY = time.strftime("%Y-%m-%d", time.gmtime(START_NS / 1e9))
SPAN_COLUMNS = ("tenant_id", "run_id", "span_id", "seq", "type", "status", "day", "start_ns", "end_ns")


@dataclass
class StoredRun:
    """The stores holding the synthetic run, and the key that sealed it."""

    index: RunIndex
    steps: StepTable
    keys: SigningKeys
    count: int


def chained_rows(first: int, count: int, prev: str, *, tenant: str = TENANT) -> tuple[dict[str, list[Any]], str]:
    """``count`` chained step rows from seq ``first`` (every STEP column), and the last chain hash."""
    cols: dict[str, list[Any]] = {name: [] for name in STEP_COLUMN_NAMES}
    meta_text = orjson.dumps(META).decode()
    for seq in range(first, first + count):
        text, p_hash = encode_payload(make_payload(seq))
        meta = meta_text if seq % 10 == 0 else None
        start = START_NS + seq * 1000
        record = step_record(seq=seq, type="model", name="chat gpt-4o-mini", trace_id=RUN, span_id=f"{seq + 1:016x}",
                             parent_span_id="00f067aa0ba902b7", start_ns=start, payload_hash=p_hash, redaction_meta=meta)
        c_hash = chain_hash(prev, record)
        row = {"tenant_id": tenant, "project_id": PROJECT, "day": DAY, "run_id": RUN, "step_id": f"step-{seq}",
               "seq": seq, "type": "model", "name": "chat gpt-4o-mini", "status": "ok", "kind": 3, "trace_id": RUN,
               "span_id": f"{seq + 1:016x}", "parent_span_id": "00f067aa0ba902b7", "start_ns": start,
               "end_ns": start + 500, "duration_ns": 500, "model_name": "gpt-4o-mini", "provider": "openai",
               "tokens_in": 412, "tokens_out": 96, "redaction_count": 1 if meta else 0, "redaction_meta": meta,
               "payload": text, "payload_hash": p_hash, "prev_hash": prev, "chain_hash": c_hash,
               "schema_version": 1, "ingested_ns": start}
        for name in STEP_COLUMN_NAMES:
            cols[name].append(row.get(name))
        prev = c_hash
    return cols, prev


def write_run(path: Path, count: int, *, tenant: str = TENANT) -> StoredRun:
    """A sealed ``count``-step run of ``tenant`` in the stores of the data dir ``path``."""
    index, steps, keys = RunIndex(path / "traceward.sqlite3"), StepTable(path / "steps"), SigningKeys.generate()
    prev = genesis_hash(tenant, RUN)
    for first in range(0, count, BATCH):
        cols, prev = chained_rows(first, min(BATCH, count - first), prev, tenant=tenant)
        steps.append(pa.table(cols), wal_end=first + 1)
        with index.transaction() as db:
            db.conn.executemany(f"INSERT INTO spans ({','.join(SPAN_COLUMNS)}) VALUES ({','.join('?' * 9)})",
                                zip(*(cols[c] for c in SPAN_COLUMNS), strict=True))
    with index.transaction() as db:
        db.execute("INSERT INTO runs (tenant_id, project_id, run_id, trace_id, status, started_ns, step_count, "
                   "head_hash, updated_ns) VALUES (?, ?, ?, ?, 'succeeded', ?, ?, ?, ?)",
                   [tenant, PROJECT, RUN, RUN, START_NS, count, prev, time.time_ns()])
    RunSealer(index, AuditLog(index), lambda: keys, idle_s=0, interval_s=0).seal_now(tenant, RUN, trigger="final")
    return StoredRun(index, steps, keys, count)


@pytest.fixture(scope="session")
def stored_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredRun]:
    count = QUICK_STEPS if request.config.getoption("benchmark_disable", default=False) else FULL_STEPS
    started = time.perf_counter()
    stored = write_run(tmp_path_factory.mktemp("verify-bench"), count)
    print(f"\nwrote {count} chained steps through the store in {time.perf_counter() - started:.1f} s")
    yield stored


def test_verify_a_million_step_run(benchmark: Any, stored_run: StoredRun) -> None:
    verifier = Verifier(stored_run.index, stored_run.steps, stored_run.keys.public_keys)
    cpu_started = time.process_time()
    report = benchmark.pedantic(lambda: verifier.run(TENANT, RUN), rounds=1, iterations=1)
    cpu_s = time.process_time() - cpu_started
    seconds = benchmark.stats.stats.max if benchmark.stats else None
    benchmark.extra_info["cpu_s"] = round(cpu_s, 2)
    if seconds:
        benchmark.extra_info["steps_per_s"] = round(stored_run.count / seconds)
        print(f"\nverified {stored_run.count} steps in {seconds:.1f} s wall, {cpu_s:.1f} s CPU "
              f"({stored_run.count / seconds:,.0f} steps/s)")
        if stored_run.count == FULL_STEPS:
            assert seconds < 30
    assert report.ok and report.steps_checked == stored_run.count and report.sealed and report.seal_ok
