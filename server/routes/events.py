"""``GET /v1/streams/events``: Server-Sent Events of the caller's tenant, resumable (permission ``read``).

Each event is ``id: <event id>``, ``event: <type>``, ``data: <JSON>`` with the types of
``otlp_receiver/store/events.py`` (run.started | run.updated | run.finished | step.appended |
approval.created | approval.decided | finding.raised | feedback.added). Where to start:

- ``Last-Event-ID: N`` (what a browser's EventSource sends when it reconnects): events after N;
- ``?from_seq=N``: events from N on (inclusive; ``from_seq=0`` replays everything still retained);
- neither: only events written from now on.

Event ids increase and commit in order, so resuming after the last id seen misses nothing and
repeats nothing. When the resume point is older than what pruning kept (TRACEWARD_EVENTS_RETENTION_S),
the stream first sends a ``stream.gap`` event (without an id) so the client knows to re-read state.
A comment line (``: heartbeat``) goes out after TRACEWARD_EVENTS_HEARTBEAT_S without events, so
proxies keep idle streams open. New events are found by polling the indexed table every
``POLL_S`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

import orjson
from litestar import Request, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from otlp_receiver.errors import InvalidInputError
from otlp_receiver.store.events import Event, last_event_id, pruned_through, read_events
from server.auth import current_principal
from server.runtime import Runtime
from server.schemas import rfc3339

POLL_S: Final = 0.25
BATCH: Final = 500


@get("/v1/streams/events", summary="Live events of the caller's tenant (Server-Sent Events, resumable)",
     opt={"permission": "read"}, tags=["streams"])
async def stream_events(
    request: Request[Any, Any, Any], runtime: Runtime,
    from_seq: Annotated[int | None, Parameter(ge=0, description="first event id to send (inclusive)")] = None,
    last_event_id_header: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
) -> ServerSentEvent:
    """A text/event-stream of run, step, approval, finding and feedback events."""
    tenant = current_principal(request).tenant_id
    if last_event_id_header is not None and last_event_id_header.strip():
        if not last_event_id_header.strip().isdigit():
            raise InvalidInputError("Last-Event-ID must be an event id", details={"Last-Event-ID": "not an id"})
        after = int(last_event_id_header)
    elif from_seq is not None:
        after = from_seq - 1
    else:
        after = await asyncio.to_thread(last_event_id, runtime.index, tenant)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return ServerSentEvent(_events(runtime, tenant, after), headers=headers)


async def _events(runtime: Runtime, tenant: str, after: int) -> AsyncIterator[ServerSentEventMessage]:
    heartbeat_s = runtime.settings.events_heartbeat_s
    gauge = runtime.metrics.stream_clients
    gauge.inc()
    try:
        pruned = await asyncio.to_thread(pruned_through, runtime.index, tenant)
        if pruned and after < pruned:
            yield ServerSentEventMessage(event="stream.gap", data=orjson.dumps(
                {"resumed_after": after, "pruned_through": pruned}).decode())
        yield ServerSentEventMessage(comment="connected", data=None)
        last_sent = time.monotonic()
        while not runtime.closing.is_set():
            events = await asyncio.to_thread(read_events, runtime.index, tenant, after_id=after, limit=BATCH)
            for event in events:
                yield _message(event)
                after = event.id
            if events:
                last_sent = time.monotonic()
                if len(events) == BATCH:
                    continue
            elif time.monotonic() - last_sent >= heartbeat_s:
                yield ServerSentEventMessage(comment="heartbeat", data=None)
                last_sent = time.monotonic()
            await asyncio.sleep(POLL_S)
    finally:
        gauge.dec()


def _message(event: Event) -> ServerSentEventMessage:
    data = {"id": event.id, "type": event.type, "ts": rfc3339(event.ts_ns), "run_id": event.run_id, **event.data}
    return ServerSentEventMessage(id=event.id, event=event.type, data=orjson.dumps(data).decode())
