"""``traceward`` command line: serve, admin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from otlp_receiver.errors import AppError
from server.app import create_app, create_otlp_http_app
from server.runtime import Runtime
from server.settings import Settings

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
    serve.set_defaults(func=_serve)
    admin = sub.add_parser("admin", help="administrative tasks")
    admin_sub = admin.add_subparsers(required=True)
    key = admin_sub.add_parser("create-key", help="create an API key (printed once)")
    _settings_flags(key)
    key.add_argument("--role", required=True, choices=("ingest", "viewer", "approver", "admin"))
    key.add_argument("--tenant", default=None, help="tenant id (default: TRACEWARD_DEFAULT_TENANT)")
    key.add_argument("--project", default=None, help="project id (default: TRACEWARD_DEFAULT_PROJECT)")
    key.add_argument("--name", default="")
    key.set_defaults(func=_create_key)
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
                             bootstrap_admin_key=args.bootstrap_admin_key)


def _create_key(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = Runtime(settings)
    key, record = runtime.keys.create(tenant_id=args.tenant or settings.default_tenant,
                                      project_id=args.project or settings.default_project, role=args.role,
                                      name=args.name)
    print(f"{record.role} key for tenant {record.tenant_id} / project {record.project_id} (shown once):")
    print(key)
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
        uvicorn.Server(uvicorn.Config(create_app(runtime), host=s.host, port=s.http_port, access_log=False,
                                      log_level="warning", lifespan="on")),
        uvicorn.Server(uvicorn.Config(create_otlp_http_app(runtime), host=s.host, port=s.otlp_http_port,
                                      access_log=False, log_level="warning", lifespan="on")),
    ]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: [setattr(srv, "should_exit", True) for srv in servers])
    for srv in servers:
        srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # we handle signals once, above
    await asyncio.gather(*(srv.serve() for srv in servers))


if __name__ == "__main__":
    raise SystemExit(main())
