// The waterfall of a run's steps: nesting from parent_span_id, bars to scale, type colours, error and
// orphan markers. Windowed: only the rows in view (plus a margin) exist in the DOM, so a run of
// thousands of steps scrolls and renders as fast as a short one.

import { fmtDuration, h, typeChip } from "./dom.js";

const ROW_H = 26;
const OVERSCAN = 12;
const INDENT_PX = 12;
const MAX_VIEW_PX = 640;

function isError(step) {
  return step.status === "error" || Boolean(step.error) || step.type === "error";
}

function byStart(a, b) {
  return (a.step.ts_ns - b.step.ts_ns) || (a.step.seq - b.step.seq);
}

export class Timeline {
  constructor({ viewport, spacer, axis, onSelect }) {
    Object.assign(this, { viewport, spacer, axis, onSelect });
    this.nodes = [];
    this.rows = [];
    this.collapsed = new Set();
    this.selectedId = null;
    this.focusIndex = 0;
    this.frame = 0;
    viewport.addEventListener("scroll", () => this.schedule());
    viewport.addEventListener("keydown", (event) => this.onKey(event));
    new ResizeObserver(() => this.schedule()).observe(viewport);
  }

  /** Replace the steps (all loaded so far, any order); keeps collapsed subtrees and the selection. */
  setSteps(steps) {
    const bySpan = new Map();
    this.nodes = steps.map((step) => ({ step, children: [], depth: 0, parent: null }));
    for (const node of this.nodes) if (node.step.span_id) bySpan.set(node.step.span_id, node);
    this.roots = [];
    for (const node of this.nodes) {
      const parent = node.step.parent_span_id ? bySpan.get(node.step.parent_span_id) : undefined;
      if (parent && parent !== node) {
        node.parent = parent;
        parent.children.push(node);
      } else {
        this.roots.push(node);
      }
    }
    this.computeScale();
    this.flatten();
  }

  computeScale() {
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const { step } of this.nodes) {
      t0 = Math.min(t0, step.ts_ns);
      t1 = Math.max(t1, step.end_ts_ns ?? step.ts_ns);
    }
    this.t0 = Number.isFinite(t0) ? t0 : 0;
    this.spanNs = Math.max((Number.isFinite(t1) ? t1 : 0) - this.t0, 1);
    this.renderAxis();
  }

  renderAxis() {
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
      // Styles set through the CSSOM are allowed by the page's CSP (style attributes in markup are not).
      const tick = h("span", {}, fmtDuration((this.spanNs * f) / 1e6));
      tick.style.left = `${f * 100}%`;
      if (f === 0) tick.style.transform = "none";
      if (f === 1) tick.style.transform = "translateX(-100%)";
      return tick;
    });
    this.axis.replaceChildren(...ticks);
  }

  /** The visible rows in tree order (depth first, siblings by start time); guards against cycles. */
  flatten() {
    const rows = [];
    const seen = new Set();
    const stack = [...this.roots].sort(byStart).reverse().map((node) => [node, 0]);
    while (stack.length) {
      const [node, depth] = stack.pop();
      if (seen.has(node)) continue;
      seen.add(node);
      node.depth = depth;
      rows.push(node);
      if (node.children.length && !this.collapsed.has(node.step.step_id)) {
        const kids = [...node.children].sort(byStart);
        for (let i = kids.length - 1; i >= 0; i -= 1) stack.push([kids[i], depth + 1]);
      }
    }
    this.rows = rows;
    this.spacer.style.height = `${rows.length * ROW_H}px`;
    this.viewport.style.height = `${Math.min(rows.length * ROW_H + 2, MAX_VIEW_PX)}px`;
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const focused = this.viewport.contains(document.activeElement);
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i += 1) fragment.append(this.row(i));
    this.spacer.replaceChildren(fragment);
    if (focused) this.focusRow(this.focusIndex, false);
  }

  row(index) {
    const node = this.rows[index];
    const { step } = node;
    const left = ((step.ts_ns - this.t0) / this.spanNs) * 100;
    const durNs = Math.max((step.end_ts_ns ?? step.ts_ns) - step.ts_ns, 0);
    const width = Math.max((durNs / this.spanNs) * 100, 0.15);
    const hasKids = node.children.length > 0;
    const open = hasKids && !this.collapsed.has(step.step_id);
    const markers = [];
    if (isError(step)) markers.push(h("span", { class: "marker m-error", title: "error" }, "!"));
    if (step.orphan) markers.push(h("span", { class: "marker m-orphan", title: "parent span never arrived" }, "orphan"));
    if (step.binding && step.binding !== "bound" && step.binding !== "ungated") {
      markers.push(h("span", { class: "badge b-bad", title: "binding" }, step.binding));
    }
    const toggle = h("button", {
      type: "button", class: "tl-toggle", tabindex: "-1", disabled: !hasKids,
      "aria-label": hasKids ? `${open ? "Collapse" : "Expand"} ${step.name}` : null, "aria-expanded": hasKids ? String(open) : null,
      onclick: () => this.toggle(index),
    }, hasKids ? (open ? "▾" : "▸") : "");
    const select = h("button", {
      type: "button", class: "tl-select", dataset: { index: String(index), seq: String(step.seq) },
      tabindex: index === this.focusIndex ? "0" : "-1", "aria-current": step.step_id === this.selectedId ? "true" : null,
      title: `${step.type} · ${step.name} · ${fmtDuration(durNs / 1e6)}`, onclick: () => this.select(index),
    }, typeChip(step.type), h("span", { class: "name" }, step.name), markers);
    const label = h("div", { class: "tl-label" }, toggle, select);
    label.style.paddingLeft = `${node.depth * INDENT_PX}px`;
    const bar = h("span", { class: `tl-bar t-${step.type}${isError(step) ? " err" : ""}` });
    bar.style.left = `${left}%`;
    bar.style.width = `${width}%`;
    const dur = h("span", { class: "tl-dur" }, fmtDuration(durNs / 1e6));
    if (left + width > 80) {
      dur.classList.add("before");  // no room after the bar: the label goes before its start
      dur.style.right = `${100 - left}%`;
    } else {
      dur.style.left = `${left + width}%`;
    }
    const track = h("div", { class: "tl-track", onclick: () => this.select(index) }, bar, dur);
    const row = h("div", { class: `tl-row${step.step_id === this.selectedId ? " sel" : ""}`, dataset: { stepId: step.step_id } },
      label, track);
    row.style.top = `${index * ROW_H}px`;
    return row;
  }

  toggle(index) {
    const node = this.rows[index];
    if (!node || !node.children.length) return;
    const id = node.step.step_id;
    if (this.collapsed.has(id)) this.collapsed.delete(id);
    else this.collapsed.add(id);
    this.focusIndex = index;
    this.flatten();
  }

  setAllCollapsed(collapse) {
    this.collapsed.clear();
    if (collapse) for (const node of this.nodes) if (node.children.length) this.collapsed.add(node.step.step_id);
    this.focusIndex = 0;
    this.flatten();
  }

  select(index) {
    const node = this.rows[index];
    if (!node) return;
    this.selectedId = node.step.step_id;
    this.focusIndex = index;
    this.schedule();
    this.onSelect(node.step);
  }

  /** Select a step by a predicate, expanding its ancestors and scrolling it into view. */
  reveal(predicate) {
    const node = this.nodes.find((n) => predicate(n.step));
    if (!node) return false;
    for (let p = node.parent; p; p = p.parent) this.collapsed.delete(p.step.step_id);
    this.flatten();
    const index = this.rows.indexOf(node);
    this.scrollTo(index);
    this.select(index);
    this.focusRow(index, true);
    return true;
  }

  nextError() {
    const start = this.rows.findIndex((n) => n.step.step_id === this.selectedId);
    const order = [...this.nodes].sort((a, b) => a.step.seq - b.step.seq);
    const current = start >= 0 ? this.rows[start].step.seq : -1;
    const next = order.find((n) => isError(n.step) && n.step.seq > current) || order.find((n) => isError(n.step));
    return next ? this.reveal((s) => s === next.step) : false;
  }

  scrollTo(index) {
    const top = index * ROW_H;
    const view = this.viewport;
    if (top < view.scrollTop) view.scrollTop = top;
    else if (top + ROW_H > view.scrollTop + view.clientHeight) view.scrollTop = top - view.clientHeight + ROW_H * 2;
  }

  focusRow(index, scroll) {
    this.focusIndex = Math.max(0, Math.min(index, this.rows.length - 1));
    if (scroll) {
      this.scrollTo(this.focusIndex);
      this.render();
    }
    const button = this.spacer.querySelector(`.tl-select[data-index="${this.focusIndex}"]`);
    for (const el of this.spacer.querySelectorAll(".tl-select[tabindex='0']")) el.tabIndex = -1;
    if (button) {
      button.tabIndex = 0;
      button.focus({ preventScroll: true });
    }
  }

  onKey(event) {
    const index = this.focusIndex;
    const node = this.rows[index];
    const moves = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: this.rows.length - 1,
      PageDown: index + 20, PageUp: index - 20 };
    if (event.key in moves) {
      event.preventDefault();
      this.focusRow(moves[event.key], true);
    } else if (event.key === "ArrowRight" && node && node.children.length) {
      event.preventDefault();
      if (this.collapsed.has(node.step.step_id)) this.toggle(index);
      else this.focusRow(index + 1, true);
    } else if (event.key === "ArrowLeft" && node) {
      event.preventDefault();
      if (node.children.length && !this.collapsed.has(node.step.step_id)) this.toggle(index);
      else if (node.parent) this.focusRow(this.rows.indexOf(node.parent), true);
    }
  }
}
