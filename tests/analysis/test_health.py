"""Health pulse: colours at their thresholds and the plain sentence."""

from __future__ import annotations

from typing import Any

import pytest

from analysis import health
from analysis.frames import empty_runs, empty_steps
from analysis.health import HealthPulse, health_pulse
from tests.analysis.factories import S, run, runs_frame, step, steps_frame

DAY0 = 1_789_948_800 * 10**9
NOW = DAY0 + 12 * 3_600 * S
"""Noon UTC: the last hour is today."""


def recent_runs(count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` runs started over the last hour, 4.1 s each unless overridden."""
    fields.setdefault("duration_ns", 4_100_000_000)
    return [run(f"r{i}", started_ns=NOW - (i + 1) * S, **fields) for i in range(count)]


def pulse(
    rows: list[dict[str, Any]], *, pending: int = 0, steps: list[dict[str, Any]] | None = None
) -> HealthPulse:
    return health_pulse(
        runs_frame(rows).lazy(), steps_frame(steps or []).lazy(), now_ns=NOW, pending_approvals=pending
    )


def color(result: HealthPulse, key: str) -> str:
    return next(f.color for f in result.fields if f.key == key)


def test_the_sentence_reads_like_the_spec_example() -> None:
    rows = recent_runs(50)
    for i, row in enumerate(rows):
        row["agent"] = f"a{i % 3}"
    rows[0]["status"] = "failed"
    rows[1]["cost_usd"] = 12.4
    result = pulse(rows, pending=1)
    assert (
        result.sentence == "3 agents, 2% errors in the last hour, p90 4.1 s, $12.40 today, 1 approval waiting"
    )
    assert result.status == "yellow"  # the waiting approval
    assert result.to_dict()["fields"][0] == {"key": "agents", "value": "3", "raw": 3, "color": "green"}


def test_a_quiet_hour() -> None:
    result = health_pulse(empty_runs(), empty_steps(), now_ns=NOW, pending_approvals=0)
    assert result.sentence == "No runs in the last hour, $0.00 today, no approvals waiting"
    assert result.status == "green"
    assert {f.key: f.value for f in result.fields}["latency_p90"] == "n/a"


@pytest.mark.parametrize(("failed", "expected"), [(0, "green"), (1, "yellow"), (3, "yellow"), (4, "red")])
def test_error_rate_colours_at_thresholds(failed: int, expected: str) -> None:
    rows = recent_runs(20)  # 1 of 20 = 5% = ERROR_RATE_YELLOW, 4 of 20 = 20% = ERROR_RATE_RED
    for row in rows[:failed]:
        row["status"] = "failed"
    assert health.ERROR_RATE_YELLOW == 0.05 and health.ERROR_RATE_RED == 0.20
    assert color(pulse(rows), "error_rate") == expected


@pytest.mark.parametrize(
    ("seconds", "expected"), [(9.999, "green"), (10.0, "yellow"), (29.999, "yellow"), (30.0, "red")]
)
def test_latency_colours_at_thresholds(seconds: float, expected: str) -> None:
    rows = recent_runs(5, duration_ns=round(seconds * 1e9))
    assert color(pulse(rows), "latency_p90") == expected


@pytest.mark.parametrize(("pending", "expected"), [(0, "green"), (1, "yellow"), (9, "yellow"), (10, "red")])
def test_approval_colours_at_thresholds(pending: int, expected: str) -> None:
    assert color(pulse([], pending=pending), "approvals_waiting") == expected


@pytest.mark.parametrize(
    ("today", "expected"), [(1.49, "green"), (1.5, "yellow"), (2.99, "yellow"), (3.0, "red")]
)
def test_cost_today_against_the_average_of_the_previous_week(today: float, expected: str) -> None:
    week = [run(f"d{d}", started_ns=DAY0 - d * 86_400 * S + S, cost_usd=1.0) for d in range(1, 8)]
    rows = [*week, run("today", started_ns=DAY0 + S, cost_usd=today)]
    assert color(pulse(rows), "cost_today") == expected
    assert color(pulse([run("today", started_ns=DAY0 + S, cost_usd=1_000.0)]), "cost_today") == "green"


def test_stalled_runs_count_from_an_hour_after_start() -> None:
    stalled = run("old", status="running", started_ns=NOW - health.STALLED_AFTER_NS)
    fresh = run("new", status="running", started_ns=NOW - health.STALLED_AFTER_NS + 1)
    result = pulse([stalled, fresh])
    assert color(result, "stalled_runs") == "yellow"
    assert result.sentence.endswith("no approvals waiting, 1 stalled run")


def test_policy_violations_in_the_last_hour() -> None:
    steps = [step("r0", i, type="policy", status="error", start_ns=NOW - 10 * S) for i in range(5)]
    steps.append(step("r0", 9, type="policy", status="error", start_ns=NOW - 2 * 3_600 * S))  # too old
    result = pulse(recent_runs(1), steps=steps)
    assert color(result, "policy_violations") == "red"
    assert result.status == "red"
    assert result.sentence.endswith(", 5 policy violations")
