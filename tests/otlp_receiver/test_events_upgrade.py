"""Upgrading to per-tenant event ids (migration m012): nobody's stream goes back or skips."""

from __future__ import annotations

from pathlib import Path

from sqlite_utils import Database

from otlp_receiver.store.events import append_event, last_event_id, prune_events, pruned_through, read_events
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.migrations import migrations


def test_upgraded_tenants_continue_after_the_old_global_ids(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    old = Database(path)
    migrations.apply(old, stop_before="m012_event_ids_per_tenant")
    for i, tenant in enumerate(["a", "b", "a", "a", "b"]):
        old.execute("INSERT INTO events (tenant_id, ts_ns, type, data) VALUES (?, ?, 'run.started', '{}')",
                    [tenant, i + 1])
    old.conn.commit()
    old.close()

    index = RunIndex(path)  # applies m012
    assert [e.id for e in read_events(index, "a", after_id=0)] == [1, 3, 4]  # the ids clients already saw
    assert last_event_id(index, "a") == last_event_id(index, "b") == 5
    with index.transaction() as db:
        assert append_event(db, "b", "run.started") == 6
        assert append_event(db, "a", "run.started") == 6
        assert append_event(db, "c", "run.started") == 1  # a tenant new since the upgrade starts at 1
    assert [e.id for e in read_events(index, "b", after_id=2)] == [5, 6]


def test_pruning_is_remembered_per_tenant_and_ids_never_go_back(tmp_path: Path) -> None:
    index = RunIndex(tmp_path / "index.sqlite3")
    with index.transaction() as db:
        for tenant, ts in [("a", 1), ("b", 2), ("a", 3), ("a", 100)]:
            append_event(db, tenant, "run.started", ts_ns=ts)
    assert prune_events(index, before_ns=50) == 3
    assert (pruned_through(index, "a"), pruned_through(index, "b")) == (2, 1)
    assert prune_events(index, before_ns=200) == 1
    assert (pruned_through(index, "a"), last_event_id(index, "a")) == (3, 3)
    with index.transaction() as db:
        assert append_event(db, "a", "run.started") == 4  # every event of "a" was pruned: still 4, not 1
