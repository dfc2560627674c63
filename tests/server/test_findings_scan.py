"""The findings job reads only the step files that can hold its runs' steps, and never misses one.

A round reads the steps that started between its runs' first and last step (per day, from the span
index) and skips other files and row groups on their ``start_ns`` statistics. These tests build runs
whose steps are spread over several flush batches, between batches of other runs' older and newer steps,
then compact, restart, or move the runs to an older day or across midnight, and check that the findings
are exactly those of a scan that reads every file. Files are written with row groups of 4 rows so that
row-group skipping is exercised too; the file holding a run's first step has it as its newest step, and
the file holding its last step has it as its oldest (the boundary cases of the pruning).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from deltalake import WriterProperties

from analysis.findings import scan_runs
from otlp_receiver.model import Span, StatusCode
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store import index as index_module
from otlp_receiver.store import steps as steps_module
from otlp_receiver.store.findings import queue_depth, run_findings
from otlp_receiver.store.frames import RunScope, load_runs
from server.runtime import Runtime
from server.settings import Settings
from tests.factories import make_child, make_span

pytestmark = pytest.mark.e2e
TENANT = "default"
IDENTITY = IngestIdentity(TENANT, "default")
SECOND = 10**9
DAY = 86_400 * SECOND
IDLE_S = 600


@pytest.fixture(autouse=True)
def tiny_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps_module, "_WRITER", WriterProperties(compression="ZSTD", max_row_group_size=4))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", wal_fsync=False, findings_idle_s=IDLE_S, flusher_process=False)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.stop()


def tool_call(root: Span, start_ns: int) -> Span:
    """A failing call of ``search`` with the same arguments each time: tool_error, loop, permission_denied."""
    return make_child(root, name="execute_tool search", start_ns=start_ns, end_ns=start_ns + 1000,
                      status_code=StatusCode.ERROR, status_message="permission denied",
                      attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                                  "gen_ai.tool.call.arguments": '{"q": "same"}'})


def root_span(start_ns: int, end_ns: int) -> Span:
    return make_span(name="invoke_agent", start_ns=start_ns, end_ns=end_ns, status_code=StatusCode.OK,
                     attributes={"gen_ai.agent.name": "finder"})


def other_steps(before_ns: int | None = None, *, after_ns: int | None = None, n: int = 6) -> list[Span]:
    """Steps of runs still running (never scanned), all started before ``before_ns`` (or after ``after_ns``)."""
    starts = ([before_ns - (k + 1) * SECOND for k in range(n)] if before_ns is not None
              else [(after_ns or 0) + (k + 1) * SECOND for k in range(n)])
    return [make_child(make_span(), name="execute_tool lookup", start_ns=start, end_ns=start + SECOND,
                       attributes={"gen_ai.tool.name": "lookup"}) for start in starts]


@dataclass
class Scenario:
    """Runs whose steps arrive over several flush batches, with other steps' batches in between."""

    runtime: Runtime
    flush: Callable[[list[Span]], None]
    runs: list[str]


def spread_run(scenario: Scenario, t0: int, *, between: Callable[[], None] = lambda: None) -> str:
    """A run of three failing identical calls (at t0, t0 + 20 s, t0 + 40 s) and a root from t0 to t0 + 60 s,
    flushed over five batches between other runs' steps: the first call with older steps (so it is the
    newest step of its file, and the run's first), older steps alone, the root and the second call with
    older steps, the third call with newer steps (the oldest of its file, and the run's last), newer steps
    alone. ``between`` runs after the second batch (a compaction, say)."""
    root = root_span(t0, t0 + 60 * SECOND)
    last = t0 + 40 * SECOND
    scenario.flush([*other_steps(t0), tool_call(root, t0)])
    scenario.flush(other_steps(t0))
    between()
    scenario.flush([*other_steps(t0), root, tool_call(root, t0 + 20 * SECOND)])
    scenario.flush([tool_call(root, last), *other_steps(after_ns=last)])
    scenario.flush(other_steps(after_ns=last))
    scenario.runs.append(root.trace_id)
    return root.trace_id


def full_scan_findings(rt: Runtime, run_ids: list[str], now_ns: int) -> set[tuple[str, str, str, tuple[int, ...]]]:
    """The findings of a scan that reads every step file of the tenant: what the job must find."""
    runs = load_runs(rt.index, TENANT, RunScope(run_ids=run_ids))
    steps = rt.steps.scan(TENANT).filter(pl.col("run_id").is_in(run_ids)).collect()
    findings = scan_runs(runs, steps, now_ns=now_ns, idle_window_ns=IDLE_S * SECOND, baselines={})
    return {(f.run_id, f.kind, f.message, f.step_seqs) for f in findings}


def stored_findings(rt: Runtime, run_ids: list[str]) -> set[tuple[str, str, str, tuple[int, ...]]]:
    return {(f.run_id, f.kind, f.message, f.step_seqs) for run in run_ids for f in run_findings(rt.index, TENANT, run)}


def scan_and_check(rt: Runtime, run_ids: list[str]) -> None:
    now = time.time_ns()
    assert queue_depth(rt.index) == len(run_ids)
    assert rt.findings_job.run_once(now_ns=now) == len(run_ids)
    found = stored_findings(rt, run_ids)
    assert found == full_scan_findings(rt, run_ids, now)
    for run in run_ids:  # and every call is in them (seq 1 is the root)
        assert {(kind, seqs) for r, kind, _, seqs in found if r == run} >= {
            ("tool_error", (0, 2, 3)), ("loop", (0, 2, 3)), ("permission_denied", (0, 2, 3))}


def make_scenario(rt: Runtime) -> Scenario:
    def flush(spans: list[Span]) -> None:
        rt.ingest_spans(IDENTITY, spans)
        rt.flusher.drain()

    return Scenario(rt, flush, [])


def scenario_with_a_round_before(rt: Runtime, t0: int) -> Scenario:
    """Older steps first, and an earlier round over an older finished run (a round's runs are what it reads for)."""
    scenario = make_scenario(rt)
    old = root_span(t0 - 300 * SECOND, t0 - 290 * SECOND)
    scenario.flush([*other_steps(t0 - 200 * SECOND), old, tool_call(old, t0 - 295 * SECOND)])
    assert rt.findings_job.run_once() == 1
    return scenario


NOW = time.time_ns()
MIDNIGHT = NOW - NOW % DAY
STARTS = {
    "recent": NOW - 120 * SECOND,
    "older_day": MIDNIGHT - 3 * DAY + 3_600 * SECOND,
    "across_midnight": MIDNIGHT - 2 * DAY - 30 * SECOND,  # the last call on the next day
}


@pytest.mark.parametrize("chunk", [500, 1])
@pytest.mark.parametrize("when", list(STARTS))
def test_runs_spread_over_flush_batches(runtime: Runtime, when: str, chunk: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "IN_CHUNK", chunk)  # 1: each run's start range from its own query
    scenario = scenario_with_a_round_before(runtime, STARTS[when])
    spread_run(scenario, STARTS[when])
    spread_run(scenario, NOW - 60 * SECOND)  # a recent run in the same round
    scan_and_check(runtime, scenario.runs)


@pytest.mark.parametrize("when", list(STARTS))
def test_runs_compacted_with_older_steps(runtime: Runtime, when: str) -> None:
    scenario = scenario_with_a_round_before(runtime, STARTS[when])
    spread_run(scenario, STARTS[when], between=lambda: runtime.steps.compact(min_files=2))
    spread_run(scenario, NOW - 60 * SECOND)
    runtime.steps.compact(min_files=2)  # every step of the runs now sits in a file with older steps
    assert len(runtime.steps.files(TENANT)) <= 3  # one per day
    scan_and_check(runtime, scenario.runs)


@pytest.mark.parametrize("when", list(STARTS))
def test_runs_scanned_after_a_restart(settings: Settings, when: str) -> None:
    first = Runtime(settings)
    scenario = scenario_with_a_round_before(first, STARTS[when])
    spread_run(scenario, STARTS[when], between=lambda: first.steps.compact(min_files=2))
    spread_run(scenario, NOW - 60 * SECOND)
    first.stop()
    second = Runtime(settings)
    try:
        scan_and_check(second, scenario.runs)
    finally:
        second.stop()


def test_a_late_step_that_started_first_is_found(runtime: Runtime) -> None:
    """A step that started before the rest of its run but arrives last moves the run's earliest start back."""
    t0 = NOW - 300 * SECOND
    scenario = scenario_with_a_round_before(runtime, t0)
    root = root_span(t0, t0 + 60 * SECOND)
    scenario.flush([*other_steps(t0), tool_call(root, t0 + 20 * SECOND)])
    scenario.flush([tool_call(root, t0 + 40 * SECOND), root])
    scenario.flush([*other_steps(t0 - 10 * SECOND), tool_call(root, t0 - 10 * SECOND)])  # started first, sent last
    now = time.time_ns()
    assert runtime.findings_job.run_once(now_ns=now) == 1
    found = stored_findings(runtime, [root.trace_id])
    assert found == full_scan_findings(runtime, [root.trace_id], now)
    assert ("loop", (0, 2, 3)) in {(kind, seqs) for _, kind, _, seqs in found}  # seq 1 is the root


def test_a_round_reads_the_columns_the_scan_needs_only(runtime: Runtime) -> None:
    scenario = scenario_with_a_round_before(runtime, NOW - 120 * SECOND)
    run = spread_run(scenario, NOW - 120 * SECOND)
    steps = runtime.findings_job.read_steps(TENANT, [run])
    assert steps.height == 4 and "chain_hash" not in steps.columns and "payload" in steps.columns
