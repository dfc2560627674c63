"""POST /v1/decisions latency on loopback at ~200 requests/s (target: p99 ≤ 10 ms).

A live `traceward serve` with default settings (WAL fsync on, rate limits on) and an active 40-rule
policy; an open-loop asyncio client (keep-alive connections) sends a mix of decisions (80 % allow,
which signs a token; 10 % require_approval, which stores an approval; 10 % deny). Every decision is
audited and becomes a policy step in its run. Latency is measured from each request's *scheduled*
send time, so a slow answer that delays the next request is counted (no coordinated omission).

A second variant asks the same decisions while 4 OTLP/gRPC clients (in a process of their own, so the
client's GIL does not delay the decision client) push pre-serialised 1,000-span exports at full speed, as agents
do in production: it reports decision p50/p99/p999 and the ingest rate acknowledged meanwhile.

Run for real: pytest benchmarks/test_decisions.py --benchmark-only -s (p50/p99 in the output and in
``extra_info``; the target is reported, not asserted, since the p99 of a shared machine follows its load).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.spans import make_agent_request
from benchmarks.test_ingest import _send_all
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

RATE_PER_S = 200
CONNECTIONS = 8
P99_TARGET_S = 0.010


def _counts(disabled: bool) -> tuple[int, int]:
    """(warm-up requests, measured requests)."""
    return (40, 200) if disabled else (400, 6000)


def _policy(*, allowed_tools: tuple[str, ...] = ()) -> str:
    rules = [f"""  - id: allow-{tool}
    match: {{tool: {tool}}}
    decision: allow
    reason_code: read""" for tool in allowed_tools]
    rules += [f"""  - id: r{i}
    match: {{tool: "svc{i}.*", agent: "agent-{i}", args: {{$.amount: {{gt: {i}}}}}}}
    decision: require_approval
    reason_code: rule_{i}""" for i in range(36)]
    rules += ["""  - id: small
    match: {tool: payments.send, args: {$.amount: {lte: 100}, $.to: {not_in: [mallory]}}}
    decision: allow
    reason_code: small""", """  - id: large
    match: {tool: payments.send, args: {$.amount: {lte: 100000}}}
    decision: require_approval
    reason_code: large""", """  - id: docs
    match: {tool: search_docs}
    decision: allow
    reason_code: read""", """  - id: nuke
    match: {tool: rm_rf}
    decision: deny
    reason_code: forbidden"""]
    return ("default: {decision: deny, reason_code: default_deny}\n"
            "tools: {\"payments.*\": {action_class: external_write}}\nrules:\n" + "\n".join(rules) + "\n")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _server_with_policy(LiveServer(tmp_path / "data"))


@pytest.fixture
def loaded_server(tmp_path: Path) -> Iterator[LiveServer]:
    """Decisions and exports share the ingest key, whose default limit (12,000/min) 200 decisions/s use up."""
    yield from _server_with_policy(LiveServer(tmp_path / "data",
                                              extra_env={"TRACEWARD_RATE_LIMIT_INGEST_PER_MIN": "1000000"}),
                                   allowed_tools=INGESTED_TOOLS)


INGESTED_TOOLS = ("search_flights", "book_hotel", "get_weather", "send_email", "query_db")
"""The tools executed in ``benchmarks.spans``' exports: allowed unconditionally, hence ungated. Under the default
deny each of their ~500 executions per export, carrying no decision token, would be a binding violation (one
SQLite transaction, an audit record and a violation step each): a different load, ~2,000 spans/s."""


def _server_with_policy(srv: LiveServer, *, allowed_tools: tuple[str, ...] = ()) -> Iterator[LiveServer]:
    srv.start()
    created = srv.post("/v1/policies", key=ADMIN_KEY, content=_policy(allowed_tools=allowed_tools),
                       headers={"content-type": "application/yaml"})
    assert created.status_code == 201, created.text
    assert srv.post(f"/v1/policies/{created.json()['policy_id']}:activate", key=ADMIN_KEY).status_code == 200
    yield srv
    srv.stop()


def _bodies(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    traces = [secrets.token_hex(16) for _ in range(50)]
    bodies = []
    for _ in range(count):
        roll = rng.random()
        tool, args = ("payments.send", {"amount": rng.randint(1, 100), "to": "bob", "memo": "invoice 42"})
        if roll > 0.9:
            tool, args = "rm_rf", {"path": "/var/data"}
        elif roll > 0.8:
            args = {"amount": rng.randint(1000, 5000), "to": "carol"}
        bodies.append({"tool_name": tool, "args": args, "trace_id": rng.choice(traces),
                       "span_id": secrets.token_hex(8), "agent": "billing"})
    return bodies


def _paced(url: str, bodies: list[dict[str, Any]]) -> tuple[list[float], float]:
    """Send at RATE_PER_S (open loop, one asyncio client); (latencies from scheduled send, wall seconds)."""
    latencies, seconds = asyncio.run(_paced_async(url, bodies))
    return [latencies[i] for i in sorted(latencies)], seconds


async def _paced_async(url: str, bodies: list[dict[str, Any]]) -> tuple[dict[int, float], float]:
    latencies: dict[int, float] = {}  # request index → latency
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {INGEST_KEY}"}, timeout=10,
                                 limits=limits) as http:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1

        async def worker(k: int) -> None:  # worker k sends requests k, k + CONNECTIONS, ... at their due times
            for i in range(k, len(bodies), CONNECTIONS):
                due = start + i / RATE_PER_S
                await asyncio.sleep(max(0.0, due - loop.time()))
                response = await http.post("/v1/decisions", json=bodies[i])
                latencies[i] = loop.time() - due
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))
        return latencies, loop.time() - start


def test_decision_latency_at_200_rps(benchmark: Any, server: LiveServer, request: pytest.FixtureRequest) -> None:
    disabled = request.config.getoption("benchmark_disable")
    warmup, measured = _counts(disabled)
    _paced(server.api_url, _bodies(warmup, seed=1))
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["latencies"], outcome["seconds"] = _paced(server.api_url, _bodies(measured, seed=2))

    before = _server_buckets(server)
    benchmark.pedantic(run, rounds=1, iterations=1)
    served = {le: n - before.get(le, 0) for le, n in _server_buckets(server).items()}
    latencies = sorted(outcome["latencies"])
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
    rate = len(latencies) / outcome["seconds"]
    benchmark.extra_info.update(requests=len(latencies), achieved_rps=round(rate), p50_ms=round(p50 * 1e3, 3),
                                p99_ms=round(p99 * 1e3, 3), max_ms=round(latencies[-1] * 1e3, 3),
                                mean_ms=round(statistics.fmean(latencies) * 1e3, 3))
    print(f"\nPOST /v1/decisions: {len(latencies)} requests at {rate:.0f}/s: p50 {p50 * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms")
    within = {le: served.get(le, 0) / len(latencies) for le in ("0.005", "0.01")}
    print(f"server side (traceward_http_request_duration_seconds, inside the app): {within['0.005']:.2%} of "
          f"decisions within 5 ms, {within['0.01']:.2%} within 10 ms")
    benchmark.extra_info.update(server_within_5ms=round(within["0.005"], 4), server_within_10ms=round(within["0.01"], 4))
    benchmark.extra_info["meets_p99_target"] = p99 <= P99_TARGET_S
    # Reported, not asserted: on a shared 2-vCPU machine the p99 follows the neighbours' load.
    print(f"p99 target {P99_TARGET_S * 1e3:.0f} ms: {'met' if p99 <= P99_TARGET_S else 'NOT met'}")


def _server_buckets(server: LiveServer) -> dict[str, float]:
    """Cumulative counts of the server's own latency histogram for POST /v1/decisions, by bucket bound."""
    text = httpx.get(f"{server.api_url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("traceward_http_request_duration_seconds_bucket") and '"/v1/decisions"' in line \
                and '"POST"' in line:
            found[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return found


# -- under ingest load --------------------------------------------------------------------------------------

def _ingest_sizes(disabled: bool) -> tuple[int, int, int]:
    """(clients, requests per client, spans per request): enough to outlast the measured decisions."""
    return (2, 3, 200) if disabled else (4, 100, 1000)


def _push_spans(port: int, sizes: tuple[int, int, int], ready: Any, go: Any, stop: Any, acks: Any) -> None:
    """In a child process: build the exports, say ready, then push them with one thread per client until
    ``stop`` (or the exports run out); puts (monotonic ack time, spans) of every acknowledged export."""
    clients, per_client, spans = sizes
    batches = [[make_agent_request(spans, seed=c * 1000 + i).SerializeToString() for i in range(per_client)]
               for c in range(clients)]
    ready.set()
    go.wait()
    done: list[tuple[float, int]] = []
    errors: list[str] = []

    def paced_by_acks(bodies: list[bytes]) -> Iterator[bytes]:
        for body in bodies:
            if stop.is_set():
                return
            yield body
            done.append((time.monotonic(), spans))  # resumed only once its export was answered

    def client(bodies: list[bytes]) -> None:
        try:
            _send_all(port, paced_by_acks(bodies))  # type: ignore[arg-type]
        except Exception as exc:  # a refused export must fail the benchmark, not quietly lighten the load
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acks.put((done, errors))


def test_decision_latency_at_200_rps_under_ingest(benchmark: Any, loaded_server: LiveServer,
                                                  request: pytest.FixtureRequest) -> None:
    """Decisions at 200/s while 4 gRPC clients push 1,000-span exports at full speed (target reported)."""
    server, disabled = loaded_server, request.config.getoption("benchmark_disable")
    warmup, measured = _counts(disabled)
    measured = min(measured, 4000)  # 20 s: the exports must outlast it
    _paced(server.api_url, _bodies(warmup, seed=1))
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold gRPC state
    ready, go, stop, acks = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    pusher = ctx.Process(target=_push_spans, args=(server.grpc_port, _ingest_sizes(disabled), ready, go, stop, acks))
    pusher.start()
    try:
        assert ready.wait(120), "the span pusher did not get ready"
        go.set()
        time.sleep(0 if disabled else 2.0)  # let ingest reach full speed first
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["start"] = time.monotonic()
            outcome["bodies"] = _bodies(measured, seed=2)
            outcome["latencies"], outcome["seconds"] = _paced(server.api_url, outcome["bodies"])
            outcome["end"] = time.monotonic()

        benchmark.pedantic(run, rounds=1, iterations=1)
        stop.set()
        done, errors = acks.get(timeout=120)
    finally:
        stop.set()
        pusher.join(timeout=120)
    assert not errors, errors
    _report_under_ingest(benchmark, outcome, done)


def _report_under_ingest(benchmark: Any, outcome: dict[str, Any], done: list[tuple[float, int]]) -> None:
    latencies = sorted(outcome["latencies"])
    n = len(latencies)
    p50, p99, p999 = (latencies[max(0, int(n * q) - 1)] for q in (0.5, 0.99, 0.999))
    start, end = outcome["start"], outcome["end"]
    spans_in_window = sum(spans for at, spans in done if start <= at <= end)
    last_ack = max((at for at, _ in done), default=start)
    ingest_rate = spans_in_window / (end - start)
    benchmark.extra_info.update(requests=n, achieved_rps=round(n / outcome["seconds"]), p50_ms=round(p50 * 1e3, 3),
                                p99_ms=round(p99 * 1e3, 3), p999_ms=round(p999 * 1e3, 3),
                                max_ms=round(latencies[-1] * 1e3, 3), ingest_spans_per_s=round(ingest_rate),
                                ingest_covered_window=last_ack >= end, meets_p99_target=p99 <= P99_TARGET_S)
    print(f"\nPOST /v1/decisions under ingest: {n} requests at {n / outcome['seconds']:.0f}/s: p50 {p50 * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms, p999 {p999 * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms; "
          f"ingest meanwhile {ingest_rate:,.0f} spans/s acknowledged"
          f"{'' if last_ack >= end else ' (the exports ran out before the decisions: rate understated)'}")
    approvals = sorted(lat for lat, body in zip(outcome["latencies"], outcome["bodies"], strict=True)
                       if _is_approval(body))
    others = sorted(lat for lat, body in zip(outcome["latencies"], outcome["bodies"], strict=True)
                    if not _is_approval(body))
    print(f"allow/deny p99 {others[max(0, int(len(others) * 0.99) - 1)] * 1e3:.2f} ms; require_approval "
          f"(stores the approval before answering) p50 {approvals[len(approvals) // 2] * 1e3:.2f} ms, "
          f"p99 {approvals[max(0, int(len(approvals) * 0.99) - 1)] * 1e3:.2f} ms")
    print(f"p99 target {P99_TARGET_S * 1e3:.0f} ms: {'met' if p99 <= P99_TARGET_S else 'NOT met'}")


def _is_approval(body: dict[str, Any]) -> bool:
    return body["tool_name"] == "payments.send" and body["args"]["amount"] > 100
