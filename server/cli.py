"""``traceward`` command line: serve, admin."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from diff.api import diff_runs
from diff.normalize import get_profile
from diff.render import render_text
from otlp_receiver.errors import AppError
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from otlp_receiver.store.steps import StepTable
from server.app import create_app, create_otlp_http_app
from server.backup_commands import add_commands as add_backup_commands
from server.export import ExportRequest, main_export, parse_when
from server.locks import FLUSHER_LOCK, DataDirLock, LockHeldError
from server.retention import RetentionJob
from server.routes.ingest import normalise_run_id
from server.runtime import Runtime, load_diff_profiles
from server.settings import Settings
from server.steps import read_run
from server.verify_commands import add_commands as add_verify_commands

logger = logging.getLogger("traceward")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``traceward`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("TRACEWARD_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except AppError as exc:
        print(f"traceward: {exc.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="traceward", description="OpenTelemetry-native agent observability")
    sub = parser.add_subparsers(required=True)
    serve = sub.add_parser("serve", help="run the receivers, the API and the flusher")
    _settings_flags(serve)
    serve.add_argument("--flusher-stall-s", type=float, default=None,
                       help="env TRACEWARD_FLUSHER_STALL_S (60; 0 = no flusher watchdog)")
    serve.set_defaults(func=_serve)
    diff = sub.add_parser("diff", help="diff two runs (aligned, normalized) from the local data dir")
    _settings_flags(diff)
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.add_argument("--tenant", default=None, help="tenant id (default: TRACEWARD_DEFAULT_TENANT)")
    diff.add_argument("--profile", default="default", help="default|strict|structure|semantic|<custom>")
    diff.add_argument("--format", choices=("text", "json"), default="text")
    diff.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    diff.set_defaults(func=_diff)
    admin = sub.add_parser("admin", help="administrative tasks")
    admin_sub = admin.add_subparsers(required=True)
    key = admin_sub.add_parser("create-key", help="create an API key (printed once)")
    _settings_flags(key)
    key.add_argument("--role", required=True, choices=("ingest", "viewer", "approver", "admin"))
    key.add_argument("--tenant", default=None, help="tenant id (default: TRACEWARD_DEFAULT_TENANT)")
    key.add_argument("--project", default=None, help="project id (default: TRACEWARD_DEFAULT_PROJECT)")
    key.add_argument("--name", default="")
    key.set_defaults(func=_create_key)
    boot = admin_sub.add_parser("bootstrap-tenant", help="create a tenant's first admin key (printed once)")
    _settings_flags(boot)
    boot.add_argument("--tenant", required=True, help="tenant id (1-64 of A-Z a-z 0-9 . _ -)")
    boot.add_argument("--project", default=None, help="project id (default: TRACEWARD_DEFAULT_PROJECT)")
    boot.add_argument("--name", default="bootstrap admin key")
    boot.add_argument("--force", action="store_true", help="even if the tenant already has an admin key")
    boot.set_defaults(func=_bootstrap_tenant)
    ret = admin_sub.add_parser("retention", help="apply the retention plans now (one tenant or all)")
    _settings_flags(ret)
    ret.add_argument("--tenant", default=None, help="only this tenant (default: every tenant)")
    ret.set_defaults(func=_run_retention)
    exp = sub.add_parser("export", help="export a tenant's steps (or runs) in a time range to Parquet or JSON Lines")
    _settings_flags(exp)
    exp.add_argument("--since", required=True, help="RFC 3339, integer ns, or a duration back from now (24h, 7d)")
    exp.add_argument("--until", default=None, help="RFC 3339, integer ns or a duration back from now (default: now)")
    exp.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    exp.add_argument("--table", choices=("steps", "runs"), default="steps")
    exp.add_argument("--tenant", default=None, help="tenant id (default: TRACEWARD_DEFAULT_TENANT)")
    exp.add_argument("--out", type=Path, required=True, help="the file to write")
    exp.set_defaults(func=_export)
    add_verify_commands(sub, admin_sub)
    add_backup_commands(admin_sub)
    return parser


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="env TRACEWARD_DATA_DIR (./traceward-data)")
    p.add_argument("--host", default=None, help="env TRACEWARD_HOST (127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=None, help="env TRACEWARD_GRPC_PORT (4317)")
    p.add_argument("--otlp-http-port", type=int, default=None, help="env TRACEWARD_OTLP_HTTP_PORT (4318)")
    p.add_argument("--http-port", type=int, default=None, help="env TRACEWARD_HTTP_PORT (8000)")
    p.add_argument("--bootstrap-ingest-key", default=None, help="env TRACEWARD_BOOTSTRAP_INGEST_KEY")
    p.add_argument("--bootstrap-admin-key", default=None, help="env TRACEWARD_BOOTSTRAP_ADMIN_KEY")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(os.environ, data_dir=args.data_dir, host=args.host, grpc_port=args.grpc_port,
                             otlp_http_port=args.otlp_http_port, http_port=args.http_port,
                             bootstrap_ingest_key=args.bootstrap_ingest_key,
                             bootstrap_admin_key=args.bootstrap_admin_key,
                             flusher_stall_s=getattr(args, "flusher_stall_s", None))


def _diff(args: argparse.Namespace) -> int:
    settings = _settings(args)
    index, steps = RunIndex(settings.index_path), StepTable(settings.steps_path)  # read-only use, no WAL
    tenant = args.tenant or settings.default_tenant
    profile = get_profile(load_diff_profiles(settings.diff_profiles_file), args.profile)
    a, steps_a = read_run(index, steps, tenant, normalise_run_id(args.run_a))
    b, steps_b = read_run(index, steps, tenant, normalise_run_id(args.run_b))
    result = diff_runs(a, steps_a, b, steps_b, profile=profile)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        sys.stdout.write(render_text(result, color=color, width=shutil.get_terminal_size((120, 40)).columns) + "\n")
    return 0


def _create_key(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keys = KeyStore(RunIndex(settings.index_path))  # not a Runtime: never touch a running server's WAL
    key, record = keys.create(tenant_id=args.tenant or settings.default_tenant,
                                      project_id=args.project or settings.default_project, role=args.role,
                                      name=args.name)
    print(f"{record.role} key for tenant {record.tenant_id} / project {record.project_id} (shown once):")
    print(key)
    return 0


def _bootstrap_tenant(args: argparse.Namespace) -> int:
    settings = _settings(args)
    index = RunIndex(settings.index_path)  # not a Runtime: never touch a running server's WAL
    keys, audit = KeyStore(index), AuditLog(index)
    if keys.count_active(args.tenant, role="admin") and not args.force:
        print(f"traceward: tenant {args.tenant} already has an admin key (use --force to add another)",
              file=sys.stderr)
        return 1
    with index.transaction() as db:
        key, record = keys.create(tenant_id=args.tenant, project_id=args.project or settings.default_project,
                                  role="admin", name=args.name, created_by="cli:bootstrap-tenant", db=db)
        audit.append(args.tenant, actor="cli:bootstrap-tenant", action="key.create", target=record.key_id,
                     details={"role": "admin", "project_id": record.project_id, "name": record.name,
                              "prefix": record.prefix, "bootstrap": True}, db=db)
    print(f"admin key for tenant {record.tenant_id} (shown once):")
    print(key)
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = _settings(args)
    index = RunIndex(settings.index_path)  # not a Runtime: never touch a running server's WAL
    now = time.time_ns()
    request = ExportRequest(
        tenant_id=args.tenant or settings.default_tenant, since_ns=parse_when(args.since, field="since", now_ns=now),
        until_ns=parse_when(args.until, field="until", now_ns=now) if args.until else now + 1,
        format=args.format, out=args.out, table=args.table)
    return main_export(index, StepTable(settings.steps_path), request)


def _run_retention(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # Deleting vacuums the Delta table: only while no flusher (a server's) is writing it; else use the API.
    lock = DataDirLock(settings.data_dir, FLUSHER_LOCK)
    try:
        lock.acquire(what="traceward admin retention")
    except LockHeldError as exc:
        raise LockHeldError(f"{exc.message}; while a server runs, use POST /v1/admin/retention:run") from exc
    try:
        return _retention_pass(args, settings)
    finally:
        lock.release()


def _retention_pass(args: argparse.Namespace, settings: Settings) -> int:
    index = RunIndex(settings.index_path)  # not a Runtime: never touch a running server's WAL
    job = RetentionJob(index, StepTable(settings.steps_path), AuditLog(index), default_days=settings.retention_days,
                       audit_days=settings.audit_retention_days, interval_s=0)
    if args.tenant:
        summaries = [job.run_tenant(args.tenant, actor="cli:retention", trigger="manual")]
    else:
        summaries = job.run_all(actor="cli:retention", trigger="manual")
    for s in summaries:
        print(f"{s['tenant_id']}: {s['runs_deleted']} runs, {s['steps_deleted']} steps deleted "
              f"(older than {s['retention_days']} days); {s['audit_rows_pruned']} audit rows pruned"
              + _damage_note(s))
    return 0


def _damage_note(summary: dict[str, Any]) -> str:
    """What damaged step files did to a pass, if anything (the log names the files)."""
    note = ""
    if summary["damaged_files_removed"]:
        note += f"; {summary['damaged_files_removed']} damaged step files removed"
    if summary["damaged_files_kept"]:
        note += (f"; {summary['runs_held']} expired runs held back by {summary['damaged_files_kept']} damaged step "
                 "files that may hold steps within retention (see the log)")
    return note


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # Request threads wait for the GIL while the flusher runs Python; CPython hands it over every 5 ms by
    # default, which showed up directly as p99 latency (decisions p99 35 ms → ~13 ms at 1 ms).
    sys.setswitchinterval(settings.gil_switch_interval_s)
    runtime = Runtime(settings)
    runtime.start()
    _announce_keys(runtime)
    logger.info("OTLP gRPC on %s:%d, OTLP/HTTP on :%d, API on http://%s:%d (OpenAPI at /schema)",
                settings.host, runtime.grpc_port, settings.otlp_http_port, settings.host, settings.http_port)
    try:
        asyncio.run(_serve_http(runtime))
    finally:
        runtime.stop()
    return 0


def _announce_keys(runtime: Runtime) -> None:
    if runtime.bootstrap_keys():
        logger.info("bootstrap keys from configuration are active")
        return
    s = runtime.settings
    ingest, _ = runtime.keys.create(tenant_id=s.default_tenant, project_id=s.default_project, role="ingest",
                                    name="development ingest key")
    admin, _ = runtime.keys.create(tenant_id=s.default_tenant, project_id=s.default_project, role="admin",
                                   name="development admin key")
    print(f"Development ingest key (tenant {s.default_tenant}, shown once):\n  {ingest}\n"
          f"Development admin key (read API):\n  {admin}\n"
          f"Send spans with OTEL_EXPORTER_OTLP_HEADERS='authorization=Bearer {ingest}'", flush=True)


async def _serve_http(runtime: Runtime) -> None:
    s = runtime.settings
    servers = [
        uvicorn.Server(uvicorn.Config(create_app(runtime), host=s.host, port=s.http_port, access_log=False, timeout_graceful_shutdown=5,
                                      log_level="warning", lifespan="on")),
        uvicorn.Server(uvicorn.Config(create_otlp_http_app(runtime), host=s.host, port=s.otlp_http_port,
                                      access_log=False, timeout_graceful_shutdown=5, log_level="warning", lifespan="on")),
    ]

    def stop() -> None:
        runtime.closing.set()
        for srv in servers:
            srv.should_exit = True

    # One handler for all servers: it ends the event streams (runtime.closing) and stops every server. uvicorn
    # (>= 0.29) also installs its own handlers with signal.signal() while serving; ours still runs, since asyncio
    # is woken for every signal through its wakeup fd (tests/server/test_shutdown.py).
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(srv.serve() for srv in servers), _freeze_startup_heap(servers))


_GC_THRESHOLDS = (50_000, 10, 10)
"""Young-generation allocations between collections, then young collections per middle, middle per full."""


async def _freeze_startup_heap(servers: Sequence[uvicorn.Server]) -> None:
    """Once serving, move everything built so far (modules, apps, caches: ~115k objects) out of the GC's reach.

    A full (generation 2) collection walks every tracked object; on this 2-core machine that took ~150 ms for the
    start-up heap alone, a stall every request in flight paid (it was the decisions benchmark's p99). Frozen
    objects are still freed by reference counting; only start-up cycles, which live for the whole process, are
    never collected.

    Then the young generation is collected every 50,000 net allocations instead of 700: ingest allocates
    millions of short-lived, acyclic dicts and strings that reference counting frees anyway, and at the
    default threshold the collector took ~13 % of ingest CPU (a young collection now costs ~1 ms at most)."""
    while not all(srv.started for srv in servers):
        if any(srv.should_exit for srv in servers):
            return
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


if __name__ == "__main__":
    raise SystemExit(main())
