// Analytics: totals for a time range, run latency percentiles, tokens and cost over time, and an
// error breakdown, from /v1/analytics/summary and /v1/analytics/timeseries. Plain SVG charts.

import { api } from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { clear, failure, fmtCompact, fmtCost, fmtDuration, h, markRendered } from "../dom.js";
import { startPage } from "../session.js";

const RANGES = { "1h": [3600e3, "1m"], "24h": [86400e3, "15m"], "7d": [7 * 86400e3, "6h"], "30d": [30 * 86400e3, "1d"] };
const form = document.getElementById("analytics-filters");

/** The rows of an analytics answer, whatever the envelope key (rows, series, groups, …). */
function rowsOf(body) {
  if (Array.isArray(body)) return body;
  for (const key of ["rows", "series", "buckets", "groups", "data", "items", "points", "timeseries"]) {
    if (body && Array.isArray(body[key])) return body[key];
  }
  if (body && body.summary && typeof body.summary === "object") return rowsOf(body.summary);
  return body ? [body] : [];
}

function query() {
  const data = new FormData(form);
  const [spanMs, bucket] = RANGES[data.get("range")] || RANGES["24h"];
  return {
    bucket,
    filters: {
      started_after: new Date(Date.now() - spanMs).toISOString(),
      agent: data.get("agent").trim(), service: data.get("service").trim(),
    },
  };
}

function bucketMs(row) {
  const ns = row.bucket_start_ns ?? row.bucket_ns ?? null;
  if (ns !== null) return ns / 1e6;
  const iso = row.bucket_start || row.bucket || row.ts || row.time;
  return iso ? new Date(iso).getTime() : NaN;
}

function series(rows, fields) {
  return fields.map(([key, name]) => ({ name, points: rows.map((r) => [bucketMs(r), r[key] ?? null]) }));
}

function total(label, value) {
  return h("div", {}, h("span", { class: "k" }, label), h("span", { class: "v" }, value));
}

async function loadTotals(filters) {
  const box = document.getElementById("totals");
  try {
    const s = rowsOf(await api("/v1/analytics/summary", { params: filters }))[0] || {};
    const rate = s.error_rate === null || s.error_rate === undefined ? "—" : `${(s.error_rate * 100).toFixed(1)}%`;
    clear(box, h("div", { class: "facts totals" },
      total("Runs", fmtCompact(s.runs)), total("Error rate", rate),
      total("p50 / p90 / p99", `${fmtDuration(s.run_p50_ms)} / ${fmtDuration(s.run_p90_ms)} / ${fmtDuration(s.run_p99_ms)}`),
      total("Tokens in / out", `${fmtCompact(s.tokens_in)} / ${fmtCompact(s.tokens_out)}`),
      total("Cache read / reasoning", `${fmtCompact(s.tokens_cache_read)} / ${fmtCompact(s.tokens_reasoning)}`),
      total("Cost", fmtCost(s.cost_usd)), total("Tool calls / errors", `${fmtCompact(s.tool_calls)} / ${fmtCompact(s.tool_errors)}`),
      total("Policy violations", fmtCompact(s.policy_violations)), total("Redactions", fmtCompact(s.redactions))));
  } catch (err) {
    clear(box, failure(err, "Analytics (GET /v1/analytics/summary)"));
  }
}

async function loadSeries(filters, bucket) {
  const boxes = ["chart-latency", "chart-tokens", "chart-cost"].map((id) => document.getElementById(id));
  try {
    const rows = rowsOf(await api("/v1/analytics/timeseries", { params: { ...filters, bucket } }))
      .filter((r) => !Number.isNaN(bucketMs(r))).sort((a, b) => bucketMs(a) - bucketMs(b));
    const width = boxes[0].clientWidth;
    clear(boxes[0], lineChart({ width, label: "Run latency percentiles", format: (v) => (v ? fmtDuration(v) : "0"),
      series: series(rows, [["run_p50_ms", "p50"], ["run_p90_ms", "p90"], ["run_p99_ms", "p99"]]) }));
    clear(boxes[1], lineChart({ width, label: "Tokens per bucket", format: fmtCompact,
      series: series(rows, [["tokens_in", "input"], ["tokens_out", "output"], ["tokens_cache_read", "cache read"],
        ["tokens_reasoning", "reasoning"]]) }));
    clear(boxes[2], lineChart({ width, label: "Cost per bucket (USD)", format: (v) => fmtCost(v),
      series: series(rows, [["cost_usd", "cost (USD)"]]) }));
  } catch (err) {
    for (const box of boxes) clear(box, failure(err, "Analytics time series (GET /v1/analytics/timeseries)"));
  }
}

async function loadErrors(filters) {
  const box = document.getElementById("chart-errors");
  try {
    const [byStatus, byTool] = await Promise.all([
      api("/v1/analytics/summary", { params: { ...filters, group_by: "status" } }),
      api("/v1/analytics/summary", { params: { ...filters, group_by: "tool" } }),
    ]);
    const statusBars = rowsOf(byStatus).filter((r) => (r.status === "failed" || r.status === "canceled") && r.runs)
      .map((r) => ({ label: `runs ${r.status}`, value: r.runs, color: r.status === "failed" ? "#f85149" : "#d29922" }));
    const toolBars = rowsOf(byTool).filter((r) => r.tool && r.tool_errors)
      .sort((a, b) => b.tool_errors - a.tool_errors).slice(0, 8)
      .map((r) => ({ label: `tool ${r.tool}`, value: r.tool_errors, color: "#f5a524" }));
    const total = rowsOf(byStatus).reduce((acc, r) => acc + (r.policy_violations || 0), 0);
    const bars = [...statusBars, ...toolBars, ...(total ? [{ label: "policy violations", value: total, color: "#f472b6" }] : [])];
    clear(box, barChart({ bars, format: fmtCompact, label: "Errors by kind", width: box.clientWidth }));
  } catch (err) {
    clear(box, failure(err, "Analytics breakdown (GET /v1/analytics/summary?group_by=…)"));
  }
}

async function load() {
  const { filters, bucket } = query();
  await Promise.all([loadTotals(filters), loadSeries(filters, bucket), loadErrors(filters)]);
  markRendered("analyticsRendered");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

await startPage();
await load();
