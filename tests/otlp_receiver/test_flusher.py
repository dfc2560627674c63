"""Tests for otlp_receiver.flusher with store.runs: run usage totals as spans arrive over many batches.

The flusher keeps each run's usage tally between batches (otlp_receiver.usage_tally) and recounts from the
span index only without a current one; whichever path it takes, the stored totals must equal
``total_usage`` over every span received so far.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from otlp_receiver.chain import verify_chain
from otlp_receiver.flusher import Batch, Flusher
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.mapping import map_span
from otlp_receiver.model import Span, StatusCode
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from otlp_receiver.usage import total_usage
from otlp_receiver.wal import WriteAheadLog
from tests.factories import make_child, make_span

TENANT, PROJECT = "t1", "p1"
PRICES = PriceTable.default()


@dataclass
class Stores:
    dir: Path
    index: RunIndex
    pipeline: IngestPipeline
    flusher: Flusher

    def send(self, spans: list[Span]) -> None:
        self.pipeline.ingest_spans(TENANT, PROJECT, spans)
        while self.flusher.flush_once():
            pass

    def restart_flusher(self) -> None:
        """A new flusher over the same stores (as after a process restart: no tallies)."""
        old = self.flusher
        self.flusher = Flusher(old.wal, old.index, old.steps, old.sequencer, PRICES)


@contextmanager
def stores() -> Iterator[Stores]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = RunIndex(root / "index.db")
        wal, steps, sequencer = WriteAheadLog(root / "wal", fsync=False), StepTable(root / "steps"), Sequencer(index)
        yield Stores(root, index, IngestPipeline(wal, sequencer), Flusher(wal, index, steps, sequencer, PRICES))


def agent_trace() -> list[Span]:
    """invoke_agent (repeats its children's usage) → agent steps → chats, tools (one MCP pair), an error."""
    usage = {"gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30}
    root = make_span(name="invoke_agent", status_code=StatusCode.OK,
                     attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a", **usage})
    spans = [root]
    for i, model in enumerate(("gpt-4o", "claude-sonnet-4-5", "m-unpriced")):
        step = make_child(root, name=f"agent step {i}")
        chat = make_child(step, name=f"chat {model}", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 100 * (i + 1), "gen_ai.usage.output_tokens": 10})
        tool = make_child(step, name="execute_tool search", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.id": f"call_{i % 2}"})
        spans += [step, chat, tool]
    client = make_child(root, name="tools/call get_weather", kind=3, attributes={"mcp.method.name": "tools/call"})
    server = make_child(client, name="tools/call get_weather", kind=2, attributes={"mcp.method.name": "tools/call"})
    execute = make_child(server, attributes={"gen_ai.operation.name": "execute_tool",
                                             "gen_ai.tool.name": "get_weather"})
    failed = make_child(root, name="chat gpt-4o", status_code=StatusCode.ERROR, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "llm.cost.total": 0.25})
    return [*spans, client, server, execute, failed]


def expected(received: list[Span]) -> dict[str, Any]:
    totals = total_usage([map_span(s) for s in received], PRICES)
    return {"tokens_in": totals.tokens_in, "tokens_out": totals.tokens_out, "cost_usd": totals.cost_usd,
            "cost_source": totals.cost_source, "tool_count": totals.tool_count, "error_count": totals.error_count,
            "model_names": list(totals.model_names), "tool_names": list(totals.tool_names),
            "unpriced_models": list(totals.unpriced_models)}


def stored(index: RunIndex, run_id: str) -> dict[str, Any]:
    row = index.get_run_row(TENANT, run_id)
    assert row is not None
    lists = ("model_names", "tool_names", "unpriced_models")
    return {k: orjson.loads(row[k]) if k in lists else row[k] for k in expected([])}


def facets_match_the_row(index: RunIndex, run_id: str) -> bool:
    """The run's facet rows (what list filters join on) say what its row says."""
    row = index.get_run_row(TENANT, run_id)
    assert row is not None

    def values(table: str, column: str) -> list[Any]:
        return sorted(r[column] for r in index.query(f"SELECT {column} FROM {table} WHERE tenant_id = ? AND run_id = ?",
                                                     [TENANT, run_id]))

    tags = {r["key"]: r["value"] for r in index.query("SELECT key, value FROM run_tags WHERE tenant_id = ? "
                                                       "AND run_id = ?", [TENANT, run_id])}
    return (values("run_models", "model"), values("run_tools", "tool"), tags) == (
        sorted(orjson.loads(row["model_names"])), sorted(orjson.loads(row["tool_names"])),
        {k: str(v) for k, v in orjson.loads(row["tags"]).items()})


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[Span]], list[int]]:
    """The agent trace's spans in a random order (some sent twice), in batches; flusher restarts between some."""
    spans = agent_trace()
    order = draw(st.permutations(spans))
    retries = draw(st.lists(st.sampled_from(spans), max_size=3))
    order = [*order, *retries]
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), min_size=1, max_size=5)))
    bounds = [0, *cuts, len(order)]
    batches = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    restarts = draw(st.lists(st.integers(0, len(batches) - 1), max_size=2))
    return batches, restarts


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(delivery=deliveries())
def test_stored_totals_equal_the_full_recount_for_any_arrival_order(delivery: tuple[list[list[Span]], list[int]]
                                                                     ) -> None:
    batches, restarts = delivery
    with stores() as s:
        received: list[Span] = []
        for i, batch in enumerate(batches):
            if i in restarts:
                s.restart_flusher()
            s.send(batch)
            received += batch
            assert stored(s.index, batch[0].trace_id) == expected(received)
            assert facets_match_the_row(s.index, batch[0].trace_id)


def test_a_long_run_over_many_batches_is_not_reread_from_the_span_index() -> None:
    queries: list[str] = []
    with stores() as s:
        root, *spans = agent_trace()
        spans.append(root)  # as OTel exports them: the root ends, and is sent, last
        s.send(spans[:4])
        s.index.writer.conn.set_trace_callback(queries.append)
        for start in range(4, len(spans), 3):
            s.send(spans[start:start + 3])
        assert stored(s.index, root.trace_id) == expected(spans)
    assert not [q for q in queries if q.startswith("SELECT") and "FROM spans" in q]


def test_after_a_restart_the_first_usage_batch_recounts_and_later_ones_fold_in() -> None:
    with stores() as s:
        spans = agent_trace()
        s.send(spans[:6])
        s.restart_flusher()
        s.send(spans[6:10])
        s.send(spans[10:])
        assert stored(s.index, spans[0].trace_id) == expected(spans)


def test_a_failed_transaction_leaves_no_stale_tally() -> None:
    with stores() as s:
        spans = agent_trace()
        s.send(spans[:5])

        def fail(db: Database, batch: Batch) -> None:
            raise RuntimeError("hook failed")

        s.flusher.hooks.append(fail)
        s.pipeline.ingest_spans(TENANT, PROJECT, spans[5:9])
        with pytest.raises(RuntimeError):
            s.flusher.flush_once()
        s.flusher.hooks.remove(fail)
        queries: list[str] = []
        s.index.writer.conn.set_trace_callback(queries.append)
        assert s.flusher.flush_once()  # replays the failed batch (already in Delta)
        assert [q for q in queries if "FROM spans" in q]  # the tally it had updated was not trusted: a recount
        assert stored(s.index, spans[0].trace_id) == expected(spans[:9])
        s.send(spans[9:])
        assert stored(s.index, spans[0].trace_id) == expected(spans)


def test_a_finished_run_keeps_no_tally_and_a_late_span_is_still_counted() -> None:
    with stores() as s:
        spans = agent_trace()
        root, late = spans[0], spans[2]
        s.send([span for span in spans if span is not late])
        assert s.index.get_run_row(TENANT, root.trace_id)["status"] == "succeeded"
        assert len(s.flusher.tallies) == 0
        s.send([late])
        assert stored(s.index, root.trace_id) == expected([span for span in spans if span is not late] + [late])


def test_chains_continue_across_batches_and_restarts() -> None:
    with stores() as s:
        spans = agent_trace() + agent_trace()
        for start in range(0, len(spans), 5):
            if start == 10:
                s.restart_flusher()
            s.send(spans[start:start + 5])
        for run_id in {span.trace_id for span in spans}:
            row = s.index.get_run_row(TENANT, run_id)
            assert row is not None
            steps = s.flusher.steps.scan(TENANT).filter(pl.col("run_id") == run_id).sort("seq").collect()
            verdict = verify_chain(TENANT, run_id, steps.to_dicts(), expected_head=row["head_hash"],
                                   expected_count=row["step_count"])
            assert verdict.ok and verdict.steps_checked == 14


def test_a_batch_of_new_and_stored_runs_looks_the_runs_up_in_one_query() -> None:
    """Seqs continue after a restart (the sequencer reloads step counts from the index) and spans of runs
    already stored are deduplicated; the lookup is one query per batch, not one per run."""
    with stores() as s:
        stored = [agent_trace() for _ in range(3)]
        for trace in stored:
            s.send(trace)
        s.pipeline.sequencer = s.flusher.sequencer = Sequencer(s.index)  # a restart: nothing cached
        queries: list[str] = []
        real_query = s.index.query
        s.index.query = lambda sql, params=(): queries.append(sql) or real_query(sql, params)  # type: ignore[method-assign]
        late = [make_child(trace[0], name="late step") for trace in stored]
        fresh = [agent_trace() for _ in range(5)]
        s.pipeline.ingest_spans(TENANT, PROJECT, [*late, *stored[1], *(span for t in fresh for span in t)])
        assert sum("FROM runs" in q for q in queries) == 1
        s.index.query = real_query  # type: ignore[method-assign]
        while s.flusher.flush_once():
            pass
        for trace in stored:
            run = s.index.get_run_row(TENANT, trace[0].trace_id)
            assert run is not None and run["step_count"] == len(trace) + 1  # the late step, no duplicates
            seqs = (s.flusher.steps.scan(TENANT).filter(pl.col("run_id") == trace[0].trace_id)
                    .select("seq").collect()["seq"].sort().to_list())
            assert seqs == list(range(len(trace) + 1))
