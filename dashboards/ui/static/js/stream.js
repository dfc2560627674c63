// Live updates from GET /v1/streams/events (Server-Sent Events, resumed with Last-Event-ID), read
// with fetch because EventSource can't send the bearer header. Where the server has no stream,
// callers fall back to polling.

import { ApiError, openStream } from "./api.js";

function parseBlock(block) {
  const event = { type: "message", data: "", id: null };
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
  }
  event.data = data.join("\n");
  try {
    event.json = JSON.parse(event.data);
  } catch {
    event.json = null;
  }
  return event;
}

/**
 * Follow the event stream; ``onEvent(event)`` per event, ``onState("live"|"reconnecting"|"unavailable")``.
 * Resolves when the stream is unavailable on this server (then poll instead); otherwise runs until aborted.
 */
export async function follow({ onEvent, onState, signal }) {
  let lastId = null;
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      const resp = await openStream("/v1/streams/events", { lastEventId: lastId, signal });
      if (!resp.ok) {
        const err = new ApiError(resp.status, await resp.json().catch(() => null));
        if (err.unavailable || resp.status === 403) {
          onState("unavailable");
          return;
        }
        throw err;
      }
      onState("live");
      backoff = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const blocks = buffer.split(/\r?\n\r?\n/);
        buffer = blocks.pop();
        for (const block of blocks) {
          const event = parseBlock(block);
          if (event.id) lastId = event.id;
          if (event.data || event.type !== "message") onEvent(event);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 15000);
  }
}
