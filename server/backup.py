"""Backups of a running server's data dir: where they may be written, who may ask, and the audit trail.

The backup itself (``otlp_receiver/backup.py``) runs where the flusher runs, beside it: in the flusher
process (the ``backup`` request of ``server/flushing.py``) or, with the flusher a thread, here. This module
decides the target: always a new sub-directory of TRACEWARD_BACKUP_DIR named by a plain name (never a path
from a request), refused when that directory is unset, when the target exists or while another backup runs.
A backup holds every tenant's data, so only an admin of the operator tenant (TRACEWARD_DEFAULT_TENANT) may ask
for one; each attempt is audited in that tenant's log (actor, target, the manifest's sha256, or the error).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otlp_receiver.backup import BackupError, BackupSources
from otlp_receiver.errors import ConflictError, InvalidInputError, PermissionDeniedError
from otlp_receiver.store.audit import AuditLog
from server.settings import Settings

logger = logging.getLogger(__name__)

BACKUP_TIMEOUT_S = 6 * 3600.0
"""How long the server waits for the flusher process to finish a backup (it reports progress meanwhile)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A backup's name: one plain path component (no separator, no leading dot, no ``..``)."""

RunBackup = Callable[[Path, int], dict[str, Any]]
"""(target, WAL end when asked) → the backup's summary, run where the flusher runs."""


class BackupNotConfiguredError(ConflictError):
    """TRACEWARD_BACKUP_DIR is unset: the server has nowhere it may write a backup."""

    code = "backup_not_configured"


def backup_sources(settings: Settings) -> BackupSources:
    """The parts of the data dir a backup copies (the rate-limit counters, the forwarding queues and the lock files
    are not: counters and locks are transient, and a restored queue would forward exports downstream again)."""
    return BackupSources(index=settings.index_path, steps=settings.steps_path, wal=settings.wal_dir,
                         key_files=(("signing-keys.pem", settings.signing_key_file),
                                    ("redaction.key", settings.data_dir / "redaction.key")))


def backup_name(name: str | None, *, now_ns: int | None = None) -> str:
    """The requested name, checked, or one made from the time (UTC, to the millisecond)."""
    if name is None:
        ns = time.time_ns() if now_ns is None else now_ns
        return time.strftime("traceward-%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns // 10**6 % 1000:03d}Z"
    if not NAME.fullmatch(name) or ".." in name:
        raise InvalidInputError("name must be 1-100 of A-Z a-z 0-9 . _ - (not starting with a dot or holding '..'): "
                                "backups are written under TRACEWARD_BACKUP_DIR only",
                                details={"name": "a plain name, not a path"})
    return name


class Backups:
    """API backups of this server: one at a time, under the backup root, audited."""

    def __init__(self, settings: Settings, audit: AuditLog, run: RunBackup, wal_end: Callable[[], int]) -> None:
        """``run`` writes a backup where the flusher runs; ``wal_end`` is the WAL appender's end position."""
        self.settings, self.audit, self.run, self.wal_end = settings, audit, run, wal_end
        self._running = threading.Lock()

    def create(self, tenant_id: str, actor: str, name: str | None) -> dict[str, Any]:
        """Back up the data dir to ``<TRACEWARD_BACKUP_DIR>/<name>``; returns the summary (audited either way)."""
        if tenant_id != self.settings.default_tenant:
            raise PermissionDeniedError("a backup holds every tenant's data: only an admin of the operator tenant "
                                        "(TRACEWARD_DEFAULT_TENANT) may take one")
        target = self._target(backup_name(name))
        if not self._running.acquire(blocking=False):
            raise ConflictError("a backup is already running; try again when it has finished")
        try:
            return self._create(tenant_id, actor, target)
        finally:
            self._running.release()

    def _create(self, tenant_id: str, actor: str, target: Path) -> dict[str, Any]:
        wal_end = self.wal_end()  # everything acknowledged before this request is in the backup
        try:
            summary = self.run(target, wal_end)
        except Exception as exc:
            reason = getattr(exc, "message", None) or type(exc).__name__
            self.audit.append(tenant_id, actor=actor, action="backup.failed", target=str(target),
                              details={"error": reason})
            logger.warning("backup to %s failed: %s", target, reason)
            raise
        self.audit.append(tenant_id, actor=actor, action="backup.create", target=str(target),
                          details={k: summary[k] for k in ("manifest_sha256", "pause_ms", "duration_ms", "files",
                                                           "bytes", "wal")})
        logger.info("backup written to %s: %d files, %d bytes in %.0f ms (the flusher paused %.1f ms)", target,
                    summary["files"], summary["bytes"], summary["duration_ms"], summary["pause_ms"])
        return {**summary, "name": target.name}

    def _target(self, name: str) -> Path:
        root = self.settings.backup_dir
        if root is None:
            raise BackupNotConfiguredError("backups over the API are off: set TRACEWARD_BACKUP_DIR to a directory "
                                           "the server may write backups under (or run `traceward admin backup "
                                           "--to DIR` while the server is stopped)")
        if not root.is_dir():
            raise BackupError(f"TRACEWARD_BACKUP_DIR={root} is not an existing directory")
        resolved, data_dir = root.resolve(), self.settings.data_dir.resolve()
        if resolved == data_dir or data_dir in resolved.parents:
            raise BackupError(f"TRACEWARD_BACKUP_DIR={root} lies inside the data dir: a backup must live elsewhere")
        target = root / name
        if target.parent.resolve() != resolved:
            raise InvalidInputError("name must name a directory directly under TRACEWARD_BACKUP_DIR")
        if target.exists() or target.is_symlink():
            raise ConflictError(f"backup {name!r} already exists: a backup never overwrites anything",
                                details={"name": "already taken"})
        return target
