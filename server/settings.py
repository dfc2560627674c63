"""Settings: the one place that reads the environment.

Precedence: explicit argument (CLI flag) > ``TRACEWARD_*`` environment variable > default.
Bad values raise ConfigError naming the variable and the value, at start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otlp_receiver.errors import ConfigError

ENV_PREFIX = "TRACEWARD_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Traceward's configuration."""

    data_dir: Path = Path("traceward-data")
    """TRACEWARD_DATA_DIR: where the WAL, the SQLite index and the Delta table live."""
    host: str = "127.0.0.1"
    """TRACEWARD_HOST: the address all three listeners bind (0.0.0.0 to expose them)."""
    grpc_port: int = 4317
    """TRACEWARD_GRPC_PORT: OTLP/gRPC."""
    otlp_http_port: int = 4318
    """TRACEWARD_OTLP_HTTP_PORT: OTLP/HTTP (POST /v1/traces)."""
    http_port: int = 8000
    """TRACEWARD_HTTP_PORT: the REST API, OpenAPI (/schema) and the UI."""
    bootstrap_ingest_key: str | None = None
    """TRACEWARD_BOOTSTRAP_INGEST_KEY: an ingest key (tw_<8 hex>_<secret>) to create at start, for automation."""
    bootstrap_admin_key: str | None = None
    """TRACEWARD_BOOTSTRAP_ADMIN_KEY: an admin API key to create at start, for automation."""
    default_tenant: str = "default"
    """TRACEWARD_DEFAULT_TENANT: the tenant bootstrap keys belong to."""
    default_project: str = "default"
    """TRACEWARD_DEFAULT_PROJECT: the project bootstrap ingest keys belong to."""
    max_message_bytes: int = 4 * 1024 * 1024
    """TRACEWARD_MAX_MESSAGE_BYTES: largest OTLP/gRPC message accepted (default 4 MiB)."""
    max_http_body_bytes: int = 20 * 1024 * 1024
    """TRACEWARD_MAX_HTTP_BODY_BYTES: largest OTLP/HTTP body after decompression (default 20 MiB)."""
    wal_fsync: bool = True
    """TRACEWARD_WAL_FSYNC: fsync every WAL append before acknowledging (durable across power loss)."""
    wal_max_bytes: int = 1024 * 1024 * 1024
    """TRACEWARD_WAL_MAX_BYTES: unflushed WAL bytes above which ingest answers 'overloaded, retry later'."""
    flush_interval_s: float = 0.2
    """TRACEWARD_FLUSH_INTERVAL_S: how often the flusher moves the WAL into the stores when idle."""
    price_file: Path | None = None
    """TRACEWARD_PRICE_FILE: a JSON model price table merged over the shipped one."""
    grpc_workers: int = 8
    """TRACEWARD_GRPC_WORKERS: threads serving OTLP/gRPC."""

    def __post_init__(self) -> None:
        for name in ("grpc_port", "otlp_http_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={port}: not a TCP port")
        for name in ("max_message_bytes", "max_http_body_bytes", "wal_max_bytes", "grpc_workers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be positive")
        if self.flush_interval_s <= 0:
            raise ConfigError(f"{ENV_PREFIX}FLUSH_INTERVAL_S={self.flush_interval_s}: must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``TRACEWARD_*`` variables, then explicit overrides (None = not given)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def wal_dir(self) -> Path:
        """Write-ahead log directory."""
        return self.data_dir / "wal"

    @property
    def index_path(self) -> Path:
        """SQLite file."""
        return self.data_dir / "traceward.sqlite3"

    @property
    def steps_path(self) -> Path:
        """Delta table directory."""
        return self.data_dir / "steps"


def _parse(name: str, type_name: object, raw: str) -> Any:
    kind = str(type_name)
    var = ENV_PREFIX + name.upper()
    try:
        if "bool" in kind:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("expected true or false")
            return raw.lower() in ("1", "true", "yes")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if "Path" in kind:
            return Path(raw)
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r}: {exc}") from exc
    return raw
