"""The run index and transactional state in SQLite (sqlite-utils), WAL mode.

One writer connection (used by the flusher and admin writes, serialised by a lock) and
one read connection per thread. Every query is scoped by ``tenant_id``. Lists page with a
keyset cursor over ``(started_ns, run_id)`` — never OFFSET — so a deep page costs what the
first one does and pages stay stable while new runs arrive.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlite_utils import Database

from otlp_receiver.errors import StorageError
from otlp_receiver.model import Run, RunId, RunStatus, TenantId
from otlp_receiver.store import cursor as _cursor
from otlp_receiver.store.migrations import migrations

IN_CHUNK = 500
"""Ids per ``IN (...)`` query (SQLite's default limit on bound parameters is far above it)."""
_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=10000",
            "PRAGMA foreign_keys=ON", "PRAGMA cache_size=-65536", "PRAGMA temp_store=MEMORY")


@dataclass(frozen=True, slots=True)
class RunFilters:
    """Filters of the runs list; every field is optional."""

    status: str | None = None
    service: str | None = None
    agent: str | None = None
    model: str | None = None
    tool: str | None = None
    tag: tuple[str, str] | None = None
    started_after_ns: int | None = None
    started_before_ns: int | None = None
    has_error: bool | None = None
    min_cost_usd: float | None = None


class RunIndex:
    """SQLite state: runs, facets, the span index, the WAL checkpoint and ingest keys."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self.write_lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.writer = self._connect()
            migrations.apply(self.writer)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the run index at {self.path}: {exc}") from exc

    def _connect(self) -> Database:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        return Database(conn)

    @property
    def reader(self) -> Database:
        """This thread's read connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self.writer if self.path == ":memory:" else self._connect()
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction on the writer connection (serialised across threads)."""
        with self.write_lock:
            db = self.writer
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise StorageError(f"run index write failed: {exc}") from exc
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Run a read query on this thread's connection."""
        try:
            return list(self.reader.query(sql, params))
        except sqlite3.Error as exc:
            raise StorageError(f"run index read failed: {exc}") from exc

    # -- meta ------------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value from the key/value meta table."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0]["value"] if rows else None

    # -- runs ------------------------------------------------------------------------------------------------

    def get_run(self, tenant_id: str, run_id: str) -> Run | None:
        """One run of this tenant, or None."""
        rows = self.query("SELECT * FROM runs WHERE tenant_id = ? AND run_id = ?", [tenant_id, run_id])
        return row_to_run(rows[0]) if rows else None

    def get_run_row(self, tenant_id: str, run_id: str) -> dict[str, Any] | None:
        """The raw index row of a run (internal fields included)."""
        rows = self.query("SELECT * FROM runs WHERE tenant_id = ? AND run_id = ?", [tenant_id, run_id])
        return rows[0] if rows else None

    def step_counts(self, tenant_id: str, run_ids: Sequence[str]) -> dict[str, int]:
        """run_id → step_count of those of these runs the index has (one query per 500 ids)."""
        found: dict[str, int] = {}
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.query(f"SELECT run_id, step_count FROM runs WHERE tenant_id = ? AND run_id IN ({marks})",
                              [tenant_id, *chunk])
            found.update((r["run_id"], r["step_count"]) for r in rows)
        return found

    def step_start_ranges(self, tenant_id: str, run_ids: Sequence[str], *, after_seq: int = -1,
                          max_seq: int | None = None) -> dict[str, tuple[int, int]]:
        """Per day holding steps of these runs (with after_seq < seq <= max_seq), the first and last
        ``start_ns`` of those steps: what ``StepTable`` needs to read only the files and row groups that
        can hold them (``started_within``). One query per ``IN_CHUNK`` ids."""
        ranges: dict[str, tuple[int, int]] = {}
        for start in range(0, len(run_ids), IN_CHUNK):
            chunk = list(run_ids[start:start + IN_CHUNK])
            sql = (f"SELECT day, MIN(start_ns) AS lo, MAX(start_ns) AS hi FROM spans WHERE tenant_id = ? "
                   f"AND run_id IN ({','.join('?' * len(chunk))})")
            params: list[Any] = [tenant_id, *chunk]
            if after_seq >= 0:  # (a seq bound makes SQLite use the seq index: only for a page's range)
                sql += " AND seq > ?"
                params.append(after_seq)
            if max_seq is not None:
                sql += " AND seq <= ?"
                params.append(max_seq)
            for row in self.query(sql + " GROUP BY day", params):
                lo, hi = ranges.get(row["day"], (row["lo"], row["hi"]))
                ranges[row["day"]] = (min(lo, row["lo"]), max(hi, row["hi"]))
        return ranges

    def list_runs(self, tenant_id: str, filters: RunFilters, *, limit: int,
                  cursor: str | None = None) -> tuple[list[Run], str | None]:
        """A page of runs, newest first, and the cursor of the next page (None at the end)."""
        sql, params = _list_sql(tenant_id, filters, limit + 1, _cursor.decode_ns_key(cursor) if cursor else None)
        rows = self.query(sql, params)
        runs = [row_to_run(r) for r in rows[:limit]]
        next_cursor = _cursor.encode_cursor(runs[-1].started_ns, runs[-1].run_id) if len(rows) > limit else None
        return runs, next_cursor

    def count_runs(self, tenant_id: str) -> int:
        """How many runs this tenant has."""
        return int(self.query("SELECT count(*) AS n FROM runs WHERE tenant_id = ?", [tenant_id])[0]["n"])

    # -- spans -----------------------------------------------------------------------------------------------

    def known_span_ids(self, tenant_id: str, run_id: str, span_ids: Sequence[str]) -> set[str]:
        """Which of these span ids the run already has (the dedupe check after a cache miss)."""
        found: set[str] = set()
        for start in range(0, len(span_ids), 500):
            chunk = list(span_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.query(f"SELECT span_id FROM spans WHERE tenant_id = ? AND run_id = ? "
                              f"AND span_id IN ({marks})", [tenant_id, run_id, *chunk])
            found.update(r["span_id"] for r in rows)
        return found

    def span_rows(self, tenant_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every span-index row of a run (tree links and usage), in seq order."""
        return self.query("SELECT * FROM spans WHERE tenant_id = ? AND run_id = ? ORDER BY seq",
                          [tenant_id, run_id])

    def existing_parents(self, tenant_id: str, run_id: str, parent_ids: Sequence[str]) -> set[str]:
        """Which of these parent span ids exist in the run (to flag orphans)."""
        return self.known_span_ids(tenant_id, run_id, parent_ids)


def _list_sql(tenant_id: str, f: RunFilters, limit: int,
              after: tuple[int, str] | None) -> tuple[str, list[Any]]:
    facet = _facet_join(f)
    src = "f" if facet else "r"
    where: list[str] = [f"{src}.tenant_id = ?"]
    params: list[Any] = [tenant_id]
    join = ""
    if facet:
        table, cond, values = facet
        join = "JOIN runs r ON r.tenant_id = f.tenant_id AND r.run_id = f.run_id"
        where.append(cond)
        params.extend(values)
        source = f"{table} f"
    else:
        source = "runs r"
    _add_run_filters(f, where, params, src)
    if after is not None:
        where.append(f"({src}.started_ns, {src}.run_id) < (?, ?)")
        params.extend(after)
    sql = (f"SELECT r.* FROM {source} {join} WHERE {' AND '.join(where)} "
           f"ORDER BY {src}.started_ns DESC, {src}.run_id DESC LIMIT ?")
    return sql, [*params, limit]


def _facet_join(f: RunFilters) -> tuple[str, str, list[Any]] | None:
    if f.tool is not None:
        return "run_tools", "f.tool = ?", [f.tool]
    if f.model is not None:
        return "run_models", "f.model = ?", [f.model]
    if f.tag is not None:
        return "run_tags", "f.key = ? AND f.value = ?", list(f.tag)
    return None


def _add_run_filters(f: RunFilters, where: list[str], params: list[Any], src: str) -> None:
    simple = {"status": f.status, "service": f.service, "agent": f.agent}
    for column, value in simple.items():
        if value is not None:
            where.append(f"r.{column} = ?")
            params.append(value)
    if f.tool is not None and f.model is not None:
        where.append("EXISTS (SELECT 1 FROM run_models m WHERE m.tenant_id = r.tenant_id "
                     "AND m.run_id = r.run_id AND m.model = ?)")
        params.append(f.model)
    if f.tag is not None and (f.tool is not None or f.model is not None):
        where.append("EXISTS (SELECT 1 FROM run_tags g WHERE g.tenant_id = r.tenant_id "
                     "AND g.run_id = r.run_id AND g.key = ? AND g.value = ?)")
        params.extend(f.tag)
    if f.started_after_ns is not None:
        where.append(f"{src}.started_ns >= ?")
        params.append(f.started_after_ns)
    if f.started_before_ns is not None:
        where.append(f"{src}.started_ns < ?")
        params.append(f.started_before_ns)
    if f.has_error is not None:
        where.append("r.error_count > 0" if f.has_error else "r.error_count = 0")
    if f.min_cost_usd is not None:
        where.append("r.cost_usd >= ?")
        params.append(f.min_cost_usd)


def row_to_run(row: dict[str, Any]) -> Run:
    """A runs-table row → the domain Run."""
    return Run(
        tenant_id=TenantId(row["tenant_id"]), project_id=row["project_id"], run_id=RunId(row["run_id"]),
        trace_id=row["trace_id"], parent_run_id=row["parent_run_id"], status=RunStatus(row["status"]),
        name=row["name"], started_ns=row["started_ns"], finished_ns=row["finished_ns"],
        tags=orjson.loads(row["tags"]), model_names=tuple(orjson.loads(row["model_names"])),
        tool_names=tuple(orjson.loads(row["tool_names"])), tool_count=row["tool_count"],
        step_count=row["step_count"], error_count=row["error_count"], tokens_in=row["tokens_in"],
        tokens_out=row["tokens_out"], tokens_cache_read=row["tokens_cache_read"],
        tokens_cache_write=row["tokens_cache_write"], tokens_reasoning=row["tokens_reasoning"],
        cost_usd=row["cost_usd"], cost_source=row["cost_source"], service=row["service"],
        agent=row["agent"], session_id=row["session_id"], user_id=row["user_id"],
        head_hash=row["head_hash"], updated_ns=row["updated_ns"],
    )
