"""The failure scan: every finding kind, positive and a near miss, plus ids and baselines."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from analysis.findings import (
    BASELINE_MIN_RUNS,
    LOOP_MIN_REPEATS,
    RETRY_STORM_MIN_CALLS,
    RETRY_STORM_WINDOW_NS,
    Baseline,
    Finding,
    agent_baselines,
    finding_id,
    scan_run,
    scan_runs,
    step_columns,
)
from benchmarks.data import make_scan_dataset
from otlp_receiver.mapping import map_span
from tests.analysis.factories import MS, T0_NS, S, messages, run, runs_frame, step, steps_frame
from tests.factories import make_span

NOW = T0_NS + 3_600 * S
IDLE = 600 * S
ANSWERED = {"output": [{"role": "assistant", "parts": [{"type": "text", "content": "done"}]}]}
BASELINE = Baseline("a1", runs=BASELINE_MIN_RUNS, cost_p99_usd=1.0, duration_p99_ns=10 * S)


def scan(rows: list[dict[str, Any]], *, baseline: Baseline | None = None, **run_fields: Any) -> list[Finding]:
    """Scan run r1 made of a root span with output plus ``rows``."""
    root = step("r1", 0, type="span", payload=ANSWERED)
    return scan_run(
        run("r1", **run_fields),
        steps_frame([root, *rows]),
        now_ns=NOW,
        idle_window_ns=IDLE,
        agent_baseline=baseline,
    )


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def tool(seq: int, name: str = "search", args: Any = None, **fields: Any) -> dict[str, Any]:
    payload = fields.pop("payload", {} if args is None else {"input": args})
    return step("r1", seq, type="tool", tool_name=name, payload=payload, **fields)


def test_a_clean_run_has_no_findings() -> None:
    assert scan([tool(1, args={"q": "a"}), tool(2, args={"q": "b"})]) == []


def test_tool_error_groups_failures_per_tool() -> None:
    found = scan(
        [
            tool(1, status="error", error_message="timeout"),
            tool(2, "fetch"),
            tool(3, status="error", error_message="timeout again"),
        ]
    )
    assert kinds(found) == ["tool_error"]
    assert found[0].step_seqs == (1, 3)
    assert found[0].message == "tool search failed 2 time(s): timeout"
    assert found[0].severity == "error"
    # near miss: a failed model step is not a tool error
    assert scan([step("r1", 1, type="model", status="error", payload=ANSWERED)]) == []


@pytest.mark.parametrize(
    "text", ["Permission denied: /etc/shadow", "HTTP 403", "403 Forbidden", "Unauthorized", "ACCESS DENIED"]
)
def test_permission_denied_from_error_text(text: str) -> None:
    found = scan([step("r1", 1, type="error", status="error", error_message=text)])
    assert "permission_denied" in kinds(found)


def test_permission_denied_from_a_tool_output_and_near_misses() -> None:
    found = scan([tool(1, args={"path": "/x"}, payload={"output": "cat: /x: Permission denied"})])
    assert kinds(found) == ["permission_denied"] and found[0].step_seqs == (1,)
    near = [
        step("r1", 1, type="error", status="error", error_message="item 4031 not found"),
        tool(2, payload={"output": "forbidden fruit is sweet"}),  # only phrases count in tool output
    ]
    assert scan(near) == []


def test_loop_needs_consecutive_identical_calls_with_recorded_arguments() -> None:
    same = {"q": "weather"}
    found = scan([tool(seq, args=same) for seq in range(1, 1 + LOOP_MIN_REPEATS)])
    assert kinds(found) == ["loop"] and found[0].step_seqs == (1, 2, 3)
    interrupted = [tool(1, args=same), tool(2, args=same), tool(3, args={"q": "other"}), tool(4, args=same)]
    assert scan(interrupted) == []
    other_tool = [tool(1, args=same), tool(2, args=same), tool(3, "fetch", args=same)]
    assert scan(other_tool) == []
    unrecorded = [tool(seq) for seq in range(1, 5)]
    assert scan(unrecorded) == []


def test_a_model_step_between_identical_tool_calls_does_not_break_the_loop() -> None:
    rows = [
        tool(1, args="x"),
        step("r1", 2, type="model", payload=ANSWERED),
        tool(3, args="x"),
        tool(4, args="x"),
    ]
    assert kinds(scan(rows)) == ["loop"]


def storm(errors: int, *, spacing_ns: int, calls: int = RETRY_STORM_MIN_CALLS) -> list[dict[str, Any]]:
    return [
        tool(
            seq, args={"n": seq}, start_ns=T0_NS + seq * spacing_ns, status="error" if seq <= errors else "ok"
        )
        for seq in range(1, calls + 1)
    ]


def test_retry_storm_needs_enough_calls_in_the_window_with_errors() -> None:
    spacing = RETRY_STORM_WINDOW_NS // (RETRY_STORM_MIN_CALLS - 1)  # first to last start == the window
    found = scan(storm(2, spacing_ns=spacing))
    assert "retry_storm" in kinds(found)
    assert next(f for f in found if f.kind == "retry_storm").step_seqs == (1, 2, 3, 4, 5)
    assert "retry_storm" not in kinds(scan(storm(2, spacing_ns=spacing + 1)))  # one ns too slow
    assert "retry_storm" not in kinds(scan(storm(1, spacing_ns=spacing)))  # one error only
    assert "retry_storm" not in kinds(scan(storm(4, spacing_ns=S, calls=RETRY_STORM_MIN_CALLS - 1)))


def test_abrupt_end_when_running_past_the_idle_window() -> None:
    last = tool(1, start_ns=NOW - IDLE - 1 - 100 * MS)  # ends IDLE + 1 ns before now
    found = scan([last], status="running")
    assert kinds(found) == ["abrupt_end"] and found[0].step_seqs == (1,)
    recent = tool(1, start_ns=NOW - IDLE - 100 * MS)  # ends exactly IDLE before now
    assert scan([recent], status="running") == []


def test_abrupt_end_when_finished_without_output() -> None:
    silent = steps_frame([step("r1", 0, type="span"), tool(1)])
    found = scan_run(run("r1"), silent, now_ns=NOW, idle_window_ns=IDLE, agent_baseline=None)
    assert kinds(found) == ["abrupt_end"] and found[0].message == "run succeeded without any output"
    canceled = scan_run(
        run("r1", status="canceled"), silent, now_ns=NOW, idle_window_ns=IDLE, agent_baseline=None
    )
    assert canceled == []
    empty_output = steps_frame([step("r1", 0, type="span", payload={"output": ""})])
    assert kinds(scan_run(run("r1"), empty_output, now_ns=NOW, idle_window_ns=IDLE, agent_baseline=None)) == [
        "abrupt_end"
    ]


def test_content_from_log_records_is_output() -> None:
    """A model's answer that came as OTLP log records is stored as an artifact step's ``output``."""
    answer = {"output": [{"role": "assistant", "parts": [{"type": "text", "content": "sunny"}]}]}
    answered = steps_frame([step("r1", 0, type="span"), step("r1", 1, type="artifact", payload=answer)])
    assert scan_run(run("r1"), answered, now_ns=NOW, idle_window_ns=IDLE, agent_baseline=None) == []
    unanswered = steps_frame([step("r1", 0, type="artifact", payload={"input": [{"role": "user"}]})])
    assert kinds(scan_run(run("r1"), unanswered, now_ns=NOW, idle_window_ns=IDLE, agent_baseline=None)) == [
        "abrupt_end"
    ]


def test_user_rejection_after_an_answer() -> None:
    history = messages(
        ("user", "book a flight"), ("assistant", "Booked LH 123"), ("user", "No, that's wrong")
    )
    found = scan([step("r1", 1, type="model", payload=history), step("r1", 2, type="model", payload=history)])
    assert kinds(found) == ["user_rejection"]
    assert found[0].step_seqs == (1,)  # the history repeats in later steps: reported once
    assert found[0].message == 'user pushed back: "No, that\'s wrong"'


@pytest.mark.parametrize(
    "turns",
    [
        (("user", "no"),),  # nothing answered yet
        (("assistant", "Booked"), ("user", "no, I wanted a later flight next tuesday morning, the 9:40 one")),
        (("assistant", "Booked"), ("user", "thanks, now the hotel")),
        (("assistant", "Booked"), ("user", "No problem, thanks!")),
        (("assistant", "Booked"), ("tool", "no")),
    ],
)
def test_user_rejection_near_misses(turns: tuple[tuple[str, str], ...]) -> None:
    assert scan([step("r1", 1, type="model", payload=messages(*turns))]) == []


def test_user_rejection_reads_plain_content_and_message_wrappers() -> None:
    payload = {
        "input": {"messages": [{"role": "ai", "content": "Here"}, {"role": "human", "content": "stop"}]}
    }
    assert kinds(scan([step("r1", 1, type="model", payload=payload)])) == ["user_rejection"]


@pytest.mark.parametrize("encode", [False, True], ids=["list", "json-string"])
def test_user_rejection_with_capitalised_roles_and_input_as_json_text(encode: bool) -> None:
    """Roles compare case-insensitively, and ``input`` may be the messages as a JSON string (OpenInference's
    ``input.value``): the vectorised pre-filter must let both through to the exact check."""
    history = [{"role": "User", "content": "book a flight"}, {"role": "Assistant", "content": "Booked LH 123"},
               {"role": "USER", "content": "No, that's wrong"}]
    payload = {"input": json.dumps(history) if encode else history}
    assert kinds(scan([step("r1", 1, type="model", payload=payload)])) == ["user_rejection"]


@pytest.mark.parametrize("flattened", ["llm.input_messages.{i}.message.", "gen_ai.prompt.{i}."])
def test_user_rejection_in_messages_mapped_from_flattened_conventions(flattened: str) -> None:
    """OpenInference / legacy OpenLLMetry spans, as ingest maps them (current GenAI message shape)."""
    turns = [("user", "book a flight"), ("assistant", "Booked LH 123"), ("user", "No, that's wrong")]
    attributes = {"openinference.span.kind": "LLM"}
    for i, (role, text) in enumerate(turns):
        attributes |= {flattened.format(i=i) + "role": role, flattened.format(i=i) + "content": text}
    payload = dict(map_span(make_span(attributes=attributes)).payload)
    assert payload["input"][2] == {"role": "user", "parts": [{"type": "text", "content": "No, that's wrong"}]}
    assert kinds(scan([step("r1", 1, type="model", payload=payload)])) == ["user_rejection"]


def test_a_finish_reason_stop_is_not_a_rejection() -> None:
    """``stop`` is in the rejection words and in nearly every model payload (finish reasons)."""
    payload = {"input": [{"role": "user", "content": "plan a trip"}], "attributes": {
        "gen_ai.response.finish_reasons": ["stop"]}, "output": [{"role": "assistant", "content": "Done"}]}
    assert scan([step("r1", 1, type="model", payload=payload)]) == []


def test_cost_and_latency_spikes_against_the_baseline() -> None:
    priced = [
        step("r1", 1, type="model", cost_usd=2.5, payload=ANSWERED),
        step("r1", 2, type="model", cost_usd=0.1),
    ]
    found = scan(priced, baseline=BASELINE, cost_usd=2.6, duration_ns=21 * S)
    assert [(f.kind, f.step_seqs) for f in found] == [("cost_spike", (1,)), ("latency_spike", (1,))]
    assert found[0].message == "cost $2.6 is 2.6x the agent's recent p99 ($1)"
    assert found[1].message == "duration 21.0 s is 2.1x the agent's recent p99 (10.0 s)"
    assert scan(priced, baseline=BASELINE, cost_usd=2.0, duration_ns=20 * S) == []  # exactly p99 x factor
    few = Baseline("a1", runs=BASELINE_MIN_RUNS - 1, cost_p99_usd=1.0, duration_p99_ns=10 * S)
    assert scan(priced, baseline=few, cost_usd=100.0, duration_ns=1_000 * S) == []
    assert scan(priced, baseline=None, cost_usd=100.0) == []


@pytest.mark.parametrize("binding", ["missing", "invalid", "expired", "args_mismatch", "replayed"])
def test_unbound_execution(binding: str) -> None:
    found = scan([tool(1, binding=binding)])
    assert kinds(found) == ["unbound_execution"]
    assert found[0].message == f"search ran without a valid decision (binding: {binding})"


@pytest.mark.parametrize("binding", ["bound", "ungated", None])
def test_bound_or_ungated_executions_are_fine(binding: str | None) -> None:
    assert scan([tool(1, binding=binding)]) == []


def test_policy_violation_and_near_misses() -> None:
    found = scan([step("r1", 1, type="policy", name="no-pii", status="error", error_message="email in args")])
    assert (
        kinds(found) == ["policy_violation"] and found[0].message == "policy no-pii violated: email in args"
    )
    assert scan([step("r1", 1, type="policy", name="no-pii", status="ok")]) == []
    replay = scan([step("r1", 1, type="policy", status="error", binding="replayed")])
    assert kinds(replay) == ["unbound_execution"]  # one finding per event, the binding one


def test_finding_ids_are_deterministic() -> None:
    rows = [tool(1, status="error"), tool(2, binding="expired")]
    first, again = scan(rows), scan(rows)
    assert [f.finding_id for f in first] == [f.finding_id for f in again]
    assert first[0].finding_id == finding_id("r1", "tool_error", 1)
    assert len({f.finding_id for f in first}) == len(first) == 2


def test_scan_runs_matches_scan_run_per_run() -> None:
    steps = steps_frame(
        [
            step("r1", 0, type="span", payload=ANSWERED),
            step("r1", 1, type="tool", tool_name="t", status="error"),
            step("r2", 0, type="span", payload=ANSWERED),
            step("r2", 1, type="tool", tool_name="t", binding="missing"),
        ]
    )
    runs = runs_frame([run("r1"), run("r2")])
    together = scan_runs(runs, steps, now_ns=NOW, idle_window_ns=IDLE, baselines={})
    one_by_one = [
        finding
        for row in runs.iter_rows(named=True)
        for finding in scan_run(
            row,
            steps.filter(pl.col("run_id") == row["run_id"]),
            now_ns=NOW,
            idle_window_ns=IDLE,
            agent_baseline=None,
        )
    ]
    assert together == one_by_one and kinds(together) == ["tool_error", "unbound_execution"]


def test_scan_runs_needs_only_the_step_columns_it_names() -> None:
    """A caller may load ``step_columns()`` only (the job does, to read less): the findings are the same."""
    runs, steps = make_scan_dataset(60)
    every = scan_runs(runs, steps, now_ns=NOW, idle_window_ns=IDLE, baselines={})
    assert scan_runs(runs, steps.select(step_columns()), now_ns=NOW, idle_window_ns=IDLE, baselines={}) == every
    assert {"tool_error", "loop", "user_rejection", "unbound_execution"} <= set(kinds(every))
    assert "chain_hash" not in step_columns() and "payload" in step_columns()


def test_agent_baselines_use_finished_runs_in_the_window() -> None:
    rows = [
        run(f"r{i}", started_ns=NOW - 100 * S, cost_usd=float(i), duration_ns=i * S) for i in range(1, 101)
    ]
    rows += [
        run("old", started_ns=NOW - 10_000 * S, cost_usd=1_000.0),
        run("live", status="running", started_ns=NOW - S),
    ]
    got = agent_baselines(runs_frame(rows).lazy(), window_ns=1_000 * S, now_ns=NOW)
    # 1..100: p99 linear = 99 + 0.01 * (100 - 99)
    assert got == {
        "a1": Baseline("a1", runs=100, cost_p99_usd=pytest.approx(99.01), duration_p99_ns=99_010_000_000)
    }
