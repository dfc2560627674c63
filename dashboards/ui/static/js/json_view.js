// A collapsible JSON tree built from <details>/<summary> (keyboard accessible without extra code).
// Children render lazily on first open, so a large payload costs nothing until someone looks at it.
// Redaction markers [REDACTED:<rule>:<fingerprint>] are shown as badges, never as plain text.

import { h } from "./dom.js";

const MARKER = /\[REDACTED:([A-Za-z0-9_.-]{1,64}):([0-9a-f]{16})\]/g;
const OPEN_DEPTH = 2;

export function hasRedaction(text) {
  MARKER.lastIndex = 0;
  return MARKER.test(text);
}

/** Text with its redaction markers as badges (rule and fingerprint in the tooltip). */
export function renderText(text) {
  const parts = [];
  let last = 0;
  MARKER.lastIndex = 0;
  for (const match of text.matchAll(MARKER)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    parts.push(h("span", {
      class: "redacted", title: `redacted by rule ${match[1]}; fingerprint ${match[2]} (equal secrets share it)`,
    }, match[0]));
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function scalar(value) {
  if (value === null) return h("span", { class: "lit" }, "null");
  if (typeof value === "string") return h("span", { class: "str" }, "\"", renderText(value), "\"");
  if (typeof value === "number") return h("span", { class: "num" }, String(value));
  if (typeof value === "boolean") return h("span", { class: "lit" }, String(value));
  return h("span", {}, String(value));
}

function isContainer(value) {
  return value !== null && typeof value === "object";
}

function preview(value) {
  if (Array.isArray(value)) return `[ ${value.length} item${value.length === 1 ? "" : "s"} ]`;
  const n = Object.keys(value).length;
  return `{ ${n} key${n === 1 ? "" : "s"} }`;
}

function node(key, value, depth) {
  const label = key === null ? [] : [h("span", { class: "key" }, key), ": "];
  if (!isContainer(value)) return h("div", { class: "leaf" }, label, scalar(value));
  const details = h("details", {}, h("summary", {}, label, preview(value)));
  const fill = () => {
    if (details.dataset.filled) return;
    details.dataset.filled = "1";
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    for (const [k, v] of entries) details.append(node(k, v, depth + 1));
  };
  if (depth < OPEN_DEPTH) {
    details.open = true;
    fill();
  } else {
    details.addEventListener("toggle", fill, { once: true });
  }
  return details;
}

/** The tree of ``value`` inside a .json box. */
export function jsonView(value) {
  return h("div", { class: "json" }, node(null, value, 0));
}
