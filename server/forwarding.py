"""Builds the span forwarder (``otlp_receiver.forward``) from Settings; nothing when no endpoint is set.

The forwarder hangs off the ingest pipeline's ``on_accepted`` hook, so it receives spans after redaction
and after the WAL append: a downstream only ever sees what Traceward itself stores.
"""

from __future__ import annotations

import logging
import urllib.parse

from otlp_receiver.errors import ConfigError
from otlp_receiver.forward import DiskQueue, Forwarder, GrpcTransport, HttpTransport, Transport
from server.settings import Settings

logger = logging.getLogger(__name__)


def parse_headers(text: str | None) -> dict[str, str]:
    """``key=value,key2=value2`` (the OTEL_EXPORTER_OTLP_HEADERS format, values URL-decoded) → a dict."""
    headers: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("TRACEWARD_FORWARD_HEADERS: expected key=value pairs separated by commas")
        headers[key.strip().lower()] = urllib.parse.unquote(value.strip())
    return headers


def forwarder_from_settings(settings: Settings) -> Forwarder | None:
    """The configured forwarder (not started), or None when TRACEWARD_FORWARD_ENDPOINT is unset."""
    if not settings.forward_endpoint:
        return None
    headers = parse_headers(settings.forward_headers)
    transport: Transport
    if settings.forward_protocol == "grpc":
        transport = GrpcTransport(settings.forward_endpoint, headers=headers, timeout_s=settings.forward_timeout_s)
    else:
        transport = HttpTransport(settings.forward_endpoint, headers=headers, timeout_s=settings.forward_timeout_s)
    queue = DiskQueue(settings.forward_queue_dir, max_bytes=settings.forward_queue_max_bytes)
    logger.info("forwarding accepted spans (redacted) to %s over %s; %d exports queued from before",
                settings.forward_endpoint, settings.forward_protocol, queue.depth)
    return Forwarder(queue, transport, max_backoff_s=settings.forward_max_backoff_s)
