// DOM building and formatting helpers shared by the pages. Text always goes in as text nodes
// (never innerHTML), so data from the API can't inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  el.removeAttribute("aria-busy");
  return el;
}

export function shortId(id) {
  return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "—";
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const whole = Math.round(s);
  const m = Math.floor(whole / 60);
  if (m < 60) return `${m}m ${whole % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "—";
  if (usd === 0) return "$0";
  if (Math.abs(usd) < 0.01) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString("en-US");
}

export function fmtCompact(n) {
  if (n === null || n === undefined) return "—";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return fmtInt(Math.round(n));
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 0) return `in ${fmtDuration(-s * 1000)}`;
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function timeCell(iso) {
  return h("time", { datetime: iso || "", title: fmtTime(iso) }, fmtAgo(iso));
}

export function statusBadge(status) {
  return h("span", { class: `badge st-${status}` }, status || "—");
}

export function typeChip(type) {
  return h("span", { class: `type-chip t-${type}` }, type);
}

export const STEP_TYPES = ["prompt", "model", "tool", "policy", "approval", "error", "artifact", "span"];

/** The box shown where a route of the API doesn't exist on this server (yet). */
export function unavailable(what) {
  return h("p", { class: "unavailable", dataset: { unavailable: "true" } },
    `${what} is not available on this server.`);
}

export function errorBox(err) {
  const text = err && err.message ? err.message : String(err);
  return h("p", { class: "error", role: "alert" }, text);
}

/** A fetched failure: "not available" when the route is missing, else the error message. */
export function failure(err, what) {
  return err && err.unavailable ? unavailable(what) : errorBox(err);
}

export function toast(message) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** An RFC 3339 string for a datetime-local input value (which is in local time). */
export function localInputToIso(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

export function isoToLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Record a page timing for the performance tests (and anyone curious): window.__traceward. */
export function markRendered(name) {
  const at = performance.now();
  window.__traceward = window.__traceward || {};
  if (window.__traceward[name] === undefined) window.__traceward[name] = at;
  performance.mark(`traceward:${name}`);
  document.body.dataset[name] = "true";
}
