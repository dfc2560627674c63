"""The composition root for Traceward's long-lived parts.

Builds the stores, the WAL, the ingest pipeline, the flusher and the OTLP gRPC server from
Settings, wires them together, and starts/stops them in order. HTTP apps (``app.py``) take
a started Runtime. The flusher runs in a process of its own (``server/flushing.py``) unless
TRACEWARD_FLUSHER_PROCESS=false makes it a thread; either way it is built by ``build_flusher``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from diff.normalize import Profile, load_profiles
from otlp_receiver.backup import take_backup
from otlp_receiver.errors import ConfigError, OverloadedError
from otlp_receiver.flusher import Flusher
from otlp_receiver.ingest import IngestPipeline, IngestResult, Sequencer
from otlp_receiver.log_content import LogContent
from otlp_receiver.model import Span
from otlp_receiver.pricing import PriceTable
from otlp_receiver.priority import PriorityGate
from otlp_receiver.service import IngestIdentity, LogsServicer, start_grpc_server
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.findings import StoredFinding
from otlp_receiver.store.frames import RunFrameCache
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyRecord, KeyStore
from otlp_receiver.store.runs import idle_log_only_runs
from otlp_receiver.store.steps import StepTable
from otlp_receiver.wal import WriteAheadLog
from server.auth import Authenticator, jwt_verifier
from server.backup import BACKUP_TIMEOUT_S, Backups, RunBackup, backup_sources
from server.findings_job import FindingsJob
from server.flushing import (
    RESTART_DELAY_S,
    FlushedSteps,
    FlusherProcess,
    RemoteRetention,
    build_flusher,
    build_retention,
)
from server.forwarding import ForwardCollector, forwarders_from_settings
from server.governance_wiring import governance_from_settings
from server.locks import FLUSHER_LOCK, SERVER_LOCK, DataDirLock
from server.metrics import Metrics, ObservedTraceServicer, ReadinessCollector, StoreCollector
from server.ratelimit import RateLimiter, limited_ingest_identity
from server.readiness import OVERLOAD_RETRY_AFTER_S, IngestLoad, Readiness, StorageProbe
from server.redaction import TenantRedaction, load_master_key, load_policy_doc
from server.retention import RetentionJob
from server.sealing import RunSealer
from server.settings import Settings
from server.steps import RunStepCache
from server.watchdog import MAX_BUSY_FACTOR, FlusherWatchdog

logger = logging.getLogger(__name__)


class Runtime:
    """Everything Traceward runs, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._locks = self._lock_data_dir(settings)
        try:
            self._build(settings)
        except BaseException:
            self._release_locks()
            raise

    def _build(self, settings: Settings) -> None:
        self.index = RunIndex(settings.index_path)
        self.steps = StepTable(settings.steps_path)
        self.wal = WriteAheadLog(settings.wal_dir, fsync=settings.wal_fsync)
        self.prices = PriceTable.load(settings.price_file) if settings.price_file else PriceTable.default()
        self.sequencer = Sequencer(self.index)
        self.priority = PriorityGate(max_pause_s=settings.ingest_max_pause_s)
        """Decisions go first: ingest pauses at its checkpoints while one is in flight (``urgent_middleware``)."""
        self.governance = governance_from_settings(
            settings, self.index, lambda tenant, project, drafts: self.pipeline.ingest_drafts(tenant, project, drafts))
        self.redaction = TenantRedaction(load_policy_doc(settings.redaction_file),
                                         load_master_key(settings.data_dir / "redaction.key"))
        self.forwarders = forwarders_from_settings(settings)  # redacted spans and logs to a downstream endpoint
        traces, logs = self.forwarders.get("traces"), self.forwarders.get("logs")
        self.pipeline = IngestPipeline(self.wal, self.sequencer, bind=self.governance.bind,
                                       bind_step=self.governance.bind_step,
                                       redact=self.redaction if settings.redaction == "on" else None,
                                       on_accepted=traces.enqueue if traces else None,
                                       on_accepted_logs=logs.enqueue if logs else None,
                                       pause=self.priority.pause)
        self.keys = KeyStore(self.index)
        self.diff_profiles = load_diff_profiles(settings.diff_profiles_file)
        self.step_cache = RunStepCache()
        self.authenticator = Authenticator(self.keys, jwt_verifier(settings))
        self.limiter = RateLimiter.from_settings(settings)
        self.audit = AuditLog(self.index)
        self.sealer = RunSealer(self.index, self.audit, lambda: self.governance.keys, idle_s=settings.seal_idle_s,
                                interval_s=settings.seal_interval_s)
        self._wire_flusher(settings)
        self.backups = Backups(settings, self.audit, self._backup_runner(settings), self.wal.end_position)
        self._wire_analytics(settings)
        self.watchdog = self._flusher_watchdog(settings)
        self.metrics.flusher_stalled.set_function(lambda: float(self.flusher_stalled))
        self.readiness = self._readiness(settings)
        self.metrics.registry.register(ReadinessCollector(self.readiness.check))
        self.grpc_server: grpc.Server | None = None
        self.grpc_port = 0
        self.spans_accepted = 0
        self.spans_duplicate = 0

    def _wire_flusher(self, settings: Settings) -> None:
        """The flusher and retention, the Delta table's writers: both in the flusher process (default, and
        the hooks are built there by the same ``build_flusher``), or both here with the flusher a thread."""
        self.flusher: Flusher | FlusherProcess
        self.retention: RetentionJob
        if settings.flusher_process:
            self.flusher = FlusherProcess(settings, self.index, self.steps, self.sequencer,
                                          wal_end=self.wal.end_position, wal_wait=self.wal.wait_for_data,
                                          keys=lambda: self.governance.keys,
                                          forget=self.pipeline.forget_runs)
            self.governance.key_listeners.append(self.flusher.push_keys)
            self.retention = RemoteRetention(settings, self.index, self.steps, self.audit, self.flusher)
        else:
            self.flusher = build_flusher(settings, self.wal, self.index, self.steps, self.sequencer, self.prices,
                                         self.sealer)
            self.retention = build_retention(
                settings, self.index, self.steps, self.audit, forget=self.pipeline.forget_runs,
                drain=lambda: self.flusher.wait_flushed(self.wal.end_position()), flusher=self.flusher)

    def _backup_runner(self, settings: Settings) -> RunBackup:
        """A backup runs beside the flusher, taking turns at its gate: in the flusher process, or here."""
        flusher = self.flusher
        if isinstance(flusher, FlusherProcess):
            return lambda target, wal_end: dict(flusher.call("backup", str(target), wal_end,
                                                             timeout_s=BACKUP_TIMEOUT_S))
        sources = backup_sources(settings)

        def run(target: Path, wal_end: int) -> dict[str, Any]:
            with flusher.progress.busy("backup"):
                return take_backup(sources, target, gate=flusher.gate, wal_end=wal_end, progress=flusher.progress)
        return run

    def _flusher_watchdog(self, settings: Settings) -> FlusherWatchdog | None:
        """The flusher's watchdog (``server/watchdog.py``); None when TRACEWARD_FLUSHER_STALL_S is 0."""
        if settings.flusher_stall_s <= 0:
            return None
        flusher = self.flusher

        def backlog() -> int:
            return self.wal.bytes_after(flusher.checkpoint())

        if isinstance(flusher, FlusherProcess):
            return FlusherWatchdog(stall_s=settings.flusher_stall_s, backlog=backlog, waiting=flusher.waiting,
                                   last_progress=lambda: flusher.last_progress_s,
                                   on_stall=self._count_stall(flusher.kill_stalled),
                                   paused=lambda: flusher.starting)
        max_busy_s = settings.flusher_stall_s * MAX_BUSY_FACTOR
        return FlusherWatchdog(stall_s=settings.flusher_stall_s, backlog=backlog, waiting=lambda: False,
                               last_progress=lambda: flusher.progress.alive_at(time.monotonic(),
                                                                               max_busy_s=max_busy_s),
                               on_stall=self._count_stall(_thread_stall))

    def _readiness(self, settings: Settings) -> Readiness:
        """What ``GET /readyz`` checks (``server/readiness.py``). A disk is full when one more export of the
        largest size accepted would not fit."""
        flusher = self.flusher
        process = isinstance(flusher, FlusherProcess)
        storage = StorageProbe([("data directory", settings.data_dir), ("write-ahead log directory", settings.wal_dir)],
                               min_free_bytes=max(settings.max_message_bytes, settings.max_http_body_bytes))
        return Readiness(flusher_restarting=lambda: isinstance(flusher, FlusherProcess) and flusher.starting,
                         flusher_stalled=lambda: self.flusher_stalled,
                         flusher_retry_after_s=RESTART_DELAY_S if process else None,
                         ingest_load=self.ingest_load, storage=storage)

    def _count_stall(self, remedy: Callable[[], str]) -> Callable[[], str]:
        def on_stall() -> str:
            self.metrics.flusher_stalls.inc()
            return remedy()
        return on_stall

    def _wire_analytics(self, settings: Settings) -> None:
        """Metrics and the findings scan (issue 7), woken after each flushed batch."""
        self.metrics = Metrics(max_agents=settings.metrics_max_agents)
        self.metrics.registry.register(StoreCollector(
            self.index, wal_depth=lambda: self.wal.bytes_after(self.flusher.checkpoint()), wal_size=self.wal.size_bytes))
        if self.forwarders:
            self.metrics.registry.register(ForwardCollector(self.forwarders))
        self.findings_job = FindingsJob(
            self.index, self.steps, idle_window_s=settings.findings_idle_s,
            events_retention_s=settings.events_retention_s,
            on_findings=self._count_findings, end_idle=self._end_idle_log_runs)
        self.flusher.listeners.append(self._after_flush)
        self.run_frames = RunFrameCache(self.index)
        self.health_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self.closing = threading.Event()
        """Set when the server shuts down: open event streams end."""

    def _end_idle_log_runs(self, now_ns: int, idle_ns: int) -> int:
        """End the runs opened by log records alone that idled ``idle_ns`` (``store.runs.idle_log_only_runs``)."""
        runs = idle_log_only_runs(self.index, now_ns=now_ns, idle_ns=idle_ns)
        if runs:
            self.pipeline.end_idle_runs(runs)
            logger.info("ending %d log-only runs idle for %d s (no spans arrived for them)", len(runs),
                        idle_ns // 10**9)
        return len(runs)

    def _count_findings(self, new: list[StoredFinding]) -> None:
        for finding in new:
            self.metrics.findings.labels(finding.kind).inc()

    def _after_flush(self, batch: FlushedSteps) -> None:
        self.metrics.observe_batch(self.index, batch, self.flusher.last_flush_s)
        self.findings_job.wake()

    # -- lifecycle -------------------------------------------------------------------------------------------

    @staticmethod
    def _lock_data_dir(settings: Settings) -> list[DataDirLock]:
        """One server per data dir (one WAL appender); with the flusher as a thread, this process is also the
        one Delta writer (an orphaned flusher process of a killed server may still be draining: wait)."""
        locks = [DataDirLock(settings.data_dir, SERVER_LOCK)]
        locks[0].acquire(what="traceward serve")
        if not settings.flusher_process:
            locks.append(DataDirLock(settings.data_dir, FLUSHER_LOCK))
            try:
                locks[1].acquire(wait_s=600.0, what="the flusher thread")
            except ConfigError:
                locks[0].release()
                raise
        return locks

    def start(self, *, grpc: bool = True) -> None:
        """Replay the WAL, start the flusher and (optionally) the OTLP gRPC server."""
        self.flusher.start()
        if self.watchdog is not None:
            self.watchdog.start()
        self.governance.start()
        self.retention.start()
        self.sealer.start()
        for forwarder in self.forwarders.values():
            forwarder.start()
        self.findings_job.start()
        if grpc:
            authenticate = limited_ingest_identity(self.authenticator, self.limiter)
            slots = threading.BoundedSemaphore(self.settings.grpc_export_slots)  # traces and logs together
            servicer = ObservedTraceServicer(self.metrics, authenticate, self.ingest_spans, slots=slots,
                                             pause=self.priority.pause)
            self.grpc_server, self.grpc_port = start_grpc_server(
                servicer, host=self.settings.host, port=self.settings.grpc_port,
                max_message_bytes=self.settings.max_message_bytes, max_workers=self.settings.grpc_workers,
                logs_servicer=LogsServicer(authenticate, self.ingest_logs, slots=slots), nice=self.settings.ingest_nice)

    def stop(self) -> None:
        """Stop accepting, then flush what was accepted."""
        self.closing.set()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=5).wait()
        self.retention.stop()
        self.sealer.stop()
        self.governance.stop()
        if self.watchdog is not None:
            self.watchdog.stop()  # the flusher's last drain may take long: not a stall
        self.flusher.stop()
        for forwarder in self.forwarders.values():
            forwarder.stop()  # what is still queued stays on disk for the next start
        self.findings_job.stop()
        self.wal.close()
        self._release_locks()

    def _release_locks(self) -> None:
        for lock in reversed(self._locks):
            lock.release()

    @property
    def flusher_restarts(self) -> int:
        """How often the flusher process died and was restarted (0 with the flusher as a thread)."""
        return self.flusher.restarts if isinstance(self.flusher, FlusherProcess) else 0

    @property
    def flusher_stalls(self) -> int:
        """How often the watchdog found the flusher stalled."""
        return self.watchdog.stalls if self.watchdog is not None else 0

    @property
    def flusher_stalled(self) -> bool:
        """Whether the flusher is stalled now (a thread until it moves again; a process until it is restarted)."""
        return self.watchdog is not None and self.watchdog.stalled

    # -- ingest ----------------------------------------------------------------------------------------------

    def ingest_spans(self, identity: IngestIdentity, spans: Sequence[Span]) -> IngestResult:
        """The OTLP sink: shed load when the flusher is far behind, else make spans durable."""
        if self.ingest_load().overloaded:
            self.metrics.observe_rejected_spans(len(spans), "overloaded")
            raise OverloadedError("ingest backlog is full; retry later", retry_after_s=OVERLOAD_RETRY_AFTER_S)
        result = self.pipeline.ingest_spans(identity.tenant_id, identity.project_id, spans)
        self.metrics.observe_ingest(result)
        self.spans_accepted += result.accepted
        self.spans_duplicate += result.duplicates
        return result

    def ingest_logs(self, identity: IngestIdentity, content: LogContent) -> IngestResult | None:
        """The OTLP logs sink: GenAI content steps go through the same redaction, sequencing, dedupe and WAL
        as server-made steps (``IngestPipeline.ingest_log_content``), then to the logs forwarder; the same
        backlog limit sheds load."""
        result = None
        if content.drafts:
            if self.ingest_load().overloaded:
                raise OverloadedError("ingest backlog is full; retry later", retry_after_s=OVERLOAD_RETRY_AFTER_S)
            result = self.pipeline.ingest_log_content(identity.tenant_id, identity.project_id, content)
        self.metrics.observe_logs(content, result)
        return result

    def ingest_load(self) -> IngestLoad:
        """The unflushed WAL against TRACEWARD_WAL_MAX_BYTES: the one decision of whether ingest sheds load,
        read by ingest (429 / RESOURCE_EXHAUSTED), ``/healthz``, ``/readyz`` and ``/metrics`` alike."""
        return IngestLoad(self.wal.bytes_after(self.flusher.checkpoint()), self.settings.wal_max_bytes)

    def bootstrap_keys(self) -> list[tuple[str, KeyRecord]]:
        """Create the configured bootstrap keys (idempotent); returns (key, record) pairs."""
        made = []
        s = self.settings
        for key_text, role in ((s.bootstrap_ingest_key, "ingest"), (s.bootstrap_admin_key, "admin")):
            if key_text:
                made.append((key_text, self.keys.ensure(key_text, tenant_id=s.default_tenant,
                                                        project_id=s.default_project, role=role,
                                                        name=f"bootstrap {role} key")))
        return made


def _thread_stall() -> str:
    """A stalled flusher thread is only reported: Python cannot kill a thread, and starting a second flusher
    beside the stuck one would make two writers of the Delta table and the index (the stuck one may wake and
    commit), which the design rules out (``flusher.lock``). Restarting the server is the remedy: it replays
    the WAL from the checkpoint, as after a crash."""
    return "the flusher is a thread, which cannot be killed: restart the server (TRACEWARD_FLUSHER_PROCESS=true " \
           "restarts a stalled flusher process by itself)"


def load_diff_profiles(path: Path | None) -> dict[str, Profile]:
    """Built-in diff profiles plus the operator's file (JSON or YAML), checked at start-up."""
    if path is None:
        return load_profiles(None)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"TRACEWARD_DIFF_PROFILES_FILE={path}: {exc}") from exc
    return load_profiles(doc)
