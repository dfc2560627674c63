// Approvals inbox: pending first, each with summary, tool, args, risk score, blast radius, evidence
// links, rollback plan and its run; approve (optionally with edited args) or deny with a reason.
// Updates live from the event stream, or by polling where the server has none.

import { api } from "../api.js";
import { clear, failure, fmtTime, h, markRendered, shortId, statusBadge, timeCell, toast } from "../dom.js";
import { refreshPendingCount, can, startPage } from "../session.js";
import { follow } from "../stream.js";

const POLL_MS = 5000;
const pendingBox = document.getElementById("pending");
const decidedBox = document.getElementById("decided");
const liveState = document.getElementById("live-state");
const filterForm = document.getElementById("approval-filters");
const editing = new Map(); // approval_id → the card element with an open form (kept across refreshes)
let session = null;
let refreshTimer = 0;

function filters() {
  const data = new FormData(filterForm);
  return { tool: data.get("tool").trim(), agent: data.get("agent").trim() };
}

function safeLink(url) {
  try {
    const parsed = new URL(url, location.origin);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function risk(score) {
  if (score === undefined || score === null) return h("span", { class: "muted" }, "—");
  const scale = score <= 1 ? 1 : 100;
  const level = score / scale;
  const cls = level >= 0.7 ? "b-bad" : level >= 0.4 ? "b-warn" : "b-ok";
  return h("span", { class: "risk" }, h("meter", { min: "0", max: String(scale), value: String(score), low: String(0.4 * scale),
    high: String(0.7 * scale), optimum: "0" }), h("span", { class: `badge ${cls}` }, String(score)));
}

function section(label, ...content) {
  return [h("dt", {}, label), h("dd", {}, ...content)];
}

function decisionForm(approval, verb, card) {
  const isApprove = verb === "approve";
  const args = h("textarea", { name: "args", rows: "6", "aria-label": "Arguments to approve (JSON)", spellcheck: "false" });
  args.value = JSON.stringify(approval.args, null, 2);
  const reason = h(isApprove ? "input" : "textarea", {
    name: "reason", type: isApprove ? "text" : null, required: !isApprove, "aria-label": "Reason",
    placeholder: isApprove ? "Reason (optional)" : "Why is this denied? (kept as feedback)",
  });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: `btn ${isApprove ? "btn-ok" : "btn-danger"}` },
    isApprove ? "Confirm approval" : "Confirm denial");
  const cancel = h("button", { type: "button", class: "btn btn-ghost", onclick: () => closeForm(approval, card) }, "Cancel");
  const form = h("form", { class: "stack", dataset: { verb } },
    isApprove ? h("label", {}, "Arguments (edit to approve different ones; the policy re-checks them)", args) : null,
    h("label", {}, isApprove ? "Reason" : "Reason for denying", reason), error, h("div", { class: "row" }, submit, cancel));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    if (reason.value.trim()) body.reason = reason.value.trim();
    if (isApprove) {
      let edited;
      try {
        edited = JSON.parse(args.value);
      } catch {
        error.textContent = "The arguments are not valid JSON.";
        error.hidden = false;
        return;
      }
      if (JSON.stringify(edited) !== JSON.stringify(approval.args)) body.args = edited;
    }
    submit.disabled = true;
    try {
      await api(`/v1/approvals/${encodeURIComponent(approval.approval_id)}:${verb}`, { method: "POST", body });
      editing.delete(approval.approval_id);
      toast(`${isApprove ? "Approved" : "Denied"}: ${approval.tool_name}`);
      await refresh();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
  return form;
}

function openForm(approval, verb, card) {
  card.querySelector("form")?.remove();
  const form = decisionForm(approval, verb, card);
  card.append(form);
  editing.set(approval.approval_id, card);
  form.querySelector("textarea, input").focus();
}

function closeForm(approval, card) {
  card.querySelector("form")?.remove();
  editing.delete(approval.approval_id);
  card.querySelector(".actions button")?.focus();
}

function card(approval) {
  const ctx = approval.context || {};
  const pending = approval.status === "pending";
  const links = (ctx.evidence_links || []).map((url) => {
    const href = safeLink(url);
    return h("li", {}, href ? h("a", { href, target: "_blank", rel: "noopener noreferrer" }, url) : url);
  });
  const el = h("article", { class: `card approval${pending ? " pending" : ""}`, dataset: { approvalId: approval.approval_id },
    "aria-label": `${approval.tool_name} ${approval.status}` },
    h("header", {}, h("h3", {}, h("span", { class: "mono" }, approval.tool_name), " ", statusBadge(approval.status)),
      h("span", { class: "muted small" }, "requested ", timeCell(approval.created_at),
        pending ? [" · expires ", timeCell(approval.expires_at)] : [" · decided ", timeCell(approval.decided_at)])),
    h("p", { class: "summary" }, ctx.summary || h("span", { class: "muted" }, "No summary given.")),
    h("dl", { class: "kv" },
      section("Risk score", risk(ctx.risk_score)),
      section("Blast radius", ctx.blast_radius || "—"),
      section("Agent", approval.agent || "—", approval.environment ? ` · ${approval.environment}` : ""),
      section("Rule", `${approval.rule_id || "—"} (${approval.reason_code || "—"})`),
      section("Run", h("a", { href: `/ui/runs/${approval.run_id}#span-${approval.span_id}`, class: "mono" }, shortId(approval.run_id))),
      approval.decided_by ? section("Decided by", `${approval.decided_by} at ${fmtTime(approval.decided_at)}`) : null,
      approval.reason ? section("Reason", approval.reason) : null,
      approval.kill_switch ? section("Kill switch", h("span", { class: "badge b-bad" }, "on: the tool is stopped")) : null),
    h("h4", {}, approval.edited_args ? "Arguments (edited by the approver)" : "Arguments"),
    h("pre", {}, JSON.stringify(approval.args, null, 2)),
    approval.edited_args ? [h("h4", {}, "Requested arguments"), h("pre", {}, JSON.stringify(approval.requested_args, null, 2))] : null,
    h("h4", {}, "Evidence"), links.length ? h("ul", { class: "links" }, links) : h("p", { class: "muted" }, "None given."),
    h("h4", {}, "Rollback plan"), h("p", {}, ctx.rollback_plan || h("span", { class: "muted" }, "None given.")));
  if (pending && can(session, "approve")) {
    el.append(h("div", { class: "actions" },
      h("button", { type: "button", class: "btn btn-ok", onclick: () => openForm(approval, "approve", el) }, "Approve…"),
      h("button", { type: "button", class: "btn btn-danger", onclick: () => openForm(approval, "deny", el) }, "Deny…")));
  }
  return el;
}

function renderList(box, approvals, emptyText) {
  if (!approvals.length) return clear(box, h("p", { class: "muted" }, emptyText));
  clear(box, approvals.map((a) => {
    const kept = editing.get(a.approval_id);
    return kept && a.status === "pending" ? kept : card(a);
  }));
}

export async function refresh() {
  try {
    const f = filters();
    const [pending, recent] = await Promise.all([
      api("/v1/approvals", { params: { ...f, status: "pending", limit: 100 } }),
      api("/v1/approvals", { params: { ...f, limit: 50 } }),
    ]);
    document.getElementById("pending-count").textContent = String(pending.approvals.length);
    renderList(pendingBox, pending.approvals, "Nothing is waiting for a decision.");
    renderList(decidedBox, recent.approvals.filter((a) => a.status !== "pending"), "No decided approvals yet.");
    refreshPendingCount();
  } catch (err) {
    clear(pendingBox, failure(err, "Approvals (GET /v1/approvals)"));
  }
  markRendered("approvalsRendered");
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function setLive(state) {
  liveState.className = `live ${state === "live" ? "on" : state === "poll" ? "poll" : ""}`;
  liveState.textContent = { live: "Live", reconnecting: "Reconnecting…", poll: `Live stream not available: polling every ${POLL_MS / 1000} s` }[state];
  liveState.dataset.state = state;
}

async function startLiveUpdates() {
  const controller = new AbortController();
  await follow({
    signal: controller.signal,
    onState: (state) => { if (state !== "unavailable") setLive(state); },
    onEvent: (event) => {
      const kind = `${event.type} ${(event.json && (event.json.type || event.json.event)) || ""}`;
      if (/approval/i.test(kind)) scheduleRefresh();
    },
  });
  setLive("poll");
  setInterval(refresh, POLL_MS);
}

filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  refresh();
});

session = await startPage();
document.getElementById("viewer-note").hidden = can(session, "approve");
await refresh();
startLiveUpdates();
