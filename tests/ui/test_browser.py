"""The web UI in a real browser (headless Debian Chromium via Playwright) against a live, seeded server.

Covers the issue's walk-through: sign in, open the runs list, filter, open a run, open a diff from two
selected runs, approve a pending approval and see the waiting SDK call return; plus roles (a viewer sees
no approve button), the other pages, keyboard use and the tablet width. Screenshots of every page go
to test-artifacts/ui/.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider

from governance.sdk import GovernanceClient
from tests.live import ADMIN_KEY, INGEST_KEY, wait_until
from tests.ui.conftest import APPROVER_KEY, VIEWER_KEY, Seeded, screenshot, sign_in

pytestmark = pytest.mark.e2e


def wait_js(page: Any, expression: str, timeout_s: float = 15) -> None:
    """Poll a JS expression with page.evaluate: wait_for_function evals strings, which the pages' CSP forbids."""
    wait_until(lambda: bool(page.evaluate(expression)), timeout_s, what=expression)


def wait_rendered(page: Any, name: str, timeout_ms: int = 15_000) -> None:
    """Wait for a page's markRendered(name) (the body gets data-<name>="true")."""
    attr = "data-" + "".join(f"-{c.lower()}" if c.isupper() else c for c in name)
    page.wait_for_selector(f"body[{attr}]", state="attached", timeout=timeout_ms)


def test_sign_in_refuses_an_ingest_key_and_keeps_the_token_out_of_urls(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    page.goto(f"{server.api_url}/ui/runs")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/login")
    page.fill("#token", INGEST_KEY)
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "can't read" in page.inner_text("#login-error")
    screenshot(page, "login")
    page.fill("#token", ADMIN_KEY)
    page.click("#login-submit")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/runs")
    assert ADMIN_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('traceward.token')") == ADMIN_KEY
    page.click("#sign-out")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/login")
    assert page.evaluate("sessionStorage.getItem('traceward.token')") is None


def test_runs_list_filters_and_pages(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    sign_in(page, server, next_path="/ui/runs")
    wait_rendered(page, "runsRendered")
    assert page.locator("#runs tbody tr").count() == 50
    first_page = page.locator("#runs tbody tr").first.get_attribute("data-run-id")
    page.click("#next-page")
    wait_js(page, "document.querySelector('#page-info').textContent.startsWith('Page 2')")
    assert page.locator("#runs tbody tr").first.get_attribute("data-run-id") != first_page
    page.fill("input[name=agent]", "travel-agent")
    page.click("#filters button[type=submit]")
    wait_js(page, "document.querySelectorAll('#runs tbody tr').length === 3")
    assert "agent=travel-agent" in page.url
    ids = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.runId)")
    assert ids == list(reversed(seeded.travel))  # newest first
    assert page.locator("#runs tbody tr .m-error").count() == 1
    screenshot(page, "runs-filtered")
    page.select_option("select[name=has_error]", "true")
    page.click("#filters button[type=submit]")
    wait_js(page, "document.querySelectorAll('#runs tbody tr').length === 1")
    assert page.locator("#runs tbody tr").first.get_attribute("data-run-id") == seeded.travel[2]


def test_run_view_shows_the_timeline_and_step_details(page: Any, seeded: Seeded) -> None:
    server, run_id = seeded.server, seeded.travel[2]
    sign_in(page, server, next_path=f"/ui/runs/{run_id}")
    wait_rendered(page, "timelineRendered")
    assert page.locator(".tl-row").count() == 6  # root, 2 models, search, hotel, orphan
    assert page.locator(".tl-row .m-error").count() >= 1
    assert page.locator(".tl-row .m-orphan").count() == 1
    page.wait_for_selector("#chain-state.chain-ok")
    hotel = page.locator(".tl-select", has_text="execute_tool book_hotel")
    hotel.click()
    page.wait_for_selector("#step-detail .json")
    detail = page.inner_text("#step-detail")
    assert "hotel API returned 503" in detail
    markers = page.locator("#step-detail .redacted")
    assert markers.count() >= 1 and markers.first.inner_text().startswith("[REDACTED:")
    assert "sk-live-4f9a8b7c" not in page.content()
    assert "prev_hash" in detail and "✓ linked" in detail
    screenshot(page, "run-view")


def test_timeline_is_keyboard_navigable(page: Any, seeded: Seeded) -> None:
    server, run_id = seeded.server, seeded.travel[0]
    sign_in(page, server, next_path=f"/ui/runs/{run_id}")
    wait_rendered(page, "timelineRendered")
    page.locator(".tl-select").first.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    wait_js(page, "location.hash.startsWith('#seq-')")
    focused = page.evaluate("document.activeElement.dataset.index")
    assert focused == "1"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")  # collapse the root
    wait_js(page, "document.querySelectorAll('.tl-row').length === 1")
    page.keyboard.press("ArrowRight")
    wait_js(page, "document.querySelectorAll('.tl-row').length > 1")


def test_diff_of_two_selected_runs(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    sign_in(page, server, next_path="/ui/runs?" + urlencode({"agent": "travel-agent"}))
    wait_rendered(page, "runsRendered")
    page.check(f"tr[data-run-id='{seeded.travel[1]}'] input[type=checkbox]")
    page.check(f"tr[data-run-id='{seeded.travel[0]}'] input[type=checkbox]")
    assert page.is_disabled(f"tr[data-run-id='{seeded.travel[2]}'] input[type=checkbox]")
    page.click("#diff-selected")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/diff")
    query = parse_qs(urlsplit(page.url).query)
    assert (query["runA"], query["runB"], query["profile"]) == ([seeded.travel[0]], [seeded.travel[1]], ["default"])
    wait_rendered(page, "diffRendered")
    summary = page.inner_text("#diff-summary")
    assert "gpt-4o-mini" in summary  # model added
    assert page.locator(".pair.p-added").count() >= 1  # the retried search
    assert page.locator(".pair.p-changed .changes .old").count() >= 1
    page.click("#jump-divergence")
    assert page.evaluate("document.activeElement.classList.contains('pair')")
    screenshot(page, "diff")
    page.select_option("#profile", "structure")
    page.wait_for_url(lambda url: "profile=structure" in url)
    wait_js(page, "document.querySelector('#diff-summary').textContent.includes('profile structure')")


def test_diff_latest_resolves_the_newest_pair_in_the_browser(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    sign_in(page, server, next_path="/ui/runs")
    page.goto(f"{server.api_url}/ui/diff/latest?agent=travel-agent")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/diff")
    query = parse_qs(urlsplit(page.url).query)
    assert (query["runA"], query["runB"]) == ([seeded.travel[1]], [seeded.travel[2]])
    page.goto(f"{server.api_url}/ui/diff/latest?run={seeded.travel[1]}")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/diff")
    query = parse_qs(urlsplit(page.url).query)
    assert (query["runA"], query["runB"]) == ([seeded.travel[0]], [seeded.travel[1]])
    wait_rendered(page, "diffRendered")


class WaitingAgent(threading.Thread):
    """An agent blocked in GovernanceClient.guard until a person decides its approval."""

    def __init__(self, server_url: str, amount: int) -> None:
        super().__init__(daemon=True)
        self.server_url, self.amount = server_url, amount
        self.provider = TracerProvider()
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        tracer = self.provider.get_tracer("ui-test-agent")
        context = {"summary": "Pay the Lisbon hotel invoice", "risk_score": 0.72, "blast_radius": "one supplier",
                   "evidence_links": ["https://example.com/invoices/118"], "rollback_plan": "Refund within 24 h"}
        try:
            with GovernanceClient(self.server_url, INGEST_KEY, tracer_provider=self.provider, poll_wait_s=5,
                                  approval_timeout_s=60) as client, \
                    tracer.start_as_current_span("invoke_agent billing"), \
                    client.guard("payments.send", {"amount": self.amount, "to": "hotel"}, agent="billing",
                                 context=context) as decided:
                self.result = dict(decided.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc


def test_approving_in_the_inbox_releases_the_waiting_sdk_call(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    agent = WaitingAgent(server.api_url, 5000)
    agent.start()
    sign_in(page, server, APPROVER_KEY, next_path="/ui/approvals")
    card = page.locator("#pending article", has_text="Pay the Lisbon hotel invoice")
    card.wait_for(timeout=20_000)
    assert card.locator(".risk meter").count() == 1 and "one supplier" in card.inner_text()
    assert card.locator("a[href='https://example.com/invoices/118']").count() == 1
    assert "Refund within 24 h" in card.inner_text()
    screenshot(page, "approvals-pending")
    card.locator("button", has_text="Approve…").click()
    card.locator("textarea[name=args]").fill('{"amount": 4500, "to": "hotel"}')
    card.locator("input[name=reason]").fill("capped at 4500")
    card.locator("button", has_text="Confirm approval").click()
    agent.join(timeout=30)
    assert not agent.is_alive() and agent.error is None, agent.error
    assert agent.result == {"amount": 4500, "to": "hotel"}
    page.locator("#decided article", has_text="Pay the Lisbon hotel invoice").wait_for()
    screenshot(page, "approvals-decided")


def test_a_viewer_sees_approvals_without_approve_buttons(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    decided = server.post("/v1/decisions", json={
        "tool_name": "payments.send", "args": {"amount": 900, "to": "airline"}, "trace_id": "ab" * 16,
        "span_id": "cd" * 8, "context": {"summary": "Rebook the flight"}})
    assert decided.json()["decision"] == "require_approval"
    sign_in(page, server, VIEWER_KEY, next_path="/ui/approvals")
    card = page.locator("#pending article", has_text="Rebook the flight")
    card.wait_for(timeout=20_000)
    assert card.locator("button").count() == 0
    assert page.is_visible("#viewer-note")
    assert page.is_hidden("li[data-needs=admin]")
    screenshot(page, "approvals-viewer")


def test_policies_audit_analytics_and_home_pages_render(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    sign_in(page, server, next_path="/ui/policies")
    wait_rendered(page, "policiesRendered")
    assert "large-payments" in page.inner_text("#policy") and page.locator("#versions .b-ok").count() == 1
    screenshot(page, "policies")
    page.goto(f"{server.api_url}/ui/audit")
    wait_rendered(page, "auditRendered")
    assert page.locator("#audit tbody tr").count() >= 1
    page.click("#verify-chain")
    page.wait_for_selector("#verify-result.chain-ok")
    screenshot(page, "audit")
    page.goto(f"{server.api_url}/ui/analytics")
    wait_rendered(page, "analyticsRendered", timeout_ms=30_000)
    assert page.locator("#chart-latency svg, #chart-latency [data-unavailable], #chart-latency p").count() >= 1
    screenshot(page, "analytics")
    page.goto(f"{server.api_url}/ui")
    wait_rendered(page, "homeRendered", timeout_ms=30_000)
    assert page.locator("#recent-runs tbody tr").count() == 10
    screenshot(page, "home")


def test_pages_fit_a_tablet_width(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    page.set_viewport_size({"width": 768, "height": 1024})
    sign_in(page, server, next_path="/ui/runs")
    for name, path, rendered in (
            ("runs", "/ui/runs", "runsRendered"), ("run", f"/ui/runs/{seeded.travel[2]}", "timelineRendered"),
            ("diff", f"/ui/diff?runA={seeded.travel[0]}&runB={seeded.travel[1]}", "diffRendered"),
            ("approvals", "/ui/approvals", "approvalsRendered")):
        page.goto(f"{server.api_url}{path}")
        wait_rendered(page, rendered)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768, f"{path} overflows the tablet width: {width}px"
        screenshot(page, f"tablet-{name}")


def test_a_signed_out_tab_is_sent_to_sign_in(page: Any, seeded: Seeded) -> None:
    server = seeded.server
    page.goto(f"{server.api_url}/ui/runs/{seeded.travel[0]}")
    page.wait_for_url(lambda url: urlsplit(url).path == "/ui/login")
    assert parse_qs(urlsplit(page.url).query)["next"] == [f"/ui/runs/{seeded.travel[0]}"]
    wait_until(lambda: page.is_visible("#token"), 5, what="the sign-in form")
