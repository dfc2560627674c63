"""Turns for the writers of the stores, so that a backup can see them at rest (thread-safe).

The flusher's rounds (a Delta append, then the SQLite transaction of the same batch), its compactions and
each retention chunk (a Delta delete and vacuum, then the SQLite deletes) take a *turn* of the gate, one at a
time. A backup ``pause``s the gate: no round, compaction or deletion is half-applied while it takes its
snapshot, so the run index, the Delta table and the WAL checkpoint agree as they do between two rounds.

A pause is kept short: the backup notes positions and versions, then ``hold``s what it still has to copy and
lets the writers go on. While a hold lasts, the flusher drops no write-ahead-log segment at or after the held
position, and no turn may remove data files (compaction is skipped, a retention chunk waits for the hold to
end), so the copy reads files that stay put while new batches are appended beside them.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator


class StoreGate:
    """One writer turn at a time, a backup's pause, and its holds on WAL segments and data files."""

    def __init__(self) -> None:  # noqa: D107
        self._turns = threading.Condition(threading.RLock())
        self._holds: dict[int, int] = {}  # token → WAL position held from
        self._tokens = itertools.count(1)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """A writer's turn that removes no data file (a flush round)."""
        with self._turns:
            yield

    @contextlib.contextmanager
    def removing_turn(self) -> Iterator[None]:
        """A turn that may remove data files (a retention chunk's vacuum): waits until no backup holds them."""
        with self._turns:
            self._turns.wait_for(lambda: not self._holds)
            yield

    @contextlib.contextmanager
    def optional_removing_turn(self) -> Iterator[bool]:
        """A turn that may remove data files and can be skipped (a compaction): yields False while held."""
        with self._turns:
            yield not self._holds

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No writer runs inside (waits for the current turn to end)."""
        with self._turns:
            yield

    def hold(self, wal_from: int) -> int:
        """Keep WAL segments from ``wal_from`` on and every data file until ``release``; returns the token.

        Taken inside ``paused`` (so no turn is under way between the snapshot and the hold)."""
        with self._turns:
            token = next(self._tokens)
            self._holds[token] = wal_from
            return token

    def release(self, token: int) -> None:
        """End a hold (idempotent); a waiting retention chunk may go on."""
        with self._turns:
            self._holds.pop(token, None)
            self._turns.notify_all()

    def drop_limit(self, position: int) -> int:
        """How far the flusher may drop WAL segments instead of up to ``position``: not past a held position."""
        with self._turns:
            return min([position, *self._holds.values()])

    @property
    def held(self) -> bool:
        """Whether a backup holds files now."""
        return bool(self._holds)
