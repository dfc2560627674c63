"""Read API latency over a large run index, through HTTP on a live server.

- ``GET /v1/runs`` first page with a filter over 1,000,000 runs (target: median ≤ 20 ms);
- a deep page (after following 200 cursors) costs what the first page does (keyset, no OFFSET);
- the first page of steps of a 5,000-step run (target ≤ 100 ms).

The run fixture is written through the store's own connection and schema (not over OTLP).
Under ``--benchmark-disable`` (the smoke run in ``make test``) sizes shrink.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import orjson
import pytest

from benchmarks.spans import make_agent_request
from otlp_receiver.store.index import RunIndex
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

_STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "running", "canceled")
_SERVICES = tuple(f"agent-{i}" for i in range(50))


def _load_runs(index: RunIndex, n: int) -> None:
    rng = random.Random(7)
    base = 1_790_000_000_000_000_000
    rows, tools = [], []
    for i in range(n):
        run_id = f"{rng.getrandbits(128):032x}"
        started = base + i * 2_000_000_000 + rng.randint(0, 999)
        status = rng.choice(_STATUSES)
        rows.append(("default", "default", run_id, run_id, status, started, started + 5_000_000_000,
                     rng.choice(_SERVICES), "travel", orjson.dumps({"env": "prod"}).decode(),
                     1 if status == "failed" else 0, rng.random() / 10))
        tools.append(("default", run_id, rng.choice(("search", "book", "email")), started))
    with index.transaction() as db:
        db.conn.executemany(
            "INSERT INTO runs (tenant_id, project_id, run_id, trace_id, status, started_ns, finished_ns, service, "
            "agent, tags, error_count, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.conn.executemany("INSERT INTO run_tools VALUES (?,?,?,?)", tools)
    index.writer.execute("ANALYZE")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    small = request.config.getoption("benchmark_disable")
    data = tmp_path_factory.mktemp("query") / "data"
    data.mkdir(parents=True)
    index = RunIndex(data / "traceward.sqlite3")
    _load_runs(index, 20_000 if small else 1_000_000)
    index.writer.conn.close()
    srv = LiveServer(data).start()
    _load_big_run(srv, 500 if small else 5_000)
    yield srv
    srv.stop()


BIG_RUN: dict[str, str] = {}


def _load_big_run(srv: LiveServer, n_spans: int) -> None:
    req = make_agent_request(n_spans, seed=99)
    spans = req.resource_spans[0].scope_spans[0].spans
    trace_id = spans[0].trace_id
    for span in spans:  # one trace: every span under the first root
        span.trace_id = trace_id
        if span.parent_span_id:
            span.parent_span_id = spans[0].span_id
    for start in range(0, n_spans, 1000):
        chunk = type(req)()
        chunk.CopyFrom(req)
        del chunk.resource_spans[0].scope_spans[0].spans[:]
        chunk.resource_spans[0].scope_spans[0].spans.extend(spans[start:start + 1000])
        resp = httpx.post(f"{srv.otlp_http_url}/v1/traces", content=chunk.SerializeToString(),
                          headers={"content-type": "application/x-protobuf",
                                   "authorization": f"Bearer {INGEST_KEY}"}, timeout=60)
        assert resp.status_code == 200
    BIG_RUN["id"] = trace_id.hex()
    srv.wait_run(BIG_RUN["id"], lambda r: r["step_count"] == n_spans, timeout_s=120)


def _client() -> httpx.Client:
    return httpx.Client(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


def test_runs_first_page_filtered(benchmark, server: LiveServer) -> None:
    with _client() as client:
        url = f"{server.api_url}/v1/runs"
        result = benchmark(lambda: client.get(url, params={"status": "failed", "limit": 50}))
    assert result.status_code == 200
    runs = result.json()["runs"]
    assert len(runs) == 50 and all(r["status"] == "failed" for r in runs)


def test_runs_deep_page_filtered(benchmark, server: LiveServer) -> None:
    with _client() as client:
        url = f"{server.api_url}/v1/runs"
        cursor = None
        for _ in range(200):
            body = client.get(url, params={"service": "agent-7", "limit": 50,
                                           **({"cursor": cursor} if cursor else {})}).json()
            cursor = body["next_cursor"] or cursor
        result = benchmark(lambda: client.get(url, params={"service": "agent-7", "limit": 50, "cursor": cursor}))
    assert result.status_code == 200 and result.json()["runs"]


def test_runs_tool_filter(benchmark, server: LiveServer) -> None:
    with _client() as client:
        url = f"{server.api_url}/v1/runs"
        result = benchmark(lambda: client.get(url, params={"tool": "email", "limit": 50}))
    assert result.status_code == 200 and len(result.json()["runs"]) == 50


def test_big_run_first_steps_page(benchmark, server: LiveServer) -> None:
    with _client() as client:
        url = f"{server.api_url}/v1/runs/{BIG_RUN['id']}/steps"
        result = benchmark(lambda: client.get(url, params={"limit": 200}))
    assert result.status_code == 200
    assert [s["seq"] for s in result.json()["steps"]] == list(range(200))
