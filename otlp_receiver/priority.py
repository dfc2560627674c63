"""A gate that lets latency-critical requests run ahead of bulk ingest work on the one interpreter (GIL).

Agents block on ``POST /v1/decisions``; exports can wait a few milliseconds. While any urgent request is in
flight, ingest threads that reach a checkpoint (:meth:`PriorityGate.pause`, called between stages and every
few dozen spans) sleep without the GIL until none is, so the urgent request's many short GIL acquisitions
(every socket read and write gives the GIL up) are not each queued behind ingest. A pause is bounded
(``max_pause_s``), so a steady stream of urgent requests slows ingest down but never stops it.

Imports only the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

CHECK_EVERY_SPANS = 32
"""How often the span loops of the ingest path call :meth:`PriorityGate.pause` (~2-4 ms of work)."""


class PriorityGate:
    """Urgent requests hold it open (:meth:`urgent`); bulk work pauses at its checkpoints meanwhile."""

    def __init__(self, *, max_pause_s: float = 0.01) -> None:
        self.max_pause_s = max_pause_s
        self._urgent = 0
        self._idle = threading.Condition(threading.Lock())
        self.pauses = 0
        """How many checkpoints paused (a counter for tests and metrics)."""

    @property
    def is_urgent(self) -> bool:
        """Whether an urgent request is in flight."""
        return self._urgent > 0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark an urgent request in flight for the duration of the block."""
        with self._idle:
            self._urgent += 1
        try:
            yield
        finally:
            with self._idle:
                self._urgent -= 1
                if not self._urgent:
                    self._idle.notify_all()

    def pause(self) -> None:
        """A bulk-work checkpoint: return at once unless urgent work is in flight, else wait (without the GIL)
        until none is, or ``max_pause_s`` has passed."""
        if not self._urgent or not self.max_pause_s:  # the hot path: attribute reads, no lock
            return
        with self._idle:
            self.pauses += 1
            self._idle.wait_for(lambda: not self._urgent, timeout=self.max_pause_s)


def no_pause() -> None:
    """The checkpoint of a pipeline without a gate."""


def paced(items: Iterable[T], pause: Callable[[], None]) -> Iterator[T]:
    """``items``, calling the checkpoint ``pause`` before the first and every ``CHECK_EVERY_SPANS``-th after it."""
    for i, item in enumerate(items):
        if not i % CHECK_EVERY_SPANS:
            pause()
        yield item
