// Audit log (admin): filters, cursor paging, and a check of the tenant's audit hash chain.
// Reading the log is itself audited by the server.

import { api } from "../api.js";
import { clear, failure, fmtTime, h, localInputToIso, markRendered } from "../dom.js";
import { jsonView } from "../json_view.js";
import { can, startPage } from "../session.js";

const form = document.getElementById("audit-filters");
const box = document.getElementById("audit");
let cursors = [null];
let page = 0;

function filters() {
  const data = new FormData(form);
  return { action: data.get("action").trim(), actor: data.get("actor").trim(),
    since: localInputToIso(data.get("since")), until: localInputToIso(data.get("until")) };
}

function details(value) {
  if (value === null || value === undefined || value === "") return "";
  let parsed = value;
  if (typeof value === "string") {
    try { parsed = JSON.parse(value); } catch { return value; }
  }
  return typeof parsed === "object" ? h("details", {}, h("summary", {}, "details"), jsonView(parsed)) : String(parsed);
}

async function load() {
  box.setAttribute("aria-busy", "true");
  try {
    const body = await api("/v1/audit", { params: { ...filters(), limit: 100, cursor: cursors[page] } });
    cursors = cursors.slice(0, page + 1);
    if (body.next_cursor) cursors.push(body.next_cursor);
    clear(box, body.entries.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Time", "Actor", "Action", "Target", "Details", "Row hash"].map((t) => h("th", {}, t)))),
      h("tbody", {}, body.entries.map((e) => h("tr", {},
        h("td", {}, fmtTime(e.ts)), h("td", { class: "mono small" }, e.actor), h("td", {}, h("code", {}, e.action)),
        h("td", { class: "mono small wrap" }, e.target || "—"), h("td", { class: "wrap" }, details(e.details)),
        h("td", { class: "mono small", title: e.row_hash }, (e.row_hash || "").slice(7, 19)))))) : h("p", { class: "muted" }, "No entries."));
    document.getElementById("page-info").textContent = `Page ${page + 1} · ${body.entries.length} entries`;
  } catch (err) {
    clear(box, err.status === 403 ? h("p", { class: "notice" }, "The audit log is for admins.") : failure(err, "The audit log"));
  }
  document.getElementById("prev-page").disabled = page === 0;
  document.getElementById("next-page").disabled = cursors.length <= page + 1;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  cursors = [null];
  page = 0;
  load();
});
document.getElementById("next-page").addEventListener("click", () => { page += 1; load(); });
document.getElementById("prev-page").addEventListener("click", () => { page = Math.max(0, page - 1); load(); });
document.getElementById("verify-chain").addEventListener("click", async () => {
  const out = document.getElementById("verify-result");
  out.textContent = "Verifying…";
  try {
    const v = await api("/v1/audit/verify");
    out.className = v.ok ? "chain-ok" : "chain-bad";
    out.textContent = v.ok ? `✓ ${v.rows_checked} rows verified` : `✗ broken at row ${v.first_bad_id}: ${v.reason}`;
  } catch (err) {
    out.className = "error";
    out.textContent = err.message;
  }
});

const session = await startPage();
if (!can(session, "admin")) {
  form.hidden = true;
  clear(box, h("p", { class: "notice" }, "The audit log is for admins; your role is ", session.role, "."));
} else {
  await load();
}
markRendered("auditRendered");
