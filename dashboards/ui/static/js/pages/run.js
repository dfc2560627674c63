// Run view: summary, waterfall timeline, step detail (payload, redaction markers, binding, hashes),
// chain link check, findings and feedback. Steps load page by page (1,000 at a time) and the
// timeline grows as they arrive.

import { api } from "../api.js";
import {
  STEP_TYPES, clear, failure, fmtCost, fmtDuration, fmtInt, fmtTime, h, markRendered, shortId, statusBadge, toast, typeChip,
} from "../dom.js";
import { jsonView, renderText } from "../json_view.js";
import { startPage } from "../session.js";
import { Timeline } from "../timeline.js";

const PAGE_SIZE = 1000;
const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[2] || "");
const detail = document.getElementById("step-detail");
const steps = [];

const timeline = new Timeline({
  viewport: document.getElementById("tl-viewport"), spacer: document.getElementById("tl-spacer"),
  axis: document.getElementById("tl-axis"), onSelect: showStep,
});

function fact(label, ...value) {
  return h("div", {}, h("span", { class: "k" }, label), h("span", { class: "v" }, ...value));
}

function renderHead(run) {
  document.title = `Run ${shortId(run.run_id)} · Traceward`;
  document.getElementById("crumb-run").textContent = run.run_id;
  const t = run.tokens || {};
  const tags = Object.entries(run.tags || {}).map(([k, v]) => h("span", { class: "badge" }, `${k}=${v}`));
  clear(document.getElementById("run-head"),
    h("div", { class: "run-title" },
      h("h1", {}, run.name || "Run"), statusBadge(run.status),
      run.has_error ? h("span", { class: "badge b-bad" }, `${run.error_count} error step(s)`) : null,
      h("span", { class: "mono muted" }, run.run_id),
      h("a", { class: "btn btn-small", href: `/ui/diff/latest?${new URLSearchParams({ run: run.run_id })}` },
        "Diff with previous run of this agent")),
    h("div", { class: "facts" },
      fact("Agent", run.agent || "—"), fact("Service", run.service || "—"),
      fact("Started", fmtTime(run.started_at)), fact("Finished", fmtTime(run.finished_at)),
      fact("Duration", fmtDuration(run.duration_ms)), fact("Steps", fmtInt(run.step_count)),
      fact("Tokens in / out", `${fmtInt(t.input)} / ${fmtInt(t.output)}`),
      fact("Cache read / reasoning", `${fmtInt(t.cache_read)} / ${fmtInt(t.reasoning)}`),
      fact("Cost", fmtCost(run.cost_usd), h("span", { class: "muted small" }, ` ${run.cost_source || ""}`)),
      fact("Models", (run.model_names || []).join(", ") || "—"), fact("Tools", (run.tool_names || []).join(", ") || "—"),
      fact("Session / user", `${run.session_id || "—"} / ${run.user_id || "—"}`),
      fact("Parent run", run.parent_run_id ? h("a", { href: `/ui/runs/${run.parent_run_id}` }, shortId(run.parent_run_id)) : "—"),
      fact("Head hash", h("span", { class: "mono small", title: run.head_hash || "" }, run.head_hash ? `${run.head_hash.slice(0, 19)}…` : "—")),
      fact("Chain", h("span", { id: "chain-state" }, "checking…")),
      tags.length ? fact("Tags", ...tags) : null));
}

function renderLegend() {
  clear(document.getElementById("legend"), STEP_TYPES.map((type) => h("li", {}, h("i", { class: `t-${type}` }), type)));
}

/** Instant link check in the browser (prev_hash = the previous step's chain_hash), then the server's verification. */
async function checkChain(run) {
  const el = document.getElementById("chain-state");
  const ordered = [...steps].sort((a, b) => a.seq - b.seq);
  const broken = ordered.findIndex((s, i) => i > 0 && s.prev_hash !== ordered[i - 1].chain_hash);
  el.className = broken >= 0 ? "chain-bad" : "muted";
  el.textContent = broken >= 0 ? `link broken at seq ${ordered[broken].seq}` : `${fmtInt(ordered.length)} steps linked; verifying…`;
  try {
    const v = await api(`/v1/runs/${encodeURIComponent(run.run_id)}/verify`);
    const seal = v.sealed ? (v.seal_ok ? ", seal ✓" : ", seal ✗") : ", not sealed yet";
    el.className = v.ok ? "chain-ok" : "chain-bad";
    el.textContent = v.ok ? `✓ verified: ${fmtInt(v.steps_checked)} steps${seal}`
      : `✗ broken at seq ${v.first_break ? v.first_break.seq : "?"}: ${v.first_break ? v.first_break.reason : "unknown"}`;
    el.title = "GET /v1/runs/{run_id}/verify: every hash recomputed on the server";
  } catch (err) {
    if (broken < 0) {
      el.className = "chain-ok";
      el.textContent = `✓ ${fmtInt(ordered.length)} steps linked (browser check)`;
    }
    el.title = err.unavailable ? "Server verification is not available here" : err.message;
  }
}

function bindingBadge(binding) {
  const cls = binding === "bound" ? "b-bound" : binding === "ungated" ? "b-ungated" : "b-bad";
  return h("span", { class: `badge ${cls}`, title: "binding of this tool execution to its decision" }, `binding: ${binding}`);
}

function hashRow(label, value, ok) {
  return [h("dt", {}, label), h("dd", { class: "mono small" }, value || "—",
    ok === undefined ? null : h("span", { class: ok ? "chain-ok" : "chain-bad" }, ok ? " ✓ linked" : " ✗ not linked"))];
}

function showStep(step) {
  if (location.hash !== `#seq-${step.seq}`) history.replaceState(null, "", `#seq-${step.seq}`);
  const previous = steps.find((s) => s.seq === step.seq - 1);
  const linked = previous ? step.prev_hash === previous.chain_hash : undefined;
  const tokens = step.tokens ? Object.entries(step.tokens).map(([k, v]) => `${k} ${fmtInt(v)}`).join(" · ") : "—";
  const redaction = step.redaction_meta;
  clear(detail,
    h("div", { class: "row" }, typeChip(step.type), h("h2", { class: "mono" }, step.name)),
    h("div", { class: "row" }, statusBadge(step.status), step.orphan ? h("span", { class: "marker m-orphan" }, "orphan: parent span never arrived") : null,
      step.binding ? bindingBadge(step.binding) : null),
    step.error ? h("p", { class: "error" }, `${step.error.type || "error"}: `, renderText(step.error.message || "")) : null,
    h("dl", { class: "kv" },
      h("dt", {}, "seq"), h("dd", {}, String(step.seq)),
      h("dt", {}, "started"), h("dd", {}, fmtTime(step.ts)),
      h("dt", {}, "duration"), h("dd", {}, fmtDuration(step.duration_ms)),
      h("dt", {}, "span / parent"), h("dd", { class: "mono small" }, `${step.span_id || "—"} / ${step.parent_span_id || "—"}`),
      step.model_name ? [h("dt", {}, "model"), h("dd", {}, `${step.model_name}${step.provider ? ` (${step.provider})` : ""}`)] : null,
      step.tool_name ? [h("dt", {}, "tool"), h("dd", {}, step.tool_name, step.tool_call_id ? ` · ${step.tool_call_id}` : "")] : null,
      step.agent_name ? [h("dt", {}, "agent"), h("dd", {}, step.agent_name)] : null,
      h("dt", {}, "tokens"), h("dd", {}, tokens),
      h("dt", {}, "cost"), h("dd", {}, fmtCost(step.cost_usd)),
      step.decision_token_id ? [h("dt", {}, "decision token"), h("dd", { class: "mono small" }, step.decision_token_id)] : null),
    h("h3", {}, "Payload"),
    jsonView(step.payload ?? {}),
    redaction ? [h("h3", {}, "Redactions"), jsonView(redaction)] : null,
    h("h3", {}, "Hash chain"),
    h("dl", { class: "kv" }, hashRow("payload_hash", step.payload_hash), hashRow("prev_hash", step.prev_hash, linked),
      hashRow("chain_hash", step.chain_hash)));
}

function selectFromHash() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("seq-")) return timeline.reveal((s) => String(s.seq) === hash.slice(4));
  if (hash.startsWith("span-")) return timeline.reveal((s) => s.span_id === hash.slice(5));
  return false;
}

/** All steps, PAGE_SIZE at a time; the next page is requested before this one is laid out. */
async function loadSteps(runPromise) {
  const url = `/v1/runs/${encodeURIComponent(runId)}/steps`;
  const count = document.getElementById("timeline-count");
  let pending = api(url, { params: { limit: PAGE_SIZE } });
  let first = true;
  while (pending) {
    const body = await pending;
    pending = body.next_cursor ? api(url, { params: { limit: PAGE_SIZE, cursor: body.next_cursor } }) : null;
    for (const step of body.steps) steps.push(step);
    timeline.setSteps(steps);
    if (first) {
      markRendered("timelineFirstPage");
      first = false;
    }
    if (pending) count.textContent = `${fmtInt(steps.length)} of ${fmtInt((await runPromise).step_count)} steps`;
  }
  count.textContent = `${fmtInt(steps.length)} steps`;
  timeline.render();
  markRendered("timelineRendered");
}

function renderFindings(findings) {
  const box = document.getElementById("findings");
  if (!findings.length) return clear(box, h("p", { class: "muted" }, "No findings for this run."));
  clear(box, h("ul", {}, findings.map((f) => h("li", {},
    h("span", { class: `badge ${f.severity === "error" ? "b-bad" : "b-warn"}` }, f.kind), " ", f.message || "",
    " ", (f.step_seqs || f.seqs || []).map((seq) => h("button", {
      type: "button", class: "btn btn-small", onclick: () => timeline.reveal((s) => s.seq === seq),
    }, `seq ${seq}`))))));
}

async function loadFindings(run) {
  if (Array.isArray(run.findings)) return renderFindings(run.findings);
  try {
    const body = await api("/v1/findings", { params: { run: run.run_id, limit: 100 } });
    renderFindings((body.findings || []).filter((f) => !f.run_id || f.run_id === run.run_id));
  } catch (err) {
    clear(document.getElementById("findings"), failure(err, "Findings (GET /v1/findings)"));
  }
}

function feedbackForm(run) {
  const score = h("input", { name: "score", type: "number", step: "any", placeholder: "score", "aria-label": "Score" });
  const label = h("input", { name: "label", type: "text", maxlength: "64", placeholder: "label, e.g. wrong_answer", "aria-label": "Label" });
  const comment = h("input", { name: "comment", type: "text", placeholder: "comment", "aria-label": "Comment" });
  const form = h("form", { class: "row feedback-form" }, score, label, comment,
    h("button", { type: "submit", class: "btn btn-small" }, "Add feedback"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    if (score.value !== "") body.score = Number(score.value);
    if (label.value.trim()) body.label = label.value.trim();
    if (comment.value.trim()) body.comment = comment.value.trim();
    try {
      await api(`/v1/runs/${encodeURIComponent(run.run_id)}/feedback`, { method: "POST", body });
      toast("Feedback added");
      loadFeedback(run);
    } catch (err) {
      toast(`Feedback not added: ${err.message}`);
    }
  });
  return form;
}

async function loadFeedback(run) {
  const box = document.getElementById("feedback");
  try {
    const body = await api("/v1/feedback", { params: { run: run.run_id, limit: 50 } });
    const items = body.feedback || [];
    clear(box, items.length ? h("ul", {}, items.map((f) => h("li", {},
      f.label ? h("span", { class: "badge" }, f.label) : null, f.score !== null && f.score !== undefined ? ` score ${f.score} ` : " ",
      f.comment || "", h("span", { class: "muted small" }, ` — ${f.created_by || ""}, ${fmtTime(f.created_at)}`))))
      : h("p", { class: "muted" }, "No feedback on this run yet."), feedbackForm(run));
  } catch (err) {
    clear(box, failure(err, "Feedback (GET /v1/feedback)"));
  }
}

document.getElementById("expand-all").addEventListener("click", () => timeline.setAllCollapsed(false));
document.getElementById("collapse-all").addEventListener("click", () => timeline.setAllCollapsed(true));
document.getElementById("next-error").addEventListener("click", () => {
  if (!timeline.nextError()) document.getElementById("next-error").textContent = "No errors";
});
window.addEventListener("hashchange", selectFromHash);

renderLegend();
await startPage();
const runPromise = api(`/v1/runs/${encodeURIComponent(runId)}`);
const stepsLoaded = loadSteps(runPromise);
stepsLoaded.catch(() => {}); // a missing run rejects both; reported once, below
try {
  const run = await runPromise;
  renderHead(run);
  loadFindings(run);
  loadFeedback(run);
  await stepsLoaded;
  checkChain(run);
  selectFromHash();
} catch (err) {
  clear(document.getElementById("run-head"), failure(err, "This run"));
  markRendered("timelineRendered");
}
