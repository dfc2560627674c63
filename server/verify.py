"""Tamper evidence: verify runs against their hash chains, the run index and their signed seals.

One run (``GET /v1/runs/{run_id}/verify``, ``traceward verify --run``): its Parquet rows are read in seq order
and re-chained (``otlp_receiver.chain.verify_chain``) against the run index's head hash and step count, and the
run's latest signed seal from the audit log must match the chain at the step count it sealed. A run missing
from the index whose seal remains was deleted — unless a retention tombstone written after the seal explains it.

A tenant (``traceward verify --tenant/--all``) adds: the audit log's own hash chain (``AuditLog.verify``), the
chain of the tenant's seals (each seal signed and linked to the previous one by ``prev_seal_hash``), every
indexed run, and every sealed run that no longer exists. Failures are appended to the audit log as
``verify.failure``. Reports never carry payload values, only seqs, hashes and reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from otlp_receiver.chain import ChainBreak, ChainVerdict, audit_genesis_hash, seal_hash, verify_chain
from otlp_receiver.errors import NotFoundError, StorageError
from otlp_receiver.store.audit import AuditLog, AuditVerdict
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from server.sealing import (
    SEAL_ACTION,
    TOMBSTONE_ACTION,
    SealEntry,
    latest_seal,
    seal_problem,
    tombstone_after,
)
from server.steps import run_days

CHAIN_COLUMNS = ("seq", "type", "name", "trace_id", "span_id", "parent_span_id", "start_ns", "payload",
                 "payload_hash", "redaction_meta", "prev_hash", "chain_hash")
CHUNK_STEPS = 100_000
"""Steps read per Parquet scan: a big run is read in seq ranges, so memory stays bounded."""
FAILURE_ACTION = "verify.failure"


@dataclass(frozen=True, slots=True)
class RunReport:
    """The verdict on one run."""

    run_id: str
    ok: bool
    steps_checked: int
    head_hash: str
    first_break: ChainBreak | None
    sealed: bool
    seal_ok: bool
    seal: SealEntry | None = None
    deleted: str | None = None
    """``retention`` (a tombstone explains it) or ``missing`` (sealed, gone, unexplained)."""

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        seal = self.seal.seal if self.seal else None
        return {"run_id": self.run_id, "ok": self.ok, "steps_checked": self.steps_checked,
                "head_hash": self.head_hash,
                "first_break": {"seq": self.first_break.seq, "reason": self.first_break.reason}
                if self.first_break else None,
                "sealed": self.sealed, "seal_ok": self.seal_ok, "deleted": self.deleted,
                "seal": {"audit_id": self.seal.audit_id, "step_count": seal.get("step_count"),
                         "head_hash": seal.get("head_hash"), "key_id": seal.get("key_id"),
                         "sealed_ns": seal.get("sealed_ns")} if self.seal and seal is not None else None}


@dataclass(slots=True)
class TenantReport:
    """The verdict on one tenant: audit chain, seal chain, runs."""

    tenant_id: str
    audit: AuditVerdict
    seal_chain_problem: str | None = None
    seals: int = 0
    runs_checked: int = 0
    steps_checked: int = 0
    deleted_by_retention: int = 0
    failures: list[RunReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything verified."""
        return self.audit.ok and self.seal_chain_problem is None and not self.failures


class HeadProbe:
    """Remembers the stored chain hash at some seqs while rows stream into verify_chain."""

    def __init__(self, seqs: Iterable[int]) -> None:
        self.wanted = {s for s in seqs if s >= 0}
        self.seen: dict[int, str | None] = {}

    def watch(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in rows:
            if self.wanted and row.get("seq") in self.wanted:
                self.seen[row["seq"]] = row.get("chain_hash")
            yield row


def seal_break(verdict: ChainVerdict, entry: SealEntry | None, probe: HeadProbe, problem: str | None) -> ChainBreak | None:
    """Where the verified chain disagrees with a signed seal, or None when the seal holds.

    ``probe`` must have watched the rows for seq ``step_count - 1``; a hash read there is trustworthy
    only when verify_chain verified at least ``step_count`` rows.
    """
    if entry is None:
        return None
    sealed = entry.step_count
    if problem is not None:
        return ChainBreak(max(sealed - 1, 0), problem)
    if verdict.steps_checked < sealed:
        return ChainBreak(verdict.steps_checked, f"the signed seal covers {sealed} steps but only "
                                                 f"{verdict.steps_checked} verify (steps deleted or altered)")
    if probe.seen.get(sealed - 1) != entry.head_hash:
        return ChainBreak(sealed - 1, f"chain head at seq {sealed - 1} differs from the signed seal "
                                      "(chain rewritten)")
    return None


class Verifier:
    """Verifies runs and tenants from the stores (read-only, but for ``audit_failures``)."""

    def __init__(self, index: RunIndex, steps: StepTable, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        self.index, self.steps, self.public_keys = index, steps, dict(public_keys)

    # -- one run ---------------------------------------------------------------------------------------------

    def run(self, tenant_id: str, run_id: str) -> RunReport:
        """Verify one run; NotFoundError when it neither exists nor was ever sealed."""
        row = self.index.get_run_row(tenant_id, run_id)
        entry = latest_seal(self.index, tenant_id, run_id)
        if row is None:
            if entry is None:
                raise NotFoundError(f"run {run_id} not found")
            return self._gone(tenant_id, run_id, entry)
        days = run_days(self.index, tenant_id, run_id)
        rows = iter_run_rows(self.steps, tenant_id, run_id, days, expected_steps=row["step_count"])
        return self.check(tenant_id, row, entry, rows)

    def check(self, tenant_id: str, row: Mapping[str, Any], entry: SealEntry | None,
              rows: Iterable[Mapping[str, Any]]) -> RunReport:
        """Verify stored rows against the index row and the latest seal."""
        run_id = row["run_id"]
        probe = HeadProbe([entry.step_count - 1] if entry else [])
        verdict = verify_chain(tenant_id, run_id, probe.watch(rows), expected_head=row["head_hash"] or None,
                               expected_count=row["step_count"])
        problem = seal_problem(entry, self.public_keys, tenant_id, run_id) if entry else None
        broken_seal = seal_break(verdict, entry, probe, problem)
        first = verdict.first_break or broken_seal
        return RunReport(run_id, first is None, verdict.steps_checked, verdict.head_hash, first,
                         sealed=entry is not None, seal_ok=entry is not None and broken_seal is None, seal=entry)

    def _gone(self, tenant_id: str, run_id: str, entry: SealEntry) -> RunReport:
        """A sealed run that is no longer in the index: explained by a tombstone, or deleted."""
        problem = seal_problem(entry, self.public_keys, tenant_id, run_id)
        tombstone = tombstone_after(self.index, tenant_id, run_id, entry.audit_id)
        if tombstone is not None and problem is None:
            return RunReport(run_id, True, 0, entry.head_hash, None, sealed=True, seal_ok=True, seal=entry,
                             deleted="retention")
        reason = problem or (f"run missing: sealed at {entry.step_count} steps (audit row {entry.audit_id}) but "
                             "gone from the index, and no retention tombstone explains it (run deleted)")
        return RunReport(run_id, False, 0, entry.head_hash, ChainBreak(0, reason), sealed=True, seal_ok=False,
                         seal=entry, deleted="missing")

    # -- one tenant ------------------------------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> TenantReport:
        """Verify the tenant's audit chain, seal chain, every run and every sealed run's existence."""
        report = TenantReport(tenant_id, AuditLog(self.index).verify(tenant_id))
        seals, tombstones = self._scan_seal_chain(report)
        runs = self.index.query("SELECT run_id, head_hash, step_count FROM runs WHERE tenant_id = ? "
                                "ORDER BY run_id", [tenant_id])
        for batch in _batches(runs):
            frames = self._read_batch(tenant_id, batch)
            for row in batch:
                rows = frames.get(row["run_id"])
                self._add(report, self.check(tenant_id, row, seals.get(row["run_id"]),
                                             _frame_rows(rows) if rows is not None else self._rows(tenant_id, row)))
        indexed = {r["run_id"] for r in runs}
        for run_id, entry in seals.items():
            if run_id not in indexed:
                if tombstones.get(run_id, 0) > entry.audit_id:
                    report.deleted_by_retention += 1
                else:
                    self._add(report, self._gone(tenant_id, run_id, entry))
        return report

    def _rows(self, tenant_id: str, row: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        days = run_days(self.index, tenant_id, row["run_id"])
        return iter_run_rows(self.steps, tenant_id, row["run_id"], days, expected_steps=row["step_count"])

    def _read_batch(self, tenant_id: str, batch: Sequence[Mapping[str, Any]]) -> dict[str, pl.DataFrame]:
        """Rows of a batch of small runs in one scan, split by run (big runs are read on their own)."""
        small = [r["run_id"] for r in batch if r["step_count"] <= CHUNK_STEPS]
        if len(small) < 2:
            return {}
        marks = ",".join("?" * len(small))
        days = [r["day"] for r in self.index.query(
            f"SELECT DISTINCT day FROM spans WHERE tenant_id = ? AND run_id IN ({marks})", [tenant_id, *small])]
        frame = _collect(self.steps.scan(tenant_id, days).filter(pl.col("run_id").is_in(small))
                         .select(["run_id", *CHAIN_COLUMNS]).sort(["run_id", "seq"]))
        found = {str(part["run_id"][0]): part for part in frame.partition_by("run_id", maintain_order=True)}
        return {run_id: found.get(run_id, frame.clear()) for run_id in small}

    @staticmethod
    def _add(report: TenantReport, run: RunReport) -> None:
        report.runs_checked += 1
        report.steps_checked += run.steps_checked
        if not run.ok:
            report.failures.append(run)

    def _scan_seal_chain(self, report: TenantReport) -> tuple[dict[str, SealEntry], dict[str, int]]:
        """Walk the tenant's seals in audit order: signatures and prev_seal_hash links; latest seal per run."""
        tenant_id = report.tenant_id
        pruned = bool(self.index.query("SELECT 1 FROM audit_anchors WHERE tenant_id = ?", [tenant_id]))
        expected: str | None = None if pruned else audit_genesis_hash(tenant_id)
        seals: dict[str, SealEntry] = {}
        tombstones: dict[str, int] = {}
        for row in self.index.query("SELECT id, action, target, details FROM audit_log WHERE tenant_id = ? "
                                    "AND action IN (?, ?) ORDER BY id", [tenant_id, SEAL_ACTION, TOMBSTONE_ACTION]):
            if row["action"] == TOMBSTONE_ACTION:
                tombstones[row["target"]] = row["id"]
                continue
            entry = _seal_entry(row)
            report.seals += 1
            seals[row["target"]] = entry
            problem = seal_problem(entry, self.public_keys, tenant_id, row["target"])
            if problem is None and expected is not None and entry.seal.get("prev_seal_hash") != expected:
                problem = f"seal at audit row {entry.audit_id} does not link to the previous seal (a seal was removed)"
            if problem is not None and report.seal_chain_problem is None:
                report.seal_chain_problem = problem
            expected = seal_hash(entry.seal)
        return seals, tombstones


def _seal_entry(row: Mapping[str, Any]) -> SealEntry:
    try:
        seal = orjson.loads(row["details"]).get("seal")
    except (orjson.JSONDecodeError, AttributeError):
        seal = None
    return SealEntry(int(row["id"]), seal if isinstance(seal, dict) else {})


def _batches(runs: Sequence[dict[str, Any]], max_runs: int = 500) -> Iterator[list[dict[str, Any]]]:
    """Runs in groups of at most ``max_runs`` runs and about CHUNK_STEPS steps."""
    batch: list[dict[str, Any]] = []
    steps = 0
    for run in runs:
        if batch and (len(batch) >= max_runs or steps + run["step_count"] > CHUNK_STEPS):
            yield batch
            batch, steps = [], 0
        batch.append(run)
        steps += run["step_count"]
    if batch:
        yield batch


# -- reading a run's rows ----------------------------------------------------------------------------------
def iter_run_rows(steps: StepTable, tenant_id: str, run_id: str, days: Sequence[str], *, expected_steps: int,
                  columns: Sequence[str] = CHAIN_COLUMNS, chunk: int = CHUNK_STEPS) -> Iterator[dict[str, Any]]:
    """A run's stored rows in seq order, read in seq ranges of ``chunk`` (every row, whatever its seq)."""
    if not days:
        return
    base = steps.scan(tenant_id, days).filter(pl.col("run_id") == run_id)
    if expected_steps <= chunk:
        yield from _frame_rows(_collect(base.select(list(columns)).sort("seq")))
        return
    bounds = _collect(base.select(pl.col("seq").min().alias("lo"), pl.col("seq").max().alias("hi")))
    lo, hi = bounds["lo"][0], bounds["hi"][0]
    if lo is None:
        return
    for start in range(lo, hi + 1, chunk):
        part = base.filter((pl.col("seq") >= start) & (pl.col("seq") < start + chunk))
        yield from _frame_rows(_collect(part.select(list(columns)).sort("seq")))


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    try:
        return frame.collect()
    except FileNotFoundError as exc:  # a compaction vacuumed a file of the snapshot we listed
        raise StorageError("step files changed during verification; retry") from exc
    except pl.exceptions.PolarsError as exc:
        raise StorageError(f"step table read failed: {exc}") from exc


def _frame_rows(frame: pl.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as dicts, column lists zipped (faster than DataFrame.iter_rows for wide string columns)."""
    names = frame.columns
    for values in zip(*(frame.get_column(n).to_list() for n in names), strict=True):
        yield dict(zip(names, values, strict=True))


# -- auditing failures -------------------------------------------------------------------------------------
def audit_failures(audit: AuditLog, tenant_id: str, actor: str, report: RunReport | TenantReport, *,
                   source: str) -> None:
    """Append a ``verify.failure`` row per failure in ``report`` (nothing when it verified)."""
    entries: list[tuple[str, dict[str, Any]]] = []
    if isinstance(report, TenantReport):
        if not report.audit.ok:
            entries.append(("audit_log", {"audit_id": report.audit.first_bad_id, "reason": report.audit.reason}))
        if report.seal_chain_problem:
            entries.append(("seal_chain", {"reason": report.seal_chain_problem}))
        runs = report.failures
    else:
        runs = [report] if not report.ok else []
    for run in runs:
        brk = run.first_break
        entries.append((run.run_id, {"seq": brk.seq if brk else None, "reason": brk.reason if brk else None,
                                     "deleted": run.deleted}))
    for target, details in entries:
        audit.append(tenant_id, actor=actor, action=FAILURE_ACTION, target=target, details={**details, "source": source})


def verify_run_audited(verifier: Verifier, audit: AuditLog, tenant_id: str, run_id: str, *, actor: str,
                       source: str) -> RunReport:
    """Verify one run and audit a failure."""
    report = verifier.run(tenant_id, run_id)
    audit_failures(audit, tenant_id, actor, report, source=source)
    return report
