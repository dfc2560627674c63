"""The findings job: runs ``analysis.findings`` over finished (and idle) runs in the background.

Finished runs are queued by a flusher transactional hook (``queue_finished_runs``), atomically with
the batch that finished them; the flusher's listener wakes this thread. Under load the flusher wakes it
after every batch, so rounds start at most once per ``min_round_s`` (2 s) and each takes the runs of
the batches since the last: a round costs one scan of the step files however many batches fed it. Each round takes up to
``batch_runs`` queued runs, loads them per tenant (one SQL query for the runs, one Parquet scan of
the steps that started while they were active, see ``read_steps``), scans them in one prepared batch (``scan_runs``) and stores the
findings with their ``finding.raised`` events in one transaction. Finding ids are deterministic, so
scanning a run twice (a crash between the scan and its commit, or an idle run that finishes later)
refreshes findings instead of duplicating them.

Every ``idle_check_s`` the job also ends log-only runs idle past ``idle_window_s`` (``end_idle``: runs opened
by log records alone, which nothing else ends; they are scanned once that end is flushed, as finished runs),
queues the other running runs idle past it (``abrupt_end``), and prunes events older than the stream's retention. Per-agent baselines (p99 cost and duration of
the last 7 days) are cached per tenant for ``BASELINE_TTL_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Final

import polars as pl

from analysis.findings import Baseline, Finding, agent_baselines, scan_runs, step_columns
from otlp_receiver.errors import StorageError
from otlp_receiver.store.events import prune_events
from otlp_receiver.store.findings import (
    QueuedScan,
    StoredFinding,
    prune_scans,
    queue_idle_runs,
    queued_scans,
    save_scan,
)
from otlp_receiver.store.frames import RunScope, load_runs, runs_frame
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable

logger = logging.getLogger(__name__)

BASELINE_WINDOW_NS: Final = 7 * 86_400 * 10**9
BASELINE_TTL_S: Final = 300.0
_SCAN_MARK_TTL_NS: Final = 86_400 * 10**9


class FindingsJob:
    """Background scanner of queued runs (one daemon thread)."""

    def __init__(self, index: RunIndex, steps: StepTable, *, idle_window_s: float, events_retention_s: float,
                 idle_check_s: float = 30.0, batch_runs: int = 500, min_round_s: float = 2.0,
                 on_findings: Callable[[list[StoredFinding]], None] | None = None,
                 end_idle: Callable[[int, int], object] | None = None) -> None:
        self.index, self.steps = index, steps
        self.idle_window_ns = int(idle_window_s * 1e9)
        self.events_retention_ns = int(events_retention_s * 1e9)
        self.idle_check_s = min(idle_check_s, idle_window_s)  # look for idle runs at least once a window
        self.batch_runs = batch_runs
        self.min_round_s = min_round_s
        self.on_findings = on_findings
        self.end_idle = end_idle
        """(now_ns, idle_ns) → ends the log-only runs idle that long (the server's, through the WAL)."""
        self._baselines: dict[str, tuple[float, dict[str, Baseline]]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_housekeeping = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="traceward-findings", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self, *_: object) -> None:
        """Ask for a round now (the flusher's listener)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                if self.run_once() < self.batch_runs:  # a full round: the queue may hold more
                    self._wake.wait(1.0)
                    self._wake.clear()
                    # Under load the flusher wakes us after every batch: gather the runs of a few batches
                    # into one round, so the steps' files are scanned once for all of them.
                    self._stop.wait(max(0.0, started + self.min_round_s - time.monotonic()))
                if time.monotonic() - self._last_housekeeping >= self.idle_check_s:
                    self.housekeeping()
            except Exception:  # background boundary: log and keep scanning
                logger.exception("findings round failed; retrying")
                self._stop.wait(1.0)

    # -- work ------------------------------------------------------------------------------------------------

    def run_once(self, *, now_ns: int | None = None) -> int:
        """Scan up to ``batch_runs`` queued runs; returns how many were scanned."""
        queued = queued_scans(self.index, limit=self.batch_runs)
        by_tenant: dict[str, list[QueuedScan]] = defaultdict(list)
        for item in queued:
            by_tenant[item.tenant_id].append(item)
        now = time.time_ns() if now_ns is None else now_ns
        for tenant_id, items in by_tenant.items():
            try:
                self._scan_tenant(tenant_id, items, now)
            except StorageError:
                raise  # the stores are unavailable: the whole round is retried
            except Exception:  # background boundary: find the run that breaks the scan, don't block the queue
                logger.exception("findings scan failed for %d runs of tenant %s; scanning them one by one",
                                 len(items), tenant_id)
                self._scan_one_by_one(tenant_id, items, now)
        return len(queued)

    def _scan_one_by_one(self, tenant_id: str, items: list[QueuedScan], now_ns: int) -> None:
        for item in items:
            try:
                self._scan_tenant(tenant_id, [item], now_ns)
            except StorageError:
                raise
            except Exception:  # background boundary: a run the scan cannot handle is skipped, once, loudly
                logger.exception("findings scan of run %s (tenant %s) failed; skipped", item.run_id, tenant_id)
                save_scan(self.index, tenant_id, [item], [], now_ns=now_ns)

    def housekeeping(self, *, now_ns: int | None = None) -> None:
        """End idle log-only runs, queue the other idle runs, prune old events and old scan marks."""
        self._last_housekeeping = time.monotonic()
        now = time.time_ns() if now_ns is None else now_ns
        if self.end_idle is not None:
            self.end_idle(now, self.idle_window_ns)
        queue_idle_runs(self.index, now_ns=now, idle_ns=self.idle_window_ns)
        while prune_events(self.index, before_ns=now - self.events_retention_ns) > 0:
            pass
        prune_scans(self.index, scanned_before_ns=now - _SCAN_MARK_TTL_NS)

    def _scan_tenant(self, tenant_id: str, items: list[QueuedScan], now_ns: int) -> None:
        run_ids = [item.run_id for item in items]
        runs = load_runs(self.index, tenant_id, RunScope(run_ids=run_ids))
        steps = self.read_steps(tenant_id, run_ids)
        findings = scan_runs(runs, steps, now_ns=now_ns, idle_window_ns=self.idle_window_ns,
                             baselines=self._tenant_baselines(tenant_id, now_ns))
        agents = dict(zip(runs["run_id"].to_list(), runs["agent"].to_list(), strict=True))
        stored = [_stored(f, agents.get(f.run_id)) for f in findings]
        new = save_scan(self.index, tenant_id, items, stored, now_ns=now_ns)
        if new and self.on_findings is not None:
            self.on_findings(new)

    def read_steps(self, tenant_id: str, run_ids: Sequence[str]) -> pl.DataFrame:
        """The steps of these runs, with the columns the scan reads (``step_columns``).

        Only the step files (and row groups) that can hold them are read: per day, the span index gives
        the first and last start of these runs' steps, and ``StepTable.scan(started_within=...)`` skips the
        data whose ``start_ns`` statistics lie outside that range. A round so costs the data of the time its
        runs were active, not the tenant's whole day (run ids are random: every file's run_id range spans
        them all).

        Exact, not a heuristic: every step of a run is in the span index with the same day and start as
        in its file (both come from the same flush batch; the days already came from there), so the file
        holding it, compacted or not, has a ``start_ns`` range that contains that start. Nothing compares
        clocks (file modification times against a server time would need a safety margin against clock
        steps, and every round would read that margin's worth of data too): a run that was active long ago
        (an idle run, a late or backfilled trace) only makes its round read that time's data.
        """
        started_within = self.index.step_start_ranges(tenant_id, run_ids)
        for attempt in (1, 2):
            try:
                lf = self.steps.scan(tenant_id, started_within=started_within)
                return lf.filter(pl.col("run_id").is_in(run_ids)).select(step_columns()).collect()
            except FileNotFoundError:
                if attempt == 2:  # a compaction vacuumed a listed file twice in a row
                    raise StorageError("step files changed during the scan; retry") from None
                self.steps.refresh()  # the snapshot listed a file a compaction has vacuumed since: list again
        raise AssertionError("unreachable")

    def _tenant_baselines(self, tenant_id: str, now_ns: int) -> dict[str, Baseline]:
        cached = self._baselines.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < BASELINE_TTL_S:
            return cached[1]
        runs = runs_frame(self.index, tenant_id, RunScope(started_after_ns=now_ns - BASELINE_WINDOW_NS,
                                                          started_before_ns=now_ns))
        baselines = agent_baselines(runs, window_ns=BASELINE_WINDOW_NS, now_ns=now_ns)
        self._baselines[tenant_id] = (time.monotonic(), baselines)
        return baselines


def _stored(finding: Finding, agent: str | None) -> StoredFinding:
    return StoredFinding(finding.finding_id, finding.run_id, finding.kind, finding.severity, finding.message,
                         finding.step_seqs, finding.detected_ns, agent)
