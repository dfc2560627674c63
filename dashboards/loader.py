"""Grafana dashboards (``dashboards/grafana/*.json``) and trace-view link templates: load and validate.

What a shipped dashboard must satisfy:

- well-formed for its schema: ``uid``, ``title``, ``schemaVersion`` ≥ :data:`MIN_SCHEMA_VERSION`,
  ``templating.list``, and panels with unique ids, a ``type`` and a ``gridPos``;
- **templated data sources**: every ``datasource`` reference (dashboard, panel, target, variable) is
  ``${VAR}`` naming a ``datasource``-type variable of the same dashboard (or Grafana's built-in
  annotation source); a hard-coded uid would break on every other Grafana;
- **link templates**: every link (dashboard links, panel links, data links in field defaults and
  overrides) is based on ``${traceward_url}``, so it follows the Traceward base URL variable. They
  are returned as :class:`LinkTemplate` values for the caller to check against the app's routes;
- Infinity queries (``yesoreyeram-infinity-datasource``) also read ``${traceward_url}/v1/…``.

Pure: JSON in, values out. Reading the packaged files is the only I/O; no HTTP, no Litestar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from otlp_receiver.errors import InvalidInputError

GRAFANA_DIR = Path(__file__).parent / "grafana"
TRACE_LINKS_FILE = Path(__file__).parent / "trace_links.json"
MIN_SCHEMA_VERSION = 36
BASE_URL_VARIABLE = "traceward_url"
INFINITY = "yesoreyeram-infinity-datasource"
BUILT_IN_DATASOURCE_UIDS = frozenset({"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"})
_VARIABLE_REF = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")
_TEMPLATE_PART = re.compile(r"\$\{[^}]*\}|#\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_BASE = "${" + BASE_URL_VARIABLE + "}"
PLACEHOLDER = "x"
"""What a template variable in a path or query becomes when a link is resolved against routes."""


class DashboardError(InvalidInputError):
    """A dashboard or link file is not valid JSON or breaks one of the rules above (all problems listed)."""

    code = "invalid_dashboard"


@dataclass(frozen=True, slots=True)
class LinkTemplate:
    """A link into Traceward: where it was found, its title and URL, and the URL's path and query."""

    source: str
    title: str
    url: str
    path: str
    """The path after ``${traceward_url}`` with every template variable replaced by :data:`PLACEHOLDER`."""
    query: tuple[tuple[str, str], ...]
    """Query parameters (values as written, variables included)."""


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A validated dashboard with the links and Infinity query URLs it holds."""

    name: str
    data: Mapping[str, Any]
    links: tuple[LinkTemplate, ...]
    queries: tuple[LinkTemplate, ...]

    @property
    def uid(self) -> str:
        """The dashboard's uid."""
        return str(self.data["uid"])


def parse_link(source: str, title: str, url: str) -> LinkTemplate:
    """Split a ``${traceward_url}/path?query`` template.

    Raises:
        DashboardError: the URL is not based on ``${traceward_url}``.
    """
    if not url.startswith(_BASE + "/"):
        raise DashboardError(f"{source}: link {url!r} must start with {_BASE}/")
    rest = url[len(_BASE):]
    parts = urlsplit(_TEMPLATE_PART.sub(PLACEHOLDER, rest.split("?", 1)[0]))
    query = tuple(parse_qsl(rest.split("?", 1)[1], keep_blank_values=True)) if "?" in rest else ()
    return LinkTemplate(source, title, url, parts.path, query)


def parse_dashboard(name: str, text: str) -> Dashboard:
    """Parse and validate one dashboard's JSON text.

    Raises:
        DashboardError: invalid JSON, or every rule it breaks.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DashboardError(f"{name}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DashboardError(f"{name}: a dashboard is a JSON object")
    problems = [*_structure_problems(data), *_datasource_problems(data)]
    links, queries = [], []
    for source, title, url in _links(data):
        try:
            links.append(parse_link(source, title, url))
        except DashboardError as exc:
            problems.append(str(exc))
    for source, url, params in _infinity_urls(data):
        try:
            query = parse_link(source, "query", url)
        except DashboardError as exc:
            problems.append(str(exc))
        else:
            queries.append(LinkTemplate(query.source, query.title, query.url, query.path, query.query + params))
    if problems:
        raise DashboardError(f"{name}: " + "; ".join(problems), details={"problems": "; ".join(problems)})
    return Dashboard(name, data, tuple(links), tuple(queries))


def load_dashboards(directory: Path = GRAFANA_DIR) -> list[Dashboard]:
    """Every ``*.json`` dashboard in ``directory``, validated, by file name."""
    return [parse_dashboard(path.name, path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))]


def load_trace_links(path: Path = TRACE_LINKS_FILE) -> list[LinkTemplate]:
    """The trace-view link templates (both the Grafana and the Jaeger UI form of each)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["links"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DashboardError(f"{path.name}: expected {{'links': [...]}}") from exc
    return [parse_link(f"{path.name}:{entry['key']}:{form}", entry["title"], entry[form])
            for entry in entries for form in ("grafana", "jaeger")]


# -- rules --------------------------------------------------------------------------------------------------------

def _structure_problems(data: Mapping[str, Any]) -> Iterator[str]:
    for key in ("uid", "title"):
        if not isinstance(data.get(key), str) or not data[key]:
            yield f"missing {key}"
    version = data.get("schemaVersion")
    if not isinstance(version, int) or version < MIN_SCHEMA_VERSION:
        yield f"schemaVersion must be an integer ≥ {MIN_SCHEMA_VERSION}, got {version!r}"
    if not isinstance(data.get("templating", {}).get("list"), list):
        yield "missing templating.list"
    names = {v.get("name") for v in _variables(data)}
    if BASE_URL_VARIABLE not in names:
        yield f"missing the {BASE_URL_VARIABLE} variable"
    ids: set[Any] = set()
    for panel in _panels(data):
        where = f"panel {panel.get('id')!r} ({panel.get('title', '')!r})"
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            yield f"{where}: panel ids must be unique integers"
        ids.add(panel.get("id"))
        if not panel.get("type"):
            yield f"{where}: missing type"
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            yield f"{where}: gridPos needs integer h, w, x, y"


def _datasource_problems(data: Mapping[str, Any]) -> Iterator[str]:
    ds_variables = {v["name"]: v.get("query") for v in _variables(data) if v.get("type") == "datasource"}
    for path, ref in _datasource_refs(data):
        uid = ref.get("uid") if isinstance(ref, Mapping) else ref
        if uid in BUILT_IN_DATASOURCE_UIDS:
            continue
        match = _VARIABLE_REF.match(uid) if isinstance(uid, str) else None
        if match is None:
            yield f"{path}: hard-coded datasource {uid!r}; use a datasource variable such as ${{DS_PROMETHEUS}}"
        elif match.group(1) not in ds_variables:
            yield f"{path}: {uid} is not a datasource variable of this dashboard"
        elif isinstance(ref, Mapping) and ref.get("type") not in (None, ds_variables[match.group(1)]):
            yield f"{path}: type {ref.get('type')!r} does not match the variable's {ds_variables[match.group(1)]!r}"


# -- walking ------------------------------------------------------------------------------------------------------

def _variables(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = data.get("templating", {}).get("list", [])
    return [v for v in found if isinstance(v, Mapping)] if isinstance(found, list) else []


def _panels(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in data.get("panels", []) or []:
        if isinstance(panel, Mapping):
            yield panel
            yield from _panels(panel)  # panels nested in collapsed rows


def _datasource_refs(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "datasource" and value is not None:
                yield f"{path}.datasource", value
            else:
                yield from _datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _datasource_refs(item, f"{path}[{i}]")


def _links(data: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    for link in data.get("links", []) or []:
        if link.get("type", "link") == "link":
            yield "dashboard links", str(link.get("title", "")), str(link.get("url", ""))
    for panel in _panels(data):
        where = f"panel {panel.get('title', panel.get('id'))!r}"
        for link in panel.get("links", []) or []:
            yield where, str(link.get("title", "")), str(link.get("url", ""))
        field_config = panel.get("fieldConfig", {})
        for link in field_config.get("defaults", {}).get("links", []) or []:
            yield where, str(link.get("title", "")), str(link.get("url", ""))
        for override in field_config.get("overrides", []) or []:
            for prop in override.get("properties", []):
                if prop.get("id") == "links":
                    for link in prop.get("value", []) or []:
                        yield f"{where} field {override.get('matcher', {}).get('options')!r}", \
                            str(link.get("title", "")), str(link.get("url", ""))


def _infinity_urls(data: Mapping[str, Any]) -> Iterator[tuple[str, str, tuple[tuple[str, str], ...]]]:
    for panel in _panels(data):
        for target in panel.get("targets", []) or []:
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if isinstance(datasource, Mapping) and datasource.get("type") == INFINITY:
                params = tuple((str(p.get("key")), str(p.get("value")))
                               for p in target.get("url_options", {}).get("params", []) or [])
                yield f"panel {panel.get('title', panel.get('id'))!r} query", str(target.get("url", "")), params
