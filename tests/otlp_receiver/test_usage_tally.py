"""Tests for otlp_receiver.usage_tally: the incremental tally equals total_usage's full recount."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otlp_receiver.model import SpanId, StepDraft, StepType, TraceId
from otlp_receiver.pricing import ModelPrice, PriceTable
from otlp_receiver.usage import total_usage
from otlp_receiver.usage_tally import USAGE_COLUMNS, TallyCache, UsageRow, UsageTally

PRICES = PriceTable({"m-priced": ModelPrice(1.0, 2.0, 0.1, None), "m-cheap": ModelPrice(0.15, 0.6, None, 0.3)})
TRACE = TraceId("0af7651916cd43dd8448eb211c80319c")
IDS = [f"{i:016x}" for i in range(12)]


def row(span_id: str, parent: str | None = None, type: str = "span", **fields: Any) -> UsageRow:
    values = {"span_id": span_id, "parent_span_id": parent, "type": type, "status": "ok", "start_ns": 0, **fields}
    return tuple(values.get(name) for name in USAGE_COLUMNS)


def draft(r: UsageRow) -> StepDraft:
    f = dict(zip(USAGE_COLUMNS, r, strict=True))
    return StepDraft(trace_id=TRACE, span_id=SpanId(f.pop("span_id")), parent_span_id=f.pop("parent_span_id"),
                     type=StepType(f.pop("type")), name="", end_ns=f["start_ns"] + 1, **f)


def recount(rows: list[UsageRow]) -> Any:
    return total_usage([draft(r) for r in rows], PRICES)


def tally_of(*batches: list[UsageRow]) -> UsageTally:
    tally = UsageTally(PRICES)
    for batch in batches:
        tally.add(batch)
    return tally


# --- randomized arrival: the tally after every batch equals the full recount of what arrived so far ------
tokens = st.none() | st.integers(0, 5_000)
costs = st.none() | st.sampled_from([0.0, 0.1, 0.2, 0.3, 1e-7, 3.3333333333333335, 1e15, 7.0])
span_rows = st.builds(
    row,
    span_id=st.sampled_from(IDS),
    parent=st.none() | st.sampled_from([*IDS, "ffffffffffffffff", ""]),
    type=st.sampled_from(["span", "model", "tool", "error", "prompt"]),
    status=st.sampled_from(["ok", "error", "unset"]),
    start_ns=st.integers(0, 5),
    model_name=st.sampled_from([None, "", "m-priced", "m-cheap", "m-secret"]),
    tool_name=st.sampled_from([None, "search", "calc"]),
    tool_call_id=st.sampled_from([None, "call_1", "call_2"]),
    tokens_in=tokens, tokens_out=tokens, tokens_total=tokens,
    tokens_cache_read=st.none() | st.integers(0, 100), tokens_cache_write=st.none() | st.integers(0, 100),
    tokens_reasoning=st.none() | st.integers(0, 100), cost_usd=costs,
)  # fmt: skip


@st.composite
def arrivals(draw: st.DrawFn) -> list[list[UsageRow]]:
    """Spans (retries and cycles included) in a random order, cut into random batches."""
    rows = draw(st.lists(span_rows, min_size=1, max_size=24))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=6)))
    bounds = [0, *cuts, len(rows)]
    return [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=arrivals())
def test_tally_equals_the_full_recount_after_every_batch(batches: list[list[UsageRow]]) -> None:
    tally, seen = UsageTally(PRICES), []
    for batch in batches:
        tally.add(batch)
        seen.extend(batch)
        if tally.broken:
            return  # a parent cycle: the caller recounts with total_usage (see the cycle tests)
        assert tally.totals() == recount(seen)
        assert len(tally) == len({r[0] for r in seen})


@st.composite
def trees(draw: st.DrawFn) -> list[UsageRow]:
    """Acyclic span trees (parents chosen among earlier ids, some never sent) in a random arrival order."""
    n = draw(st.integers(1, 30))
    rows = []
    for i in range(n):
        parent = draw(st.none() | st.integers(-1, i - 1)) if i else None
        fields = draw(span_rows)
        rows.append(row(f"{i:016x}", None if parent is None else f"{parent:016x}" if parent >= 0 else "feedbeef",
                        *fields[2:3], **dict(zip(USAGE_COLUMNS[3:], fields[3:], strict=True))))
    return draw(st.permutations(rows))


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=trees(), data=st.data())
def test_tally_of_a_tree_never_breaks_and_matches_one_span_at_a_time(rows: list[UsageRow], data: st.DataObject) -> None:
    tally = UsageTally(PRICES)
    for i, r in enumerate(rows):
        tally.add([r])
        assert not tally.broken
        if data.draw(st.booleans()):
            assert tally.totals() == recount(rows[:i + 1])
    assert tally.totals() == recount(rows)


# --- the §6.3 cases, arriving late ------------------------------------------------------------------------
def test_late_parent_makes_its_usage_a_repeat() -> None:
    chat = row(IDS[1], IDS[0], "model", model_name="m-priced", tokens_in=100, tokens_out=10)
    agent = row(IDS[0], None, "span", tokens_in=100, tokens_out=10, cost_usd=9.0)
    tally = tally_of([chat], [agent])
    assert (tally.totals().tokens_in, tally.totals().cost_source) == (100, "computed")
    assert tally.totals() == recount([chat, agent])


def test_late_intermediate_span_relinks_repeated_usage() -> None:
    agent = row(IDS[0], None, "span", tokens_in=100, tokens_out=20)
    chat = row(IDS[2], IDS[1], "model", model_name="m-priced", tokens_in=100, tokens_out=20)
    step = row(IDS[1], IDS[0])
    tally = tally_of([agent, chat])
    assert tally.totals().tokens_in == 200  # unrelated until the middle span arrives
    tally.add([step])
    assert tally.totals().tokens_in == 100
    assert tally.totals() == recount([agent, chat, step])


def test_late_mcp_server_span_joins_client_and_execute_tool() -> None:
    client = row(IDS[0], None, "tool", tool_name="get_weather")
    execute = row(IDS[2], IDS[1], "tool", tool_name="get_weather", tool_call_id="call_abc")
    server = row(IDS[1], IDS[0], "tool", tool_name="get_weather")
    tally = tally_of([client, execute])
    assert tally.totals().tool_count == 2
    tally.add([server])
    assert (tally.totals().tool_count, tally.totals().tool_names) == (1, ("get_weather",))


def test_retried_span_is_counted_once_and_the_first_copy_wins() -> None:
    first = row(IDS[0], None, "model", model_name="m-priced", tokens_in=10)
    retry = row(IDS[0], None, "model", model_name="m-priced", tokens_in=99)
    tally = tally_of([first], [retry, retry])
    assert (tally.totals().tokens_in, len(tally)) == (10, 1)


def test_cost_adds_up_exactly_in_any_order() -> None:
    rows = [row(i, None, "model", cost_usd=c) for i, c in zip(IDS, [0.1, 0.2, 0.3, 1e15, -1e15], strict=False)]
    assert tally_of(rows).totals().cost_usd == tally_of(rows[::-1]).totals().cost_usd == recount(rows).cost_usd


def test_parent_cycle_breaks_the_tally() -> None:
    a, b = row(IDS[0], IDS[1], "model", tokens_in=1), row(IDS[1], IDS[0], "tool", tokens_in=2, tool_name="t")
    assert tally_of([a], [b]).broken
    assert tally_of([row(IDS[2], IDS[2])]).broken


def test_cost_too_large_to_add_exactly_breaks_the_tally() -> None:
    assert tally_of([row(IDS[0], None, "model", cost_usd=1e308)]).broken


# --- the cache --------------------------------------------------------------------------------------------
def test_cache_hands_a_tally_back_only_for_the_head_it_was_put_with() -> None:
    cache, tally = TallyCache(), tally_of([row(IDS[0])])
    cache.put("run", "sha256:a", tally)
    assert cache.take("run", "sha256:b") is None
    assert cache.take("run", "sha256:a") is None  # taking removes it, whatever the head
    cache.put("run", "sha256:a", tally)
    assert cache.take("run", "sha256:a") is tally


def test_cache_evicts_the_least_recently_put_beyond_its_span_budget() -> None:
    cache = TallyCache(max_spans=3)
    cache.put("a", "h", tally_of([row(IDS[0]), row(IDS[1])]))
    cache.put("b", "h", tally_of([row(IDS[2])]))
    cache.put("c", "h", tally_of([row(IDS[3])]))
    cache.put("huge", "h", tally_of([row(i) for i in IDS]))
    assert [cache.take(k, "h") is not None for k in ("a", "b", "c", "huge")] == [False, True, True, False]
