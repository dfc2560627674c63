"""Web UI page loads in headless Chromium against a live server (pytest-benchmark).

- the runs list's first page with 100,000 runs in the store (target < 1 s, measured in the page);
- the timeline of a 5,000-step run, every page of steps fetched and laid out (target < 2 s).

The benchmark times the whole navigation as Playwright sees it; ``extra_info`` keeps the page's own
performance.now() figure, which is what the targets are about. Under ``--benchmark-disable`` (the smoke
run of ``make test``) sizes shrink. Skipped without Playwright or /usr/bin/chromium.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otlp_receiver.store.index import RunIndex
from tests.live import LiveServer
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, sign_in
from tests.ui.seed import big_trace, load_bulk_runs, send_trace


@pytest.fixture(scope="module")
def sizes(request: pytest.FixtureRequest) -> tuple[int, int]:
    """(bulk runs, steps of the big run)."""
    return (5_000, 500) if request.config.getoption("benchmark_disable") else (100_000, 5_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sizes: tuple[int, int]) -> Iterator[tuple[LiveServer, str]]:
    runs, steps = sizes
    data = tmp_path_factory.mktemp("ui-bench") / "data"
    data.mkdir(parents=True)
    index = RunIndex(data / "traceward.sqlite3")
    load_bulk_runs(index, runs)
    index.writer.conn.close()
    srv = LiveServer(data).start()
    trace_id, specs = big_trace(random.Random(3), time.time_ns() - 600 * 10**9, steps)
    run_id = send_trace(srv, trace_id, specs, service="planner-svc")
    srv.wait_run(run_id, lambda r: r["status"] != "running" and r["step_count"] == steps, timeout_s=120)
    yield srv, run_id
    srv.stop()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright import sync_api

    assert Path(CHROMIUM).exists() and shutil.which(CHROMIUM), \
        f"{CHROMIUM} is not installed: `make test` installs Debian's chromium package"
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-bench")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()


def _load(page: Any, url: str, mark: str, attr: str) -> float:
    page.goto(url)
    page.wait_for_selector(f"body[{attr}]", state="attached", timeout=30_000)
    return float(page.evaluate(f"window.__traceward.{mark}"))


def test_runs_list_first_page(benchmark: Any, server: tuple[LiveServer, str], page: Any) -> None:
    srv, _ = server
    sign_in(page, srv, next_path="/ui/runs")
    in_page: list[float] = []
    benchmark.pedantic(lambda: in_page.append(_load(page, f"{srv.api_url}/ui/runs", "runsRendered",
                                                    "data-runs-rendered")), rounds=5, iterations=1)
    benchmark.extra_info["in_page_ms"] = in_page
    assert min(in_page) < 1000


def test_big_run_timeline(benchmark: Any, server: tuple[LiveServer, str], page: Any) -> None:
    srv, run_id = server
    sign_in(page, srv, next_path="/ui/runs")
    in_page: list[float] = []
    benchmark.pedantic(lambda: in_page.append(_load(page, f"{srv.api_url}/ui/runs/{run_id}", "timelineRendered",
                                                    "data-timeline-rendered")), rounds=5, iterations=1)
    benchmark.extra_info["in_page_ms"] = in_page
    assert min(in_page) < 2000
