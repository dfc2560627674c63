"""The flusher process's main (started by ``server.flushing.FlusherProcess``; protocol described there).

It takes ``flusher.lock`` (waiting for an orphaned flusher of a killed server to finish draining), builds the
flusher with ``build_flusher`` over a read-only view of the WAL, drains it, reports ``ready`` and then serves
until the server says ``stop`` or goes away. Its threads: the main one reads the server's messages; the
flusher's; the retention schedule's; one per retention request; the heartbeat, which tells the server's
watchdog that the flusher progresses (``("alive",)``) when that is not a flushed batch: while a compaction, a
retention delete or the first write runs. It reads the flusher's ``Progress``, never beats on its own: a
child whose flusher is stuck falls silent and is killed. It ignores SIGINT (a terminal's Ctrl-C
reaches the whole process group; the server stops it in order).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from governance.tokens import SigningKeys
from otlp_receiver.backup import take_backup
from otlp_receiver.errors import AppError
from otlp_receiver.ingest import Sequencer
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from otlp_receiver.wal_reader import WalReader
from server.backup import backup_sources
from server.flushing import START_TIMEOUT_S, build_flusher, build_retention, reply_error
from server.locks import FLUSHER_LOCK, DataDirLock, LockHeldError
from server.sealing import RunSealer
from server.settings import Settings
from server.watchdog import MAX_BUSY_FACTOR

logger = logging.getLogger("traceward.flusher")

EXIT_LOCKED = 3
GC_THRESHOLDS = (50_000, 10, 10)
"""The server's tuning (``server/cli.py``, ``_freeze_startup_heap``): flushing, too, allocates millions of
short-lived acyclic dicts and strings that reference counting frees; at CPython's default (700) the cyclic
collector would run every few hundred steps."""


class _ReportingStepTable(StepTable):
    """The step table, telling the server after a compaction (its snapshot lists files that are gone now)."""

    def __init__(self, path: str, report: Any) -> None:  # noqa: D107
        super().__init__(path)
        self._report = report

    def compact(self, *, min_files: int = 8) -> dict[str, Any]:  # noqa: D102
        metrics = super().compact(min_files=min_files)
        self._report(("changed",))
        return metrics


class FlusherChild:
    """Everything the flusher process runs."""

    def __init__(self, settings: Settings, conn: Connection, keys: SigningKeys) -> None:  # noqa: D107
        self.conn = conn
        self.keys = keys
        self._send_lock = threading.Lock()
        self.index = RunIndex(settings.index_path)
        self.steps = _ReportingStepTable(str(settings.steps_path), self.send)
        self.reader = WalReader(settings.wal_dir)
        self.reader.on_wait = lambda after: self.send(("waiting", after))
        prices = PriceTable.load(settings.price_file) if settings.price_file else PriceTable.default()
        audit = AuditLog(self.index)
        sealer = RunSealer(self.index, audit, lambda: self.keys, idle_s=settings.seal_idle_s, interval_s=0)
        self.flusher = build_flusher(settings, self.reader, self.index, self.steps, Sequencer(self.index), prices,
                                     sealer)
        self.stall_s = settings.flusher_stall_s
        self._stopped = threading.Event()
        self.retention = build_retention(settings, self.index, self.steps, audit, drain=None, forget=self._deleted,
                                         flusher=self.flusher)
        self._calls: list[threading.Thread] = []
        self.backup_sources = backup_sources(settings)

    def send(self, message: tuple[Any, ...]) -> None:
        """Send to the server (from any thread); dropped once the server is gone."""
        with self._send_lock, contextlib.suppress(OSError):
            self.conn.send(message)

    def run(self) -> None:
        """Drain, report ready, serve until stopped (or orphaned), drain again and report stopped."""
        self.flusher.listeners.append(self._report_batch)
        gc.collect()
        gc.freeze()  # modules and start-up objects: out of the collector's reach for the process's lifetime
        gc.set_threshold(*GC_THRESHOLDS)
        self.flusher.start()  # drains the WAL first
        self.retention.start()
        self.send(("ready", self.flusher.checkpoint()))
        if self.stall_s > 0:
            threading.Thread(target=self._heartbeat, name="traceward-flusher-heartbeat", daemon=True).start()
        self._serve()
        self._stopped.set()
        self.retention.stop()
        for thread in self._calls:
            thread.join(timeout=60)
        self.flusher.stop()
        self.send(("stopped", self.flusher.checkpoint()))

    def _serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                end = self.reader.freeze()
                logger.warning("the server went away; draining the write-ahead log up to %d, then exiting", end)
                return
            if message[0] == "stop":
                return
            if message[0] == "wal":
                self.reader.wake()
                continue
            if message[0] == "call":
                _, request, op, args = message
                if op == "keys":
                    self.keys = SigningKeys.from_pem(args[0])
                    self.send(("reply", request, True, None))
                else:
                    thread = threading.Thread(target=self._call, args=(request, op, args), daemon=True,
                                              name=f"traceward-flusher-{op}")
                    self._calls.append(thread)
                    thread.start()

    def _call(self, request: int, op: str, args: Sequence[Any]) -> None:
        try:
            if op == "run_tenant":
                tenant_id, actor, trigger, now_ns = args
                value: Any = self.retention.run_tenant(tenant_id, actor=actor, trigger=trigger, now_ns=now_ns)
            elif op == "delete_tenant_data":
                tenant_id, actor, wal_end = args
                self.flusher.wait_flushed(wal_end, timeout_s=START_TIMEOUT_S)
                value = self.retention.delete_tenant_data(tenant_id, actor=actor)
            elif op == "backup":
                target, wal_end = args
                with self.flusher.progress.busy("backup"):
                    value = take_backup(self.backup_sources, Path(target), gate=self.flusher.gate, wal_end=wal_end,
                                        progress=self.flusher.progress)
            else:
                raise ValueError(f"unknown request {op!r}")
        except AppError as exc:
            self.send(("reply", request, False, reply_error(exc)))
        except ValueError as exc:
            self.send(("reply", request, False, str(exc)))
        except Exception as exc:  # process boundary: the server's caller gets an error, the flusher lives on
            logger.exception("flusher process request %s failed", op)
            self.send(("reply", request, False, f"{type(exc).__name__}: {exc}"))
        else:
            self.send(("reply", request, True, value))

    def _heartbeat(self) -> None:
        """Tell the server of progress it cannot see in ``flushed`` reports, every quarter of the stall limit."""
        progress, max_busy_s = self.flusher.progress, self.stall_s * MAX_BUSY_FACTOR
        told = progress.last_beat_s
        while not self._stopped.wait(self.stall_s / 4):
            alive = progress.alive_at(time.monotonic(), max_busy_s=max_busy_s)
            if alive > told:
                self.send(("alive",))
                told = alive

    def _report_batch(self, batch: Any) -> None:
        self.send(("flushed", batch.end, self.flusher.last_flush_s, batch.step_count, dict(batch.transitions)))

    def _deleted(self, tenant_id: str, run_ids: Sequence[str]) -> None:
        self.send(("deleted", tenant_id, list(run_ids)))


def main() -> None:
    """``python -c '… main()' FD``: FD is this process's end of the socket pair to the server."""
    # The server owns this process's life: it sends "stop" after its final drain (and an orphan drains and
    # exits by itself). Ctrl-C and a SIGTERM to the whole process group (systemd's default stop, `timeout`,
    # container stops) reach this process too; dying of them would cut a flush short and have the server
    # "restart" it while it shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    _, settings, keys_pem, log_level = conn.recv()
    if settings.ingest_nice and hasattr(os, "nice"):
        os.nice(settings.ingest_nice)  # the API process answers decisions first on a busy machine
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s flusher[%(process)d] %(name)s: %(message)s")
    lock = DataDirLock(settings.data_dir, FLUSHER_LOCK)
    try:
        lock.acquire(wait_s=START_TIMEOUT_S, what="flusher process")
    except LockHeldError as exc:
        logger.error("%s", exc.message)
        sys.exit(EXIT_LOCKED)
    FlusherChild(settings, conn, SigningKeys.from_pem(keys_pem)).run()
    lock.release()
