"""Where the flusher runs: a thread of the server, or (the default) a child process of its own.

On one GIL, the gRPC threads starve the flusher under load; in a process of its own it gets the second
core. The write-ahead log on disk is the interface: the server appends (``WriteAheadLog``), the flusher
process reads (``WalReader``) and is the one writer of the Delta table.

``build_flusher`` is the one wiring of the flusher and its transactional hooks (run seals, flush events, the
findings queue), used by the server when the flusher is a thread and by the flusher process
(``server/flusher_child.py``). ``FlusherProcess`` is the server's handle on the child, with the surface the rest
of the server uses (``wait_flushed``, ``checkpoint``, ``listeners``, ``last_flush_s``). The child owns the
Delta table's deletes and vacuums too: retention passes run there (``RemoteRetention`` forwards the API's
requests), so a zero-hour vacuum never removes files the flusher has written but not committed yet.

Protocol (pickled tuples over a socket pair):

- server → child: ``("init", settings, signing_keys_pem, log_level)`` once, then ``("call", id, op, args)``
  (``keys`` is answered at once; retention ops and ``backup`` on a thread), ``("wal",)`` once the WAL has
  grown past where the child said it waits, and ``("stop",)``.
- child → server: ``("ready", checkpoint)`` after the start-up drain; ``("flushed", end, flush_s, step_count,
  transitions)`` after each committed batch; ``("deleted", tenant, run_ids)`` after retention removed runs;
  ``("changed",)`` after a compaction; ``("waiting", position)`` when its flusher has nothing after ``position``
  and waits (once per position: the server's ``("wal",)`` wakes it, instead of a 5 ms poll); ``("alive",)``, a heartbeat while a long operation runs (at most every
  quarter of TRACEWARD_FLUSHER_STALL_S); ``("reply", id, ok, value)`` (on failure, value is the AppError
  itself, raised as is by ``call``, or a message); ``("stopped", checkpoint)``.

Each batch of messages refreshes the server's Delta snapshot before anyone is told (``wait_flushed``,
listeners, the Sequencer) that the rows are queryable. A child that dies is restarted, and so is one that
the watchdog (``server/watchdog.py``) finds stalled: it is SIGKILLed, as if it had crashed (every message but
``reply`` is progress; a reply can come from the child's main thread while its flusher is stuck). A server
that dies closes the socket, and the child drains what the WAL held then (``WalReader.freeze``) and exits, releasing
``flusher.lock`` for the next server's child (``server/locks.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from governance.tokens import SigningKeys
from otlp_receiver.errors import AppError, StorageError
from otlp_receiver.flusher import CHECKPOINT_KEY, FlushedMark, Flusher
from otlp_receiver.ingest import Sequencer
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.events import record_flush_events
from otlp_receiver.store.findings import queue_finished_runs
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from otlp_receiver.wal import WriteAheadLog
from server.retention import SYSTEM_ACTOR, RetentionJob
from server.sealing import RunSealer
from server.settings import Settings

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
START_TIMEOUT_S = 600.0
"""How long the server waits for the flusher process to be ready: it drains the WAL first, and waits for an
orphaned flusher of a killed server to finish draining."""
CALL_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
_CODE_ROOT = str(Path(__file__).resolve().parent.parent)
"""The directory holding this code's packages: the child imports exactly the code the server runs."""


Transitions = Mapping[tuple[str, str], tuple[str | None, str]]


class FlushedSteps(Protocol):
    """What flush listeners may read of a committed batch (``Batch`` in a thread, ``FlushedBatch`` here)."""

    @property
    def step_count(self) -> int: ...  # noqa: D102

    @property
    def transitions(self) -> Transitions: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class FlushedBatch:
    """What the server learns about a batch the flusher process committed."""

    end: int
    step_count: int
    transitions: Transitions = field(default_factory=dict)


def build_flusher(settings: Settings, wal: WriteAheadLog, index: RunIndex, steps: StepTable, sequencer: Sequencer,
                  prices: PriceTable, sealer: RunSealer) -> Flusher:
    """The flusher and its transactional hooks: a run's seal, its events and its findings-scan request
    commit in the same SQLite transaction as the batch that caused them."""
    flusher = Flusher(wal, index, steps, sequencer, prices, interval_s=settings.flush_interval_s)
    flusher.hooks.extend((sealer.hook, record_flush_events, queue_finished_runs))
    return flusher


def build_retention(settings: Settings, index: RunIndex, steps: StepTable, audit: AuditLog, *,
                    drain: Callable[[], object] | None,
                    forget: Callable[[str, Sequence[str]], None] | None, flusher: Flusher) -> RetentionJob:
    """The retention job, with the schedule from the settings (it runs wherever the flusher runs, shows its
    deletes in the flusher's ``progress`` and takes turns with it at the flusher's gate)."""
    return RetentionJob(index, steps, audit, default_days=settings.retention_days,
                        audit_days=settings.audit_retention_days, interval_s=settings.retention_interval_s,
                        drain=drain, forget=forget, progress=flusher.progress, gate=flusher.gate)


class FlusherProcess:
    """The server's handle on the flusher process."""

    def __init__(self, settings: Settings, index: RunIndex, steps: StepTable, sequencer: Sequencer, *,
                 wal_end: Callable[[], int], wal_wait: Callable[[int, float], bool],
                 keys: Callable[[], SigningKeys], forget: Callable[[str, Sequence[str]], None]) -> None:
        """``wal_end`` and ``wal_wait`` are the server's ``WriteAheadLog.end_position`` and ``wait_for_data``."""
        self.settings, self.steps, self.sequencer = settings, steps, sequencer
        self.wal_end, self.wal_wait, self.keys, self.forget = wal_end, wal_wait, keys, forget
        self.listeners: list[Callable[[FlushedBatch], None]] = []
        self.last_flush_s = 0.0
        self.restarts = 0
        self.last_progress_s = time.monotonic()
        """When the child last showed progress (any message but a reply), on this process's monotonic clock."""
        self.starting = True
        """Between a child's death (or kill) and its successor's ``ready``: the watchdog is paused."""
        self._flushed = FlushedMark(_stored_checkpoint(index))
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._child_waits = threading.Condition()
        self._waits_after: int | None = None

    def checkpoint(self) -> int:
        """The WAL position the flusher process last reported committed (no SQLite read on the ingest path)."""
        return self._flushed.position

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher process and wait until it has drained what the WAL already holds."""
        self._spawn()
        self._reader = threading.Thread(target=self._read_loop, name="traceward-flusher-pipe", daemon=True)
        self._reader.start()
        threading.Thread(target=self._wake_loop, name="traceward-flusher-wake", daemon=True).start()

    def stop(self) -> None:
        """Ask the flusher process to drain and exit, and wait for it (killed if it does not)."""
        self._stopping.set()
        with self._child_waits:
            self._child_waits.notify_all()
        with self._send_lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):  # already gone: nothing left to drain
                    self._conn.send(("stop",))
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.error("flusher process %d did not stop; killing it (the WAL keeps what it had left)",
                             self._proc.pid)
                self._proc.kill()
                self._proc.wait()
        if self._conn is not None:
            self._conn.close()

    def wait_flushed(self, position: int, timeout_s: float = 10.0) -> bool:
        """Block until records up to ``position`` are queryable."""
        return self._flushed.wait(position, timeout_s)

    def waiting(self) -> bool:
        """Whether a request to the flusher process is unanswered (work for the watchdog, even with no WAL)."""
        return bool(self._pending)

    def kill_stalled(self) -> str:
        """SIGKILL a stalled flusher process; the pipe reader sees it die and restarts it (the watchdog's remedy)."""
        with self._send_lock:
            proc = self._proc
            self.starting = True
        if proc is None or proc.poll() is not None:
            return "the flusher process had already exited; it is being restarted"
        proc.kill()
        return f"killed flusher process {proc.pid} (SIGKILL); it is restarted and replays the log from its checkpoint"

    def drain(self) -> None:
        """Wait until everything appended so far is queryable."""
        if not self.wait_flushed(self.wal_end(), timeout_s=60.0):
            raise StorageError("the flusher process did not catch up within 60 s")

    # -- requests --------------------------------------------------------------------------------------------

    def call(self, op: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Run ``op`` in the flusher process and return its answer (StorageError when it failed there)."""
        future: Future[Any] = Future()
        with self._send_lock:
            if self._conn is None or self._stopping.is_set():
                raise StorageError("the flusher process is not running; retry")
            request = next(self._ids)
            self._pending[request] = future
            try:
                self._conn.send(("call", request, op, args))
            except OSError as exc:
                self._pending.pop(request, None)
                raise StorageError("the flusher process is restarting; retry") from exc
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as exc:
            raise StorageError(f"the flusher process did not answer {op!r} within {timeout_s:.0f} s") from exc

    def push_keys(self, keys: SigningKeys) -> None:
        """Hand rotated signing keys to the flusher process; it seals with them once this returns.

        A flusher process started later reads the keys from ``self.keys`` itself; one that dies before it
        answers is restarted with them, so a failed push needs no retry."""
        try:
            self.call("keys", keys.to_pem(), timeout_s=30.0)
        except StorageError as exc:
            logger.warning("signing keys not pushed to the flusher process (%s); it restarts with them", exc)

    # -- the child -------------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a flusher process and take its start-up drain (reports until ``ready``)."""
        ours, theirs = socket.socketpair()
        code = f"import sys; sys.path.insert(0, {_CODE_ROOT!r}); from server.flusher_child import main; main()"
        with theirs:
            proc = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno())],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        conn = Connection(ours.detach())
        with self._send_lock:  # keys read and connection published together: see push_keys
            conn.send(("init", self.settings, self.keys().to_pem(), logging.getLogger().getEffectiveLevel()))
            self._proc, self._conn = proc, conn
            if self._stopping.is_set():  # stop() came while this (re)start was under way
                conn.send(("stop",))
        try:
            while True:
                if not conn.poll(START_TIMEOUT_S):
                    raise StorageError(f"the flusher process did not get ready within {START_TIMEOUT_S:.0f} s")
                message = conn.recv()
                if message[0] == "ready":
                    break
                self._handle([message])  # reports of the start-up drain
        except (EOFError, OSError) as exc:
            code_ = proc.wait()
            raise StorageError(f"the flusher process exited with code {code_} while starting (see the log)") from exc
        except StorageError:
            proc.kill()  # wedged while starting: a restart must not wait for it forever (``_lost``)
            raise
        self._advance(message[1])
        self.last_progress_s, self.starting = time.monotonic(), False
        logger.info("flusher process %d ready at WAL position %d", proc.pid, message[1])

    def _read_loop(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                messages = [conn.recv()]
                while conn.poll(0):
                    messages.append(conn.recv())
            except (EOFError, OSError):
                if self._lost():
                    return
                continue
            if self._handle(messages):
                return

    def _lost(self) -> bool:
        """The child's end closed: True when stopping, else restart it (and False)."""
        self.starting = True
        self._fail_pending("the flusher process exited; retry")
        if self._stopping.is_set():
            return True
        if self._conn is not None:
            self._conn.close()
        while not self._stopping.is_set():
            code = self._proc.wait() if self._proc is not None else None
            logger.error("flusher process exited (code %s); restarting it in %.0f s", code, RESTART_DELAY_S)
            if self._stopping.wait(RESTART_DELAY_S):
                return True
            self.restarts += 1
            try:
                self._spawn()
                return False
            except StorageError:
                logger.exception("restarting the flusher process failed")
        return True

    def _fail_pending(self, reason: str) -> None:
        with self._send_lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(StorageError(reason))

    def _handle(self, messages: list[tuple[Any, ...]]) -> bool:
        """Apply a run of messages from the child; True once it has stopped."""
        if any(m[0] != "reply" for m in messages):
            self.last_progress_s = time.monotonic()
        if any(m[0] in ("flushed", "deleted", "changed") for m in messages):
            self.steps.mark_stale()  # before anyone is told they are queryable: their next read loads the commits
        for message in messages:
            kind = message[0]
            if kind == "flushed":
                self._on_flushed(FlushedBatch(message[1], message[3], message[4]), message[2])
            elif kind == "deleted":
                self.forget(message[1], message[2])
            elif kind == "waiting":
                self._child_waiting(message[1])
            elif kind == "reply":
                self._on_reply(message[1], message[2], message[3])
            elif kind == "stopped":
                self._advance(message[1])
                return True
        return False

    def _child_waiting(self, after: int) -> None:
        with self._child_waits:
            self._waits_after = after
            self._child_waits.notify_all()

    def _wake_loop(self) -> None:
        """Tell a waiting child when the WAL grows past where it waits: one message per wait, none under load
        (a busy child never waits). Its own 0.2 s poll covers a message lost to a restart."""
        while not self._stopping.is_set():
            with self._child_waits:
                while self._waits_after is None and not self._stopping.is_set():
                    self._child_waits.wait()
                after = self._waits_after
            if after is None or not self.wal_wait(after, 1.0):
                continue
            with self._child_waits:
                if self._waits_after == after:
                    self._waits_after = None
            with self._send_lock, contextlib.suppress(OSError):  # gone: the restart path has it
                if self._conn is not None:
                    self._conn.send(("wal",))

    def _on_flushed(self, batch: FlushedBatch, flush_s: float) -> None:
        self.last_flush_s = flush_s
        self._advance(batch.end)
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:  # a listener (metrics, findings wake) must never stop the pipe reader
                logger.exception("flush listener %r failed", listener)

    def _on_reply(self, request: int, ok: bool, value: Any) -> None:
        with self._send_lock:
            future = self._pending.pop(request, None)
        if future is None:
            return
        if ok:
            future.set_result(value)
        elif isinstance(value, AppError):
            future.set_exception(value)  # its own kind: a backup's target taken is a conflict, not "unavailable"
        else:
            future.set_exception(StorageError(f"in the flusher process: {value}"))

    def _advance(self, end: int) -> None:
        self.sequencer.flushed(end)
        self._flushed.advance(end)


class RemoteRetention(RetentionJob):
    """Retention for a server whose flusher is a process: plans are read here, deletions run there."""

    def __init__(self, settings: Settings, index: RunIndex, steps: StepTable, audit: AuditLog,
                 flusher: FlusherProcess) -> None:
        super().__init__(index, steps, audit, default_days=settings.retention_days,
                         audit_days=settings.audit_retention_days, interval_s=0)
        self.flusher = flusher

    def run_tenant(self, tenant_id: str, *, actor: str = SYSTEM_ACTOR, trigger: str = "schedule",
                   now_ns: int | None = None) -> dict[str, Any]:
        """One retention pass over one tenant, in the flusher process."""
        summary: dict[str, Any] = self.flusher.call("run_tenant", tenant_id, actor, trigger, now_ns)
        return summary

    def delete_tenant_data(self, tenant_id: str, *, actor: str) -> dict[str, Any]:
        """Delete every run and step of the tenant, in the flusher process, once it has flushed what the WAL
        holds now (it would otherwise come back after the deletion)."""
        summary: dict[str, Any] = self.flusher.call("delete_tenant_data", tenant_id, actor, self.flusher.wal_end())
        return summary


def reply_error(exc: AppError) -> AppError | str:
    """How the flusher process answers a request that failed with ``exc``: the error itself when it pickles
    (the server raises it as is), else its message (the server raises a StorageError)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # an error whose constructor does not take its message back: send the text
        return str(exc)
    return exc


def _stored_checkpoint(index: RunIndex) -> int:
    return int(index.get_meta(CHECKPOINT_KEY) or 0)
