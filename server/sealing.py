"""Run seals: a run's chain head, signed and appended to the tenant's hash-chained audit log.

A run is sealed when it reaches a final status (a flusher hook, so the seal commits in the same SQLite
transaction as the batch that finished the run) and when it has been idle past ``idle_s`` (a periodic job).
Steps that arrive after a seal change the head, and the run is sealed again: by the hook when the run is
already final, by the idle job otherwise.

Each seal is an audit row ``run.seal`` (target = run id) whose details carry the signed seal record
(``otlp_receiver.chain.seal_record`` + ``sign_seal`` with the governance Ed25519 key): tenant, run, head hash,
step count, time and ``prev_seal_hash``, which chains the tenant's seals (CloudTrail digest style) so a seal
cannot be dropped from the middle. Deleting a whole run leaves its seal behind, which verification notices.

``run_seals`` (last sealed head per run) and ``seal_tips`` (the tenant's last seal hash) only make sealing
cheap; verification reads the signed seals from the audit log and never trusts those two tables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlite_utils import Database

from governance.tokens import SigningKeys
from otlp_receiver.chain import audit_genesis_hash, seal_hash, seal_record, sign_seal, verify_seal
from otlp_receiver.flusher import Batch
from otlp_receiver.model import RunStatus
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex

logger = logging.getLogger(__name__)

SEAL_ACTION = "run.seal"
TOMBSTONE_ACTION = "retention.tombstone"
SYSTEM_ACTOR = "system:sealer"
FINAL_STATUSES = frozenset({RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELED.value})
_IDLE_BATCH = 500


@dataclass(frozen=True, slots=True)
class SealEntry:
    """A signed seal as read back from the audit log."""

    audit_id: int
    seal: dict[str, Any]

    @property
    def step_count(self) -> int:
        """Steps the seal covers."""
        return int(self.seal.get("step_count") or 0)

    @property
    def head_hash(self) -> str:
        """The sealed chain head."""
        return str(self.seal.get("head_hash") or "")


def seal_problem(entry: SealEntry, public_keys: Mapping[str, Ed25519PublicKey], tenant_id: str,
                 run_id: str) -> str | None:
    """Why a seal is not a valid seal of this run by one of these keys, or None when it is."""
    seal = entry.seal
    key = public_keys.get(str(seal.get("key_id")))
    if key is None:
        return f"seal (audit row {entry.audit_id}) is signed by unknown key {seal.get('key_id')!r}"
    if not verify_seal(seal, key):
        return f"seal signature invalid (audit row {entry.audit_id}): the seal record was altered"
    if seal.get("kind") != "traceward.run_seal" or seal.get("tenant_id") != tenant_id or seal.get("run_id") != run_id:
        return f"seal (audit row {entry.audit_id}) belongs to another run or tenant"
    return None


def latest_seal(index: RunIndex, tenant_id: str, run_id: str) -> SealEntry | None:
    """The run's most recent seal in the audit log."""
    rows = index.query("SELECT id, details FROM audit_log WHERE tenant_id = ? AND action = ? AND target = ? "
                       "ORDER BY id DESC LIMIT 1", [tenant_id, SEAL_ACTION, run_id])
    return _entry(rows[0]) if rows else None


def run_seals(index: RunIndex, tenant_id: str, run_id: str) -> list[SealEntry]:
    """Every seal of the run, oldest first."""
    rows = index.query("SELECT id, details FROM audit_log WHERE tenant_id = ? AND action = ? AND target = ? "
                       "ORDER BY id", [tenant_id, SEAL_ACTION, run_id])
    return [_entry(r) for r in rows]


def tombstone_after(index: RunIndex, tenant_id: str, run_id: str, after_id: int) -> dict[str, Any] | None:
    """A retention tombstone of the run written after audit row ``after_id`` (explains a deleted run)."""
    rows = index.query("SELECT id, details FROM audit_log WHERE tenant_id = ? AND action = ? AND target = ? "
                       "AND id > ? ORDER BY id DESC LIMIT 1", [tenant_id, TOMBSTONE_ACTION, run_id, after_id])
    return {"audit_id": rows[0]["id"], **orjson.loads(rows[0]["details"])} if rows else None


def _entry(row: dict[str, Any]) -> SealEntry:
    try:
        details = orjson.loads(row["details"])
    except orjson.JSONDecodeError:
        details = {}
    seal = details.get("seal") if isinstance(details, dict) else None
    return SealEntry(int(row["id"]), seal if isinstance(seal, dict) else {})


class RunSealer:
    """Seals run heads into the audit log: a flusher hook for final runs, a thread for idle ones."""

    def __init__(self, index: RunIndex, audit: AuditLog, keys: Callable[[], SigningKeys], *,
                 idle_s: float, interval_s: float) -> None:
        self.index, self.audit, self.keys = index, audit, keys
        self.idle_s, self.interval_s = idle_s, interval_s
        self.seals_written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sealing ---------------------------------------------------------------------------------------------

    def hook(self, db: Database, batch: Batch) -> None:
        """Flusher hook: seal every run this batch left in a final status whose head is not sealed yet."""
        for (tenant_id, run_id), (_, after) in batch.transitions.items():
            if after in FINAL_STATUSES:
                self.seal(db, tenant_id, run_id, trigger="final")

    def seal(self, db: Database, tenant_id: str, run_id: str, *, trigger: str,
             actor: str = SYSTEM_ACTOR) -> dict[str, Any] | None:
        """Seal the run's current head inside the caller's transaction; None when it is already sealed."""
        run = db.execute("SELECT head_hash, step_count, status FROM runs WHERE tenant_id = ? AND run_id = ?",
                         [tenant_id, run_id]).fetchone()
        if run is None or not run[0] or not run[1]:
            return None
        head, count, status = run
        sealed = db.execute("SELECT head_hash FROM run_seals WHERE tenant_id = ? AND run_id = ?",
                            [tenant_id, run_id]).fetchone()
        if sealed is not None and sealed[0] == head:
            return None
        keys = self.keys()
        tip = db.execute("SELECT seal_hash FROM seal_tips WHERE tenant_id = ?", [tenant_id]).fetchone()
        now = time.time_ns()
        record = seal_record(tenant_id=tenant_id, run_id=run_id, head_hash=head, step_count=count, sealed_ns=now,
                             prev_seal_hash=tip[0] if tip else audit_genesis_hash(tenant_id))
        signed = sign_seal(record, keys.current, keys.current_kid)
        row = self.audit.append(tenant_id, actor=actor, action=SEAL_ACTION, target=run_id,
                                details={"seal": signed, "trigger": trigger, "status": status}, db=db)
        db.execute("INSERT OR REPLACE INTO run_seals (tenant_id, run_id, head_hash, step_count, audit_id, sealed_ns) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [tenant_id, run_id, head, count, row["id"], now])
        db.execute("INSERT OR REPLACE INTO seal_tips (tenant_id, seal_hash, audit_id) VALUES (?, ?, ?)",
                   [tenant_id, seal_hash(signed), row["id"]])
        self.seals_written += 1
        return signed

    def seal_now(self, tenant_id: str, run_id: str, *, trigger: str, actor: str = SYSTEM_ACTOR) -> dict[str, Any] | None:
        """Seal one run in a transaction of its own (export, CLI)."""
        with self.index.transaction() as db:
            return self.seal(db, tenant_id, run_id, trigger=trigger, actor=actor)

    def seal_idle(self, *, now_ns: int | None = None) -> int:
        """Seal every run idle for ``idle_s`` whose head is not sealed; returns how many were sealed."""
        cutoff = (time.time_ns() if now_ns is None else now_ns) - int(self.idle_s * 1e9)
        total = 0
        while True:
            rows = self.index.query(
                "SELECT r.tenant_id, r.run_id FROM runs r LEFT JOIN run_seals s "
                "ON s.tenant_id = r.tenant_id AND s.run_id = r.run_id WHERE r.updated_ns < ? AND r.step_count > 0 "
                "AND (s.head_hash IS NULL OR s.head_hash != r.head_hash) LIMIT ?", [cutoff, _IDLE_BATCH])
            sealed = 0
            with self.index.transaction() as db:
                for r in rows:
                    sealed += self.seal(db, r["tenant_id"], r["run_id"], trigger="idle") is not None
            total += sealed
            if len(rows) < _IDLE_BATCH or not sealed:
                return total

    # -- schedule --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Look for idle runs every ``interval_s`` seconds (0 = never)."""
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="traceward-sealer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the idle job."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                count = self.seal_idle()
                if count:
                    logger.info("sealed %d idle runs", count)
            except Exception:  # background boundary: log and try again next interval
                logger.exception("idle sealing pass failed")
