// Diff view at /ui/diff?runA=…&runB=…&profile=…: summary with deltas, two aligned columns with the
// changed fields inline, a profile switcher and "jump to first divergence". Data: GET /v1/diff.

import { api } from "../api.js";
import { clear, failure, fmtCost, fmtDuration, fmtInt, h, markRendered, shortId, statusBadge, typeChip } from "../dom.js";
import { renderText } from "../json_view.js";
import { startPage } from "../session.js";

const form = document.getElementById("diff-form");
const pairsBox = document.getElementById("pairs");
const summaryBox = document.getElementById("diff-summary");
const jump = document.getElementById("jump-divergence");
const TOKEN_LABELS = { in: "Tokens in", out: "Tokens out", cache_read: "Cache read", cache_write: "Cache write", reasoning: "Reasoning" };
let divergenceIndex = -1;

function params() {
  const q = new URLSearchParams(location.search);
  return { runA: q.get("runA") || "", runB: q.get("runB") || "", profile: q.get("profile") || "default" };
}

function fillForm({ runA, runB, profile }) {
  form.elements.namedItem("runA").value = runA;
  form.elements.namedItem("runB").value = runB;
  const select = form.elements.namedItem("profile");
  if (![...select.options].some((o) => o.value === profile)) select.append(h("option", { value: profile }, profile));
  select.value = profile;
}

function navigate(next) {
  history.replaceState(null, "", `/ui/diff?${new URLSearchParams(next)}`);
  load();
}

function deltaText(delta, format) {
  if (!delta || delta.delta === null || delta.delta === undefined) return h("span", { class: "muted" }, "—");
  const d = delta.delta;
  const cls = d > 0 ? "delta-up" : d < 0 ? "delta-down" : "muted";
  return h("span", { class: cls }, `${d > 0 ? "+" : d < 0 ? "−" : "±"}${format(Math.abs(d))}`);
}

function fact(label, ...value) {
  return h("div", {}, h("span", { class: "k" }, label), h("span", { class: "v" }, ...value));
}

function fromTo(delta, format) {
  return [`${format(delta.a)} → ${format(delta.b)} `, deltaText(delta, format)];
}

function listChange(label, change) {
  const added = change.added || [];
  const removed = change.removed || [];
  if (!added.length && !removed.length) return fact(label, h("span", { class: "muted" }, "unchanged"));
  return fact(label, added.map((x) => h("span", { class: "badge st-added" }, `+${x}`)), " ",
    removed.map((x) => h("span", { class: "badge st-removed" }, `−${x}`)));
}

function renderSummary(diff, runA, runB) {
  const s = diff.summary;
  const counts = Object.entries(s.pair_counts || {}).map(([k, v]) => h("span", { class: `badge st-${k}` }, `${v} ${k}`));
  const div = s.first_divergence;
  const stepsA = Object.values(s.step_counts.a || {}).reduce((x, y) => x + y, 0);
  const stepsB = Object.values(s.step_counts.b || {}).reduce((x, y) => x + y, 0);
  document.getElementById("col-a").textContent = `Run A · ${shortId(runA)}`;
  document.getElementById("col-b").textContent = `Run B · ${shortId(runB)}`;
  clear(summaryBox,
    h("div", { class: "card-head" },
      h("h2", {}, "Summary"),
      h("span", { class: "muted small" }, `profile ${diff.profile.name}: ${diff.profile.description || ""}`)),
    h("div", { class: "facts" },
      fact("Run A", h("a", { href: `/ui/runs/${runA}`, class: "mono" }, shortId(runA)), " ", statusBadge(s.status.a)),
      fact("Run B", h("a", { href: `/ui/runs/${runB}`, class: "mono" }, shortId(runB)), " ", statusBadge(s.status.b)),
      fact("Similarity", `${(s.similarity * 100).toFixed(1)}%`),
      fact("Duration", ...fromTo(s.duration_ms, fmtDuration)),
      fact("Cost", ...fromTo(s.cost_usd, fmtCost)),
      Object.entries(s.tokens || {}).map(([k, d]) => fact(TOKEN_LABELS[k] || k, ...fromTo(d, fmtInt))),
      fact("Steps", `${fmtInt(stepsA)} → ${fmtInt(stepsB)}`),
      fact("First divergence", div ? `seq ${div.a_seq ?? "—"} (A) / seq ${div.b_seq ?? "—"} (B)` : "none"),
      listChange("Models", s.models), listChange("Tools", s.tools),
      fact("Pairs", ...counts)),
    diff.profile.ignored && diff.profile.ignored.length
      ? h("p", { class: "muted small" }, `Ignored: ${diff.profile.ignored.join(", ")}`) : null);
}

function cell(ref, side, runId) {
  if (!ref) return h("div", { class: `cell ${side} empty` }, side === "a" ? "only in B" : "only in A");
  return h("div", { class: `cell ${side}` },
    h("a", { href: `/ui/runs/${runId}#seq-${ref.seq}`, class: "mono small", title: `step ${ref.step_id}` }, `#${ref.seq}`),
    typeChip(ref.type), h("span", { class: "name", title: ref.name }, ref.name),
    ref.status === "error" ? h("span", { class: "marker m-error" }, "!") : null);
}

function show(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "string" ? value : JSON.stringify(value, null, 1);
}

function changeRows(changes) {
  if (!changes.length) return null;
  return h("div", { class: "changes" }, changes.map((c) => {
    const [oldText, newText] = [show(c.old), show(c.new)];
    return [
      h("div", { class: "path" }, c.path),
      h("div", { class: `old${oldText === null ? " absent" : ""}` }, oldText === null ? "absent" : renderText(oldText)),
      h("div", { class: `new${newText === null ? " absent" : ""}` }, newText === null ? "absent" : renderText(newText)),
    ];
  }));
}

function pairRow(pair, index, runA, runB) {
  const row = h("div", { class: "pair-row" }, cell(pair.a, "a", runA),
    h("div", { class: `status st-${pair.status}` }, pair.status), cell(pair.b, "b", runB));
  const depth = pair.depth || 0;
  if (depth) row.style.paddingLeft = `${Math.min(depth, 12) * 10 + 6}px`;
  return h("div", {
    class: `pair p-${pair.status}${index === divergenceIndex ? " divergence" : ""}`, role: "listitem", tabindex: "-1",
    dataset: { index: String(index), status: pair.status },
  }, row, changeRows(pair.changes || []));
}

function findDivergence(diff) {
  const div = diff.summary.first_divergence;
  if (div) {
    const i = diff.pairs.findIndex((p) => (p.a && p.a.seq === div.a_seq && div.a_seq !== null) ||
      (p.b && p.b.seq === div.b_seq && div.b_seq !== null));
    if (i >= 0) return i;
  }
  return diff.pairs.findIndex((p) => p.status !== "equal");
}

async function load() {
  const p = params();
  fillForm(p);
  if (!p.runA || !p.runB) {
    clear(summaryBox, h("p", {}, "Choose two runs: pick them in the ", h("a", { href: "/ui/runs" }, "runs list"), " or paste their ids above."));
    return;
  }
  summaryBox.setAttribute("aria-busy", "true");
  try {
    const diff = await api("/v1/diff", { params: { runA: p.runA, runB: p.runB, normalize_profile: p.profile } });
    divergenceIndex = findDivergence(diff);
    renderSummary(diff, p.runA, p.runB);
    const rows = diff.pairs.map((pair, i) => pairRow(pair, i, p.runA, p.runB));
    clear(pairsBox, rows.length ? rows : h("p", { class: "muted" }, "Both runs are empty."));
    jump.disabled = divergenceIndex < 0;
    jump.textContent = divergenceIndex < 0 ? "No divergence" : "Jump to first divergence";
  } catch (err) {
    clear(summaryBox, failure(err, "The diff API (GET /v1/diff)"),
      err.details ? h("pre", { class: "small" }, JSON.stringify(err.details, null, 2)) : null);
    clear(pairsBox);
  }
  markRendered("diffRendered");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  navigate({ runA: data.get("runA").trim(), runB: data.get("runB").trim(), profile: data.get("profile") });
});
form.elements.namedItem("profile").addEventListener("change", () => form.requestSubmit());
document.getElementById("swap").addEventListener("click", () => {
  const p = params();
  navigate({ runA: p.runB, runB: p.runA, profile: p.profile });
});
document.getElementById("hide-equal").addEventListener("change", (event) => {
  pairsBox.classList.toggle("hide-equal", event.target.checked);
});
jump.addEventListener("click", () => {
  const el = pairsBox.querySelector(`.pair[data-index="${divergenceIndex}"]`);
  if (!el) return;
  el.scrollIntoView({ block: "center" });
  el.focus({ preventScroll: true });
});

await startPage();
await load();
