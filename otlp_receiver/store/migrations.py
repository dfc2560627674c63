"""Named, transactional migrations of the SQLite state (sqlite-utils ``Migrations``).

Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("traceward")


@migrations()
def m001_runs(db: Database) -> None:
    """The run index: one row per run, with the columns the runs list filters and sorts on."""
    db.execute("""
        CREATE TABLE runs (
            tenant_id TEXT NOT NULL, project_id TEXT NOT NULL, run_id TEXT NOT NULL,
            trace_id TEXT, parent_run_id TEXT, name TEXT,
            status TEXT NOT NULL DEFAULT 'running', explicit_status TEXT,
            started_ns INTEGER NOT NULL, finished_ns INTEGER, last_end_ns INTEGER,
            root_span_id TEXT, root_end_ns INTEGER,
            service TEXT, service_version TEXT, environment TEXT, agent TEXT,
            session_id TEXT, user_id TEXT, tags TEXT NOT NULL DEFAULT '{}',
            model_names TEXT NOT NULL DEFAULT '[]', tool_names TEXT NOT NULL DEFAULT '[]',
            tool_count INTEGER NOT NULL DEFAULT 0, step_count INTEGER NOT NULL DEFAULT 0,
            error_count INTEGER NOT NULL DEFAULT 0,
            tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
            tokens_cache_read INTEGER NOT NULL DEFAULT 0, tokens_cache_write INTEGER NOT NULL DEFAULT 0,
            tokens_reasoning INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL, cost_source TEXT, unpriced_models TEXT NOT NULL DEFAULT '[]',
            head_hash TEXT NOT NULL DEFAULT '', updated_ns INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, run_id)
        ) WITHOUT ROWID""")
    for name, cols in {
        "runs_by_start": "tenant_id, started_ns DESC, run_id DESC",
        "runs_by_status": "tenant_id, status, started_ns DESC, run_id DESC",
        "runs_by_service": "tenant_id, service, started_ns DESC, run_id DESC",
        "runs_by_agent": "tenant_id, agent, started_ns DESC, run_id DESC",
        "runs_by_error": "tenant_id, error_count, started_ns DESC, run_id DESC",
    }.items():
        db.execute(f"CREATE INDEX {name} ON runs ({cols})")


@migrations()
def m002_run_facets(db: Database) -> None:
    """Side tables for list-valued filters (model, tool, tag) so each filter is an index range."""
    for table, cols in {"run_models": "model TEXT NOT NULL", "run_tools": "tool TEXT NOT NULL",
                        "run_tags": "key TEXT NOT NULL, value TEXT NOT NULL"}.items():
        facet = cols.replace(" TEXT NOT NULL", "")
        db.execute(f"""CREATE TABLE {table} (tenant_id TEXT NOT NULL, run_id TEXT NOT NULL, {cols},
                       started_ns INTEGER NOT NULL, PRIMARY KEY (tenant_id, run_id, {facet})) WITHOUT ROWID""")
        db.execute(f"CREATE INDEX {table}_lookup ON {table} (tenant_id, {facet}, started_ns DESC, run_id DESC)")


@migrations()
def m003_spans(db: Database) -> None:
    """The span index: dedupe key (trace_id + span_id), seq, tree links and usage fields per step."""
    db.execute("""
        CREATE TABLE spans (
            tenant_id TEXT NOT NULL, run_id TEXT NOT NULL, span_id TEXT NOT NULL, seq INTEGER NOT NULL,
            parent_span_id TEXT, type TEXT NOT NULL, status TEXT NOT NULL, day TEXT NOT NULL,
            start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            model_name TEXT, tool_name TEXT, tool_call_id TEXT,
            tokens_in INTEGER, tokens_out INTEGER, tokens_total INTEGER, tokens_cache_read INTEGER,
            tokens_cache_write INTEGER, tokens_reasoning INTEGER, cost_usd REAL,
            PRIMARY KEY (tenant_id, run_id, span_id)
        ) WITHOUT ROWID""")
    db.execute("CREATE UNIQUE INDEX spans_by_seq ON spans (tenant_id, run_id, seq)")


@migrations()
def m004_meta_and_keys(db: Database) -> None:
    """Key/value state (WAL checkpoint) and hashed API keys (ingest keys and people's keys)."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("""
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY, prefix TEXT NOT NULL UNIQUE, secret_hash TEXT NOT NULL,
            tenant_id TEXT NOT NULL, project_id TEXT NOT NULL, role TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '', created_ns INTEGER NOT NULL, revoked_ns INTEGER,
            expires_ns INTEGER
        )""")


@migrations()
def m005_audit_log(db: Database) -> None:
    """The tenant-wide hash-chained audit log."""
    db.execute("""
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, ts_ns INTEGER NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, details TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX audit_by_time ON audit_log (tenant_id, ts_ns DESC, id DESC)")
    db.execute("CREATE INDEX audit_by_action ON audit_log (tenant_id, action, ts_ns DESC, id DESC)")


@migrations()
def m006_key_admin_and_retention(db: Database) -> None:
    """Key rotation and per-key rate limits; per-tenant retention plans; audit-log pruning anchors."""
    for column in ("rotated_to TEXT", "rate_limit_per_min INTEGER", "created_by TEXT"):
        db.execute(f"ALTER TABLE api_keys ADD COLUMN {column}")
    db.execute("CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_ns DESC, key_id DESC)")
    db.execute("""
        CREATE TABLE tenant_plans (
            tenant_id TEXT PRIMARY KEY, retention_days INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL, updated_by TEXT NOT NULL
        )""")
    # Pruning old audit rows keeps the chain verifiable: verification starts from the last pruned row's hash.
    db.execute("""
        CREATE TABLE audit_anchors (
            tenant_id TEXT PRIMARY KEY, last_id INTEGER NOT NULL, last_hash TEXT NOT NULL,
            pruned_ns INTEGER NOT NULL
        )""")


@migrations()
def m006_spans_by_parent(db: Database) -> None:
    """Children lookup: a late-arriving parent can relink earlier spans (usage must be recounted)."""
    db.execute("CREATE INDEX spans_by_parent ON spans (tenant_id, run_id, parent_span_id)")


@migrations()
def m007_governance(db: Database) -> None:
    """Governance (``governance/store.py``): policy versions, approvals, kill switches, token uses, bindings."""
    db.execute("""
        CREATE TABLE policies (
            policy_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, project_id TEXT NOT NULL,
            version INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 0,
            document TEXT NOT NULL, source TEXT NOT NULL, content_type TEXT NOT NULL, sha256 TEXT NOT NULL,
            description TEXT, rule_count INTEGER NOT NULL, created_ns INTEGER NOT NULL, created_by TEXT NOT NULL,
            activated_ns INTEGER, activated_by TEXT,
            UNIQUE (tenant_id, project_id, version)
        )""")
    db.execute("CREATE UNIQUE INDEX policies_one_active ON policies (tenant_id, project_id) WHERE active = 1")
    db.execute("""
        CREATE TABLE approvals (
            approval_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, project_id TEXT NOT NULL,
            tool TEXT NOT NULL, args TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
            requested_by TEXT NOT NULL, context TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL,
            created_ns INTEGER NOT NULL, expires_ns INTEGER NOT NULL, agent TEXT, environment TEXT,
            action_class TEXT, autonomy_level TEXT, policy_version INTEGER, rule_id TEXT, reason_code TEXT,
            decided_by TEXT, decided_ns INTEGER, reason TEXT, edited_args TEXT, token TEXT, token_id TEXT
        )""")
    db.execute("CREATE INDEX approvals_by_created ON approvals (tenant_id, created_ns DESC, approval_id DESC)")
    db.execute("CREATE INDEX approvals_by_status ON approvals (tenant_id, status, created_ns DESC, approval_id DESC)")
    db.execute("CREATE INDEX approvals_by_trace ON approvals (tenant_id, trace_id)")
    db.execute("CREATE INDEX approvals_pending_expiry ON approvals (expires_ns) WHERE status = 'pending'")
    db.execute("""
        CREATE TABLE kill_switches (
            tenant_id TEXT PRIMARY KEY, enabled INTEGER NOT NULL, reason TEXT,
            updated_ns INTEGER NOT NULL, updated_by TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE token_uses (
            tenant_id TEXT NOT NULL, jti TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
            used_ns INTEGER NOT NULL, PRIMARY KEY (tenant_id, jti)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX token_uses_by_time ON token_uses (used_ns)")
    db.execute("""
        CREATE TABLE binding_checks (
            tenant_id TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL, binding TEXT NOT NULL,
            jti TEXT, checked_ns INTEGER NOT NULL, PRIMARY KEY (tenant_id, trace_id, span_id)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX binding_checks_by_time ON binding_checks (checked_ns)")


@migrations()
def m007_audit_log_tail(db: Database) -> None:
    """The audit append reads the tenant's last row by id; without this index that sorts every tenant row."""
    db.execute("CREATE INDEX audit_by_id ON audit_log (tenant_id, id)")


@migrations()
def m008_analytics(db: Database) -> None:
    """Issue 7: the event log of the live stream, findings, the scan queue, run feedback.

    ``events`` ids are the stream's event ids (AUTOINCREMENT: never reused, even after pruning).
    Approval events come from triggers on ``approvals`` so that every path that creates or decides
    one (API, expiry job) logs it in the same transaction, without governance knowing the stream.
    """
    db.execute("""
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, ts_ns INTEGER NOT NULL,
            type TEXT NOT NULL, run_id TEXT, data TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX events_by_tenant ON events (tenant_id, id)")
    db.execute("CREATE INDEX events_by_time ON events (ts_ns)")
    now_ns = "CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)"
    approval = ("json_object('approval_id', NEW.approval_id, 'run_id', NEW.trace_id, 'span_id', NEW.span_id, "
                "'tool', NEW.tool, 'status', NEW.status, 'agent', NEW.agent, 'decided_by', NEW.decided_by, "
                "'reason', NEW.reason)")
    db.execute(f"""
        CREATE TRIGGER events_approval_created AFTER INSERT ON approvals BEGIN
            INSERT INTO events (tenant_id, ts_ns, type, run_id, data)
            VALUES (NEW.tenant_id, {now_ns}, 'approval.created', NEW.trace_id, {approval});
        END""")
    db.execute(f"""
        CREATE TRIGGER events_approval_decided AFTER UPDATE OF status ON approvals
        WHEN NEW.status IS NOT OLD.status BEGIN
            INSERT INTO events (tenant_id, ts_ns, type, run_id, data)
            VALUES (NEW.tenant_id, {now_ns}, 'approval.decided', NEW.trace_id, {approval});
        END""")
    db.execute("""
        CREATE TABLE findings (
            tenant_id TEXT NOT NULL, finding_id TEXT NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL,
            severity TEXT NOT NULL, message TEXT NOT NULL, step_seqs TEXT NOT NULL DEFAULT '[]',
            detected_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, agent TEXT,
            PRIMARY KEY (tenant_id, finding_id)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX findings_by_time ON findings (tenant_id, detected_ns DESC, finding_id DESC)")
    db.execute("CREATE INDEX findings_by_run ON findings (tenant_id, run_id)")
    db.execute("""
        CREATE TABLE finding_scans (
            tenant_id TEXT NOT NULL, run_id TEXT NOT NULL, queued_ns INTEGER NOT NULL,
            scanned_ns INTEGER, run_updated_ns INTEGER, PRIMARY KEY (tenant_id, run_id)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX finding_scans_queue ON finding_scans (queued_ns) WHERE scanned_ns IS NULL")
    db.execute("CREATE INDEX runs_running ON runs (last_end_ns) WHERE status = 'running'")
    db.execute("""
        CREATE TABLE feedback (
            feedback_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, run_id TEXT NOT NULL, score REAL,
            label TEXT, comment TEXT, created_ns INTEGER NOT NULL, created_by TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX feedback_by_time ON feedback (tenant_id, created_ns DESC, feedback_id DESC)")
    db.execute("CREATE INDEX feedback_by_run ON feedback (tenant_id, run_id)")


@migrations()
def m009_run_seals(db: Database) -> None:
    """Run seals (``server/sealing.py``): the seal audit rows by run and by tenant, and each run's last sealed head.

    ``run_seals`` only schedules sealing (which runs have a head not sealed yet); verification never trusts it
    and reads the signed seals from the hash-chained audit log instead.
    """
    db.execute("CREATE INDEX audit_by_target ON audit_log (tenant_id, action, target, id)")
    db.execute("""
        CREATE TABLE run_seals (
            tenant_id TEXT NOT NULL, run_id TEXT NOT NULL, head_hash TEXT NOT NULL, step_count INTEGER NOT NULL,
            audit_id INTEGER NOT NULL, sealed_ns INTEGER NOT NULL, PRIMARY KEY (tenant_id, run_id)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE seal_tips (
            tenant_id TEXT PRIMARY KEY, seal_hash TEXT NOT NULL, audit_id INTEGER NOT NULL
        ) WITHOUT ROWID""")


@migrations()
def m010_run_frame_cache(db: Database) -> None:
    """The analytics runs cache (``otlp_receiver/store/frames.py``) re-reads runs changed since its last read,
    and reloads a tenant after any deletion (the trigger counts real DELETEs; REPLACE does not fire it)."""
    db.execute("CREATE INDEX runs_by_update ON runs (tenant_id, updated_ns)")
    db.execute("CREATE TABLE run_deletions (tenant_id TEXT PRIMARY KEY, deleted INTEGER NOT NULL)")
    db.execute("""
        CREATE TRIGGER runs_deleted AFTER DELETE ON runs BEGIN
            INSERT INTO run_deletions (tenant_id, deleted) VALUES (OLD.tenant_id, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET deleted = deleted + 1;
        END""")


@migrations()
def m011_drop_run_deletion_counter(db: Database) -> None:
    """Undo m010's deletion counter: sqlite-utils turns ``recursive_triggers`` on, so the trigger also fired on
    every ``INSERT OR REPLACE`` of a run. The runs cache compares row counts instead."""
    db.execute("DROP TRIGGER runs_deleted")
    db.execute("DROP TABLE run_deletions")


_NEXT_EVENT_SEQ = """INSERT INTO event_seqs (tenant_id, last) VALUES ({tenant}, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET last = last + 1"""


@migrations()
def m012_event_ids_per_tenant(db: Database) -> None:
    """Stream event ids numbered per tenant (``events.seq``): one global sequence let a tenant read other tenants'
    activity off the gaps between its own ids. ``event_seqs`` keeps each tenant's last id (and what pruning
    deleted), so ids never go back even when every event of a tenant was pruned. Rows that exist keep their old
    id as their seq: a client resuming from an id it saw before the upgrade misses nothing."""
    db.execute("ALTER TABLE events ADD COLUMN seq INTEGER")
    db.execute("UPDATE events SET seq = id")
    db.execute("CREATE UNIQUE INDEX events_by_tenant_seq ON events (tenant_id, seq)")
    db.execute("DROP INDEX events_by_tenant")
    db.execute("""CREATE TABLE event_seqs (tenant_id TEXT PRIMARY KEY, last INTEGER NOT NULL,
                  pruned_through INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""")
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    pruned = db.execute("SELECT value FROM meta WHERE key = 'events_pruned_through'").fetchone()
    if row and row[0]:  # an upgraded server: every tenant continues after the old global sequence
        tenants = {r[0] for r in db.execute("SELECT DISTINCT tenant_id FROM events")}
        tenants |= {r[0] for r in db.execute("SELECT DISTINCT tenant_id FROM runs")}
        db.conn.executemany("INSERT INTO event_seqs (tenant_id, last, pruned_through) VALUES (?, ?, ?)",
                            [(t, row[0], int(pruned[0]) if pruned else 0) for t in tenants])
    db.execute("DROP TRIGGER events_approval_created")
    db.execute("DROP TRIGGER events_approval_decided")
    approval = ("json_object('approval_id', NEW.approval_id, 'run_id', NEW.trace_id, 'span_id', NEW.span_id, "
                "'tool', NEW.tool, 'status', NEW.status, 'agent', NEW.agent, 'decided_by', NEW.decided_by, "
                "'reason', NEW.reason)")
    now_ns = "CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)"
    insert = (f"INSERT INTO events (tenant_id, seq, ts_ns, type, run_id, data) VALUES (NEW.tenant_id, "
              f"(SELECT last FROM event_seqs WHERE tenant_id = NEW.tenant_id), {now_ns}, '{{type}}', NEW.trace_id, "
              f"{approval})")
    bump = _NEXT_EVENT_SEQ.format(tenant="NEW.tenant_id")
    db.execute(f"""
        CREATE TRIGGER events_approval_created AFTER INSERT ON approvals BEGIN
            {bump};
            {insert.format(type="approval.created")};
        END""")
    db.execute(f"""
        CREATE TRIGGER events_approval_decided AFTER UPDATE OF status ON approvals
        WHEN NEW.status IS NOT OLD.status BEGIN
            {bump};
            {insert.format(type="approval.decided")};
        END""")


@migrations()
def m013_log_only_runs(db: Database) -> None:
    """``runs.log_only``: 1 while every step of the run came from OTLP log records (its spans were sampled out
    upstream, or have not arrived). Nothing else ends such a run, so it ends when idle (``store/runs.py``); the
    partial index keeps the periodic look for idle ones to the few runs it concerns. Runs opened by logs before
    this migration are not marked (nothing in the index tells their steps apart from span steps)."""
    db.execute("ALTER TABLE runs ADD COLUMN log_only INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX runs_log_only_running ON runs (updated_ns) WHERE log_only = 1 AND status = 'running'")


@migrations()
def m014_damaged_step_files(db: Database) -> None:
    """Damaged step files retention had to keep (they may hold steps still within retention): what /healthz
    and /metrics count, and what tells a later pass that a file was already reported."""
    db.execute("""
        CREATE TABLE damaged_step_files (
            path TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, day TEXT NOT NULL, problem TEXT NOT NULL,
            first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX damaged_step_files_by_tenant ON damaged_step_files (tenant_id)")
