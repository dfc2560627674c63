"""GET /metrics: Prometheus exposition checked by ``promtool check metrics`` and scraped by a real Prometheus.

Needs the Debian package ``prometheus`` (``/usr/bin/prometheus`` and ``/usr/bin/promtool``), which
``make test`` installs; without it those two tests fail and say so. The server runs with
TRACEWARD_METRICS_PUBLIC=false (so Prometheus scrapes with the admin bearer token, as an operator
would configure it) and TRACEWARD_METRICS_MAX_AGENTS=2 (so the label cap shows with three agents).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.auth import PUBLIC, route_permissions
from server.runtime import Runtime
from server.settings import Settings
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer, free_port, wait_until
from tests.server.test_analytics_api import OtlpRun, Tool, send_otlp_json

pytestmark = pytest.mark.e2e
SECOND = 10**9
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("metrics") / "data", extra_env={
        "TRACEWARD_METRICS_PUBLIC": "false", "TRACEWARD_METRICS_MAX_AGENTS": "2"}).start()
    try:
        now = time.time_ns()
        runs = [OtlpRun(start_ns=now - 30 * SECOND, agent="a1", model="gpt-4o", tokens=(100, 10), cost=0.5,
                        output="ok", duration_s=3),
                OtlpRun(start_ns=now - 29 * SECOND, agent="a2", status=2, tools=(Tool("t", error=True),)),
                OtlpRun(start_ns=now - 28 * SECOND, agent="a3", output="ok")]
        send_otlp_json(live, runs)
        live.get(f"/v1/runs/{runs[0].trace}")
        live.post("/v1/decisions", json={"tool_name": "search", "args": {}, "trace_id": runs[0].trace,
                                         "span_id": "0123456789abcdef"})
        yield live
    finally:
        live.stop()


def exposition(server: LiveServer) -> str:
    response = httpx.get(f"{server.api_url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def export_protobuf(server: LiveServer, spans: list[trace_pb2.Span], *, key: str = INGEST_KEY) -> Any:
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.extend(spans)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        return export(request, metadata=(("authorization", f"Bearer {key}"),), timeout=10)


def pb_span(trace_id: bytes, span_id: bytes) -> trace_pb2.Span:
    now = time.time_ns()
    return trace_pb2.Span(trace_id=trace_id, span_id=span_id, name="s", start_time_unix_nano=now,
                          end_time_unix_nano=now + 1000)


def test_agent_red_metrics_with_capped_agent_labels(server: LiveServer) -> None:
    text = exposition(server)
    assert value(text, "traceward_runs_total", status="succeeded", agent="a1") == 1
    assert value(text, "traceward_runs_total", status="failed", agent="a2") == 1
    assert value(text, "traceward_runs_total", status="succeeded", agent="other") == 1  # the third agent
    assert value(text, "traceward_runs_started_total", agent="other") == 1
    assert value(text, "traceward_tokens_total", direction="input", agent="a1") == 100
    assert value(text, "traceward_tokens_total", direction="output", agent="a1") == 10
    assert value(text, "traceward_cost_usd_total", agent="a1") == pytest.approx(0.5)
    assert value(text, "traceward_run_duration_seconds_bucket", agent="a1", le="5.0") == 1
    assert value(text, "traceward_run_duration_seconds_bucket", agent="a1", le="2.5") == 0
    agents = {dict(labels).get("agent") for (name, labels) in samples(text) if name == "traceward_runs_total"}
    assert agents <= {"a1", "a2", "other"}


def test_ingest_flush_api_and_decision_metrics(server: LiveServer) -> None:
    text = exposition(server)
    assert value(text, "traceward_spans_received_total") >= 5  # 2 + 2 + 1 spans in the three runs
    assert value(text, "traceward_spans_accepted_total") >= 5
    assert value(text, "traceward_flush_duration_seconds_count") >= 1
    assert value(text, "traceward_wal_depth_bytes") >= 0 and value(text, "traceward_wal_size_bytes") >= 0
    assert value(text, "traceward_http_request_duration_seconds_count", method="GET", route="/v1/runs/{run_id}",
                 code="2xx") >= 1
    routes = {dict(labels).get("route") for (name, labels) in samples(text)
              if name == "traceward_http_request_duration_seconds_count"}
    assert not any(r and len(r) > 20 and all(c in "0123456789abcdef" for c in r[-32:]) for r in routes)
    assert sum(v for (name, _), v in samples(text).items() if name == "traceward_decisions_total") == 1
    assert value(text, "traceward_approvals_pending") == 0


def test_rejections_are_counted_by_reason(server: LiveServer) -> None:
    before = exposition(server)
    bad_json = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "ab" * 16, "spanId": "zz", "name": "x", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}
    reply = httpx.post(f"{server.otlp_http_url}/v1/traces", content=orjson.dumps(bad_json), timeout=10,
                       headers={"authorization": f"Bearer {INGEST_KEY}", "content-type": "application/json"})
    assert reply.json()["partialSuccess"]["rejectedSpans"] == "1"
    response = export_protobuf(server, [pb_span(b"\x01" * 8, b"\x02" * 8), pb_span(b"\x01" * 16, b"\x02" * 8)])
    assert response.partial_success.rejected_spans == 1
    with pytest.raises(grpc.RpcError):
        export_protobuf(server, [pb_span(b"\x01" * 16, b"\x03" * 8)], key="tw_00000000_wrong")
    unauthenticated = httpx.post(f"{server.otlp_http_url}/v1/traces", content=b"{}", timeout=10,
                                 headers={"content-type": "application/json"})
    assert unauthenticated.status_code == 401
    after = exposition(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("traceward_spans_rejected_total", reason="invalid_span_id") == 1
    assert delta("traceward_spans_rejected_total", reason="invalid_trace_id") == 1
    assert delta("traceward_spans_received_total") == 3
    assert delta("traceward_ingest_requests_rejected_total", transport="grpc", reason="unauthenticated") == 1
    assert delta("traceward_ingest_requests_rejected_total", transport="http", reason="unauthenticated") == 1


def test_metrics_route_needs_admin_when_not_public(server: LiveServer) -> None:
    assert httpx.get(f"{server.api_url}/metrics", timeout=10).status_code == 401
    assert server.get("/metrics", key=INGEST_KEY).status_code == 403


def test_metrics_are_public_by_default_on_loopback_only(tmp_path: Path) -> None:
    assert Settings().metrics_are_public and not Settings(host="0.0.0.0").metrics_are_public
    assert Settings(host="0.0.0.0", metrics_public=True).metrics_are_public
    assert not Settings(metrics_public=False).metrics_are_public
    runtime = Runtime(Settings(data_dir=tmp_path / "data"))
    try:
        handlers = [h for route in create_app(runtime).routes if route.path == "/metrics"
                    for h in getattr(route, "route_handlers", []) if "GET" in h.http_methods]
        assert [route_permissions(h) for h in handlers] == [frozenset({PUBLIC})]
    finally:
        runtime.stop()


def test_promtool_accepts_the_exposition(server: LiveServer, tmp_path: Path) -> None:
    assert PROMTOOL is not None, "promtool missing: `make test` installs Debian's prometheus package"
    checked = subprocess.run([str(PROMTOOL), "check", "metrics"], input=exposition(server).encode(),
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_a_real_prometheus_scrapes_our_series(server: LiveServer, tmp_path: Path) -> None:
    assert PROMETHEUS is not None, "prometheus missing: `make test` installs Debian's prometheus package"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: traceward\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{type: Bearer, credentials: {ADMIN_KEY}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.http_port}']}}]\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        found: dict[str, Any] = {}

        def scraped() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=5,
                                 params={"query": 'sum(traceward_runs_total{status="failed"})'}).json()
            except (httpx.HTTPError, ValueError):
                return False
            found.update(body)
            return body.get("status") == "success" and bool(body["data"]["result"])

        wait_until(scraped, 60, what="Prometheus to scrape traceward_runs_total")
        assert float(found["data"]["result"][0]["value"][1]) == 1
        targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]
        received = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=5,
                             params={"query": "traceward_spans_received_total"}).json()["data"]["result"]
        assert float(received[0]["value"][1]) >= 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
