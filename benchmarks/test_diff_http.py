"""Diff throughput through the HTTP API on loopback: 100-step run pairs (target ≥ 200 diffs/s)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live import ADMIN_KEY, LiveServer

BATCH = 50


def _steps(n: int, variant: str) -> list[dict[str, object]]:
    steps = []
    for i in range(n):
        kind = ("model", "tool")[i % 2]
        steps.append({"type": kind, "name": f"{kind} {i % 7}", "ts": f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}Z",
                      "payload": {"input": {"q": f"step {i}", "note": "x" * 400},
                                  "output": {"answer": variant if i == n // 2 else "same"}},
                      **({"tool_name": f"tool{i % 5}"} if kind == "tool" else {"model_name": "gpt-4o"})})
    return steps


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    srv = LiveServer(tmp_path_factory.mktemp("diffhttp") / "data").start()
    ids = []
    for variant in ("a", "b"):
        run = srv.post("/v1/runs", json={"name": "bench"}).json()
        srv.post(f"/v1/runs/{run['run_id']}/steps", json={"steps": _steps(100, variant)})
        srv.wait_run(run["run_id"], lambda r: r["step_count"] == 100)
        ids.append(run["run_id"])
    yield srv, ids[0], ids[1]
    srv.stop()


def test_diff_http_throughput_100_steps(benchmark, pair: tuple[LiveServer, str, str]) -> None:
    srv, a, b = pair
    with httpx.Client(base_url=srv.api_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        def batch() -> None:
            for _ in range(BATCH):
                assert client.get("/v1/diff", params={"runA": a, "runB": b}).status_code == 200
        benchmark.pedantic(batch, rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.stats:
        rate = BATCH / benchmark.stats.stats.median
        benchmark.extra_info["diffs_per_s"] = round(rate)
        print(f"\n{rate:.0f} diffs/s (100-step pairs, one client, HTTP on loopback)")
