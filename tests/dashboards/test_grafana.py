"""The shipped Grafana dashboards and trace-view link templates.

Every dashboard is well-formed for its schema version (≥ 36), uses templated data sources only, and
every link it holds (and every trace-view link template) resolves to a real GET route of the app,
with query parameters that route (or the API route the page mirrors) accepts.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dashboards.loader import (
    GRAFANA_DIR,
    MIN_SCHEMA_VERSION,
    DashboardError,
    LinkTemplate,
    load_dashboards,
    load_trace_links,
    parse_dashboard,
)
from server.app import create_app
from server.settings import Settings

MIRRORS = {"/ui/runs": "/v1/runs", "/ui/diff": "/v1/diff"}
"""UI pages whose query string is the API route's (the page forwards it)."""
PROMQL_METRIC = re.compile(r"\b(traceward_[a-z0-9_]+)")


@cache
def _app() -> Any:
    return create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]  # only settings is read


@cache
def _app_routes() -> tuple[tuple[re.Pattern[str], str, frozenset[str]], ...]:
    routes = []
    for route in _app().routes:
        pattern = re.sub(r"\{[^}:]+:path\}", ".+", route.path)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
        routes.append((re.compile(f"^{pattern}$"), route.path_format, frozenset(getattr(route, "methods", ()))))
    return tuple(routes)


@cache
def _query_params(path_format: str) -> frozenset[str]:
    operation = _app().openapi_schema.to_schema()["paths"][path_format]["get"]
    return frozenset(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")


def _resolve(link: LinkTemplate) -> str:
    matches = [(fmt, methods) for pattern, fmt, methods in _app_routes() if pattern.match(link.path)]
    assert matches, f"{link.source}: {link.url} matches no route of the app"
    fmt = next((f for f, methods in matches if "GET" in methods), None)
    assert fmt is not None, f"{link.source}: {link.url} has no GET route"
    return fmt


def _all_links() -> list[LinkTemplate]:
    return [link for board in load_dashboards() for link in board.links] + load_trace_links()


def _board(**changes: Any) -> dict[str, Any]:
    data = json.loads((GRAFANA_DIR / "traceward-agents.json").read_text())
    data.update(changes)
    return data


def test_every_dashboard_is_well_formed_for_its_schema_version() -> None:
    boards = load_dashboards()
    assert {b.name for b in boards} == {p.name for p in GRAFANA_DIR.glob("*.json")} and len(boards) >= 2
    assert len({b.uid for b in boards}) == len(boards)
    for board in boards:
        assert board.data["schemaVersion"] >= MIN_SCHEMA_VERSION
        assert board.data["panels"] and all(p["gridPos"]["w"] <= 24 for p in board.data["panels"])


def test_datasources_are_templated_with_inputs_for_prometheus_and_infinity() -> None:
    kinds = {}
    for board in load_dashboards():
        for variable in board.data["templating"]["list"]:
            if variable["type"] == "datasource":
                kinds[variable["name"]] = variable["query"]
    assert kinds == {"DS_PROMETHEUS": "prometheus", "DS_INFINITY": "yesoreyeram-infinity-datasource"}
    text = "".join(p.read_text() for p in GRAFANA_DIR.glob("*.json"))
    uids = set(re.findall(r'"uid":\s*"([^"]+)"', text))
    assert uids <= {"${DS_PROMETHEUS}", "${DS_INFINITY}", "-- Grafana --", "traceward-agents", "traceward-runs"}


def test_a_hard_coded_datasource_uid_is_refused() -> None:
    data = _board()
    data["panels"][1]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    with pytest.raises(DashboardError, match="hard-coded datasource 'P1809F7CD0C75ACF3'"):
        parse_dashboard("bad.json", json.dumps(data))


def test_an_old_schema_version_and_a_link_outside_traceward_are_refused() -> None:
    data = _board(schemaVersion=27, links=[{"title": "x", "type": "link", "url": "http://elsewhere/ui"}])
    with pytest.raises(DashboardError) as caught:
        parse_dashboard("bad.json", json.dumps(data))
    assert "schemaVersion must be an integer ≥ 36" in str(caught.value)
    assert "must start with ${traceward_url}/" in str(caught.value)
    # details follow the error envelope's {field: message} shape: strings, not a list
    problems = caught.value.details["problems"]
    assert isinstance(problems, str)
    assert "schemaVersion" in problems and "${traceward_url}/" in problems


def test_an_unknown_datasource_variable_and_invalid_json_are_refused() -> None:
    data = _board()
    data["panels"][1]["datasource"] = {"type": "prometheus", "uid": "${DS_LOKI}"}
    with pytest.raises(DashboardError, match="not a datasource variable"):
        parse_dashboard("bad.json", json.dumps(data))
    with pytest.raises(DashboardError, match="not JSON"):
        parse_dashboard("bad.json", "{")


def test_every_link_template_resolves_to_a_real_route_of_the_app() -> None:
    links = _all_links()
    assert len(links) >= 10
    for link in links:
        path_format = _resolve(link)
        accepted = _query_params(MIRRORS.get(path_format, path_format))
        names = {name for name, _ in link.query}
        assert names <= accepted, f"{link.source}: {link.url}: {sorted(names - accepted)} not accepted by {path_format}"


def test_every_run_id_column_links_to_the_run_view_and_run_pairs_to_the_diff_view() -> None:
    for board in load_dashboards():
        for panel in board.data["panels"]:
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                if override["matcher"]["options"] != "Run":
                    continue
                urls = [link["url"] for prop in override["properties"] if prop["id"] == "links" for link in prop["value"]]
                assert "${traceward_url}/ui/runs/${__value.raw}" in urls, panel["title"]
    runs_board = next(b for b in load_dashboards() if b.uid == "traceward-runs")
    pairs = [link for link in runs_board.links if link.path == "/ui/diff"]
    assert {tuple(sorted(dict(link.query))) for link in pairs} == {("profile", "runA", "runB")}
    assert any(dict(link.query)["runB"] == "${runB}" for link in pairs)  # the dashboard link for a chosen pair


def test_trace_view_links_open_the_run_and_the_previous_run_diff() -> None:
    by_path = {(link.path, tuple(name for name, _ in link.query)) for link in load_trace_links()}
    assert ("/ui/runs/x", ()) in by_path and ("/ui/diff/latest", ("run",)) in by_path


def test_infinity_queries_read_documented_api_routes() -> None:
    queries = [q for board in load_dashboards() for q in board.queries]
    assert {q.path for q in queries} == {"/v1/runs", "/v1/findings", "/v1/approvals"}
    for query in queries:
        path_format = _resolve(query)
        assert {name for name, _ in query.query} <= _query_params(path_format), query.source


def test_prometheus_queries_use_metrics_the_server_exports() -> None:
    source = Path(__file__).resolve().parents[2] / "server" / "metrics.py"
    exported = set(re.findall(r"traceward_[a-z0-9_]+", source.read_text()))
    used = set()
    for board in load_dashboards():
        text = json.dumps(board.data)
        used |= {re.sub(r"_(bucket|count|sum)$", "", name) for name in PROMQL_METRIC.findall(text)}
    used.discard("traceward_url")
    assert used, "no Prometheus metric in the dashboards"
    missing = {name for name in used if name not in exported and name.removesuffix("_total") not in exported}
    assert not missing, f"metrics not exported by server/metrics.py: {sorted(missing)}"
