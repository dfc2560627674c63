// Plain SVG charts: time series as lines, breakdowns as horizontal bars. No library.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const H = 240;
const PAD = { left: 56, right: 12, top: 10, bottom: 26 };
export const PALETTE = ["#60a5fa", "#f5a524", "#f472b6", "#2dd4bf", "#a78bfa", "#f85149", "#a3b3c6"];

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const child of children) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * exp).find((m) => m >= value);
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  const iso = d.toISOString();
  return spanMs > 2 * 86400e3 ? iso.slice(5, 10) : iso.slice(11, 16);
}

/**
 * Lines over time. ``series``: [{name, points: [[epochMs, value|null], …]}]; nulls break the line.
 * Returns a figure with the SVG and a legend; ``label`` names it for screen readers.
 */
export function lineChart({ series, format, label, width = 640 }) {
  const W = Math.max(320, Math.round(width));
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
  if (!xs.length || !ys.length) return h("p", { class: "muted" }, "No data in this range.");
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const yMax = niceMax(Math.max(...ys));
  const sx = (x) => PAD.left + ((x - x0) / Math.max(x1 - x0, 1)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - (y / yMax) * (H - PAD.top - PAD.bottom);
  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  for (let i = 0; i <= 4; i += 1) {
    const y = (yMax * i) / 4;
    grid.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y) }));
    axis.append(svg("text", { x: PAD.left - 6, y: sy(y) + 3, "text-anchor": "end" }, format(y)));
  }
  for (let i = 0; i <= 4; i += 1) {
    const x = x0 + ((x1 - x0) * i) / 4;
    axis.append(svg("text", { x: sx(x), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
      timeLabel(x, x1 - x0)));
  }
  const lines = series.map((s, i) => {
    let d = "";
    let pen = "M";
    for (const [x, y] of s.points) {
      if (y === null || y === undefined) { pen = "M"; continue; }
      d += `${pen}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      pen = "L";
    }
    return svg("path", { d, class: "series", stroke: s.color || PALETTE[i % PALETTE.length] },
      svg("title", {}, s.name));
  });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label }, grid, axis, ...lines);
  const legend = h("ul", { class: "chart-legend" }, series.map((s, i) => {
    const swatch = h("i");
    swatch.style.background = s.color || PALETTE[i % PALETTE.length];
    return h("li", {}, swatch, s.name);
  }));
  return h("figure", { class: "chart-figure" }, chart, legend);
}

/** Horizontal bars: [{label, value, color?}]. */
export function barChart({ bars, format, label, width = 640 }) {
  const W = Math.max(320, Math.round(width));
  if (!bars.length) return h("p", { class: "muted" }, "Nothing to show in this range.");
  const rowH = 24;
  const height = bars.length * rowH + 8;
  const max = niceMax(Math.max(...bars.map((b) => b.value), 0));
  const labelW = 150;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label, class: "bars" });
  bars.forEach((b, i) => {
    const y = 4 + i * rowH;
    const w = ((W - labelW - 70) * b.value) / max;
    chart.append(
      svg("text", { x: labelW - 8, y: y + 15, "text-anchor": "end", class: "axis", fill: "#8b98a9", "font-size": 11 },
        b.label.length > 22 ? `${b.label.slice(0, 21)}…` : b.label),
      svg("rect", { x: labelW, y: y + 3, width: Math.max(w, 1), height: rowH - 8, rx: 2, fill: b.color || PALETTE[i % PALETTE.length] },
        svg("title", {}, `${b.label}: ${format(b.value)}`)),
      svg("text", { x: labelW + Math.max(w, 1) + 6, y: y + 15, fill: "#e6edf3", "font-size": 11 }, format(b.value)));
  });
  return chart;
}
