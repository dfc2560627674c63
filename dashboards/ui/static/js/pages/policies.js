// Policies: the project's versions (the active one marked) and a readable view of one version's
// rules, tool classes and default, with the source as uploaded. Admins can activate a version.

import { api } from "../api.js";
import { clear, failure, fmtTime, h, markRendered, timeCell, toast } from "../dom.js";
import { can, startPage } from "../session.js";

const OPS = { eq: "=", ne: "≠", lt: "<", lte: "≤", gt: ">", gte: "≥", in: "in", not_in: "not in" };
const versionsBox = document.getElementById("versions");
const policyBox = document.getElementById("policy");
let session = null;

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function condition(key, value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    return Object.entries(value).map(([path, test]) => {
      if (test && typeof test === "object" && !Array.isArray(test)) {
        return Object.entries(test).map(([op, operand]) => h("li", {}, h("code", {}, `${key} ${path}`), ` ${OPS[op] || op} `,
          h("code", {}, show(operand))));
      }
      return h("li", {}, h("code", {}, `${key} ${path}`), " = ", h("code", {}, show(test)));
    });
  }
  return h("li", {}, h("code", {}, key), " = ", h("code", {}, show(value)));
}

function rule(r, index) {
  const match = r.match || {};
  return h("div", { class: "rule" },
    h("header", {}, h("strong", {}, r.id || `rule ${index + 1}`), h("span", { class: `badge d-${r.decision}` }, r.decision),
      r.reason_code ? h("span", { class: "muted small" }, r.reason_code) : null),
    Object.keys(match).length ? h("ul", {}, Object.entries(match).map(([k, v]) => condition(k, v)))
      : h("p", { class: "muted small" }, "matches every call"),
    r.description ? h("p", { class: "muted small" }, r.description) : null);
}

function renderDocument(policy) {
  const doc = policy.document || {};
  const tools = Object.entries(doc.tools || {});
  clear(policyBox,
    h("p", {}, h("strong", {}, `Version ${policy.version}`), " ", policy.active ? h("span", { class: "badge b-ok" }, "active") : null,
      " ", h("span", { class: "muted" }, policy.description || doc.description || "")),
    h("p", { class: "muted small mono" }, policy.sha256),
    h("h3", {}, "Rules (first match wins)"),
    (doc.rules || []).length ? doc.rules.map(rule) : h("p", { class: "muted" }, "No rules."),
    h("h3", {}, "Default"),
    doc.default ? h("p", {}, h("span", { class: `badge d-${doc.default.decision}` }, doc.default.decision), " ",
      h("span", { class: "muted" }, doc.default.reason_code || "")) : h("p", { class: "muted" }, "—"),
    tools.length ? [h("h3", {}, "Tool classes"), h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Tool"),
      h("th", {}, "Action class"), h("th", {}, "Autonomy"))), h("tbody", {}, tools.map(([name, t]) => h("tr", {},
      h("td", { class: "mono" }, name), h("td", {}, t.action_class || "—"), h("td", {}, t.autonomy_level || "—")))))] : null,
    h("details", {}, h("summary", {}, "Source as uploaded"), h("pre", { class: "source" }, policy.source || "")));
}

async function showPolicy(policyId) {
  policyBox.setAttribute("aria-busy", "true");
  try {
    renderDocument(await api(`/v1/policies/${encodeURIComponent(policyId)}`));
  } catch (err) {
    clear(policyBox, failure(err, "This policy"));
  }
  for (const tr of versionsBox.querySelectorAll("tr[data-policy-id]")) {
    tr.classList.toggle("selected", tr.dataset.policyId === policyId);
  }
}

async function activate(policy) {
  try {
    await api(`/v1/policies/${encodeURIComponent(policy.policy_id)}:activate`, { method: "POST" });
    toast(`Version ${policy.version} is now active`);
    await load(policy.policy_id);
  } catch (err) {
    toast(`Activation failed: ${err.message}`);
  }
}

async function load(selectId) {
  try {
    const body = await api("/v1/policies");
    document.getElementById("policy-project").textContent = `project ${body.project_id}`;
    if (!body.policies.length) {
      clear(versionsBox, h("p", { class: "muted" }, "No policy yet: every gated decision is denied until one is active."));
      return;
    }
    clear(versionsBox, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", {}, "State"), h("th", { class: "num" }, "Rules"),
        h("th", {}, "Created"), h("th", {}, ""))),
      h("tbody", {}, body.policies.map((p) => h("tr", { dataset: { policyId: p.policy_id } },
        h("td", {}, h("button", { type: "button", class: "btn btn-small", onclick: () => showPolicy(p.policy_id) }, `v${p.version}`)),
        h("td", {}, p.active ? h("span", { class: "badge b-ok" }, "active") : h("span", { class: "muted" }, "inactive")),
        h("td", { class: "num" }, String(p.rule_count)),
        h("td", { title: `${fmtTime(p.created_at)} by ${p.created_by}` }, timeCell(p.created_at)),
        h("td", {}, !p.active && can(session, "admin")
          ? h("button", { type: "button", class: "btn btn-small", onclick: () => activate(p) }, "Activate") : null))))));
    await showPolicy(selectId || body.active_policy_id || body.policies[0].policy_id);
  } catch (err) {
    clear(versionsBox, failure(err, "Policies (GET /v1/policies)"));
  }
}

session = await startPage();
await load();
markRendered("policiesRendered");
