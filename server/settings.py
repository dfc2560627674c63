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
    """TRACEWARD_OTLP_HTTP_PORT: OTLP/HTTP (POST /v1/traces, POST /v1/logs)."""
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
    flusher_process: bool = True
    """TRACEWARD_FLUSHER_PROCESS: run the flusher (WAL → Delta + SQLite, compaction, retention) in a child process
    of its own, so receiving and flushing use two cores; false runs it as a thread of the server."""
    flusher_stall_s: float = 60.0
    """TRACEWARD_FLUSHER_STALL_S: the watchdog's limit: with WAL records unflushed (or a request to the flusher
    process unanswered), a flusher that commits nothing and shows no heartbeat for this long is stalled: the
    process is killed and restarted; a thread is reported (health degraded), as it cannot be killed. Long
    operations (compaction, retention deletes, the first write) heartbeat, for at most 10 times this. 0 = off."""
    flush_interval_s: float = 0.2
    """TRACEWARD_FLUSH_INTERVAL_S: how often the flusher moves the WAL into the stores when idle."""
    price_file: Path | None = None
    """TRACEWARD_PRICE_FILE: a JSON model price table merged over the shipped one."""
    grpc_workers: int = 8
    """TRACEWARD_GRPC_WORKERS: threads serving OTLP/gRPC."""
    grpc_export_slots: int = 1
    """TRACEWARD_GRPC_EXPORT_SLOTS: OTLP/gRPC exports decoded and stored at once (default 1); the others wait
    without holding the GIL, so API requests (decisions) are not queued behind all of them."""
    ingest_nice: int = 10
    """TRACEWARD_INGEST_NICE: how much lower the OS priority of the OTLP/gRPC threads and of the flusher process is
    than the API's (Linux nice, 0-19; default 10): on a busy machine the thread answering decisions gets a CPU first."""
    ingest_max_pause_s: float = 0.01
    """TRACEWARD_INGEST_MAX_PAUSE_S: how long an ingest thread pauses at a checkpoint while a decision is in flight
    (default 10 ms; 0 = never pause). Decisions go first; a steady stream of them slows ingest, never stops it."""
    gil_switch_interval_s: float = 0.001
    """TRACEWARD_GIL_SWITCH_INTERVAL_S: CPython's thread switch interval in the server (default 1 ms, CPython's
    own is 5 ms): request threads get the interpreter back sooner while the flusher works (lower tail latency)."""
    redaction_file: Path | None = None
    """TRACEWARD_REDACTION_FILE: YAML/JSON redaction rules ({default: {...}, tenants: {T: {...}}}) over the defaults."""
    diff_profiles_file: Path | None = None
    """TRACEWARD_DIFF_PROFILES_FILE: JSON or YAML with operator-defined diff profiles ({"profiles": {...}})."""
    jwt_hs256_secret: str | None = None
    """TRACEWARD_JWT_HS256_SECRET: shared secret for HS256 bearer JWTs (at least 32 bytes); unset = HS256 off."""
    jwt_public_key_file: Path | None = None
    """TRACEWARD_JWT_PUBLIC_KEY_FILE: PEM public key (RSA → RS256, Ed25519 → EdDSA) verifying bearer JWTs."""
    jwt_jwks_url: str | None = None
    """TRACEWARD_JWT_JWKS_URL: a JWKS endpoint whose keys (by ``kid``) verify RS256/EdDSA bearer JWTs."""
    jwt_issuer: str | None = None
    """TRACEWARD_JWT_ISSUER: required ``iss`` of every JWT (must be set when any JWT key is configured)."""
    jwt_audience: str | None = None
    """TRACEWARD_JWT_AUDIENCE: required ``aud`` of every JWT (must be set when any JWT key is configured)."""
    jwt_leeway_s: float = 30.0
    """TRACEWARD_JWT_LEEWAY_S: clock skew tolerated on ``exp``/``nbf``/``iat``, in seconds."""
    jwt_tenant_claim: str = "tenant_id"
    """TRACEWARD_JWT_TENANT_CLAIM: the claim holding the caller's tenant id."""
    jwt_role_claim: str = "role"
    """TRACEWARD_JWT_ROLE_CLAIM: the claim holding the caller's role (viewer, approver or admin)."""
    rate_limit_ingest_per_min: int = 12_000
    """TRACEWARD_RATE_LIMIT_INGEST_PER_MIN: requests per minute per ingest key (HTTP and gRPC together)."""
    rate_limit_viewer_per_min: int = 1_200
    """TRACEWARD_RATE_LIMIT_VIEWER_PER_MIN: requests per minute per viewer credential."""
    rate_limit_approver_per_min: int = 1_200
    """TRACEWARD_RATE_LIMIT_APPROVER_PER_MIN: requests per minute per approver credential."""
    rate_limit_admin_per_min: int = 1_200
    """TRACEWARD_RATE_LIMIT_ADMIN_PER_MIN: requests per minute per admin credential."""
    rate_limit_anonymous_per_min: int = 300
    """TRACEWARD_RATE_LIMIT_ANONYMOUS_PER_MIN: requests per minute per client address without a valid credential."""
    rate_limit_store: str = "memory"
    """TRACEWARD_RATE_LIMIT_STORE: ``memory`` (one process) or ``sqlite`` (shared by worker processes)."""
    key_rotation_grace_s: float = 86_400.0
    """TRACEWARD_KEY_ROTATION_GRACE_S: how long a rotated key keeps working by default (24 h)."""
    retention_days: int = 30
    """TRACEWARD_RETENTION_DAYS: default run/step retention of a tenant without its own plan."""
    audit_retention_days: int = 365
    """TRACEWARD_AUDIT_RETENTION_DAYS: how long audit rows are kept, independently of run retention."""
    retention_interval_s: float = 3_600.0
    """TRACEWARD_RETENTION_INTERVAL_S: how often the retention job runs (0 = only on demand)."""
    approval_timeout_s: float = 300.0
    """TRACEWARD_APPROVAL_TIMEOUT_S: how long an approval stays pending before it expires (= deny), in seconds."""
    decision_token_ttl_s: int = 300
    """TRACEWARD_DECISION_TOKEN_TTL_S: lifetime of a DecisionToken; the tool must start executing within it."""
    decision_step_linger_s: float = 1.0
    """TRACEWARD_DECISION_STEP_LINGER_S: decision and approval steps are gathered this long before they are
    appended to their runs in one batch (their audit records are written within 20 ms regardless; a span that
    arrives first flushes them). Shorter shows them sooner, at the cost of more flush rounds competing with
    the API: at 200 decisions/s, 0.25 s gave a p99 of 9.3–10.5 ms, 1 s 6.6–7.4 ms."""
    kill_switch_external_write: bool = False
    """TRACEWARD_KILL_SWITCH_EXTERNAL_WRITE: global kill switch, denies every external write in every tenant."""
    signing_key_path: Path | None = None
    """TRACEWARD_SIGNING_KEY_PATH: PEM file of the Ed25519 DecisionToken keys (default <data dir>/signing-keys.pem,
    created with mode 0600 on first start)."""
    seal_idle_s: float = 900.0
    """TRACEWARD_SEAL_IDLE_S: a run without new steps for this long has its head sealed (signed, audited) even if
    it never reaches a final status; final runs are sealed at once."""
    seal_interval_s: float = 60.0
    """TRACEWARD_SEAL_INTERVAL_S: how often the idle-run sealing job looks for such runs (0 = never)."""
    forward_endpoint: str | None = None
    """TRACEWARD_FORWARD_ENDPOINT: downstream OTLP endpoint that receives every accepted span and log record,
    redacted (``host:port`` for grpc; for http the base URL, to which ``/v1/traces`` and ``/v1/logs`` are
    appended — a URL ending in ``/v1/traces`` is taken as the traces URL). Unset = no forwarding."""
    forward_signals: str = "traces,logs"
    """TRACEWARD_FORWARD_SIGNALS: which accepted signals are forwarded, comma-separated: ``traces``, ``logs``
    (e.g. ``traces`` alone for a Jaeger or Tempo downstream, which accept no logs)."""
    forward_protocol: str = "grpc"
    """TRACEWARD_FORWARD_PROTOCOL: ``grpc`` or ``http`` (OTLP/HTTP protobuf)."""
    forward_headers: str | None = None
    """TRACEWARD_FORWARD_HEADERS: ``key=value,key2=value2`` sent with every forwarded export (e.g. credentials)."""
    forward_queue_max_bytes: int = 256 * 1024 * 1024
    """TRACEWARD_FORWARD_QUEUE_MAX_BYTES: bound of each signal's on-disk forwarding queue (traces and logs have
    one each); when full the OLDEST queued exports are dropped (counted and logged) so that ingest never blocks
    on the downstream."""
    forward_max_backoff_s: float = 30.0
    """TRACEWARD_FORWARD_MAX_BACKOFF_S: longest wait between retries while the downstream fails."""
    forward_timeout_s: float = 10.0
    """TRACEWARD_FORWARD_TIMEOUT_S: timeout of one forwarded export."""
    backup_dir: Path | None = None
    """TRACEWARD_BACKUP_DIR: an absolute directory under which ``POST /v1/admin/backup`` writes each backup (a new
    sub-directory); unset (the default), backups over the API are refused. ``traceward admin backup --to DIR`` on a
    stopped data dir does not need it."""
    redaction: str = "on"
    """TRACEWARD_REDACTION: ``on`` (default). ``off`` exists only to measure redaction's cost in the ingest
    benchmark — never use it in production: raw secrets would reach the disk."""

    metrics_public: bool | None = None
    """TRACEWARD_METRICS_PUBLIC: serve GET /metrics without credentials (unset: only when ``host`` is a loopback
    address, as Prometheus scrapers rarely send bearer tokens); when false it needs an admin credential."""
    metrics_max_agents: int = 50
    """TRACEWARD_METRICS_MAX_AGENTS: distinct ``agent`` label values in /metrics; later agents count as ``other``."""
    events_retention_s: float = 86_400.0
    """TRACEWARD_EVENTS_RETENTION_S: how long the live stream's events stay resumable (default 24 h)."""
    events_heartbeat_s: float = 15.0
    """TRACEWARD_EVENTS_HEARTBEAT_S: idle seconds after which the event stream sends a comment line (heartbeat)."""
    findings_idle_s: float = 900.0
    """TRACEWARD_FINDINGS_IDLE_S: a running run without activity this long is scanned (``abrupt_end``); one opened
    by log records alone (no span ever arrived) ends ``succeeded`` instead, and is scanned as finished."""

    def __post_init__(self) -> None:
        for name in ("grpc_port", "otlp_http_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={port}: not a TCP port")
        for name in ("max_message_bytes", "max_http_body_bytes", "wal_max_bytes", "grpc_workers",
                     "grpc_export_slots"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be positive")
        if not 0 <= self.ingest_nice <= 19:
            raise ConfigError(f"{ENV_PREFIX}INGEST_NICE={self.ingest_nice}: must be in [0, 19]")
        if not 0 <= self.ingest_max_pause_s <= 1:
            raise ConfigError(f"{ENV_PREFIX}INGEST_MAX_PAUSE_S={self.ingest_max_pause_s}: must be in [0, 1]")
        if not 0 < self.gil_switch_interval_s <= 1:
            raise ConfigError(f"{ENV_PREFIX}GIL_SWITCH_INTERVAL_S={self.gil_switch_interval_s}: must be in (0, 1]")
        if not self.flusher_stall_s >= 0:  # NaN too
            raise ConfigError(f"{ENV_PREFIX}FLUSHER_STALL_S={self.flusher_stall_s}: must be >= 0 (0 = no watchdog)")
        if self.flush_interval_s <= 0:
            raise ConfigError(f"{ENV_PREFIX}FLUSH_INTERVAL_S={self.flush_interval_s}: must be positive")
        self._check_auth_and_limits()
        self._check_integrity_and_forwarding()

    def _check_auth_and_limits(self) -> None:
        for name in ("rate_limit_ingest_per_min", "rate_limit_viewer_per_min", "rate_limit_approver_per_min",
                     "rate_limit_admin_per_min", "rate_limit_anonymous_per_min", "retention_days",
                     "audit_retention_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be positive")
        for name in ("jwt_leeway_s", "key_rotation_grace_s", "retention_interval_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be >= 0")
        if not 0 < self.decision_step_linger_s <= 60:
            raise ConfigError(f"{ENV_PREFIX}DECISION_STEP_LINGER_S={self.decision_step_linger_s}: must be in (0, 60]")
        if self.approval_timeout_s <= 0 or not 0 < self.decision_token_ttl_s <= 86_400:
            raise ConfigError(f"{ENV_PREFIX}APPROVAL_TIMEOUT_S={self.approval_timeout_s} / {ENV_PREFIX}"
                              f"DECISION_TOKEN_TTL_S={self.decision_token_ttl_s}: must be positive (TTL ≤ 86400)")
        for name in ("metrics_max_agents", "events_retention_s", "events_heartbeat_s", "findings_idle_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be positive")
        if self.rate_limit_store not in ("memory", "sqlite"):
            raise ConfigError(f"{ENV_PREFIX}RATE_LIMIT_STORE={self.rate_limit_store!r}: memory or sqlite")
        if self.jwt_hs256_secret is not None and len(self.jwt_hs256_secret.encode()) < 32:
            raise ConfigError(f"{ENV_PREFIX}JWT_HS256_SECRET: at least 32 bytes")
        if self.jwt_enabled and not (self.jwt_issuer and self.jwt_audience):
            raise ConfigError(f"{ENV_PREFIX}JWT_ISSUER and {ENV_PREFIX}JWT_AUDIENCE are required with JWT keys")

    def _check_integrity_and_forwarding(self) -> None:
        for name in ("seal_idle_s", "seal_interval_s", "forward_max_backoff_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)}: must be >= 0")
        if self.forward_queue_max_bytes <= 0 or self.forward_timeout_s <= 0:
            raise ConfigError(f"{ENV_PREFIX}FORWARD_QUEUE_MAX_BYTES / {ENV_PREFIX}FORWARD_TIMEOUT_S: must be positive")
        if self.forward_protocol not in ("grpc", "http"):
            raise ConfigError(f"{ENV_PREFIX}FORWARD_PROTOCOL={self.forward_protocol!r}: grpc or http")
        signals = self.forward_signal_names
        if not signals or set(signals) - {"traces", "logs"}:
            raise ConfigError(f"{ENV_PREFIX}FORWARD_SIGNALS={self.forward_signals!r}: traces and/or logs, "
                              "comma-separated")
        if self.backup_dir is not None and not self.backup_dir.is_absolute():
            raise ConfigError(f"{ENV_PREFIX}BACKUP_DIR={self.backup_dir}: must be an absolute path")
        if self.redaction not in ("on", "off"):
            raise ConfigError(f"{ENV_PREFIX}REDACTION={self.redaction!r}: on or off")

    @property
    def jwt_enabled(self) -> bool:
        """Whether any JWT verification key is configured."""
        return bool(self.jwt_hs256_secret or self.jwt_public_key_file or self.jwt_jwks_url)

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
    def metrics_are_public(self) -> bool:
        """Whether GET /metrics is public (TRACEWARD_METRICS_PUBLIC, else: the server binds loopback only)."""
        if self.metrics_public is not None:
            return self.metrics_public
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

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

    @property
    def signing_key_file(self) -> Path:
        """PEM file of the DecisionToken signing keys."""
        return self.signing_key_path or self.data_dir / "signing-keys.pem"

    @property
    def forward_signal_names(self) -> tuple[str, ...]:
        """TRACEWARD_FORWARD_SIGNALS as a tuple, in the order given, without repeats."""
        return tuple(dict.fromkeys(name.strip() for name in self.forward_signals.split(",") if name.strip()))

    def forward_queue_dir(self, signal: str) -> Path:
        """A signal's on-disk forwarding queue (one file per queued export); traces keep the directory they had
        before logs were forwarded, so exports queued then are sent after an upgrade."""
        return self.data_dir / ("forward-queue" if signal == "traces" else f"forward-queue-{signal}")

    @property
    def ratelimit_path(self) -> Path:
        """SQLite file of the shared rate-limit counters (rate_limit_store=sqlite)."""
        return self.data_dir / "ratelimit.sqlite3"


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
