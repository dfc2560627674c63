// /ui/diff/latest?agent=…|service=…|run=…: find "this run (or the newest) vs. the previous run of the
// same agent" with the stored token, then go to the stable diff URL. (A client that sends a bearer
// header gets the same answer as a 302 from the server.)

import { api } from "../api.js";
import { h, shortId } from "../dom.js";
import { startPage } from "../session.js";

const status = document.getElementById("resolve-status");
const q = new URLSearchParams(location.search);

async function newest(filters, limit) {
  return (await api("/v1/runs", { params: { ...filters, limit } })).runs;
}

async function resolvePair() {
  const runParam = q.get("run");
  if (runParam) {
    const run = await api(`/v1/runs/${encodeURIComponent(runParam)}`);
    const filters = run.agent ? { agent: run.agent } : { service: run.service };
    const before = await newest({ ...filters, started_before: run.started_at }, 1);
    if (!before.length) throw new Error(`Run ${shortId(run.run_id)} has no earlier run of ${run.agent || run.service}.`);
    return [before[0].run_id, run.run_id];
  }
  const filters = q.get("agent") ? { agent: q.get("agent") } : q.get("service") ? { service: q.get("service") } : null;
  if (!filters) throw new Error("Name the agent, the service or a run: /ui/diff/latest?agent=… (or service=…, run=…).");
  const runs = await newest(filters, 2);
  if (runs.length < 2) throw new Error(`Fewer than two runs of ${filters.agent || filters.service}.`);
  return [runs[1].run_id, runs[0].run_id];
}

await startPage();
try {
  const [runA, runB] = await resolvePair();
  location.replace(`/ui/diff?${new URLSearchParams({ runA, runB, profile: q.get("profile") || "default" })}`);
} catch (err) {
  status.replaceChildren(h("span", { class: "error", role: "alert" }, err.message), " ",
    h("a", { href: "/ui/runs" }, "Pick two runs in the list instead."));
}
