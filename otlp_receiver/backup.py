"""Backups of a data dir, consistent by construction: taken beside a running flusher, or from a stopped data dir.

A backup is a directory Traceward can be started on (a copy of it: ``restore_backup``), plus ``manifest.json``:

    traceward.sqlite3               the run index and all transactional state (governance, API keys, the audit
                                    log, the WAL checkpoint C): one SQLite snapshot
    steps/                          the Delta table at one version V: its latest checkpoint and the commits after
                                    it, and exactly the data files of V
    wal/                            the WAL segments from C up to where the log ended when the backup began (whole
                                    records; offsets kept, so every position recorded in the stores stays valid)
    signing-keys.pem, redaction.key the key files, mode 0600
    manifest.json                   times, the flusher's pause, versions, positions, each file's size and sha256

Why it is consistent: the flusher (the one writer of the Delta table and of the index's runs and checkpoint)
and retention take turns at a ``StoreGate``. The backup pauses the gate just long enough to open a read
transaction on the index, bring the Delta table to its current version and copy that version's log entries:
index and table then agree as between two flush rounds, as a crash at that instant would leave them, which
start-up recovery handles. Then it *holds* the WAL from C and the data files of V, lets the flusher go on, and
copies them and the SQLite snapshot. A server started on the copy replays the WAL from C, so every export
acknowledged before the backup began is there, with the seqs and chain hashes the original gave it.

Everything is written into a hidden ``.<name>.partial-<random>`` sibling, fsynced, then renamed to the target:
a backup that failed or was killed never looks complete (no manifest, not its name).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from otlp_receiver.errors import AppError, ConflictError, StorageError
from otlp_receiver.flusher import CHECKPOINT_KEY
from otlp_receiver.progress import Progress
from otlp_receiver.store.gate import StoreGate
from otlp_receiver.store.snapshot import (
    CopiedFile,
    IndexSnapshot,
    StepsSnapshot,
    copy_file,
    hash_file,
    open_steps,
    steps_snapshot,
    write_file,
)
from otlp_receiver.wal import segment_path, split_position
from otlp_receiver.wal_reader import WalReader

logger = logging.getLogger(__name__)

FORMAT = "traceward.backup"
MANIFEST = "manifest.json"
INDEX_FILE, STEPS_DIR, WAL_DIR = "traceward.sqlite3", "steps", "wal"
SECRET_MODE = 0o600


class BackupError(AppError):
    """A backup could not be written, read or restored (the file system refused, a file is damaged)."""

    code = "backup_failed"


@dataclass(frozen=True, slots=True)
class BackupSources:
    """Where a data dir's parts are (the server's settings know)."""

    index: Path
    steps: Path
    wal: Path
    key_files: tuple[tuple[str, Path], ...] = ()
    """(name in the backup, file): copied with mode 0600; a missing one is left out."""


@dataclass(slots=True)
class _Copy:
    """A backup being written."""

    out: Path
    progress: Progress
    files: list[CopiedFile] = field(default_factory=list)

    def add(self, src: Path, name: str, *, limit: int | None = None, mode: int = 0o640) -> None:
        self.files.append(copy_file(src, self.out / name, root=self.out, limit=limit, mode=mode))
        self.progress.beat()  # the watchdog sees a long backup progress file by file

    def write(self, data: bytes, name: str) -> None:
        self.files.append(write_file(data, self.out / name, root=self.out))


def take_backup(sources: BackupSources, target: Path, *, gate: StoreGate, wal_end: int | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """Write a backup of the stores to ``target`` (which must not exist); returns its summary.

    ``wal_end``: where the WAL ended when the backup was asked for (the appender's own position, always between
    two records); None reads the end on disk and keeps the whole records before it (a stopped data dir).
    """
    started_ns, started = time.time_ns(), time.perf_counter()
    _check_free(target)
    partial = _make_partial(target)
    try:
        manifest = _write(sources, _Copy(partial, progress or Progress()), gate=gate, wal_end=wal_end)
        manifest.update(started_ns=started_ns, finished_ns=time.time_ns(),
                        duration_ms=round((time.perf_counter() - started) * 1000, 1))
        text = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        _publish(partial, target, text)
    except OSError as exc:
        _discard(partial)
        raise BackupError(f"cannot write the backup {target}: {exc.strerror or exc}") from exc
    except BaseException:
        _discard(partial)
        raise
    summary = {key: manifest[key] for key in ("pause_ms", "duration_ms", "index", "steps", "wal")}
    return {**summary, "path": str(target), "manifest_sha256": _sha256(text), "files": len(manifest["files"]),
            "bytes": sum(f["size"] for f in manifest["files"].values())}


def _write(sources: BackupSources, copy: _Copy, *, gate: StoreGate, wal_end: int | None) -> dict[str, Any]:
    table = open_steps(sources.steps)  # before the pause: inside it, only the commits since are read
    with gate.paused():
        paused = time.perf_counter()
        index = IndexSnapshot(sources.index, checkpoint_key=CHECKPOINT_KEY)
        try:
            steps = steps_snapshot(sources.steps, table)
            end = WalReader(sources.wal).end_position() if wal_end is None else wal_end
            # Read, not written: the copies' fsyncs (one per file, up to a hundred) are left for after the pause.
            log = [(name, (sources.steps / name).read_bytes()) for name in (steps.log_files if steps else ())]
            hold = gate.hold(index.checkpoint)
        except BaseException:
            index.close()
            raise
        pause_ms = round((time.perf_counter() - paused) * 1000, 2)
    try:
        for name, data in log:
            copy.write(data, f"{STEPS_DIR}/{name}")
        index.copy_to(copy.out / INDEX_FILE)
        copy.files.append(hash_file(copy.out / INDEX_FILE, root=copy.out))
        for name in steps.data_files if steps else ():
            copy.add(sources.steps / name, f"{STEPS_DIR}/{name}")
        wal = _copy_wal(sources.wal, copy, start=index.checkpoint, end=max(end, index.checkpoint))
    finally:
        gate.release(hold)
        index.close()
    for name, path in sources.key_files:
        if path.exists():
            copy.add(path, name, mode=SECRET_MODE)
    return {"format": FORMAT, "v": 1, "pause_ms": pause_ms, "index": {"file": INDEX_FILE,
            "wal_checkpoint": index.checkpoint}, "steps": _steps_json(steps), "wal": wal,
            "files": {f.path: {"size": f.size, "sha256": f.sha256} for f in sorted(copy.files, key=lambda f: f.path)}}


def _steps_json(steps: StepsSnapshot | None) -> dict[str, Any] | None:
    if steps is None:
        return None
    return {"version": steps.version, "committed_wal_end": steps.committed_wal_end,
            "checkpoint_version": steps.checkpoint_version, "data_files": len(steps.data_files)}


def _copy_wal(src: Path, copy: _Copy, *, start: int, end: int) -> dict[str, Any]:
    """Copy the segments holding ``[start, end)`` up to the last whole record at or before ``end``."""
    valid, records = _whole_records(src, start, end)
    if valid < end and split_position(end)[1]:  # (an end at offset 0 of a new segment is the previous one's end)
        logger.warning("backup: the write-ahead log ends in a partial record at %d; copying up to %d", end, valid)
    first, (last, last_offset) = split_position(start)[0], split_position(valid)
    for segment in range(first, last + 1):
        path = segment_path(src, segment)
        if segment == last and last_offset == 0 and not path.exists():
            continue  # nothing written there yet
        copy.add(path, f"{WAL_DIR}/{path.name}", limit=last_offset if segment == last else None)
    return {"from": start, "to": valid, "records": records}


def _whole_records(directory: Path, start: int, end: int) -> tuple[int, int]:
    """(the end of the last whole record in ``[start, end]``, how many records that is)."""
    valid, records = start, 0
    if not directory.exists():
        return valid, records
    for _, position in WalReader(directory).read_from(start):
        if position > end:
            break
        valid, records = position, records + 1
    return valid, records


# -- writing the directory -------------------------------------------------------------------------------------

def _check_free(target: Path) -> None:
    if os.path.lexists(target):
        raise ConflictError(f"{target} already exists: a backup never overwrites anything")


def _make_partial(target: Path) -> Path:
    """The hidden sibling the backup is written into (0700: it will hold key files)."""
    partial = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    try:
        partial.mkdir(mode=0o700)
    except FileNotFoundError as exc:
        raise BackupError(f"cannot write the backup {target}: {target.parent} does not exist") from exc
    except OSError as exc:
        raise BackupError(f"cannot write the backup {target}: {exc.strerror or exc}") from exc
    return partial


def _publish(partial: Path, target: Path, manifest: bytes) -> None:
    """Write the manifest last, make every entry durable, then give the directory its name."""
    fd = os.open(partial / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with open(fd, "wb") as out:
        out.write(manifest)
        out.flush()
        os.fsync(out.fileno())
    for directory in sorted(_directories(partial), key=lambda p: len(p.parts), reverse=True):
        _fsync_dir(directory)
    _check_free(target)  # a backup of the same name may have finished meanwhile
    os.rename(partial, target)
    _fsync_dir(target.parent)


def _directories(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            yield Path(dirpath) / name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- checking and restoring ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BackupReport:
    """What ``verify_backup`` found."""

    path: str
    problems: tuple[str, ...]
    files_checked: int
    manifest_sha256: str | None

    @property
    def ok(self) -> bool:
        """Whether the backup is complete and every file is as the manifest says."""
        return not self.problems


def verify_backup(path: Path) -> BackupReport:
    """Check a backup: its manifest, every file's size and sha256, nothing extra, the SQLite file, the WAL."""
    try:
        text = (path / MANIFEST).read_bytes()
        manifest = orjson.loads(text)
    except FileNotFoundError:
        return BackupReport(str(path), (f"no {MANIFEST}: not a complete backup",), 0, None)
    except (OSError, orjson.JSONDecodeError) as exc:
        return BackupReport(str(path), (f"{MANIFEST} unreadable: {exc}",), 0, None)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return BackupReport(str(path), (f"{MANIFEST} is not a {FORMAT} manifest",), 0, _sha256(text))
    problems = _file_problems(path, manifest["files"])
    if not problems:
        problems += _content_problems(path, manifest)
    return BackupReport(str(path), tuple(problems), len(manifest["files"]), _sha256(text))


def _file_problems(root: Path, files: dict[str, Any]) -> list[str]:
    problems = []
    for name, expected in sorted(files.items()):
        try:
            found = hash_file(root / name, root=root)
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror or exc}")
            continue
        if (found.size, found.sha256) != (expected.get("size"), expected.get("sha256")):
            problems.append(f"{name}: size or sha256 differs from the manifest")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    problems += [f"{name}: not in the manifest" for name in sorted(present - set(files) - {MANIFEST})]
    return problems


def _content_problems(root: Path, manifest: dict[str, Any]) -> list[str]:
    """What the hashes cannot show: a backup written from damaged sources."""
    problems = []
    try:
        with sqlite3.connect(f"file:{root / INDEX_FILE}?immutable=1", uri=True) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            problems.append(f"{INDEX_FILE}: quick_check says {result}")
    except sqlite3.Error as exc:
        problems.append(f"{INDEX_FILE}: {exc}")
    wal = manifest.get("wal") or {}
    try:
        records = _whole_records(root / WAL_DIR, int(wal.get("from", 0)), int(wal.get("to", 0)))
    except (StorageError, ValueError, TypeError) as exc:
        return [*problems, f"{WAL_DIR}: {exc}"]
    if records != (wal.get("to"), wal.get("records")):
        problems.append(f"{WAL_DIR}: holds {records[1]} whole records up to {records[0]}, the manifest says "
                        f"{wal.get('records')} up to {wal.get('to')}")
    return problems


def restore_backup(backup: Path, data_dir: Path) -> BackupReport:
    """Copy a verified backup into a new (absent or empty) data dir; ``traceward serve`` then starts on it."""
    report = verify_backup(backup)
    if not report.ok:
        raise BackupError(f"{backup} does not verify: {'; '.join(report.problems[:5])}")
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise ConflictError(f"{data_dir} exists and is not an empty directory: restore into a new one")
    files = orjson.loads((backup / MANIFEST).read_bytes())["files"]
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, expected in files.items():
            mode = (backup / name).stat().st_mode & 0o777
            copied = copy_file(backup / name, data_dir / name, root=data_dir, mode=mode)
            if copied.sha256 != expected["sha256"]:
                raise BackupError(f"{name} changed while it was restored")
        for directory in _directories(data_dir):
            _fsync_dir(directory)
    except OSError as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc.strerror or exc}") from exc
    return report
