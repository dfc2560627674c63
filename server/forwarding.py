"""Builds the forwarders (``otlp_receiver.forward``) from Settings: one per forwarded signal, none without an endpoint.

The traces forwarder hangs off the ingest pipeline's ``on_accepted`` hook and the logs forwarder off
``on_accepted_logs``, so both receive what was accepted after redaction and after the WAL append: a downstream
only ever sees what Traceward itself stores.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from otlp_receiver.errors import ConfigError
from otlp_receiver.forward import Forwarder
from otlp_receiver.forward_queue import DiskQueue
from otlp_receiver.forward_transport import SIGNALS, GrpcTransport, HttpTransport, Signal, Transport
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


def forwarders_from_settings(settings: Settings) -> dict[str, Forwarder[Any]]:
    """The configured forwarders (not started) by signal name; empty when TRACEWARD_FORWARD_ENDPOINT is unset."""
    if not settings.forward_endpoint:
        return {}
    headers = parse_headers(settings.forward_headers)
    endpoint = settings.forward_endpoint
    return {name: _forwarder(settings, endpoint, SIGNALS[name], headers) for name in settings.forward_signal_names}


def _forwarder(settings: Settings, endpoint: str, signal: Signal[Any], headers: dict[str, str]) -> Forwarder[Any]:
    transport: Transport
    kind = GrpcTransport if settings.forward_protocol == "grpc" else HttpTransport
    transport = kind(endpoint, signal=signal, headers=headers, timeout_s=settings.forward_timeout_s)
    queue = DiskQueue(settings.forward_queue_dir(signal.name), max_bytes=settings.forward_queue_max_bytes)
    logger.info("forwarding accepted %s (redacted) to %s over %s; %d exports queued from before", signal.unit,
                endpoint, settings.forward_protocol, queue.depth)
    return Forwarder(queue, transport, signal=signal, max_backoff_s=settings.forward_max_backoff_s)


class ForwardCollector(Collector):
    """Scrape-time forwarding figures by ``signal`` (traces | logs), read from the forwarders' own counters."""

    def __init__(self, forwarders: Mapping[str, Forwarder[Any]]) -> None:
        self.forwarders = forwarders

    def collect(self) -> Iterable[Any]:
        """Called by prometheus_client on every scrape."""
        depth = GaugeMetricFamily("traceward_forward_queue_exports", "Exports waiting to be forwarded",
                                  labels=["signal"])
        size = GaugeMetricFamily("traceward_forward_queue_bytes", "Bytes of the exports waiting to be forwarded",
                                 labels=["signal"])
        exports = CounterMetricFamily("traceward_forward_exports", "Forwarded exports by outcome: sent | dropped "
                                      "(queue full, oldest first) | refused (by the downstream) | failed (could not "
                                      "be queued)", labels=["signal", "outcome"])
        items = CounterMetricFamily("traceward_forward_items", "Spans (traces) or log records (logs) sent "
                                    "downstream or dropped from a full queue", labels=["signal", "outcome"])
        for name, fwd in self.forwarders.items():
            depth.add_metric([name], fwd.queue.depth)
            size.add_metric([name], fwd.queue.size_bytes)
            for outcome, count in (("sent", fwd.sent_requests), ("dropped", fwd.queue.dropped_requests),
                                   ("refused", fwd.rejected_requests), ("failed", fwd.enqueue_failures)):
                exports.add_metric([name, outcome], count)
            items.add_metric([name, "sent"], fwd.sent_items)
            items.add_metric([name, "dropped"], fwd.queue.dropped_items)
        return (depth, size, exports, items)
