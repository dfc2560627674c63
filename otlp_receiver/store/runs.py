"""The SQLite half of a flush: span index rows, run rows, facets and the WAL checkpoint, in one transaction.

Runs update incrementally as spans of a trace arrive in any order and many batches:
summaries merge (earliest start, latest end, first non-empty name/service/agent...), the
root's end sets the final status (a run opened by log records alone has no root: see :func:`idle_log_only_runs`),
and usage totals follow the §6.3 counting rules: a run's
``UsageTally`` (kept in a ``TallyCache`` between batches while it runs) folds in the batch's spans; without a
current tally (a restart, an eviction) they are recounted from the span index when the batch
can change them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from sqlite_utils import Database

from otlp_receiver.ingest import IDLE_END
from otlp_receiver.model import RunStatus, SpanId, StepDraft, StepType, TraceId
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.index import RunIndex
from otlp_receiver.usage import UsageTotals, total_usage
from otlp_receiver.usage_tally import USAGE_COLUMNS, TallyCache, UsageRow, UsageTally

if TYPE_CHECKING:
    from otlp_receiver.flusher import Batch

_SPAN_COLUMNS = ("tenant_id", "run_id", "span_id", "seq", "parent_span_id", "type", "status", "day",
                 "start_ns", "end_ns", "model_name", "tool_name", "tool_call_id", "tokens_in", "tokens_out",
                 "tokens_total", "tokens_cache_read", "tokens_cache_write", "tokens_reasoning", "cost_usd")
_MERGE_FIRST = ("name", "service", "agent", "session_id", "user_id")


def apply_run_updates(index: RunIndex, batch: Batch, prices: PriceTable, *, checkpoint_key: str,
                      hooks: Sequence[Callable[[Database, Batch], None]] = (),
                      tallies: TallyCache | None = None) -> None:
    """Apply one flush batch to the run index atomically (hooks run inside the same transaction).

    ``tallies`` carries runs' usage tallies from one batch to the next (without it, each batch recounts).
    """
    now = time.time_ns()
    tallies = tallies if tallies is not None else TallyCache(max_spans=0)
    with index.transaction() as db:
        for tenant, project, run in batch.created:
            if _status(db, tenant, run["run_id"]) is None:
                batch.transitions[(tenant, run["run_id"])] = (None, "running")
            _create_run(db, tenant, project, run, now)
        _insert_spans(db, batch)
        for key, summaries in _touched_runs(batch).items():
            _update_run(db, key, summaries, batch, _Usage(prices, tallies), now)
        for fin in batch.finished:
            key = (fin["tenant"], fin["run_id"])
            before = _status(db, *key)
            if _finish(db, fin, now):
                batch.transitions[key] = (batch.transitions.get(key, (before, ""))[0], _status(db, *key) or "")
        for hook in hooks:
            hook(db, batch)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [checkpoint_key, str(batch.end)])


def stored_heads(index: RunIndex, tenant: str, run_ids: Sequence[str]) -> dict[str, str]:
    """The head hash of each of these runs that is stored ("" for a run without steps yet)."""
    heads: dict[str, str] = {}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start:start + 500]
        rows = index.query(f"SELECT run_id, head_hash FROM runs WHERE tenant_id = ? AND run_id IN "
                           f"({','.join('?' * len(chunk))})", [tenant, *chunk])
        heads.update((row["run_id"], row["head_hash"]) for row in rows)
    return heads


def _create_run(db: Database, tenant: str, project: str, run: dict[str, Any], now: int) -> None:
    tags = run.get("tags") or {}
    inserted = db.execute(
        "INSERT OR IGNORE INTO runs (tenant_id, project_id, run_id, trace_id, parent_run_id, name, started_ns, "
        "tags, service, agent, updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [tenant, project, run["run_id"], run.get("trace_id"), run.get("parent_run_id"), run.get("name"),
         run["started_ns"], orjson.dumps(tags).decode(), tags.get("service.name"), run.get("agent"), now]).rowcount
    if inserted:  # an existing run keeps its row, and so its facets
        _write_facets(db, tenant, run["run_id"], run["started_ns"], (), (), tags, replace=False)


def _insert_spans(db: Database, batch: Batch) -> None:
    rows = batch.rows
    if not rows["seq"]:
        return
    columns = [rows[c] for c in _SPAN_COLUMNS]
    marks = ",".join("?" * len(_SPAN_COLUMNS))
    db.conn.executemany(f"INSERT OR IGNORE INTO spans ({','.join(_SPAN_COLUMNS)}) VALUES ({marks})",
                        zip(*columns, strict=True))


def _touched_runs(batch: Batch) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Runs the batch has summaries or steps for, each with its summaries in batch order."""
    touched: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for tenant, _, summary in batch.summaries:
        touched.setdefault((tenant, summary["run_id"]), []).append(summary)
    for key in batch.heads:
        touched.setdefault(key, [])
    return touched


def _update_run(db: Database, key: tuple[str, str], summaries: list[dict[str, Any]], batch: Batch, usage: _Usage,
                now: int) -> None:
    tenant, run_id = key
    loaded = _load(db, tenant, run_id)
    row = loaded or _new_row(tenant, batch.projects.get(key, ""), run_id, now)
    if loaded is None:  # a run opened by log records alone is log-only until any other step arrives
        row["log_only"] = int(bool(summaries) and all(s.get("from_logs") for s in summaries))
    elif any(not s.get("from_logs") for s in summaries):
        row["log_only"] = 0
    head_before, facets_before = row["head_hash"], _facets(loaded) if loaded else None
    # A run created earlier in this same batch keeps its "before" (None): it is new to the batch's readers.
    before = batch.transitions[key][0] if key in batch.transitions else (loaded["status"] if loaded else None)
    for summary in summaries:
        _merge_summary(row, summary)
    if key in batch.heads:
        row["head_hash"], row["step_count"] = batch.heads[key]
    _update_usage(db, row, key, head_before, batch, usage)
    row["updated_ns"] = now
    _save(db, row, facets_before)
    batch.transitions[key] = (before, row["status"])


def _load(db: Database, tenant: str, run_id: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM runs WHERE tenant_id = ? AND run_id = ?", [tenant, run_id]))
    if not rows:
        return None
    row = rows[0]
    row["tags"] = orjson.loads(row["tags"])
    return row


def _new_row(tenant: str, project: str, run_id: str, now: int) -> dict[str, Any]:
    return {"tenant_id": tenant, "project_id": project, "run_id": run_id, "trace_id": run_id,
            "status": RunStatus.RUNNING.value, "started_ns": 0, "tags": {}, "step_count": 0,
            "head_hash": "", "updated_ns": now, "model_names": "[]", "tool_names": "[]"}


def _merge_summary(row: dict[str, Any], s: dict[str, Any]) -> None:
    if s.get("first_start_ns") is not None:
        current = row.get("started_ns") or 0
        row["started_ns"] = s["first_start_ns"] if not current else min(current, s["first_start_ns"])
    if s.get("last_end_ns") is not None:
        row["last_end_ns"] = max(row.get("last_end_ns") or 0, s["last_end_ns"])
    if s.get("root_span_id"):
        row["root_span_id"] = s["root_span_id"]
        for name in _MERGE_FIRST:  # what the root's batch says beats values guessed from other spans
            if s.get(name):
                row[name] = s[name]
    for name in _MERGE_FIRST:
        if not row.get(name) and s.get(name):
            row[name] = s[name]
    row["tags"] = {**row.get("tags", {}), **(s.get("tags") or {})}
    row["service_version"] = row["tags"].get("service.version")
    row["environment"] = row["tags"].get("deployment.environment")
    if s.get("root_status") and s.get("root_end_ns") and not row.get("explicit_status"):
        row["status"] = s["root_status"]
        row["root_end_ns"] = row["finished_ns"] = s["root_end_ns"]


def _relinks_usage(db: Database, row: dict[str, Any], new: tuple[int, list[str]] | None) -> bool:
    """True when a new span is the parent of an earlier-stored span of a run that has usage:
    the late link can turn a usage leaf into an ancestor, so the totals must be recounted."""
    if new is None or not (row.get("tokens_in") or row.get("tokens_out") or row.get("cost_usd")):
        return False
    first_seq, span_ids = new
    for start in range(0, len(span_ids), 500):
        chunk = span_ids[start:start + 500]
        hit = db.execute(f"SELECT 1 FROM spans WHERE tenant_id = ? AND run_id = ? AND seq < ? AND parent_span_id "
                         f"IN ({','.join('?' * len(chunk))}) LIMIT 1",
                         [row["tenant_id"], row["run_id"], first_seq, *chunk]).fetchone()
        if hit:
            return True
    return False


class _Usage(NamedTuple):
    prices: PriceTable
    tallies: TallyCache


def _update_usage(db: Database, row: dict[str, Any], key: tuple[str, str], head_before: str, batch: Batch,
                  usage: _Usage) -> None:
    """Usage totals after the batch: the run's tally folds in its new spans; without a tally that is
    current (same head hash), a recount from the span index when the batch can change the totals."""
    tally = usage.tallies.take(key, head_before) if head_before else UsageTally(usage.prices)
    if tally is not None:
        tally.add(batch.usage_rows.get(key, ()))
    elif key in batch.usage_changed or _relinks_usage(db, row, batch.new_spans.get(key)):
        tally = UsageTally(usage.prices)
        tally.add(_span_rows(db, row))
    else:
        return  # nothing in this batch can change the stored totals
    if tally.broken:  # a parent cycle or an unsummable cost: the definition handles those
        _set_usage(row, total_usage([_draft(r) for r in _span_rows(db, row)], usage.prices))
        return
    _set_usage(row, tally.totals())
    if row["status"] == RunStatus.RUNNING:  # a finished run rarely gets more spans: no memory for it
        usage.tallies.put(key, row["head_hash"], tally)


def _span_rows(db: Database, row: dict[str, Any]) -> list[UsageRow]:
    return db.execute(f"SELECT {','.join(USAGE_COLUMNS)} FROM spans WHERE tenant_id = ? AND run_id = ? "
                      "ORDER BY seq", [row["tenant_id"], row["run_id"]]).fetchall()


def _set_usage(row: dict[str, Any], totals: UsageTotals) -> None:
    row.update(tokens_in=totals.tokens_in, tokens_out=totals.tokens_out,
               tokens_cache_read=totals.tokens_cache_read, tokens_cache_write=totals.tokens_cache_write,
               tokens_reasoning=totals.tokens_reasoning, cost_usd=totals.cost_usd,
               cost_source=totals.cost_source, tool_count=totals.tool_count, error_count=totals.error_count,
               model_names=orjson.dumps(list(totals.model_names)).decode(),
               tool_names=orjson.dumps(list(totals.tool_names)).decode(),
               unpriced_models=orjson.dumps(list(totals.unpriced_models)).decode())


def _draft(r: UsageRow) -> StepDraft:
    s = dict(zip(USAGE_COLUMNS, r, strict=True))
    return StepDraft(
        trace_id=TraceId(""), span_id=SpanId(s["span_id"]), parent_span_id=s["parent_span_id"],
        type=StepType(s["type"]), name="", start_ns=s["start_ns"], end_ns=s["start_ns"], status=s["status"],
        tool_name=s["tool_name"], tool_call_id=s["tool_call_id"], model_name=s["model_name"],
        tokens_in=s["tokens_in"], tokens_out=s["tokens_out"], tokens_total=s["tokens_total"],
        tokens_cache_read=s["tokens_cache_read"], tokens_cache_write=s["tokens_cache_write"],
        tokens_reasoning=s["tokens_reasoning"], cost_usd=s["cost_usd"])


_Facets = tuple[int, str, str, dict[str, Any]]  # started_ns, model_names JSON, tool_names JSON, tags


def _facets(row: dict[str, Any]) -> _Facets:
    """What a run's facet rows (run_models, run_tools, run_tags) are made of."""
    return row["started_ns"], row.get("model_names") or "[]", row.get("tool_names") or "[]", row["tags"]


def _save(db: Database, row: dict[str, Any], facets_before: _Facets | None) -> None:
    """Write the run row, and its facet rows when what they are made of changed (None: a new run)."""
    record = {**row, "tags": orjson.dumps(row["tags"]).decode()}
    columns = [c for c in _run_columns(db) if c in record]
    db.execute(f"INSERT OR REPLACE INTO runs ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
               [record[c] for c in columns])
    facets = _facets(row)
    if facets == facets_before:
        return
    started_ns, models, tools, tags = facets
    _write_facets(db, row["tenant_id"], row["run_id"], started_ns, orjson.loads(models), orjson.loads(tools), tags,
                  replace=facets_before is not None)


_RUN_COLUMNS: list[str] = []


def _run_columns(db: Database) -> list[str]:
    if not _RUN_COLUMNS:
        _RUN_COLUMNS.extend(r[1] for r in db.execute("PRAGMA table_info(runs)").fetchall())
    return _RUN_COLUMNS


def _write_facets(db: Database, tenant: str, run_id: str, started_ns: int, models: Iterable[str],
                  tools: Iterable[str], tags: dict[str, Any], *, replace: bool = True) -> None:
    """The run's facet rows; ``replace=False`` for a run that has none yet (skips the deletes)."""
    for table in ("run_models", "run_tools", "run_tags") if replace else ():
        db.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND run_id = ?", [tenant, run_id])
    db.conn.executemany("INSERT OR IGNORE INTO run_models VALUES (?,?,?,?)",
                        [(tenant, run_id, m, started_ns) for m in models])
    db.conn.executemany("INSERT OR IGNORE INTO run_tools VALUES (?,?,?,?)",
                        [(tenant, run_id, t, started_ns) for t in tools])
    db.conn.executemany("INSERT OR IGNORE INTO run_tags VALUES (?,?,?,?,?)",
                        [(tenant, run_id, k, str(v), started_ns) for k, v in tags.items()])


def _status(db: Database, tenant: str, run_id: str) -> str | None:
    row = db.execute("SELECT status FROM runs WHERE tenant_id = ? AND run_id = ?", [tenant, run_id]).fetchone()
    return row[0] if row else None


def _finish(db: Database, fin: dict[str, Any], now: int) -> bool:
    """Apply a finish record; False when an idle end no longer applies (the run changed since it was found idle)."""
    if fin.get("kind") == IDLE_END:
        return db.execute(
            "UPDATE runs SET status = ?, finished_ns = ?, updated_ns = ? WHERE tenant_id = ? AND run_id = ? AND "
            "status = 'running' AND log_only = 1 AND explicit_status IS NULL AND step_count = ?",
            [RunStatus.SUCCEEDED.value, fin["finished_ns"], now, fin["tenant"], fin["run_id"], fin["step_count"]],
        ).rowcount > 0
    db.execute(
        "UPDATE runs SET explicit_status = coalesce(explicit_status, ?), status = coalesce(explicit_status, ?), "
        "finished_ns = coalesce(finished_ns, ?), updated_ns = ? WHERE tenant_id = ? AND run_id = ?",
        [fin["status"], fin["status"], fin["finished_ns"], now, fin["tenant"], fin["run_id"]])
    return True


# -- runs opened by log records alone ----------------------------------------------------------------------

class IdleRun(NamedTuple):
    """A log-only run found idle: what its end records."""

    tenant_id: str
    run_id: str
    last_activity_ns: int
    """Its last record's time (its first, if times went backwards): the end time it gets."""
    step_count: int
    """Its steps when found idle: the end applies only if no step arrived since."""


def idle_log_only_runs(index: RunIndex, *, now_ns: int, idle_ns: int, limit: int = 1000) -> list[IdleRun]:
    """Running log-only runs to which nothing arrived for ``idle_ns`` (by the server's clock).

    Such a run was opened by log records whose trace's spans Traceward never got (sampled out upstream): no
    root span will end it, and a finish call only comes for REST runs. The server ends them as ``succeeded``
    (nothing reported an error, as for a root span whose status is unset) at their last record's time, through
    the WAL (``IngestPipeline.end_idle_runs``), so runs, events, metrics, seals and findings see an ordinary finish. Not
    explicit: a root span that turns up later still sets the status it says."""
    rows = index.reader.conn.execute(
        "SELECT tenant_id, run_id, max(coalesce(last_end_ns, 0), started_ns), step_count FROM runs "
        "WHERE log_only = 1 AND status = 'running' AND updated_ns < ? AND explicit_status IS NULL LIMIT ?",
        [now_ns - idle_ns, limit]).fetchall()
    return [IdleRun(*row) for row in rows]
