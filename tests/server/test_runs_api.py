"""The read API: GET /v1/runs (order, filters, limits, cursors), GET /v1/runs/{id}/steps paging, tenants.

Runs are made by sending OTLP/JSON (or protobuf) over HTTP; every dataset lives in its own time window
(and uses its own service/model/tool names), so the tests of this module share one server.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2
from opentelemetry.proto.common.v1 import common_pb2

from tests.live import INGEST_KEY, LiveServer, wait_until

pytestmark = pytest.mark.e2e

SECOND = 1_000_000_000


def ns(when: datetime) -> int:
    return int(when.timestamp()) * SECOND + when.microsecond * 1000


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_trace() -> str:
    return os.urandom(16).hex()


def new_span() -> str:
    return os.urandom(8).hex()


# --- building runs as OTLP/JSON -----------------------------------------------------------------------------
def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


@dataclass
class RunSpec:
    """One trace: a root span and optional model / tool / failing children."""

    start_ns: int
    service: str
    trace: str = field(default_factory=new_trace)
    agent: str | None = None
    model: str | None = None
    cost: float | None = None
    tools: tuple[str, ...] = ()
    env: str | None = None
    root_status: int = 1  # OTLP status code of the root: 0 unset, 1 ok, 2 error
    root_ends: bool = True
    cancelled: bool = False
    failing_child: bool = False

    def resource_spans(self) -> dict[str, Any]:
        root = new_span()
        start, end = self.start_ns, self.start_ns + 5 * SECOND
        root_attrs = [attr("gen_ai.agent.name", self.agent)] if self.agent else []
        if self.cancelled:
            root_attrs.append(attr("error.type", "asyncio.CancelledError"))
        spans = [{"traceId": self.trace, "spanId": root, "name": "invoke_agent", "kind": 1,
                  "startTimeUnixNano": str(start), "endTimeUnixNano": str(end if self.root_ends else 0),
                  "attributes": root_attrs, "status": {"code": self.root_status}}]

        def child(name: str, offset: int, attrs: list[dict[str, Any]], code: int = 0) -> None:
            spans.append({"traceId": self.trace, "spanId": new_span(), "parentSpanId": root, "name": name,
                          "kind": 3, "startTimeUnixNano": str(start + offset * SECOND),
                          "endTimeUnixNano": str(start + offset * SECOND + 1000), "attributes": attrs,
                          "status": {"code": code}})

        if self.model:
            usage = [attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", self.model),
                     attr("gen_ai.usage.input_tokens", 100), attr("gen_ai.usage.output_tokens", 10)]
            if self.cost is not None:
                usage.append(attr("gen_ai.usage.cost", self.cost))
            child(f"chat {self.model}", 1, usage)
        for n, tool in enumerate(self.tools):
            child(f"execute_tool {tool}", 2 + n, [attr("gen_ai.operation.name", "execute_tool"),
                                                   attr("gen_ai.tool.name", tool)])
        if self.failing_child:
            child("flaky step", 4, [], code=2)
        resource = [attr("service.name", self.service)]
        if self.env:
            resource.append(attr("deployment.environment", self.env))
        return {"resource": {"attributes": resource}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}

    @property
    def span_count(self) -> int:
        return 1 + bool(self.model) + len(self.tools) + self.failing_child


def send_runs(server: LiveServer, specs: list[RunSpec], *, key: str = INGEST_KEY) -> None:
    """Send the runs in one OTLP/JSON request and wait until every one is queryable with all its steps."""
    body = orjson.dumps({"resourceSpans": [s.resource_spans() for s in specs]})
    resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, timeout=60,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    if key == INGEST_KEY:
        for spec in specs:
            server.wait_run(spec.trace, lambda r, n=spec.span_count: r["step_count"] == n)


def list_ids(server: LiveServer, key: str | None = None, **params: Any) -> list[str]:
    resp = server.get("/v1/runs", **({"key": key} if key else {}), **{"limit": 500, **params})
    assert resp.status_code == 200, resp.text
    assert resp.json()["next_cursor"] is None
    return [r["run_id"] for r in resp.json()["runs"]]


def walk(server: LiveServer, limit: int, **params: Any) -> Iterator[list[dict[str, Any]]]:
    """Yield pages of GET /v1/runs, following next_cursor."""
    cursor = None
    while True:
        resp = server.get("/v1/runs", limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["runs"]) <= limit
        yield body["runs"]
        cursor = body["next_cursor"]
        if not cursor:
            return


# --- a handmade dataset for the filters ----------------------------------------------------------------------
@dataclass
class Dataset:
    tag: str
    base: datetime
    runs: dict[str, RunSpec]

    def ids(self, *names: str) -> list[str]:
        """Run ids of the named runs, newest first (the dataset's runs start one second apart)."""
        return [self.runs[n].trace for n in sorted(names, key=lambda n: self.runs[n].start_ns, reverse=True)]

    @property
    def window(self) -> dict[str, str]:
        return {"started_after": rfc3339(self.base), "started_before": rfc3339(self.base + timedelta(hours=1))}


@pytest.fixture(scope="module")
def dataset(shared_server: LiveServer) -> Dataset:
    u = os.urandom(3).hex()
    base = datetime(2031, 5, 1, tzinfo=UTC)

    def at(seconds: int) -> int:
        return ns(base + timedelta(seconds=seconds))

    runs = {
        "r1": RunSpec(at(1), f"svc-a-{u}", agent=f"planner-{u}", model=f"m1-{u}", cost=0.5, tools=(f"t1-{u}",),
                      env=f"prod-{u}"),
        "r2": RunSpec(at(2), f"svc-a-{u}", agent=f"executor-{u}", model=f"m2-{u}", cost=0.05, env=f"dev-{u}",
                      root_status=2),
        "r3": RunSpec(at(3), f"svc-b-{u}", agent=f"planner-{u}", model=f"m1-{u}", cost=2.0, tools=(f"t2-{u}",),
                      env=f"prod-{u}", root_status=0, failing_child=True),
        "r4": RunSpec(at(4), f"svc-b-{u}", tools=(f"t1-{u}",), root_ends=False),
        "r5": RunSpec(at(5), f"svc-a-{u}", root_status=2, cancelled=True),
        "r6": RunSpec(at(6), f"svc-c-{u}", model=f"m2-{u}", cost=1.0, tools=(f"t1-{u}", f"t2-{u}")),
    }
    send_runs(shared_server, list(runs.values()))
    return Dataset(u, base, runs)


def test_dataset_runs_look_as_built(shared_server: LiveServer, dataset: Dataset) -> None:
    runs = {n: shared_server.get(f"/v1/runs/{s.trace}").json() for n, s in dataset.runs.items()}
    assert {n: r["status"] for n, r in runs.items()} == {
        "r1": "succeeded", "r2": "failed", "r3": "succeeded", "r4": "running", "r5": "canceled", "r6": "succeeded"}
    assert {n: r["has_error"] for n, r in runs.items()} == {
        "r1": False, "r2": True, "r3": True, "r4": False, "r5": True, "r6": False}
    assert runs["r6"]["tool_count"] == 2 and runs["r1"]["cost_usd"] == 0.5
    assert runs["r1"]["tags"]["deployment.environment"] == f"prod-{dataset.tag}"


def test_list_is_newest_first(shared_server: LiveServer, dataset: Dataset) -> None:
    assert list_ids(shared_server, **dataset.window) == dataset.ids("r1", "r2", "r3", "r4", "r5", "r6")
    runs = shared_server.get("/v1/runs", limit=500).json()["runs"]
    keys = [(r["started_at_ns"], r["run_id"]) for r in runs]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(("params", "expected"), [
    ({"service": "svc-a-{u}"}, ["r1", "r2", "r5"]),
    ({"service": "svc-b-{u}"}, ["r3", "r4"]),
    ({"agent": "planner-{u}"}, ["r1", "r3"]),
    ({"agent": "executor-{u}"}, ["r2"]),
    ({"model": "m1-{u}"}, ["r1", "r3"]),
    ({"model": "m2-{u}"}, ["r2", "r6"]),
    ({"tool": "t1-{u}"}, ["r1", "r4", "r6"]),
    ({"tool": "t2-{u}"}, ["r3", "r6"]),
    ({"tag": "deployment.environment=prod-{u}"}, ["r1", "r3"]),
    ({"tag": "service.name=svc-c-{u}"}, ["r6"]),
    ({"tag": "deployment.environment=nope-{u}"}, []),
    ({"service": "svc-a-{u}", "status": "failed"}, ["r2"]),
    ({"model": "m1-{u}", "tool": "t1-{u}"}, ["r1"]),
    ({"tool": "t2-{u}", "tag": "deployment.environment=prod-{u}"}, ["r3"]),
    ({"model": "m2-{u}", "tag": "service.name=svc-c-{u}"}, ["r6"]),
    ({"agent": "planner-{u}", "has_error": "true"}, ["r3"]),
], ids=lambda v: str(v) if isinstance(v, list) else "&".join(f"{k}={x}" for k, x in v.items()))
def test_filters_on_unique_values(shared_server: LiveServer, dataset: Dataset, params: dict[str, str],
                                  expected: list[str]) -> None:
    query = {k: v.format(u=dataset.tag) for k, v in params.items()}
    assert list_ids(shared_server, **query) == dataset.ids(*expected)


@pytest.mark.parametrize(("params", "expected"), [
    ({"status": "succeeded"}, ["r1", "r3", "r6"]),
    ({"status": "failed"}, ["r2"]),
    ({"status": "running"}, ["r4"]),
    ({"status": "canceled"}, ["r5"]),
    ({"has_error": "true"}, ["r2", "r3", "r5"]),
    ({"has_error": "false"}, ["r1", "r4", "r6"]),
    ({"min_cost_usd": "0.5"}, ["r1", "r3", "r6"]),
    ({"min_cost_usd": "1.5"}, ["r3"]),
    ({"min_cost_usd": "0"}, ["r1", "r2", "r3", "r6"]),
    ({"min_cost_usd": "100"}, []),
], ids=lambda v: str(v) if isinstance(v, list) else "&".join(f"{k}={x}" for k, x in v.items()))
def test_filters_within_the_dataset_window(shared_server: LiveServer, dataset: Dataset, params: dict[str, str],
                                           expected: list[str]) -> None:
    assert list_ids(shared_server, **params, **dataset.window) == dataset.ids(*expected)


def test_started_after_and_before(shared_server: LiveServer, dataset: Dataset) -> None:
    third = dataset.base + timedelta(seconds=3)
    after = {"started_before": rfc3339(dataset.base + timedelta(hours=1))}
    before = {"started_after": rfc3339(dataset.base)}
    for form in (rfc3339(third), "2031-05-01T02:00:03+02:00", "2031-05-01T00:00:03.000000000Z",
                 "2031-05-01t00:00:03z", str(ns(third))):
        assert list_ids(shared_server, started_after=form, **after) == dataset.ids("r3", "r4", "r5", "r6"), form
        assert list_ids(shared_server, started_before=form, **before) == dataset.ids("r1", "r2"), form
    just_after = "2031-05-01T00:00:03.000000001Z"  # nanosecond precision
    assert list_ids(shared_server, started_after=just_after, **after) == dataset.ids("r4", "r5", "r6")
    assert list_ids(shared_server, started_after=rfc3339(third), started_before="2031-05-01T00:00:05Z") == \
        dataset.ids("r3", "r4")


@pytest.mark.parametrize("params", [
    {"status": "exploded"}, {"started_after": "yesterday"}, {"started_before": "2031-05-01T00:00:00"},
    {"tag": "novalue"}, {"tag": "=value"}, {"has_error": "maybe"}, {"min_cost_usd": "cheap"},
])
def test_bad_filter_values_are_400(shared_server: LiveServer, params: dict[str, str]) -> None:
    resp = shared_server.get("/v1/runs", **params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(("limit", "status"), [(0, 400), (-1, 400), (501, 400), (1, 200), (500, 200)])
def test_limit_bounds(shared_server: LiveServer, dataset: Dataset, limit: int, status: int) -> None:
    resp = shared_server.get("/v1/runs", limit=limit)
    assert resp.status_code == status, resp.text
    if status == 200:
        assert 1 <= len(resp.json()["runs"]) <= limit


def test_default_limit_is_50(shared_server: LiveServer, dataset: Dataset) -> None:
    assert len(shared_server.get("/v1/runs").json()["runs"]) <= 50


# --- cursors -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paged(shared_server: LiveServer) -> tuple[list[str], datetime, str]:
    """47 runs in their own window, many sharing a start time (so the run_id tiebreak matters)."""
    base = datetime(2032, 2, 1, tzinfo=UTC)
    model = f"page-model-{os.urandom(3).hex()}"
    specs = [RunSpec(ns(base + timedelta(seconds=i // 3)), "paging", model=model) for i in range(47)]
    send_runs(shared_server, specs)
    order = sorted(specs, key=lambda s: (s.start_ns, s.trace), reverse=True)
    return [s.trace for s in order], base, model


def _window(base: datetime) -> dict[str, str]:
    return {"started_after": rfc3339(base), "started_before": rfc3339(base + timedelta(days=1))}


@pytest.mark.parametrize("limit", [1, 7, 46, 47, 48])
def test_cursor_walks_every_run_once_in_order(shared_server: LiveServer, paged: tuple[list[str], datetime, str],
                                              limit: int) -> None:
    expected, base, _ = paged
    pages = list(walk(shared_server, limit, **_window(base)))
    seen = [r["run_id"] for page in pages for r in page]
    assert seen == expected
    assert len(pages) == -(-len(expected) // limit)
    assert all(len(p) == limit for p in pages[:-1])


def test_cursor_with_a_facet_filter(shared_server: LiveServer, paged: tuple[list[str], datetime, str]) -> None:
    expected, base, model = paged
    assert [r["run_id"] for page in walk(shared_server, 4, model=model) for r in page] == expected
    assert [r["run_id"] for page in walk(shared_server, 5, model=model, **_window(base)) for r in page] == expected


def test_cursor_is_stable_while_new_runs_arrive(shared_server: LiveServer) -> None:
    base = datetime(2033, 7, 1, tzinfo=UTC)
    window = _window(base)
    original = [RunSpec(ns(base + timedelta(seconds=10 + i // 2)), "stable") for i in range(20)]
    send_runs(shared_server, original)
    expected = [s.trace for s in sorted(original, key=lambda s: (s.start_ns, s.trace), reverse=True)]

    seen: list[str] = []
    added: list[str] = []
    cursor = None
    for page_no in range(100):
        params = {**window, **({"cursor": cursor} if cursor else {})}
        body = shared_server.get("/v1/runs", limit=6, **params).json()
        seen += [r["run_id"] for r in body["runs"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
        # Between page fetches: a newer run, and one tying with the newest run's start time.
        newer = [RunSpec(ns(base + timedelta(minutes=30, seconds=page_no)), "stable"),
                 RunSpec(original[-1].start_ns, "stable")]
        send_runs(shared_server, newer)
        added += [s.trace for s in newer]
    assert seen == expected  # every original run exactly once, in order; none of the newer ones
    everything = [r["run_id"] for page in walk(shared_server, 500, **window) for r in page]
    assert set(everything) == set(expected) | set(added)
    assert len(everything) == len(expected) + len(added)


@pytest.mark.parametrize("cursor", [
    "garbage!!", "e30", base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b'["x", 1]').decode(), base64.urlsafe_b64encode(b"[1]").decode(),
    base64.urlsafe_b64encode(b'{"seq": 3}').decode(),
])
def test_malformed_cursor_is_400(shared_server: LiveServer, cursor: str) -> None:
    resp = shared_server.get("/v1/runs", cursor=cursor)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["details"] == {"cursor": "not a cursor from this API"}


# --- steps paging ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_run(shared_server: LiveServer) -> tuple[str, list[str]]:
    """One run of 2,500 steps (sent as OTLP protobuf): every 10th is a tool call."""
    trace = os.urandom(16)
    start = ns(datetime(2034, 1, 1, tzinfo=UTC))
    req = ts_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value="big"))
    spans = rs.scope_spans.add().spans
    ids = [os.urandom(8) for _ in range(2500)]
    for i, span_id in enumerate(ids):
        span = spans.add(trace_id=trace, span_id=span_id, parent_span_id=b"" if i == 0 else ids[0], name=f"s{i}",
                         start_time_unix_nano=start + i * 1000, end_time_unix_nano=start + i * 1000 + 500)
        if i % 10 == 5:
            span.attributes.add(key="gen_ai.operation.name", value=common_pb2.AnyValue(string_value="execute_tool"))
            span.attributes.add(key="gen_ai.tool.name", value=common_pb2.AnyValue(string_value=f"tool{i}"))
    resp = httpx.post(f"{shared_server.otlp_http_url}/v1/traces", content=req.SerializeToString(), timeout=60,
                      headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/x-protobuf"})
    assert resp.status_code == 200, resp.text
    shared_server.wait_run(trace.hex(), lambda r: r["step_count"] == 2500, timeout_s=60)
    return trace.hex(), [i.hex() for i in ids]


def test_2500_steps_page_in_seq_order(shared_server: LiveServer, big_run: tuple[str, list[str]]) -> None:
    run_id, span_ids = big_run
    pages, cursor = [], None
    while True:
        body = shared_server.get(f"/v1/runs/{run_id}/steps", limit=1000, **({"cursor": cursor} if cursor else {}))
        assert body.status_code == 200, body.text
        pages.append(body.json()["steps"])
        cursor = body.json()["next_cursor"]
        if not cursor:
            break
    assert [len(p) for p in pages] == [1000, 1000, 500]
    steps = [s for p in pages for s in p]
    assert [s["seq"] for s in steps] == list(range(2500))
    assert [s["span_id"] for s in steps] == span_ids  # each once, in start order
    assert all(s["run_id"] == run_id for s in steps)
    assert not any(s["orphan"] for s in steps)


def test_steps_default_limit_and_small_pages(shared_server: LiveServer, big_run: tuple[str, list[str]]) -> None:
    run_id, span_ids = big_run
    first = shared_server.get(f"/v1/runs/{run_id}/steps").json()
    assert [s["seq"] for s in first["steps"]] == list(range(200))
    steps = shared_server.all_steps(run_id, limit=333)
    assert [s["span_id"] for s in steps] == span_ids


def test_steps_type_filter_pages(shared_server: LiveServer, big_run: tuple[str, list[str]]) -> None:
    run_id, span_ids = big_run
    tools = shared_server.all_steps(run_id, type="tool", limit=100)
    assert [s["span_id"] for s in tools] == span_ids[5::10]
    assert all(s["type"] == "tool" for s in tools)


@pytest.mark.parametrize(("params", "status"), [
    ({"limit": 1001}, 400), ({"limit": 0}, 400), ({"cursor": "nope!"}, 400), ({"type": "teleport"}, 400),
    ({"cursor": base64.urlsafe_b64encode(b'{"seq": "x"}').decode()}, 400),
])
def test_steps_bad_parameters(shared_server: LiveServer, big_run: tuple[str, list[str]], params: dict[str, Any],
                              status: int) -> None:
    assert shared_server.get(f"/v1/runs/{big_run[0]}/steps", **params).status_code == status


# --- tenants -------------------------------------------------------------------------------------------------
def create_key(server: LiveServer, role: str, tenant: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWARD_")}
    out = subprocess.run(
        [sys.executable, "-m", "server", "admin", "create-key", "--data-dir", str(server.data_dir), "--role", role,
         "--tenant", tenant], capture_output=True, text=True, timeout=120, env=env, check=True)
    key = out.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("tw_"), out.stdout
    return key


def test_tenant_isolation(shared_server: LiveServer, dataset: Dataset) -> None:
    other_admin = create_key(shared_server, "admin", "other")
    other_ingest = create_key(shared_server, "ingest", "other")
    default_run = dataset.runs["r1"]

    assert shared_server.get("/v1/runs", key=other_admin, limit=500).json() == {"runs": [], "next_cursor": None}
    assert list_ids(shared_server, key=other_admin, service=default_run.service) == []
    assert list_ids(shared_server, key=other_admin, model=default_run.model) == []
    assert shared_server.get(f"/v1/runs/{default_run.trace}", key=other_admin).status_code == 404
    assert shared_server.get(f"/v1/runs/{default_run.trace}/steps", key=other_admin).status_code == 404

    # The other tenant sends a span with the *same* trace id: a separate run, invisible to the default tenant.
    clash = RunSpec(default_run.start_ns, "other-service", trace=default_run.trace)
    send_runs(shared_server, [clash], key=other_ingest)

    def other_sees_it() -> bool:
        return shared_server.get(f"/v1/runs/{clash.trace}", key=other_admin).status_code == 200

    wait_until(other_sees_it, 30, what="the other tenant's run")
    theirs = shared_server.get(f"/v1/runs/{clash.trace}", key=other_admin).json()
    assert (theirs["service"], theirs["step_count"]) == ("other-service", 1)
    assert list_ids(shared_server, key=other_admin) == [clash.trace]
    ours = shared_server.get(f"/v1/runs/{default_run.trace}").json()
    assert (ours["service"], ours["step_count"]) == (default_run.service, default_run.span_count)
    assert list_ids(shared_server, service="other-service") == []
