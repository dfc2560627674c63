"""The binding hook flushes pending decision steps once per export, not once per span: with decisions
flowing, a flush per span (a WAL append and fsync each) cost a third of ingest throughput."""

from __future__ import annotations

from pathlib import Path

from benchmarks.spans import make_agent_request
from governance.tokens import SigningKeys
from otlp_receiver.decode import decode_request
from otlp_receiver.store.index import RunIndex
from server.binding import Binder


def test_an_export_flushes_pending_decision_steps_once(tmp_path: Path) -> None:
    flushes: list[int] = []
    binder = Binder(RunIndex(tmp_path / "index.db"), keys=lambda: SigningKeys.generate(),
                    active_policy=lambda tenant, project: None, record_step=lambda *a: None,
                    before_check=lambda: flushes.append(1))
    spans = decode_request(make_agent_request(200, seed=1)).spans
    bindings = binder.bind_spans("t", "p", spans)
    assert len(flushes) == 1
    assert len(bindings) == len(spans)
    assert set(bindings) == {("ungated", None), (None, None)}  # tool spans / other spans, in order
    assert [b == (None, None) for b in bindings] == [
        binder.bind_spans("t", "p", [s])[0] == (None, None) for s in spans]
