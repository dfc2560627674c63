"""``traceward admin backup | verify-backup | restore``.

- ``backup --to DIR``: a stopped data dir, directly (it takes the data dir's locks: a running server holds them).
- ``backup --api URL --key-file FILE [--name NAME]``: a running server, through ``POST /v1/admin/backup`` with an
  admin key of the operator tenant; the server writes under its own TRACEWARD_BACKUP_DIR.
- ``verify-backup DIR``: the manifest, every file's size and sha256, the SQLite file, the WAL records.
- ``restore --from DIR --data-dir NEW``: verify, then copy into a new data dir that ``traceward serve`` starts on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import httpx

from otlp_receiver.backup import BackupError, restore_backup, take_backup, verify_backup
from otlp_receiver.errors import InvalidInputError, StorageError
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.gate import StoreGate
from otlp_receiver.store.index import RunIndex
from server.backup import BACKUP_TIMEOUT_S, backup_name, backup_sources
from server.locks import FLUSHER_LOCK, SERVER_LOCK, DataDirLock, LockHeldError
from server.settings import Settings

CLI_ACTOR = "cli:backup"


def add_commands(admin_sub: Any) -> None:
    """Register ``admin backup``, ``admin verify-backup`` and ``admin restore``."""
    backup = admin_sub.add_parser("backup", help="back up a data dir: a stopped one (--to) or a running server (--api)")
    backup.add_argument("--data-dir", type=Path, default=None, help="env TRACEWARD_DATA_DIR (./traceward-data)")
    where = backup.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=Path, default=None, help="the new directory to write (the data dir is stopped)")
    where.add_argument("--api", default=None, metavar="URL", help="a running server's API, e.g. http://127.0.0.1:8000")
    backup.add_argument("--key-file", type=Path, default=None, help="with --api: a file holding an admin API key")
    backup.add_argument("--name", default=None, help="with --api: the backup's name under TRACEWARD_BACKUP_DIR")
    backup.set_defaults(func=cli_backup)
    verify = admin_sub.add_parser("verify-backup", help="check a backup's manifest and files (exit 1 on a problem)")
    verify.add_argument("backup_dir", type=Path)
    verify.set_defaults(func=cli_verify_backup)
    restore = admin_sub.add_parser("restore", help="verify a backup and copy it into a new data dir")
    restore.add_argument("--from", dest="backup_dir", type=Path, required=True, help="the backup directory")
    restore.add_argument("--data-dir", type=Path, required=True, help="the new data dir (absent or empty)")
    restore.set_defaults(func=cli_restore)


def cli_backup(args: argparse.Namespace) -> int:
    """``traceward admin backup``."""
    if args.api is not None:
        return _api_backup(args)
    if args.key_file is not None or args.name is not None:
        raise InvalidInputError("--key-file and --name go with --api; --to names the directory itself")
    settings = Settings.from_env(os.environ, data_dir=args.data_dir)
    if not settings.index_path.is_file():
        raise InvalidInputError(f"{settings.data_dir} is not a Traceward data dir (no {settings.index_path.name})")
    target = args.to.absolute()
    data_dir = settings.data_dir.resolve()
    if target.resolve() == data_dir or data_dir in target.resolve().parents:
        raise InvalidInputError(f"--to {args.to} lies inside the data dir: a backup must live elsewhere")
    locks = _lock_stopped(settings)
    try:
        summary = take_backup(backup_sources(settings), target, gate=StoreGate())
        AuditLog(RunIndex(settings.index_path)).append(
            settings.default_tenant, actor=CLI_ACTOR, action="backup.create", target=str(target),
            details={k: summary[k] for k in ("manifest_sha256", "pause_ms", "duration_ms", "files", "bytes", "wal")})
    finally:
        for lock in reversed(locks):
            lock.release()
    _print_summary(summary)
    return 0


def _lock_stopped(settings: Settings) -> list[DataDirLock]:
    """Both of the data dir's locks: no server appends to the WAL, no flusher writes the stores meanwhile."""
    locks: list[DataDirLock] = []
    try:
        for name in (SERVER_LOCK, FLUSHER_LOCK):
            lock = DataDirLock(settings.data_dir, name)
            lock.acquire(what="traceward admin backup")
            locks.append(lock)
    except LockHeldError as exc:
        for lock in locks:
            lock.release()
        raise LockHeldError(f"{exc.message}; while a server runs, use `traceward admin backup --api URL "
                            f"--key-file FILE` (it writes under the server's TRACEWARD_BACKUP_DIR)") from exc
    return locks


def _api_backup(args: argparse.Namespace) -> int:
    if args.key_file is None:
        raise InvalidInputError("--api needs --key-file: a file holding an admin API key of the operator tenant")
    if args.to is not None or args.data_dir is not None:
        raise InvalidInputError("--api writes under the server's TRACEWARD_BACKUP_DIR: give --name, not --to/--data-dir")
    key = args.key_file.read_text(encoding="utf-8").strip()
    body = {"name": backup_name(args.name)} if args.name else {}
    try:
        resp = httpx.post(f"{args.api.rstrip('/')}/v1/admin/backup", json=body, timeout=BACKUP_TIMEOUT_S,
                          headers={"authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise StorageError(f"cannot reach {args.api}: {exc}") from exc
    if resp.status_code != 201:
        error = _error_of(resp)
        raise BackupError(f"the server refused the backup ({resp.status_code} {error.get('code')}): "
                          f"{error.get('message')}")
    _print_summary(resp.json())
    return 0


def _error_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        error = resp.json().get("error")
    except ValueError:
        error = None
    return error if isinstance(error, dict) else {"code": "?", "message": resp.text[:200]}


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"backup written to {summary['path']}: {summary['files']} files, {summary['bytes']} bytes in "
          f"{summary['duration_ms']:.0f} ms (the flusher paused {summary['pause_ms']:.1f} ms); WAL "
          f"{summary['wal']['from']}..{summary['wal']['to']} ({summary['wal']['records']} records to replay)")
    print(f"manifest sha256 {summary['manifest_sha256']}")


def cli_verify_backup(args: argparse.Namespace) -> int:
    """``traceward admin verify-backup DIR``: 0 when the backup is complete and intact, 1 otherwise."""
    report = verify_backup(args.backup_dir)
    if report.ok:
        print(f"{report.path}: OK ({report.files_checked} files; manifest sha256 {report.manifest_sha256})")
        return 0
    print(f"{report.path}: {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  {problem}")
    return 1


def cli_restore(args: argparse.Namespace) -> int:
    """``traceward admin restore --from DIR --data-dir NEW``."""
    report = restore_backup(args.backup_dir, args.data_dir)
    print(f"restored {report.files_checked} files from {report.path} into {args.data_dir}; "
          f"start it with: traceward serve --data-dir {args.data_dir}")
    return 0
