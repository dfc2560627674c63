// Runs list: the filters of GET /v1/runs (kept in the page URL, so a filtered list can be shared),
// cursor paging, and "select two runs → diff".

import { api } from "../api.js";
import {
  clear, failure, fmtCost, fmtCompact, fmtDuration, fmtInt, h, isoToLocalInput, localInputToIso, markRendered,
  shortId, statusBadge, timeCell,
} from "../dom.js";
import { startPage } from "../session.js";

const FILTERS = ["status", "agent", "service", "model", "tool", "tag", "started_after", "started_before",
  "has_error", "min_cost_usd", "limit"];
const TIME_FILTERS = new Set(["started_after", "started_before"]);
const form = document.getElementById("filters");
const table = document.getElementById("runs-table");
const selected = new Map(); // run_id → run
let cursors = [null]; // cursors[i] = cursor of page i
let page = 0;

function filtersFromUrl() {
  const q = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const field = form.elements.namedItem(name);
    if (!field || !q.has(name)) continue;
    field.value = TIME_FILTERS.has(name) ? isoToLocalInput(q.get(name)) : q.get(name);
  }
}

function currentFilters() {
  const out = {};
  for (const name of FILTERS) {
    const field = form.elements.namedItem(name);
    const value = field ? field.value.trim() : "";
    if (value) out[name] = TIME_FILTERS.has(name) ? localInputToIso(value) : value;
  }
  return out;
}

function tokenCell(run) {
  const t = run.tokens || {};
  const total = (t.input || 0) + (t.output || 0);
  return h("td", { class: "num", title: `in ${fmtInt(t.input)} · out ${fmtInt(t.output)}` }, total ? fmtCompact(total) : "—");
}

function selectBox(run) {
  const box = h("input", {
    type: "checkbox", "aria-label": `Select run ${run.run_id} for diff`, checked: selected.has(run.run_id),
    disabled: !selected.has(run.run_id) && selected.size >= 2,
  });
  box.addEventListener("change", () => {
    if (box.checked) selected.set(run.run_id, run);
    else selected.delete(run.run_id);
    updateSelection();
  });
  return box;
}

function row(run) {
  const errors = run.error_count ? h("span", { class: "marker m-error", title: `${run.error_count} error step(s)` },
    `${run.error_count}!`) : null;
  return h("tr", { dataset: { runId: run.run_id }, class: selected.has(run.run_id) ? "selected" : "" },
    h("td", {}, selectBox(run)),
    h("td", {}, h("a", { href: `/ui/runs/${run.run_id}`, class: "mono", title: run.run_id }, shortId(run.run_id)),
      run.name && run.name !== run.agent ? h("div", { class: "muted small" }, run.name) : null),
    h("td", {}, run.agent || "—"), h("td", { class: "col-opt" }, run.service || "—"),
    h("td", {}, statusBadge(run.status), errors),
    h("td", {}, timeCell(run.started_at)),
    h("td", { class: "num" }, fmtDuration(run.duration_ms)),
    h("td", { class: "num col-opt" }, fmtInt(run.step_count)),
    tokenCell(run),
    h("td", { class: "num" }, fmtCost(run.cost_usd)));
}

function renderTable(runs) {
  if (!runs.length) return clear(table, h("p", { class: "muted" }, "No runs match these filters."));
  const head = ["", "Run", "Agent", "Service", "Status", "Started", "Duration", "Steps", "Tokens", "Cost"];
  const numeric = new Set(["Duration", "Steps", "Tokens", "Cost"]);
  const optional = new Set(["Service", "Steps"]);
  clear(table, h("table", { id: "runs" },
    h("thead", {}, h("tr", {}, head.map((name) => h("th", {
      scope: "col", class: [numeric.has(name) ? "num" : "", optional.has(name) ? "col-opt" : ""].join(" ").trim(),
    }, name || h("span", { class: "visually-hidden" }, "Select"))))),
    h("tbody", {}, runs.map(row))));
}

function updateSelection() {
  const n = selected.size;
  document.getElementById("selection-text").textContent = n === 0 ? "Select two runs to compare them."
    : n === 1 ? "1 run selected: select one more." : `2 runs selected: ${[...selected.keys()].map(shortId).join(" and ")}.`;
  document.getElementById("diff-selected").disabled = n !== 2;
  document.getElementById("clear-selection").disabled = n === 0;
  for (const tr of table.querySelectorAll("tbody tr")) {
    const isSel = selected.has(tr.dataset.runId);
    tr.classList.toggle("selected", isSel);
    const box = tr.querySelector("input[type=checkbox]");
    box.checked = isSel;
    box.disabled = !isSel && n >= 2;
  }
}

async function load() {
  table.setAttribute("aria-busy", "true");
  const params = { ...currentFilters(), limit: form.elements.namedItem("limit").value };
  if (cursors[page]) params.cursor = cursors[page];
  try {
    const body = await api("/v1/runs", { params });
    renderTable(body.runs);
    cursors = cursors.slice(0, page + 1);
    if (body.next_cursor) cursors.push(body.next_cursor);
    document.getElementById("page-info").textContent = `Page ${page + 1} · ${body.runs.length} runs`;
  } catch (err) {
    clear(table, failure(err, "The runs list"));
  }
  document.getElementById("prev-page").disabled = page === 0;
  document.getElementById("next-page").disabled = cursors.length <= page + 1;
  updateSelection();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const url = new URL(location.href);
  url.search = new URLSearchParams(currentFilters()).toString();
  history.replaceState(null, "", url);
  cursors = [null];
  page = 0;
  load();
});
form.addEventListener("reset", () => {
  setTimeout(() => form.requestSubmit(), 0);
});
document.getElementById("next-page").addEventListener("click", () => { page += 1; load(); });
document.getElementById("prev-page").addEventListener("click", () => { page = Math.max(0, page - 1); load(); });
document.getElementById("clear-selection").addEventListener("click", () => { selected.clear(); updateSelection(); });
document.getElementById("diff-selected").addEventListener("click", () => {
  // The older run is the baseline (A), the newer one is compared with it (B).
  const [a, b] = [...selected.values()].sort((x, y) => (x.started_at_ns ?? 0) - (y.started_at_ns ?? 0));
  location.assign(`/ui/diff?${new URLSearchParams({ runA: a.run_id, runB: b.run_id, profile: "default" })}`);
});

filtersFromUrl();
await startPage();
await load();
markRendered("runsRendered");
