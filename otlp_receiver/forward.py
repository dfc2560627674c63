"""Forwarding accepted, redacted telemetry to a downstream OTLP endpoint (Traceward as a hop in a Collector pipeline).

One :class:`Forwarder` per signal (traces, logs: ``forward_transport.Signal``), each with a queue and a sender
thread of its own, as a Collector runs one exporter queue per pipeline: a downstream that is slow or refuses
one signal never holds up the other.

Ingest never waits on the downstream: :meth:`Forwarder.enqueue` (called after the WAL append, with what was
accepted, redacted as it is stored) encodes the spans or log records back into an OTLP Export request — trace
and span ids unchanged — and writes it to the bounded on-disk queue (``forward_queue``); the sender thread sends
the oldest queued export first, deleting it once the downstream acknowledged it.

Retries: retryable failures (``forward_transport``) are retried with exponential backoff and full jitter, never
sooner than the server's ``RetryInfo`` / ``Retry-After`` asks. Other failures are permanent: that export is
dropped (counted as refused, logged) so one bad request cannot stall the queue. A full queue drops its oldest
exports, counted and logged (``forward_queue``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from otlp_receiver.forward_queue import DiskQueue
from otlp_receiver.forward_transport import Signal, Transport

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_RETRY_AFTER_S = 600.0
"""A server's Retry-After / RetryInfo is honoured up to this long."""


def backoff_s(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None,
              rng: random.Random) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry, never below the server's retry delay."""
    delay = rng.uniform(0, min(max_s, base_s * 2 ** min(attempt - 1, 30)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


class Forwarder(Generic[T]):
    """Queue on ingest, send in the background: one signal's spans or log records."""

    def __init__(self, queue: DiskQueue, transport: Transport, *, signal: Signal[T], base_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, log_every_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.queue, self.transport, self.signal = queue, transport, signal
        self.base_backoff_s, self.max_backoff_s, self.log_every_s = base_backoff_s, max_backoff_s, log_every_s
        self.rng = rng or random.Random()
        self.sent_requests = self.sent_items = self.rejected_requests = self.enqueue_failures = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._last_log = 0.0
        self._logged_drops = 0

    def enqueue(self, tenant_id: str, items: Sequence[T]) -> None:
        """Queue redacted spans or log records for the downstream; never raises, never waits for the network."""
        if not items:
            return
        try:
            dropped = self.queue.put(self.signal.encode(items), len(items))
        except Exception:  # ingest boundary: forwarding trouble must never fail an accepted export
            self.enqueue_failures += 1
            logger.exception("could not queue %d %s of tenant %s for forwarding", len(items), self.signal.unit,
                             tenant_id)
            return
        if dropped:
            self._log_drops()
        self._wake.set()

    def start(self) -> None:
        """Start the sender thread."""
        self._thread = threading.Thread(target=self._loop, name=f"traceward-forward-{self.signal.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending; whatever is queued stays on disk for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.transport.close()
        self._log_depth(force=True)

    def _loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                attempt = self._send_next(attempt)
            except Exception:  # background boundary: keep the sender alive
                logger.exception("forwarding %s failed; retrying", self.signal.name)
                self.queue.release()
                self._stop.wait(1.0)
            self._log_depth()

    def _send_next(self, attempt: int) -> int:
        """Send the oldest export; returns the number of failed attempts in a row."""
        head = self.queue.peek()
        if head is None:
            self._wake.wait(self.log_every_s)
            self._wake.clear()
            return 0
        item, body = head
        outcome = self.transport.send(body)
        if outcome.delivered or not outcome.retryable:
            self.queue.ack(item)
            if outcome.delivered:
                self.sent_requests, self.sent_items = self.sent_requests + 1, self.sent_items + item.items
            else:
                self.rejected_requests += 1
                logger.warning("downstream refused a forwarded export of %d %s (%s): dropped", item.items,
                               self.signal.unit, outcome.error)
            return 0
        self.queue.release()
        attempt += 1
        delay = backoff_s(attempt, base_s=self.base_backoff_s, max_s=self.max_backoff_s,
                          retry_after_s=outcome.retry_after_s, rng=self.rng)
        if attempt == 1 or attempt % 10 == 0:
            logger.warning("forwarding %s failed (%s), attempt %d; retrying in %.2fs; queue depth %d",
                           self.signal.name, outcome.error, attempt, delay, self.queue.depth)
        self._stop.wait(delay)
        return attempt

    def _log_drops(self) -> None:
        if self.queue.dropped_requests - self._logged_drops and time.monotonic() - self._last_log >= 1.0:
            self._log_depth(force=True)

    def _log_depth(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_log < self.log_every_s or not self.queue.depth):
            return
        self._last_log = now
        level = logging.WARNING if self.queue.dropped_requests > self._logged_drops else logging.INFO
        self._logged_drops = self.queue.dropped_requests
        unit = self.signal.unit
        logger.log(level, "forwarding %s: queue depth %d exports (%d bytes); sent %d exports / %d %s; dropped %d "
                   "exports / %d %s (queue full, oldest first); refused %d", self.signal.name, self.queue.depth,
                   self.queue.size_bytes, self.sent_requests, self.sent_items, unit, self.queue.dropped_requests,
                   self.queue.dropped_items, unit, self.rejected_requests)
