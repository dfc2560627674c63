"""End-to-end ingest throughput: concurrent OTLP/gRPC clients → until every span is queryable.

Realistic agent spans (~1 KB, a dozen attributes: GenAI model and tool spans under an
invoke_agent root). Requests are pre-serialised so the clients spend little CPU; the
server is a real `traceward serve` subprocess with default settings (WAL fsync on).
Peak server RSS is sampled while it works. Server CPU and RSS are those of the server and its children (the
flusher process, by default), printed per process too.

Redaction and hashing run inside this measurement (they are on the ingest hot path). A second variant runs
the same load with ``TRACEWARD_REDACTION=off`` — a setting that exists only for this benchmark and must never
be used in production — so the cost of the default redaction rule set can be reported; it prints the ratio
of throughputs and of server CPU per span when both variants ran.

Run for real: make bench (or pytest benchmarks/test_ingest.py --benchmark-only -s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from benchmarks.spans import make_agent_request
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _sizes(disabled: bool, *, sustained: bool = False) -> tuple[int, int, int]:
    """(clients, requests per client, spans per request)."""
    if disabled:
        return 2, 2, 200
    return (4, 125, 1000) if sustained else (4, 25, 1000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data").start()
    yield srv
    srv.stop()


def _send_all(port: int, requests: list[bytes]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(EXPORT_METHOD, request_serializer=None,
                                     response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        for body in requests:
            response = export(body, metadata=(("authorization", f"Bearer {INGEST_KEY}"),), timeout=60)
            assert not response.partial_success.rejected_spans


def _flushed_steps(srv: LiveServer) -> float:
    """The server's own count of steps flushed to storage: a cheap signal to decide when to page the API."""
    text = httpx.get(f"{srv.api_url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("traceward_flushed_steps_total"))


def _stored_steps(srv: LiveServer) -> int:
    total, cursor = 0, None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        body = httpx.get(f"{srv.api_url}/v1/runs", params=params,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).json()
        total += sum(r["step_count"] for r in body["runs"])
        cursor = body["next_cursor"]
        if not cursor:
            return total


_MEASURED: dict[str, tuple[float, float]] = {}
"""variant → (spans/s, server CPU µs per span), for the redaction cost ratio."""


@pytest.fixture
def server_without_redaction(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data", extra_env={"TRACEWARD_REDACTION": "off"}).start()  # benchmark only
    yield srv
    srv.stop()


def test_ingest_throughput_grpc(benchmark, server: LiveServer, request: pytest.FixtureRequest) -> None:
    _measure(benchmark, server, request, variant="redaction on")


def test_ingest_throughput_grpc_without_redaction(benchmark, server_without_redaction: LiveServer,
                                                  request: pytest.FixtureRequest) -> None:
    _measure(benchmark, server_without_redaction, request, variant="redaction off")
    if {"redaction on", "redaction off"} <= _MEASURED.keys():
        (on_rate, on_cpu), (off_rate, off_cpu) = _MEASURED["redaction on"], _MEASURED["redaction off"]
        print(f"\nredaction (default rules) costs {1 - on_rate / off_rate:.0%} of throughput "
              f"({on_rate:,.0f} vs {off_rate:,.0f} spans/s) and {on_cpu / off_cpu - 1:.0%} more server CPU per span "
              f"({on_cpu:.0f} vs {off_cpu:.0f} µs)")
        benchmark.extra_info["throughput_ratio_on_off"] = round(on_rate / off_rate, 3)


def test_ingest_sustained_memory(benchmark, server: LiveServer, request: pytest.FixtureRequest) -> None:
    """Five times the load of the throughput test (500,000 spans in 10,000 runs): RSS must stay bounded."""
    _measure(benchmark, server, request, variant="sustained", sustained=True)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    """The server and its live children (the flusher process)."""
    return [proc, *proc.children(recursive=True)]


def _cpu_by_process(proc: psutil.Process) -> dict[int, float]:
    """pid → user + system CPU seconds, for the server and its children."""
    return {p.pid: sum(p.cpu_times()[:2]) for p in _tree(proc)}


def _tree_rss(proc: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in _tree(proc))


def _measure(benchmark, server: LiveServer, request: pytest.FixtureRequest, *, variant: str,
             sustained: bool = False) -> None:
    clients, per_client, spans_per_request = _sizes(request.config.getoption("benchmark_disable"),
                                                    sustained=sustained)
    batches = [[make_agent_request(spans_per_request, seed=c * 1000 + i).SerializeToString()
                for i in range(per_client)] for c in range(clients)]
    total = clients * per_client * spans_per_request
    proc = psutil.Process(server.proc.pid)
    peak = [_tree_rss(proc)]
    cpu_before = _cpu_by_process(proc)

    acked_s: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        threads = [threading.Thread(target=_send_all, args=(server.grpc_port, b)) for b in batches]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.05)
        acked_s.append(time.perf_counter() - started)  # every export answered: durable in the WAL
        # Paging every run through the API 20 times a second would load the server it measures: page it
        # only once the flusher says it is done (the API count is still what ends the measurement).
        while _flushed_steps(server) < total or _stored_steps(server) < total:
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.02)

    benchmark.pedantic(run, rounds=1, iterations=1)
    parts = {pid: (cpu - cpu_before.get(pid, 0.0)) * 1e6 / total for pid, cpu in _cpu_by_process(proc).items()}
    cpu_us = sum(parts.values())
    assert _stored_steps(server) == total
    seconds = benchmark.stats.stats.max if benchmark.stats else None
    if seconds:
        benchmark.extra_info["spans_per_s"] = round(total / seconds)
        benchmark.extra_info["server_cpu_us_per_span"] = round(cpu_us)
        _MEASURED[variant] = (total / seconds, cpu_us)
        benchmark.extra_info["acknowledged_spans_per_s"] = round(total / acked_s[0])
        print(f"\n{variant}: {total} spans in {seconds:.2f}s = {total / seconds:,.0f} spans/s; "
              f"server CPU {cpu_us:.0f} µs/span ({' + '.join(f'{us:.0f}' for us in parts.values())}: server first); "
              f"peak RSS {peak[0] / 2**20:.0f} MiB; all acknowledged (durable) "
              f"after {acked_s[0]:.2f}s = {total / acked_s[0]:,.0f} spans/s; RSS once drained "
              f"{_tree_rss(proc) / 2**20:.0f} MiB")
    if sustained and not request.config.getoption("benchmark_disable"):  # the smoke's few files never compact
        peak[0] = max(peak[0], _watch_compaction(server, proc))
    benchmark.extra_info["peak_rss_mib"] = round(peak[0] / 2**20)
    assert peak[0] < 1024 * 2**20


def _watch_compaction(server: LiveServer, proc: psutil.Process, *, timeout_s: float = 75.0) -> int:
    """Peak RSS until the step table's small files have been compacted (it runs once a minute), so the memory
    bound covers a compaction of everything just ingested; the number of data files must drop."""
    def data_files() -> int:
        return sum(1 for _ in (server.data_dir / "steps").rglob("*.parquet"))

    before, peak = data_files(), 0
    deadline = time.monotonic() + timeout_s
    while data_files() >= before and time.monotonic() < deadline:
        peak = max(peak, _tree_rss(proc))
        time.sleep(0.05)
    after = data_files()
    print(f"compaction: {before} → {after} data files; peak RSS meanwhile {peak / 2**20:.0f} MiB")
    assert after < before, "no compaction within the wait"
    return peak
