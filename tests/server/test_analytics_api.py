"""GET /v1/analytics/{summary,timeseries,compare,health} and feedback, against a live server.

One server for the module; the dataset is sent once as OTLP/JSON in an hour-aligned window three
hours back, and every query names that window (so the numbers are exact). ``OtlpRun`` and
``send_otlp_json`` are shared with the findings, events and metrics tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e
SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
VIEWER_KEY = "tw_0f0f0f0f_analytics-viewer-0123456789abcdefghijklmnopqr"
ACME_INGEST_KEY = "tw_1f1f1f1f_analytics-acme-ingest-0123456789abcdefghijklm"
ACME_VIEWER_KEY = "tw_2f2f2f2f_analytics-acme-viewer-0123456789abcdefghijklm"


# --- OTLP/JSON runs (shared with the other issue-7 tests) --------------------------------------------------------

def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


@dataclass(frozen=True)
class Tool:
    """A tool call under the root: name, failed or not, recorded arguments (JSON text)."""

    name: str
    error: bool = False
    args: str | None = None


@dataclass
class OtlpRun:
    """One trace: a root ``invoke_agent`` span, an optional model call and tool calls, one second apart."""

    start_ns: int
    agent: str | None = "agent-a"
    service: str = "svc"
    version: str | None = "1.0"
    env: str | None = "prod"
    model: str | None = None
    tokens: tuple[int, int] = (100, 10)
    cost: float | None = None
    tools: Sequence[Tool] = ()
    status: int = 1
    """OTLP status code of the root (1 ok, 2 error)."""
    root_ends: bool = True
    duration_s: int = 5
    output: str | None = None
    trace: str = field(default_factory=lambda: os.urandom(16).hex())

    @property
    def span_count(self) -> int:
        return int(self.root_ends) + bool(self.model) + len(self.tools)

    def resource_spans(self) -> dict[str, Any]:
        root = os.urandom(8).hex()
        spans: list[dict[str, Any]] = []
        root_attrs = [attr("gen_ai.agent.name", self.agent)] if self.agent else []
        if self.output:
            root_attrs.append(attr("output.value", self.output))
        if self.root_ends:
            spans.append(self._span(root, None, "invoke_agent", 0, self.duration_s * SECOND, root_attrs, self.status))
        if self.model:
            usage = [attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", self.model),
                     attr("gen_ai.usage.input_tokens", self.tokens[0]),
                     attr("gen_ai.usage.output_tokens", self.tokens[1])]
            if self.cost is not None:
                usage.append(attr("gen_ai.usage.cost", self.cost))
            spans.append(self._span(os.urandom(8).hex(), root, f"chat {self.model}", SECOND, 100_000, usage, 0))
        for n, tool in enumerate(self.tools):
            attrs = [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", tool.name)]
            if tool.args is not None:
                attrs.append(attr("gen_ai.tool.call.arguments", tool.args))
            spans.append(self._span(os.urandom(8).hex(), root, f"execute_tool {tool.name}", (2 + n) * SECOND // 10,
                                    1000, attrs, 2 if tool.error else 0))
        resource = [attr("service.name", self.service)]
        resource += [attr("service.version", self.version)] if self.version else []
        resource += [attr("deployment.environment", self.env)] if self.env else []
        return {"resource": {"attributes": resource}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}

    def _span(self, span_id: str, parent: str | None, name: str, offset_ns: int, length_ns: int,
              attrs: list[dict[str, Any]], code: int) -> dict[str, Any]:
        start = self.start_ns + offset_ns
        return {"traceId": self.trace, "spanId": span_id, **({"parentSpanId": parent} if parent else {}),
                "name": name, "kind": 1, "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + length_ns),
                "attributes": attrs, "status": {"code": code}}


def send_otlp_json(server: LiveServer, runs: Sequence[OtlpRun], *, key: str = INGEST_KEY,
                   wait: bool = True) -> None:
    """Send the runs in one OTLP/JSON export; wait until each is queryable with all its steps (governance may
    add violation steps to tool calls without a decision token: at least ``span_count``)."""
    body = orjson.dumps({"resourceSpans": [r.resource_spans() for r in runs]})
    resp = httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, timeout=60,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    if wait and key == INGEST_KEY:
        for run in runs:
            server.wait_run(run.trace, lambda r, n=run.span_count: r["step_count"] >= n)


# --- the dataset -----------------------------------------------------------------------------------------------

@dataclass
class Data:
    server: LiveServer
    base: int
    alpha_v1: list[OtlpRun]
    alpha_v2: list[OtlpRun]
    beta: list[OtlpRun]

    def window(self, minutes: int = 10) -> dict[str, str]:
        return {"started_after": str(self.base), "started_before": str(self.base + minutes * MINUTE)}

    def get(self, path: str, key: str = VIEWER_KEY, **params: Any) -> httpx.Response:
        return self.server.get(path, key=key, **params)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    data_dir = tmp_path_factory.mktemp("analytics") / "data"
    index = RunIndex(data_dir / "traceward.sqlite3")
    for key, tenant, role in ((VIEWER_KEY, "default", "viewer"), (ACME_INGEST_KEY, "acme", "ingest"),
                              (ACME_VIEWER_KEY, "acme", "viewer")):
        KeyStore(index).create(tenant_id=tenant, project_id="default", role=role, key_text=key)
    index.writer.conn.close()
    server = LiveServer(data_dir).start()
    base = (time.time_ns() - 3 * HOUR) // HOUR * HOUR
    search = (Tool("search"),)
    alpha_v1 = [OtlpRun(start_ns=base + n * MINUTE, agent="alpha", version="1.0", model="gpt-4o", cost=0.01,
                        tools=search, duration_s=2, output="ok") for n in range(4)]
    alpha_v2 = [OtlpRun(start_ns=base + (4 + n) * MINUTE, agent="alpha", version="2.0", model="gpt-4o", cost=0.02,
                        tools=search, duration_s=4, status=2 if n == 0 else 1, output="ok") for n in range(3)]
    beta = [OtlpRun(start_ns=base + (7 + n) * MINUTE, agent="beta", version="1.0", env="dev",
                    tools=(Tool("fetch", error=True),), duration_s=1) for n in range(2)]
    try:
        send_otlp_json(server, [*alpha_v1, *alpha_v2, *beta])
        send_otlp_json(server, [OtlpRun(start_ns=base + MINUTE, agent="alpha")], key=ACME_INGEST_KEY)
        yield Data(server, base, alpha_v1, alpha_v2, beta)
    finally:
        server.stop()


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# --- summary ---------------------------------------------------------------------------------------------------

def test_summary_of_the_window(data: Data) -> None:
    body = data.get("/v1/analytics/summary", **data.window()).json()
    (row,) = body["groups"]
    assert (row["runs"], row["finished_runs"], row["failed_runs"]) == (9, 9, 1)
    assert row["error_rate"] == pytest.approx(1 / 9)
    assert (row["tokens_in"], row["tokens_out"]) == (700, 70)
    assert row["cost_usd"] == pytest.approx(4 * 0.01 + 3 * 0.02)
    assert row["tool_calls"] == 9 and row["tool_errors"] == 2
    assert row["run_p50_ms"] == pytest.approx(2000.0)
    assert body["range"]["started_after_ns"] == data.base and body["group_by"] == []


def test_summary_groups(data: Data) -> None:
    by_agent = {g["agent"]: g for g in data.get("/v1/analytics/summary", group_by="agent", **data.window()).json()["groups"]}
    assert {a: g["runs"] for a, g in by_agent.items()} == {"alpha": 7, "beta": 2}
    assert by_agent["beta"]["tool_errors"] == 2 and by_agent["alpha"]["failed_runs"] == 1
    pairs = data.get("/v1/analytics/summary", group_by="agent,service_version", **data.window()).json()["groups"]
    assert {(g["agent"], g["service_version"]): g["runs"] for g in pairs} == {
        ("alpha", "1.0"): 4, ("alpha", "2.0"): 3, ("beta", "1.0"): 2}
    models = data.get("/v1/analytics/summary", group_by="model", **data.window()).json()["groups"]
    assert {g["model"]: g["runs"] for g in models}["gpt-4o"] == 7
    tools = data.get("/v1/analytics/summary", group_by="tool", **data.window()).json()["groups"]
    assert {g["tool"]: g["tool_calls"] for g in tools if g["tool"]} == {"search": 7, "fetch": 2}


@pytest.mark.parametrize(("params", "runs"), [
    ({"agent": "beta"}, 2), ({"status": "failed"}, 1), ({"environment": "dev"}, 2), ({"model": "gpt-4o"}, 7),
    ({"tool": "fetch"}, 2), ({"service": "nope"}, 0),
])
def test_summary_filters(data: Data, params: dict[str, str], runs: int) -> None:
    (row,) = data.get("/v1/analytics/summary", **params, **data.window()).json()["groups"]
    assert row["runs"] == runs


def test_summary_shows_feedback(data: Data) -> None:
    run = data.alpha_v1[0].trace
    assert data.server.post(f"/v1/runs/{run}/feedback", key=VIEWER_KEY, json={"score": 0.5, "label": "meh"}).status_code == 201
    assert data.server.post(f"/v1/runs/{run}/feedback", key=INGEST_KEY, json={"score": 1.0, "label": "good"}).status_code == 201
    feedback = data.get("/v1/analytics/summary", **data.window()).json()["feedback"]
    assert feedback["count"] >= 2 and feedback["labels"]["meh"] >= 1
    assert 0.5 <= feedback["mean_score"] <= 1.0


def test_other_tenant_sees_only_its_own_runs(data: Data) -> None:
    (row,) = data.get("/v1/analytics/summary", key=ACME_VIEWER_KEY, **data.window()).json()["groups"]
    assert row["runs"] == 1
    groups = data.get("/v1/analytics/summary", key=ACME_VIEWER_KEY, group_by="agent", **data.window()).json()["groups"]
    assert [g["agent"] for g in groups] == ["alpha"]


# --- timeseries ------------------------------------------------------------------------------------------------

def test_timeseries_in_minutes(data: Data) -> None:
    body = data.get("/v1/analytics/timeseries", bucket="1m", **data.window()).json()
    points = body["points"]
    assert [p["bucket_start_ns"] for p in points] == [data.base + n * MINUTE for n in range(10)]
    assert [p["runs"] for p in points] == [1] * 9 + [0]
    assert points[9]["error_rate"] is None and points[4]["failed_runs"] == 1


def test_timeseries_grouped_has_every_bucket_per_group(data: Data) -> None:
    points = data.get("/v1/analytics/timeseries", bucket="5m", group_by="agent", **data.window()).json()["points"]
    assert [(p["agent"], p["runs"]) for p in points] == [("alpha", 5), ("alpha", 2), ("beta", 0), ("beta", 2)]


def test_timeseries_default_window_is_the_last_day(data: Data) -> None:
    body = data.get("/v1/analytics/timeseries", bucket="1h").json()
    assert sum(p["runs"] for p in body["points"]) == 9
    assert body["range"]["started_before_ns"] - body["range"]["started_after_ns"] == 24 * HOUR


@pytest.mark.parametrize(("path", "params", "expected"), [
    ("/v1/analytics/timeseries", {"bucket": "7m"}, (422, "invalid_analytics_query")),
    ("/v1/analytics/timeseries", {"bucket": "1m", "started_after": "0"}, (422, "invalid_analytics_query")),
    ("/v1/analytics/summary", {"group_by": "agent,bogus"}, (422, "invalid_analytics_query")),
    ("/v1/analytics/timeseries", {"group_by": "tenant"}, (422, "invalid_analytics_query")),
    ("/v1/analytics/summary", {"status": "exploded"}, (400, "invalid_input")),
    ("/v1/analytics/summary", {"started_after": "yesterday"}, (400, "invalid_input")),
    ("/v1/analytics/summary", {"started_after": "200", "started_before": "100"}, (400, "invalid_input")),
    ("/v1/analytics/summary", {"tenant_id": "acme"}, (400, "invalid_input")),
])
def test_bad_queries_answer_in_the_envelope(data: Data, path: str, params: dict[str, str],
                                            expected: tuple[int, str]) -> None:
    assert error_of(data.get(path, **params)) == expected


def test_ingest_keys_cannot_read_analytics(data: Data) -> None:
    assert error_of(data.get("/v1/analytics/summary", key=INGEST_KEY)) == (403, "permission_denied")
    assert data.server.get("/v1/analytics/summary", key="tw_00000000_nothing").status_code == 401


# --- compare and health ----------------------------------------------------------------------------------------

def test_compare_two_versions_of_an_agent(data: Data) -> None:
    body = data.get("/v1/analytics/compare", agent="alpha", version_a="1.0", version_b="2.0", **data.window()).json()
    metrics = body["metrics"]
    assert (metrics["runs"]["a"], metrics["runs"]["b"]) == (4, 3)
    assert metrics["error_rate"]["delta"] == pytest.approx(1 / 3)
    assert metrics["cost_per_run_usd"]["a"] == pytest.approx(0.01)
    assert metrics["run_p50_ms"]["delta"] == pytest.approx(2000.0)
    assert metrics["error_rate"]["regression"] is None  # too few runs to call it
    assert (body["agent"], body["version_a"], body["version_b"]) == ("alpha", "1.0", "2.0")


def test_compare_needs_versions_and_a_subject(data: Data) -> None:
    assert error_of(data.get("/v1/analytics/compare", version_a="1.0", version_b="2.0")) == (400, "invalid_input")
    assert error_of(data.get("/v1/analytics/compare", agent="alpha", version_a="1.0")) == (400, "invalid_input")


def test_health_pulse_is_cached_briefly(data: Data) -> None:
    first = data.get("/v1/analytics/health").json()
    assert first["status"] in ("green", "yellow", "red")
    assert [f["key"] for f in first["fields"]] == ["agents", "error_rate", "latency_p90", "cost_today",
                                                   "approvals_waiting", "stalled_runs", "policy_violations"]
    assert "approval" in first["sentence"] and "today" in first["sentence"]
    assert data.get("/v1/analytics/health").json()["as_of_ns"] == first["as_of_ns"]


# --- feedback --------------------------------------------------------------------------------------------------

def test_feedback_is_stored_listed_and_validated(data: Data) -> None:
    run = data.beta[0].trace
    made = data.server.post(f"/v1/runs/{run}/feedback", key=ADMIN_KEY,
                            json={"score": -1, "label": "wrong-answer", "comment": "hallucinated a URL"})
    assert made.status_code == 201, made.text
    assert made.json()["created_by"].startswith("key:")
    listed = data.get("/v1/feedback", run=run).json()["feedback"]
    assert [(f["label"], f["comment"], f["score"]) for f in listed] == [("wrong-answer", "hallucinated a URL", -1.0)]
    assert data.get("/v1/feedback", label="wrong-answer").json()["feedback"][0]["run_id"] == run
    bad = [({}, 400), ({"label": ""}, 400), ({"label": "x" * 65}, 400), ({"comment": "x" * 4001}, 400),
           ({"score": 1, "extra": 1}, 400)]
    for body, status in bad:
        assert data.server.post(f"/v1/runs/{run}/feedback", key=VIEWER_KEY, json=body).status_code == status, body
    missing = data.server.post(f"/v1/runs/{os.urandom(16).hex()}/feedback", key=VIEWER_KEY, json={"score": 1})
    assert error_of(missing) == (404, "not_found")
    other_tenant = data.server.post(f"/v1/runs/{run}/feedback", key=ACME_VIEWER_KEY, json={"score": 1})
    assert error_of(other_tenant) == (404, "not_found")
    assert data.get("/v1/feedback", key=ACME_VIEWER_KEY, run=run).json()["feedback"] == []
    assert error_of(data.get("/v1/feedback", key=INGEST_KEY)) == (403, "permission_denied")


def test_feedback_pages_with_a_cursor(data: Data) -> None:
    run = data.beta[1].trace
    for n in range(3):
        data.server.post(f"/v1/runs/{run}/feedback", key=VIEWER_KEY, json={"score": n})
    first = data.get("/v1/feedback", run=run, limit=2).json()
    rest = data.get("/v1/feedback", run=run, limit=2, cursor=first["next_cursor"]).json()
    assert [f["score"] for f in first["feedback"] + rest["feedback"]] == [2.0, 1.0, 0.0]
    assert rest["next_cursor"] is None


def test_time_parameters_accept_rfc3339(data: Data, tmp_path: Path) -> None:
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(data.base // SECOND))
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(data.base // SECOND + 600))
    (row,) = data.get("/v1/analytics/summary", started_after=after, started_before=before).json()["groups"]
    assert row["runs"] == 9
