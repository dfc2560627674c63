"""Kill -9 in the middle of a load: every acknowledged span survives, exactly once.

Several threads export batches over OTLP gRPC with the stock exporter, called directly:
``OTLPSpanExporter.export`` returns SUCCESS only when the server acknowledged the batch, so the test
knows exactly which spans were acknowledged. The server is SIGKILLed mid-load, a new server is
started on the same data dir, and the API must show every acknowledged span once (by span id,
across all runs) with gap-free per-run seqs. Then everything — acknowledged or not — is re-sent
and must still be there exactly once.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from tests.live import INGEST_KEY, LiveServer, wait_until

pytestmark = pytest.mark.e2e

THREADS = 4
TRACES = 12
BATCH = 40
LOAD_SECONDS = 2.5
RESOURCE = Resource({"service.name": "durability-load", "deployment.environment.name": "ci"})
SCOPE = InstrumentationScope("tests.durability", "1")

SpanKey = tuple[str, str]  # (trace id hex, span id hex)


def exporter(server: LiveServer, timeout: float = 3.0) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True, timeout=timeout,
                            headers={"authorization": f"Bearer {INGEST_KEY}"}, compression=grpc.Compression.Gzip)


class Load:
    """Realistic agent spans for a fixed set of traces; each trace's first span is its root."""

    def __init__(self) -> None:
        self.trace_ids = [secrets.randbits(128) | 1 for _ in range(TRACES)]
        self.roots = {t: secrets.randbits(64) | 1 for t in self.trace_ids}
        self.base_ns = time.time_ns() - 3_600 * 1_000_000_000
        self._lock = threading.Lock()
        self._clock = 0
        self.acked: list[ReadableSpan] = []
        self.sent: list[list[ReadableSpan]] = []  # every batch attempted, acknowledged or not

    def tick(self) -> int:
        with self._lock:
            self._clock += 1
            return self.base_ns + self._clock * 1_000

    def root(self, trace_id: int) -> ReadableSpan:
        start = self.base_ns
        return ReadableSpan(
            name="invoke_agent loader", context=SpanContext(trace_id, self.roots[trace_id], False, TraceFlags(1)),
            parent=None, resource=RESOURCE, kind=SpanKind.INTERNAL, start_time=start, end_time=start + 10**12,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "loader"},
            instrumentation_scope=SCOPE)

    def child(self, trace_id: int, rng: random.Random) -> ReadableSpan:
        start = self.tick()
        parent = SpanContext(trace_id, self.roots[trace_id], False, TraceFlags(1))
        if rng.random() < 0.5:
            name, attrs = "chat gpt-4o", {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": rng.randint(10, 999), "gen_ai.usage.output_tokens": rng.randint(1, 99),
                "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"' + "x" * 300 + '"}]}]'}
        else:
            name, attrs = "execute_tool search", {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                "gen_ai.tool.call.id": f"call_{secrets.token_hex(6)}",
                "gen_ai.tool.call.arguments": '{"q": "' + "y" * 200 + '"}'}
        return ReadableSpan(
            name=name, context=SpanContext(trace_id, secrets.randbits(64) | 1, False, TraceFlags(1)),
            parent=parent, resource=RESOURCE, kind=SpanKind.CLIENT, start_time=start, end_time=start + 500,
            attributes=attrs, instrumentation_scope=SCOPE)

    def batch(self, rng: random.Random) -> list[ReadableSpan]:
        """Spans of a few traces (threads interleave on the same traces); sometimes a root, out of order."""
        traces = rng.sample(self.trace_ids, 3)
        spans = [self.child(rng.choice(traces), rng) for _ in range(BATCH)]
        if rng.random() < 0.3:
            spans.append(self.root(rng.choice(traces)))  # roots arrive late, and more than once
        rng.shuffle(spans)
        return spans

    def run_thread(self, server: LiveServer, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        out = exporter(server)
        try:
            while not stop.is_set():
                spans = self.batch(rng)
                with self._lock:
                    self.sent.append(spans)
                if out.export(spans) is SpanExportResult.SUCCESS:
                    with self._lock:
                        self.acked.extend(spans)
        finally:
            out.shutdown()


def key(span: ReadableSpan) -> SpanKey:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def stored_spans(server: LiveServer) -> tuple[Counter[SpanKey], dict[str, dict[str, Any]]]:
    """Every stored step as (run id, span id) with its multiplicity; and the runs. Checks seqs on the way."""
    counts: Counter[SpanKey] = Counter()
    runs: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        page = server.get("/v1/runs", limit=500, **({"cursor": cursor} if cursor else {})).json()
        for run in page["runs"]:
            runs[run["run_id"]] = run
        cursor = page["next_cursor"]
        if not cursor:
            break
    for run_id, run in runs.items():
        steps = server.all_steps(run_id, limit=1000)
        assert [s["seq"] for s in steps] == list(range(len(steps))), f"seq gap or duplicate in run {run_id}"
        assert run["step_count"] == len(steps), run_id
        counts.update((s["run_id"], s["span_id"]) for s in steps)
    return counts, runs


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


def test_kill9_mid_load_keeps_every_acknowledged_span_exactly_once(tmp_path: Path,
                                                                   servers: list[LiveServer]) -> None:
    data_dir = tmp_path / "data"
    first = LiveServer(data_dir).start()
    servers.append(first)
    load = Load()
    stop = threading.Event()
    threads = [threading.Thread(target=load.run_thread, args=(first, stop, seed), daemon=True)
               for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(load.acked) >= 20 * BATCH, 30, what="some acknowledged batches")
    time.sleep(LOAD_SECONDS)

    first.kill9()  # exporters are mid-flight: their batches fail (never acknowledged) or were acked
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    acked = {key(s) for s in load.acked}
    attempted = {key(s) for batch in load.sent for s in batch}
    assert len(acked) >= 20 * BATCH
    assert acked <= attempted

    second = LiveServer(data_dir).start()  # same data dir, new ports: replays the WAL
    servers.append(second)
    counts, runs = stored_spans(second)
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:3]}"
    assert max(counts.values()) == 1, f"duplicated: {[k for k, n in counts.items() if n > 1][:5]}"
    assert set(counts) <= attempted  # nothing invented
    assert set(runs) <= {format(t, "032x") for t in load.trace_ids}

    # Re-send everything — acknowledged or not, as exporters retrying after the outage would.
    out = exporter(second, timeout=30)
    try:
        for batch in load.sent:
            assert out.export(batch) is SpanExportResult.SUCCESS
    finally:
        out.shutdown()
    resent = sum(len(batch) for batch in load.sent)

    def all_processed() -> bool:
        health = second.get("/healthz").json()
        return health["spans_accepted"] + health["spans_duplicate"] >= resent
    wait_until(all_processed, 30, what="the re-sent spans to be processed")
    expected = len(attempted)
    wait_until(lambda: sum(r["step_count"] for r in second.get("/v1/runs", limit=500).json()["runs"]) >= expected,
               30, what="every attempted span to be flushed")

    counts, runs = stored_spans(second)
    assert set(counts) == attempted
    assert max(counts.values()) == 1
    assert sum(r["step_count"] for r in runs.values()) == len(attempted)
    # Run totals were recomputed correctly across the restart: each chat counted once, each tool call once.
    unique = {key(s): s for batch in load.sent for s in batch}.values()
    for run_id, run in runs.items():
        mine = [s for s in unique if key(s)[0] == run_id]
        assert run["tokens"]["input"] == sum(int(s.attributes.get("gen_ai.usage.input_tokens", 0)) for s in mine)
        assert run["tool_count"] == sum(1 for s in mine if s.name.startswith("execute_tool"))
    # A run whose root was ever sent has ended; the others are still running.
    roots = {(format(t, "032x"), format(s, "016x")) for t, s in load.roots.items()} & attempted
    for run in runs.values():
        has_root = (run["run_id"], format(load.roots[int(run["run_id"], 16)], "016x")) in roots
        assert run["status"] == ("succeeded" if has_root else "running"), run["run_id"]


def test_backpressure_releases_once_the_flusher_caught_up(tmp_path: Path, servers: list[LiveServer]) -> None:
    """A low TRACEWARD_WAL_MAX_BYTES sheds load while the flusher is behind — and only then."""
    limit = 256 * 1024
    server = LiveServer(tmp_path / "data", extra_env={"TRACEWARD_WAL_MAX_BYTES": str(limit)}).start()
    servers.append(server)
    load = Load()
    rng = random.Random(7)
    out = exporter(server, timeout=3)
    try:
        stored: set[SpanKey] = set()
        while server.get("/healthz").json()["wal_bytes"] <= limit:  # ~1 KB spans: a handful of batches
            batch = load.batch(rng)
            assert out.export(batch) is SpanExportResult.SUCCESS
            stored |= {key(s) for s in batch}

        def caught_up() -> bool:
            return sum(r["step_count"] for r in server.get("/v1/runs", limit=500).json()["runs"]) == len(stored)
        wait_until(caught_up, 30, what="the flusher to catch up")
        time.sleep(0.5)
        # Nothing is pending any more: the next export must be accepted.
        assert out.export(load.batch(rng)) is SpanExportResult.SUCCESS
    finally:
        out.shutdown()
