"""Faults for the flusher watchdog's end-to-end tests, injected into a real server and its flusher process.

Put on PYTHONPATH (with the repository root) by ``tests/server/test_flusher_watchdog.py``; Python imports it
at start-up in the server and in the flusher process it spawns. Each fault is off unless its variable is set:

- ``TW_FAULT_COMPACT_EVERY_S``: the flusher compacts this often (60 s otherwise).
- ``TW_FAULT_SLOW_COMPACT_S``: the first compaction takes this much longer (a large partition), inside the
  flusher's real busy region; logs ``fault: slow compaction done`` at the end.
- ``TW_FAULT_BLOCK_APPEND_FILE``: while this file exists, a step-table append hangs (I/O wedged).
- ``TW_FAULT_HOLD_START_FILE``: while this file exists, a flusher process that starts waits before its start-up
  drain (as for an orphaned flusher's lock, or a long write-ahead log); logs ``fault: flusher start held``.
- ``TW_FAULT_FLUSH_DELAY_S``: each flush round waits this long first (outside the stores' gate): acknowledged
  exports stay in the WAL only for that long (a backup then has records to replay).
- ``TW_FAULT_BLOCK_BACKUP_COPY_FILE``: while this file exists, a backup hangs before copying its first data file
  (a slow backup disk: after the flusher's pause, while the backup holds the files); logs
  ``fault: backup copy blocked`` once it waits. (``tests/server/test_backup_faults.py``)
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

logger = logging.getLogger("tests.faults")


def _install() -> None:
    from otlp_receiver.flusher import Flusher
    from otlp_receiver.store.steps import StepTable

    compact_every_s = os.environ.get("TW_FAULT_COMPACT_EVERY_S")
    slow_compact_s = os.environ.get("TW_FAULT_SLOW_COMPACT_S")
    block_file = os.environ.get("TW_FAULT_BLOCK_APPEND_FILE")
    hold_file = os.environ.get("TW_FAULT_HOLD_START_FILE")
    backup_block_file = os.environ.get("TW_FAULT_BLOCK_BACKUP_COPY_FILE")
    flush_delay_s = os.environ.get("TW_FAULT_FLUSH_DELAY_S")
    if compact_every_s:
        init = Flusher.__init__

        def fast_compacting_init(self: Flusher, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.compact_every_s = float(compact_every_s)

        Flusher.__init__ = fast_compacting_init  # type: ignore[method-assign]
    if slow_compact_s:
        compact = StepTable.compact
        slow = [float(slow_compact_s)]

        def slow_compact(self: StepTable, *, min_files: int = 8) -> dict[str, Any]:
            if slow:
                time.sleep(slow.pop())
                logger.warning("fault: slow compaction done")
            return compact(self, min_files=min_files)

        StepTable.compact = slow_compact  # type: ignore[method-assign]
    if block_file:
        append = StepTable.append

        def wedged_append(self: StepTable, rows: Any, *, wal_end: int) -> None:
            while os.path.exists(block_file):
                time.sleep(0.05)
            append(self, rows, wal_end=wal_end)

        StepTable.append = wedged_append  # type: ignore[method-assign]
    if hold_file:
        _hold_flusher_start(hold_file)
    if flush_delay_s:
        flush_once = Flusher.flush_once

        def delayed_flush_once(self: Flusher) -> bool:
            time.sleep(float(flush_delay_s))
            return flush_once(self)

        Flusher.flush_once = delayed_flush_once  # type: ignore[method-assign]
    if backup_block_file:
        _block_backup_copies(backup_block_file)


def _hold_flusher_start(hold_file: str) -> None:
    from server.flusher_child import FlusherChild

    run = FlusherChild.run

    def held_run(self: FlusherChild) -> None:
        if os.path.exists(hold_file):
            logger.warning("fault: flusher start held")
        while os.path.exists(hold_file):
            time.sleep(0.05)
        run(self)

    FlusherChild.run = held_run  # type: ignore[method-assign]


def _block_backup_copies(block_file: str) -> None:
    from otlp_receiver import backup

    add = backup._Copy.add

    def slow_add(self: backup._Copy, src: Any, name: str, **kwargs: Any) -> None:
        if name.startswith("steps/") and "/_delta_log/" not in name and os.path.exists(block_file):
            logger.warning("fault: backup copy blocked")
            while os.path.exists(block_file):
                time.sleep(0.05)
        add(self, src, name, **kwargs)

    backup._Copy.add = slow_add  # type: ignore[method-assign]


if any(name.startswith("TW_FAULT_") for name in os.environ):
    _install()
