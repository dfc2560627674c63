"""The runs frame: SQL rows → exactly analysis.frames.RUN_COLUMNS, time range and filters applied in SQL."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.frames import RUN_COLUMNS, RUN_SCHEMA, empty_runs
from otlp_receiver.store.frames import (
    RUN_FRAME_COLUMNS,
    RUN_FRAME_SCHEMA,
    RunFrameCache,
    RunScope,
    load_runs,
    pending_approvals,
    runs_frame,
    step_days,
)
from otlp_receiver.store.index import RunIndex

DAY = 86_400 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def insert_run(index: RunIndex, run_id: str, started_ns: int, **fields: Any) -> None:
    row = {"tenant_id": "t1", "project_id": "p", "run_id": run_id, "status": "succeeded", "started_ns": started_ns,
           "finished_ns": started_ns + 2 * 10**9, "agent": "a1", "service": "svc", "model_names": "[]",
           "tool_names": "[]", **fields}
    if isinstance(row["model_names"], list):
        row["model_names"] = orjson.dumps(row["model_names"]).decode()
    if isinstance(row["tool_names"], list):
        row["tool_names"] = orjson.dumps(row["tool_names"]).decode()
    with index.transaction() as db:
        db["runs"].insert(row)


@pytest.fixture
def index() -> RunIndex:
    return RunIndex(":memory:")


def test_columns_equal_the_analysis_run_columns() -> None:
    assert RUN_FRAME_COLUMNS == RUN_COLUMNS
    assert RUN_FRAME_SCHEMA == RUN_SCHEMA


def test_empty_tenant_gives_the_empty_runs_frame(index: RunIndex) -> None:
    assert_frame_equal(runs_frame(index, "t1").collect(), empty_runs().collect())


def test_row_converts_every_column(index: RunIndex) -> None:
    insert_run(index, "r1", T0, name="plan", service_version="1.2", environment="prod", tokens_in=10,
               tokens_out=5, tokens_cache_read=3, tokens_cache_write=2, tokens_reasoning=1, cost_usd=0.25,
               cost_source="computed", tool_count=2, step_count=7, error_count=1, model_names=["gpt-4o"],
               tool_names=["search", "fetch"])
    frame = load_runs(index, "t1", RunScope())
    assert frame.schema == RUN_SCHEMA
    row = frame.row(0, named=True)
    assert row == {
        "tenant_id": "t1", "project_id": "p", "run_id": "r1", "status": "succeeded", "name": "plan",
        "service": "svc", "service_version": "1.2", "environment": "prod", "agent": "a1", "started_ns": T0,
        "finished_ns": T0 + 2 * 10**9, "duration_ns": 2 * 10**9, "tokens_in": 10, "tokens_out": 5,
        "tokens_cache_read": 3, "tokens_cache_write": 2, "tokens_reasoning": 1, "cost_usd": 0.25,
        "cost_source": "computed", "tool_count": 2, "step_count": 7, "error_count": 1, "model_names": ["gpt-4o"],
        "tool_names": ["search", "fetch"],
    }


def test_running_run_has_no_finish_nor_duration(index: RunIndex) -> None:
    insert_run(index, "r1", T0, status="running", finished_ns=T0 + 5)
    row = load_runs(index, "t1", RunScope()).row(0, named=True)
    assert (row["finished_ns"], row["duration_ns"]) == (None, None)


def test_time_range_is_half_open_and_other_tenants_are_invisible(index: RunIndex) -> None:
    for n in range(5):
        insert_run(index, f"r{n}", T0 + n * DAY)
    insert_run(index, "theirs", T0 + DAY, tenant_id="t2")
    frame = load_runs(index, "t1", RunScope(started_after_ns=T0 + DAY, started_before_ns=T0 + 3 * DAY))
    assert sorted(frame["run_id"]) == ["r1", "r2"]
    assert load_runs(index, "t2", RunScope())["run_id"].to_list() == ["theirs"]


def test_equality_filters_are_applied(index: RunIndex) -> None:
    insert_run(index, "a", T0, agent="x", status="failed", environment="prod")
    insert_run(index, "b", T0, agent="x", status="succeeded", environment="prod")
    insert_run(index, "c", T0, agent="y", status="failed", environment="dev", service="other")
    assert load_runs(index, "t1", RunScope(agent="x", status="failed"))["run_id"].to_list() == ["a"]
    assert load_runs(index, "t1", RunScope(environment="dev"))["run_id"].to_list() == ["c"]
    assert sorted(load_runs(index, "t1", RunScope(service="svc"))["run_id"]) == ["a", "b"]


def test_with_running_adds_old_running_runs(index: RunIndex) -> None:
    insert_run(index, "old-running", T0 - 30 * DAY, status="running")
    insert_run(index, "old-done", T0 - 30 * DAY)
    insert_run(index, "new", T0)
    scope = RunScope(started_after_ns=T0 - DAY, with_running=True)
    assert sorted(load_runs(index, "t1", scope)["run_id"]) == ["new", "old-running"]


def test_run_ids_are_looked_up_in_chunks(index: RunIndex) -> None:
    with index.transaction() as db:
        db["runs"].insert_all({"tenant_id": "t1", "project_id": "p", "run_id": f"r{n:04d}", "started_ns": T0 + n,
                                "status": "running"} for n in range(1200))
    wanted = [f"r{n:04d}" for n in range(0, 1200, 2)] + ["missing"]
    frame = load_runs(index, "t1", RunScope(run_ids=wanted))
    assert frame.height == 600
    assert set(frame["run_id"]) == set(wanted) - {"missing"}


def test_step_days_cover_the_range_in_utc() -> None:
    assert step_days(None, T0, now_ns=T0) is None
    assert step_days(T0 - 1, T0 + 1, now_ns=T0) == ["2025-12-31", "2026-01-01"]
    assert step_days(T0, T0 + DAY, now_ns=T0) == ["2026-01-01"]
    assert step_days(T0, None, now_ns=T0 + 2 * DAY) == ["2026-01-01", "2026-01-02", "2026-01-03"]


def test_pending_approvals_counts_only_waiting_ones(index: RunIndex) -> None:
    base = {"tenant_id": "t1", "project_id": "p", "tool": "x", "args": "{}", "trace_id": "t", "span_id": "s",
            "requested_by": "k", "created_ns": T0}
    with index.transaction() as db:
        db["approvals"].insert_all([
            {**base, "approval_id": "a1", "status": "pending", "expires_ns": T0 + DAY},
            {**base, "approval_id": "a2", "status": "pending", "expires_ns": T0 - 1},  # overdue: not waiting
            {**base, "approval_id": "a3", "status": "approved", "expires_ns": T0 + DAY},
            {**base, "approval_id": "a4", "status": "pending", "expires_ns": T0 + DAY, "tenant_id": "t2"},
        ])
    assert pending_approvals(index, "t1", now_ns=T0) == 1


def test_frame_feeds_polars_queries(index: RunIndex) -> None:
    insert_run(index, "r1", T0, model_names=["m1", "m2"])
    insert_run(index, "r2", T0, model_names=[])
    exploded = runs_frame(index, "t1").explode("model_names", empty_as_null=True).select("model_names").collect()
    assert exploded["model_names"].to_list().count(None) == 1
    assert exploded.schema["model_names"] == pl.String


# --- the in-memory cache --------------------------------------------------------------------------------------

SCOPES = [
    RunScope(), RunScope(started_after_ns=T0 + DAY), RunScope(started_before_ns=T0 + 2 * DAY),
    RunScope(started_after_ns=T0, started_before_ns=T0 + 3 * DAY, agent="a1"), RunScope(status="running"),
    RunScope(started_after_ns=T0 + 3 * DAY, with_running=True), RunScope(run_ids=["r1", "r3", "nope"]),
    RunScope(environment="dev", service="svc"),
]


def cached_equals_sql(cache: RunFrameCache, index: RunIndex, scope: RunScope) -> None:
    got = cache.runs("t1", scope).collect().sort("run_id")
    assert_frame_equal(got, load_runs(index, "t1", scope).sort("run_id"))


def test_cache_answers_every_scope_as_sql_does(index: RunIndex) -> None:
    for n in range(5):
        insert_run(index, f"r{n}", T0 + n * DAY, agent=f"a{n % 2}", status="running" if n == 2 else "succeeded",
                   environment="dev" if n % 2 else "prod", model_names=["m"] * (n % 2), updated_ns=n)
    cache = RunFrameCache(index)
    for scope in SCOPES:
        cached_equals_sql(cache, index, scope)


def test_cache_sees_new_and_changed_runs(index: RunIndex) -> None:
    insert_run(index, "r1", T0, status="running", updated_ns=100)
    cache = RunFrameCache(index)
    assert cache.runs("t1").collect()["status"].to_list() == ["running"]
    with index.transaction() as db:
        db.execute("UPDATE runs SET status = 'failed', finished_ns = ?, updated_ns = 200 WHERE run_id = 'r1'", [T0 + 9])
    insert_run(index, "r2", T0 + 1, updated_ns=200)
    frame = cache.runs("t1").collect().sort("run_id")
    assert frame["status"].to_list() == ["failed", "succeeded"]
    assert frame["duration_ns"].to_list() == [9, 2 * 10**9]


def test_cache_reloads_a_tenant_after_deletions(index: RunIndex) -> None:
    insert_run(index, "r1", T0, updated_ns=100)
    insert_run(index, "r2", T0, updated_ns=100)
    cache = RunFrameCache(index)
    assert cache.runs("t1").collect().height == 2
    with index.transaction() as db:
        db.execute("DELETE FROM runs WHERE run_id = 'r1'")
    insert_run(index, "r3", T0, updated_ns=50)  # an old stamp, and the same count as before: still noticed
    assert sorted(cache.runs("t1").collect()["run_id"]) == ["r2", "r3"]


def test_cache_is_bounded_and_falls_back_to_sql(index: RunIndex) -> None:
    for n in range(3):
        insert_run(index, f"r{n}", T0 + n)
    insert_run(index, "x", T0, tenant_id="t2")
    cache = RunFrameCache(index, max_runs=2)
    assert cache.runs("t1").collect().height == 3  # too big to keep: read from SQL
    assert cache.runs("t2").collect().height == 1
    assert list(cache._entries) == ["t2"]
