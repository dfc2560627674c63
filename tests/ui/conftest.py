"""Fixtures for the browser tests: one seeded live server for the package, and headless Chromium.

The server holds 100,000 bulk runs (written into the index before it starts), a few travel-agent runs
and one 5,000-step run sent over OTLP/HTTP, viewer and approver keys, and an active policy that gates
``payments.send``. Chromium is Debian's (/usr/bin/chromium), driven by Playwright; Playwright's own
browser downloads are never used.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from tests.live import ADMIN_KEY, LiveServer, wait_until
from tests.ui.seed import TraceShape, big_trace, load_bulk_runs, send_trace, travel_trace

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
APPROVER_KEY = "tw_0f0f0f0f_ui-approver-secret-0123456789abcdefghijklmnopq"
VIEWER_KEY = "tw_0e1e2e3e_ui-viewer-secret-0123456789abcdefghijklmnopqrs"
BULK_RUNS = 100_000
BIG_RUN_STEPS = 5_000
POLICY_YAML = """
description: UI tests
default: {decision: allow, reason_code: ungoverned}
tools:
  "payments.*": {action_class: external_write, autonomy_level: L3}
rules:
  - id: small-payments
    match: {tool: payments.send, args: {$.amount: {lte: 100}}}
    decision: allow
    reason_code: small_payment
  - id: large-payments
    match: {tool: payments.send, args: {$.amount: {lte: 100000}}}
    decision: require_approval
    reason_code: large_payment
"""


@dataclass
class Seeded:
    """The live server and the ids of what was sent to it."""

    server: LiveServer
    travel: list[str] = field(default_factory=list)
    """Travel-agent runs, oldest first: baseline, retry + other model, failing tool + secret + orphan."""
    big_run: str = ""


def _prepare_index(data_dir: Path) -> None:
    index = RunIndex(data_dir / "traceward.sqlite3")
    load_bulk_runs(index, BULK_RUNS)
    keys = KeyStore(index)
    keys.create(tenant_id="default", project_id="default", role="approver", key_text=APPROVER_KEY)
    keys.create(tenant_id="default", project_id="default", role="viewer", key_text=VIEWER_KEY)
    index.writer.conn.close()


def _activate_policy(server: LiveServer) -> None:
    created = server.post("/v1/policies", key=ADMIN_KEY, content=POLICY_YAML,
                          headers={"content-type": "application/yaml"})
    assert created.status_code == 201, created.text
    activated = server.post(f"/v1/policies/{created.json()['policy_id']}:activate", key=ADMIN_KEY)
    assert activated.status_code == 200, activated.text


def _seed_traces(seeded: Seeded) -> None:
    rng = random.Random(5)
    server = seeded.server
    now = time.time_ns()
    shapes = [TraceShape(), TraceShape(model="gpt-4o-mini", retry_search=True),
              TraceShape(failing_tool=True, secret=True, orphan=True)]
    for i, shape in enumerate(shapes):
        trace_id, specs = travel_trace(rng, now - (600 - i * 120) * 10**9, shape)
        seeded.travel.append(send_trace(server, trace_id, specs, service="travel-svc"))
    trace_id, specs = big_trace(rng, now - 900 * 10**9, BIG_RUN_STEPS)
    seeded.big_run = send_trace(server, trace_id, specs, service="planner-svc")
    for run_id, n in [*((r, None) for r in seeded.travel), (seeded.big_run, BIG_RUN_STEPS)]:
        server.wait_run(run_id, lambda r, n=n: r["status"] != "running" and (n is None or r["step_count"] == n),
                        timeout_s=120)
    wait_until(lambda: len(server.all_steps(seeded.big_run, limit=1000)) == BIG_RUN_STEPS, 60, what="big run steps")


@pytest.fixture(scope="package")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A live server with bulk runs, travel runs, a 5,000-step run, more keys and an active policy."""
    data_dir = tmp_path_factory.mktemp("ui") / "data"
    data_dir.mkdir(parents=True)
    _prepare_index(data_dir)
    server = LiveServer(data_dir).start()
    try:
        _activate_policy(server)
        seeded = Seeded(server)
        _seed_traces(seeded)
        yield seeded
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium with a fresh profile (`make test` installs both Playwright and Chromium)."""
    from playwright import sync_api

    assert Path(CHROMIUM).exists() and shutil.which(CHROMIUM), \
        f"{CHROMIUM} is not installed: `make test` installs Debian's chromium package"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900}, color_scheme="dark")
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    """A new tab (its own sessionStorage, so nobody is signed in yet)."""
    tab = browser_context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.page_errors = errors
    try:
        yield tab
    finally:
        tab.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def sign_in(page: Any, server: LiveServer, key: str = ADMIN_KEY, *, next_path: str = "/ui") -> None:
    """Sign in through the login page and wait until it has sent us to ``next_path``."""
    page.goto(f"{server.api_url}/ui/login?{urlencode({'next': next_path})}")
    page.fill("#token", key)
    page.click("#login-submit")
    path = urlsplit(next_path).path
    page.wait_for_url(lambda url: urlsplit(url).path == path)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/ui/ (git-ignored)."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
