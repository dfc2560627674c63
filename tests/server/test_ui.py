"""The /ui routes on a live server: public shells with no data, static files, the session helper and
the /ui/diff/latest redirect."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dashboards.pages import PAGES
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

SHELLS = ["/ui", "/ui/login", "/ui/runs", f"/ui/runs/{'ab' * 16}", "/ui/diff?runA=a&runB=b&profile=default",
          "/ui/approvals", "/ui/policies", "/ui/audit", "/ui/analytics", "/ui/diff/latest?agent=x"]


@pytest.fixture(scope="module")
def agent_runs(shared_server: LiveServer) -> Iterator[tuple[str, list[str]]]:
    """Three REST-created runs of one agent, oldest first."""
    agent = f"ui-agent-{secrets.token_hex(4)}"
    ids = []
    for minute in (1, 2, 3):
        resp = shared_server.post("/v1/runs", json={"agent": agent, "started_at": f"2026-11-20T10:0{minute}:00Z"})
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["run_id"])
    for run_id in ids:
        shared_server.wait_run(run_id)
    yield agent, ids


def _get(server: LiveServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.api_url}{path}", headers=headers, timeout=10, follow_redirects=False)


def test_every_shell_is_public_html_without_data(shared_server: LiveServer) -> None:
    for path in SHELLS:
        resp = _get(shared_server, path)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert 'type="module" src="/ui/static/js/pages/' in resp.text
        assert ADMIN_KEY not in resp.text and INGEST_KEY not in resp.text and "ab" * 16 not in resp.text


def test_the_run_page_is_the_same_shell_for_any_run(shared_server: LiveServer) -> None:
    assert _get(shared_server, f"/ui/runs/{'ab' * 16}").text == _get(shared_server, f"/ui/runs/{'cd' * 16}").text
    assert set(PAGES) >= {"run", "runs", "diff", "approvals"}


def test_static_files_are_served_with_etags(shared_server: LiveServer) -> None:
    resp = _get(shared_server, "/ui/static/js/api.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in resp.text and resp.headers["x-content-type-options"] == "nosniff"
    again = _get(shared_server, "/ui/static/js/api.js", **{"if-none-match": resp.headers["etag"]})
    assert again.status_code == 304 and not again.content
    css = _get(shared_server, "/ui/static/css/traceward.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_unknown_and_escaping_static_paths_are_404(shared_server: LiveServer) -> None:
    for path in ("/ui/static/js/nope.js", "/ui/static/../pages.py", "/ui/static/%2e%2e/pages.py",
                 "/ui/static/js/..%2f..%2fpages.py", "/ui/static/"):
        resp = _get(shared_server, path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "not_found"


def test_session_names_the_role_and_needs_a_reader(shared_server: LiveServer) -> None:
    body = shared_server.get("/ui/session", key=ADMIN_KEY).json()
    assert body["role"] == "admin" and body["tenant_id"] == "default"
    assert body["permissions"] == ["admin", "approve", "read"]
    assert _get(shared_server, "/ui/session").status_code == 401
    assert shared_server.get("/ui/session", key=INGEST_KEY).status_code == 403


def test_diff_latest_redirects_to_the_newest_pair_with_a_bearer(shared_server: LiveServer,
                                                                agent_runs: tuple[str, list[str]]) -> None:
    agent, ids = agent_runs
    resp = _get(shared_server, f"/ui/diff/latest?agent={agent}", authorization=f"Bearer {ADMIN_KEY}")
    assert resp.status_code == 302
    target = urlsplit(resp.headers["location"])
    assert target.path == "/ui/diff"
    assert parse_qs(target.query) == {"runA": [ids[1]], "runB": [ids[2]], "profile": ["default"]}


def test_diff_latest_of_a_run_compares_it_with_the_run_before(shared_server: LiveServer,
                                                              agent_runs: tuple[str, list[str]]) -> None:
    _, ids = agent_runs
    resp = _get(shared_server, f"/ui/diff/latest?run={ids[1]}&profile=structure",
                authorization=f"Bearer {ADMIN_KEY}")
    assert resp.status_code == 302
    assert parse_qs(urlsplit(resp.headers["location"]).query) == {
        "runA": [ids[0]], "runB": [ids[1]], "profile": ["structure"]}
    first = _get(shared_server, f"/ui/diff/latest?run={ids[0]}", authorization=f"Bearer {ADMIN_KEY}")
    assert first.status_code == 404 and "no earlier run" in first.json()["error"]["message"]


def test_diff_latest_without_a_credential_serves_the_resolving_page(shared_server: LiveServer) -> None:
    resp = _get(shared_server, "/ui/diff/latest?agent=anything")
    assert resp.status_code == 200 and "/ui/static/js/pages/diff_latest.js" in resp.text


def test_diff_latest_errors_use_the_envelope(shared_server: LiveServer) -> None:
    bearer = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert _get(shared_server, "/ui/diff/latest", **bearer).json()["error"]["code"] == "invalid_input"
    missing = _get(shared_server, f"/ui/diff/latest?agent=nobody-{secrets.token_hex(4)}", **bearer)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_diff_latest_with_a_credential_that_cannot_read_serves_the_page(shared_server: LiveServer) -> None:
    for header in (f"Bearer {INGEST_KEY}", "Bearer tw_00000000_nope", "Basic eDp5"):
        resp = _get(shared_server, "/ui/diff/latest?agent=x", authorization=header)
        assert resp.status_code == 200 and "diff_latest.js" in resp.text, header
