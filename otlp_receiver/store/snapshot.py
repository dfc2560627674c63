"""Point-in-time views of the two stores, and copying their files: the store half of a backup.

- ``IndexSnapshot``: a read transaction on the run index, opened while the stores' writers are paused; SQLite's
  online backup API then copies exactly that snapshot, however long it takes and whatever the server writes
  meanwhile (governance, keys, audit rows: WAL mode lets them commit beside the open read transaction).
- ``StepsSnapshot``: one version of the Delta table: the log entries a reader of that version needs (its
  latest checkpoint at or before it and the commits after, not the whole history) and exactly its data files.

Neither changes the stores. ``copy_file`` copies and hashes in one pass and makes the copy durable.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from otlp_receiver.errors import StorageError
from otlp_receiver.store.steps import APP_ID

_CHUNK = 1024 * 1024
_LOG_DIR = "_delta_log"
_LOG_ENTRY = re.compile(r"^(\d{20})\.(json|checkpoint\.parquet|checkpoint\.\d{10}\.\d{10}\.parquet)$")


@dataclass(frozen=True, slots=True)
class CopiedFile:
    """A file as written into a backup: its path there (``/``-separated), size and sha256."""

    path: str
    size: int
    sha256: str


def copy_file(src: Path, dst: Path, *, root: Path, limit: int | None = None, mode: int = 0o640) -> CopiedFile:
    """Copy ``src`` (its first ``limit`` bytes) to ``dst``, hashing on the way, fsynced; ``root`` names it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as source, open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        size = _pump(source, out, digest, limit)
        out.flush()
        os.fsync(out.fileno())
    if limit is not None and size < limit:
        raise StorageError(f"{src} is shorter than the {limit} bytes to back up")
    return CopiedFile(dst.relative_to(root).as_posix(), size, digest.hexdigest())


def write_file(data: bytes, dst: Path, *, root: Path, mode: int = 0o640) -> CopiedFile:
    """Write ``data`` (read earlier, e.g. while the writers were paused) to a new file, fsynced."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return CopiedFile(dst.relative_to(root).as_posix(), len(data), hashlib.sha256(data).hexdigest())


def hash_file(path: Path, *, root: Path) -> CopiedFile:
    """A file already in a backup, hashed."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        size = _pump(source, None, digest, None)
    return CopiedFile(path.relative_to(root).as_posix(), size, digest.hexdigest())


def _pump(source: BinaryIO, out: BinaryIO | None, digest: hashlib._Hash, limit: int | None) -> int:
    size = 0
    while limit is None or size < limit:
        chunk = source.read(_CHUNK if limit is None else min(_CHUNK, limit - size))
        if not chunk:
            break
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        size += len(chunk)
    return size


class IndexSnapshot:
    """A read transaction on the run index: what the index held when it was opened, until ``close``."""

    def __init__(self, path: Path, *, checkpoint_key: str) -> None:
        """Open it (call while the writers that must agree with it are paused); reads the WAL checkpoint."""
        if not path.is_file():
            raise StorageError(f"no run index at {path}")
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.execute("BEGIN")
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", [checkpoint_key]).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the run index at {path}: {exc}") from exc
        self.checkpoint = int(row[0]) if row else 0
        """The WAL position up to which the snapshot's records are stored."""

    def copy_to(self, dst: Path) -> None:
        """Write the snapshot to a new SQLite file (the online backup API, in one step: one snapshot)."""
        try:
            target = sqlite3.connect(dst)
            try:
                self._conn.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite backup failed: {exc}") from exc
        with open(dst, "rb+") as handle:
            os.fsync(handle.fileno())

    def close(self) -> None:
        """End the read transaction."""
        self._conn.close()


@dataclass(frozen=True, slots=True)
class StepsSnapshot:
    """One version of the step table and the files that make it up (paths relative to the table)."""

    version: int
    committed_wal_end: int
    """The WAL position of the last batch committed (the app transaction's version)."""
    checkpoint_version: int | None
    """The Delta checkpoint the log copy starts from (None: the log from version 0)."""
    log_files: tuple[str, ...]
    data_files: tuple[str, ...]


def open_steps(path: Path) -> DeltaTable | None:
    """The step table at its latest version, or None when nothing was ever flushed."""
    try:
        return DeltaTable(str(path))
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise StorageError(f"cannot open the step table at {path}: {exc}") from exc


def steps_snapshot(path: Path, table: DeltaTable | None) -> StepsSnapshot | None:
    """The table's current version (``table`` opened earlier is brought up to date: only new commits are read)."""
    try:
        if table is None:
            table = open_steps(path)
            if table is None:
                return None
        else:
            table.update_incremental()
        version = table.version()
        uris = table.file_uris()
        wal_end = table.transaction_version(APP_ID) or 0
    except (DeltaError, OSError) as exc:
        raise StorageError(f"cannot read the step table at {path}: {exc}") from exc
    data = tuple(_relative(uri, path) for uri in uris)
    checkpoint, log = _log_entries(path / _LOG_DIR, version)
    return StepsSnapshot(version, wal_end, checkpoint, log, data)


def _relative(uri: str, table: Path) -> str:
    local = Path(uri.removeprefix("file://"))
    relative = Path(os.path.relpath(local, table))
    if relative.parts[:1] == ("..",) or relative.is_absolute():
        raise StorageError(f"step table file {uri} lies outside the table")
    return relative.as_posix()


def _log_entries(log_dir: Path, version: int) -> tuple[int | None, tuple[str, ...]]:
    """The log entries a reader of ``version`` needs: the newest checkpoint at or before it (all its parts) and
    the commits after it up to ``version``. Older commits, later ones and ``_last_checkpoint`` (a hint, which
    may name a checkpoint after ``version``; readers list the log without it) are left out."""
    entries: list[tuple[int, str, str]] = []
    for name in os.listdir(log_dir):
        match = _LOG_ENTRY.match(name)
        if match and int(match.group(1)) <= version:
            entries.append((int(match.group(1)), match.group(2), name))
    checkpoints = [v for v, kind, _ in entries if kind != "json"]
    since = max(checkpoints, default=None)
    commits = sorted(v for v, kind, _ in entries if kind == "json" and (since is None or v > since))
    first = 0 if since is None else since + 1
    if commits != list(range(first, version + 1)):
        raise StorageError(f"the step table's log lacks commits between {first} and {version}")
    keep = [name for v, kind, name in entries
            if (kind == "json" and v >= first) or (kind != "json" and v == since)]
    return since, tuple(f"{_LOG_DIR}/{name}" for name in sorted(keep))
