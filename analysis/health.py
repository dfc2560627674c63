"""Health pulse: a handful of green/yellow/red fields and one plain sentence (spec 001 §5.4).

Fields, each coloured by the thresholds below (a value at a threshold takes that colour):

- ``agents``: agents with a run started in the last hour (information, always green);
- ``error_rate``: failed / finished runs started in the last hour;
- ``latency_p90``: p90 duration of those runs, in seconds;
- ``cost_today``: spend of runs started since UTC midnight, against the average day of the
  7 days before (no history: green);
- ``approvals_waiting``: pending approvals (given by the caller);
- ``stalled_runs``: runs still running more than ``STALLED_AFTER_NS`` after they started;
- ``policy_violations``: violating policy steps in the last hour.

The pulse is a pure function of the frames and ``now_ns``; the server caches it briefly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from analysis.aggregate import summarize
from analysis.filters import Filters

GREEN, YELLOW, RED = "green", "yellow", "red"
HOUR_NS: Final = 3_600 * 10**9
DAY_NS: Final = 24 * HOUR_NS
ERROR_RATE_YELLOW: Final = 0.05
"""Failed / finished runs in the last hour at or above which the pulse turns yellow..."""
ERROR_RATE_RED: Final = 0.20
"""...and red."""
LATENCY_P90_YELLOW_S: Final = 10.0
"""p90 run duration (s) in the last hour at or above which the pulse turns yellow..."""
LATENCY_P90_RED_S: Final = 30.0
"""...and red."""
COST_YELLOW_RATIO: Final = 1.5
"""Today's spend over the average day of the previous 7 days at or above which: yellow..."""
COST_RED_RATIO: Final = 3.0
"""...and red."""
APPROVALS_YELLOW: Final = 1
"""Pending approvals at or above which: yellow (someone is waiting)..."""
APPROVALS_RED: Final = 10
"""...and red."""
STALLED_AFTER_NS: Final = HOUR_NS
"""A run still running this long after it started is stalled."""
STALLED_YELLOW: Final = 1
STALLED_RED: Final = 10
VIOLATIONS_YELLOW: Final = 1
"""Policy violations in the last hour at or above which: yellow..."""
VIOLATIONS_RED: Final = 5
"""...and red."""
_RANK: Final = {GREEN: 0, YELLOW: 1, RED: 2}


@dataclass(frozen=True)
class HealthField:
    """One line of the pulse: a display value, the raw number behind it and its colour."""

    key: str
    value: str
    raw: float | int | None
    color: str


@dataclass(frozen=True)
class HealthPulse:
    """The pulse: the worst colour of its fields, the fields, and one plain sentence."""

    status: str
    fields: tuple[HealthField, ...]
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /v1/analytics/health``."""
        return {
            "status": self.status,
            "fields": [vars(f) for f in self.fields],
            "sentence": self.sentence,
        }


def health_pulse(
    runs: pl.LazyFrame, steps: pl.LazyFrame, *, now_ns: int, pending_approvals: int
) -> HealthPulse:
    """The health pulse at ``now_ns``."""
    hour = summarize(
        runs, steps, filters=Filters(started_after_ns=now_ns - HOUR_NS, started_before_ns=now_ns)
    ).row(0, named=True)
    facts = _run_facts(runs, now_ns)
    p90_s = None if hour["run_p90_ms"] is None else hour["run_p90_ms"] / 1000
    violations, stalled, rate = hour["policy_violations"], facts["stalled"], hour["error_rate"]
    fields = (
        HealthField("agents", str(facts["agents"]), facts["agents"], GREEN),
        HealthField("error_rate", _percent(rate), rate, _color(rate, ERROR_RATE_YELLOW, ERROR_RATE_RED)),
        HealthField(
            "latency_p90", _seconds(p90_s), p90_s, _color(p90_s, LATENCY_P90_YELLOW_S, LATENCY_P90_RED_S)
        ),
        HealthField("cost_today", f"${facts['cost_today']:,.2f}", facts["cost_today"], _cost_color(facts)),
        _count_field("approvals_waiting", pending_approvals, APPROVALS_YELLOW, APPROVALS_RED),
        _count_field("stalled_runs", stalled, STALLED_YELLOW, STALLED_RED),
        _count_field("policy_violations", violations, VIOLATIONS_YELLOW, VIOLATIONS_RED),
    )
    status = max((f.color for f in fields), key=_RANK.__getitem__)
    return HealthPulse(status, fields, _sentence(hour, facts, p90_s, pending_approvals))


def _count_field(key: str, count: int, yellow: int, red: int) -> HealthField:
    return HealthField(key, str(count), count, _color(count, yellow, red))


def _run_facts(runs: pl.LazyFrame, now_ns: int) -> dict[str, Any]:
    """Active agents (last hour), spend today and over the 7 days before, stalled runs."""
    started, midnight = pl.col("started_ns"), now_ns // DAY_NS * DAY_NS
    cost = pl.col("cost_usd")
    return (
        runs.select(
            agents=pl.col("agent")
            .filter((started >= now_ns - HOUR_NS) & (started < now_ns))
            .drop_nulls()
            .n_unique(),
            cost_today=cost.filter((started >= midnight) & (started < now_ns)).sum(),
            cost_week=cost.filter((started >= midnight - 7 * DAY_NS) & (started < midnight)).sum(),
            stalled=((pl.col("status") == "running") & (started <= now_ns - STALLED_AFTER_NS)).sum(),
        )
        .collect()
        .row(0, named=True)
    )


def _color(value: float | None, yellow: float, red: float) -> str:
    if value is None or value < yellow:
        return GREEN
    return RED if value >= red else YELLOW


def _cost_color(facts: dict[str, Any]) -> str:
    average_day = facts["cost_week"] / 7
    if average_day <= 0:
        return GREEN
    return _color(facts["cost_today"] / average_day, COST_YELLOW_RATIO, COST_RED_RATIO)


def _percent(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    percent = rate * 100
    return f"{percent:.1f}%" if 0 < percent < 1 else f"{percent:.0f}%"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _sentence(hour: dict[str, Any], facts: dict[str, Any], p90_s: float | None, pending: int) -> str:
    """E.g. "3 agents, 2% errors in the last hour, p90 4.1 s, $12.40 today, 1 approval waiting"."""
    if hour["runs"] == 0:
        parts = ["No runs in the last hour"]
    else:
        errors = (
            "no finished runs" if hour["error_rate"] is None else f"{_percent(hour['error_rate'])} errors"
        )
        parts = [f"{_plural(facts['agents'], 'agent')}, {errors} in the last hour", f"p90 {_seconds(p90_s)}"]
    parts.append(f"${facts['cost_today']:,.2f} today")
    parts.append(f"{_plural(pending, 'approval')} waiting" if pending else "no approvals waiting")
    if facts["stalled"]:
        parts.append(f"{_plural(facts['stalled'], 'stalled run')}")
    if hour["policy_violations"]:
        parts.append(_plural(hour["policy_violations"], "policy violation"))
    return ", ".join(parts)
