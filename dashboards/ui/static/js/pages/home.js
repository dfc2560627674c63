// Home: the health pulse (GET /v1/analytics/health), the newest runs and the approvals waiting.

import { api } from "../api.js";
import { clear, failure, fmtCost, fmtDuration, h, markRendered, shortId, statusBadge, timeCell } from "../dom.js";
import { startPage } from "../session.js";

const LABELS = {
  agents: "Active agents", error_rate: "Error rate (1 h)", latency_p90: "p90 latency (1 h)",
  cost_today: "Cost today", approvals_waiting: "Approvals waiting", stalled_runs: "Stalled runs",
  policy_violations: "Policy violations (1 h)",
};

async function loadPulse() {
  const box = document.getElementById("pulse");
  const sentence = document.getElementById("pulse-sentence");
  const fields = document.getElementById("pulse-fields");
  try {
    const pulse = await api("/v1/analytics/health");
    box.classList.add(`status-${pulse.status}`);
    sentence.textContent = pulse.sentence;
    clear(fields, (pulse.fields || []).map((f) => h("li", { class: f.color },
      h("span", { class: "k" }, LABELS[f.key] || f.key), h("span", { class: "v" }, f.value))));
  } catch (err) {
    sentence.replaceWith(failure(err, "The health pulse (GET /v1/analytics/health)"));
  }
  box.removeAttribute("aria-busy");
}

async function loadRecent() {
  const box = document.getElementById("recent-runs");
  try {
    const body = await api("/v1/runs", { params: { limit: 10 } });
    if (!body.runs.length) return clear(box, h("p", { class: "muted" }, "No runs yet."));
    clear(box, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Agent"), h("th", {}, "Status"),
        h("th", {}, "Started"), h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Cost"))),
      h("tbody", {}, body.runs.map((r) => h("tr", {},
        h("td", {}, h("a", { href: `/ui/runs/${r.run_id}`, class: "mono" }, shortId(r.run_id))),
        h("td", {}, r.agent || r.service || "—"), h("td", {}, statusBadge(r.status)), h("td", {}, timeCell(r.started_at)),
        h("td", { class: "num" }, fmtDuration(r.duration_ms)), h("td", { class: "num" }, fmtCost(r.cost_usd)))))));
  } catch (err) {
    clear(box, failure(err, "The runs list"));
  }
}

async function loadPending() {
  const box = document.getElementById("pending-approvals");
  try {
    const body = await api("/v1/approvals", { params: { status: "pending", limit: 5 } });
    if (!body.approvals.length) return clear(box, h("p", { class: "muted" }, "Nothing is waiting for a decision."));
    clear(box, h("ul", {}, body.approvals.map((a) => h("li", {},
      h("a", { href: "/ui/approvals" }, a.tool_name), " — ", (a.context && a.context.summary) || "no summary",
      " ", h("span", { class: "muted small" }, a.agent ? `(${a.agent})` : "")))));
  } catch (err) {
    clear(box, failure(err, "Approvals"));
  }
}

await startPage();
await Promise.all([loadPulse(), loadRecent(), loadPending()]);
markRendered("homeRendered");
