"""The ingest hot path: spans (or REST steps) → redacted, mapped, sequenced → write-ahead log.

An export is acknowledged when ``ingest_spans`` returns: by then its steps are in the WAL
(fsync'd), each with its final per-run ``seq``. Retried spans (same trace_id + span_id) are
recognised and not stored twice. The flusher (``flusher.py``) later moves WAL records into
the step table and the run index.

WAL record shapes (orjson):
  {"kind": "steps", "tenant", "project", "received_ns", "runs": {run_id: RunSummary-dict},
   "items": [[run_id, seq, fields, payload_text, payload_hash], ...]}
  where ``fields`` is the StepDraft as a dict without its payload, plus service/service_version/
  environment from the resource, and the payload is already in its canonical (hashed) text form —
  so the flusher neither re-parses payloads nor re-encodes them.
  {"kind": "run", "tenant", "project", "run": {...}}          REST POST /v1/runs
  {"kind": "finish", "tenant", "run_id", "status", "finished_ns"}
  {"kind": "idle_end", "runs": [[tenant, run_id, finished_ns, step_count], ...]}   log-only runs found idle
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from otlp_receiver.chain import encode_payload
from otlp_receiver.errors import ConflictError, NotFoundError
from otlp_receiver.log_content import LogContent
from otlp_receiver.mapping import step_fields, summarize_runs
from otlp_receiver.model import (
    LogRecord,
    RedactionMeta,
    RedactionRuleHit,
    RunId,
    RunStatus,
    RunSummary,
    Span,
    StepDraft,
)
from otlp_receiver.priority import CHECK_EVERY_SPANS, no_pause, paced
from otlp_receiver.store.index import RunIndex
from otlp_receiver.wal import NotAppendedError, WriteAheadLog


class Redaction(Protocol):
    """Per-tenant redaction, injected by the server (``otlp_receiver.redact.Redactor`` per tenant)."""

    def spans(self, tenant_id: str, spans: Sequence[Span]) -> list[tuple[Span, RedactionMeta]]:
        """Each span with secrets masked (the same object when clean) and what fired, in order."""

    def payload(self, tenant_id: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], RedactionMeta]:
        """A JSON payload with secrets masked, paths rooted at ``$``."""
Bind = Callable[[str, str, Sequence[Span]], Sequence[tuple[str | None, str | None]]]
"""(tenant_id, project_id, an export's raw spans) → (binding, decision_token_id) of each, in order, checked
BEFORE redaction so the decision token and the recorded tool arguments are seen as the agent sent them.
Injected by the server (governance's check); (None, None) for spans it has nothing to say about."""
BindStep = Callable[[str, str, StepDraft], tuple[str | None, str | None]]
"""The same check for a REST step (``POST /v1/runs/{run_id}/steps``), before redaction."""

AcceptedSpans = Callable[[str, Sequence[Span]], None]
"""(tenant_id, spans) called after an OTLP batch is in the WAL, with the REDACTED spans that were accepted
(duplicates left out, trace and span ids unchanged). Injected by the server (forwarding downstream); it
must neither raise nor block on the network."""
AcceptedLogs = Callable[[str, Sequence[LogRecord]], None]
"""(tenant_id, records) called after a logs export's content steps are in the WAL, with the log records of the
accepted steps (duplicates left out), masked by the same tenant rules and key as the stored steps. Injected by
the server (forwarding downstream); it must neither raise nor block on the network."""

IDLE_END = "idle_end"
"""The WAL record kind that ends idle log-only runs (``store.runs.idle_log_only_runs``)."""

_DRAFT_FIELDS = tuple(f.name for f in dataclasses.fields(StepDraft))
Fields = dict[str, Any]
"""A step draft as a dict of its fields in ``StepDraft`` order (``mapping.step_fields``): the hot path's form."""


@dataclass(slots=True)
class _RunSeq:
    next_seq: int
    seen: set[str] = field(default_factory=set)
    has_history: bool = False  # the run had flushed spans before this entry was loaded
    pending_until: int = 0  # WAL position of the last record that assigned a seq here


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to an accepted batch."""

    accepted: int
    duplicates: int
    wal_position: int
    accepted_keys: frozenset[tuple[str, str]] = frozenset()
    """(run_id, span_id) of the accepted steps, filled only when some of the batch were duplicates."""


class Sequencer:
    """Per-run seq counters and dedupe sets, authoritative for spans not yet flushed.

    An entry may be evicted only once everything it assigned is flushed; then the run
    index holds the same facts (step_count = next seq, spans table = seen ids).
    """

    def __init__(self, index: RunIndex, *, max_runs: int = 50_000) -> None:
        self.index = index
        self.max_runs = max_runs
        self._runs: OrderedDict[tuple[str, str], _RunSeq] = OrderedDict()
        self._flushed = 0

    def entry(self, tenant_id: str, run_id: str) -> _RunSeq:
        """The (possibly freshly loaded) state of one run."""
        key = (tenant_id, run_id)
        state = self._runs.get(key)
        if state is None:
            row = self.index.get_run_row(tenant_id, run_id)
            state = _RunSeq(next_seq=row["step_count"] if row else 0, has_history=row is not None)
            self._runs[key] = state
            self._evict()
        else:
            self._runs.move_to_end(key)
        return state

    def load(self, tenant_id: str, run_ids: Iterable[str]) -> None:
        """Load the runs not cached yet with one index query instead of one each (each query waits for
        the GIL again, which under load costs more than the query)."""
        missing = [r for r in run_ids if (tenant_id, r) not in self._runs]
        if not missing:
            return
        counts = self.index.step_counts(tenant_id, missing)
        for run_id in missing:
            count = counts.get(run_id)
            self._runs[(tenant_id, run_id)] = _RunSeq(next_seq=count or 0, has_history=count is not None)
        self._evict()

    def exists(self, tenant_id: str, run_id: str) -> bool:
        """Whether the run is known (pending in the WAL or in the index)."""
        return (tenant_id, run_id) in self._runs or self.index.get_run_row(tenant_id, run_id) is not None

    def duplicates(self, tenant_id: str, run_id: str, span_ids: Sequence[str]) -> set[str]:
        """Which of these span ids are already taken (stored, pending, or repeated in the list); no side effects."""
        state = self.entry(tenant_id, run_id)
        fresh = [s for s in span_ids if s not in state.seen]
        taken = {s for s in span_ids if s in state.seen}
        if state.has_history and fresh:
            taken |= self.index.known_span_ids(tenant_id, run_id, fresh)
        seen: set[str] = set()
        for span_id in span_ids:
            if span_id in seen:
                taken.add(span_id)
            seen.add(span_id)
        return taken

    def assign(self, tenant_id: str, run_id: str, span_ids: Sequence[str]) -> list[int | None]:
        """A seq for each new span id, None for a duplicate (already stored or pending)."""
        state = self.entry(tenant_id, run_id)
        fresh = [s for s in span_ids if s not in state.seen]
        known = self.index.known_span_ids(tenant_id, run_id, fresh) if state.has_history and fresh else set()
        out: list[int | None] = []
        for span_id in span_ids:
            if span_id in state.seen or span_id in known:
                out.append(None)
                continue
            state.seen.add(span_id)
            out.append(state.next_seq)
            state.next_seq += 1
        return out

    def release(self, tenant_id: str, run_id: str, span_ids: Sequence[str]) -> None:
        """Give back the seqs just assigned to these span ids (all of them fresh, nothing assigned since):
        their record never reached the WAL, so a retry must get them again, not be taken for a duplicate."""
        state = self._runs.get((tenant_id, run_id))
        if state is None:
            return  # evicted meanwhile: reloaded from the index, which never saw them
        state.seen.difference_update(span_ids)
        state.next_seq -= len(span_ids)

    def mark_pending(self, tenant_id: str, run_ids: Iterable[str], position: int) -> None:
        """Record that these runs have WAL records up to ``position`` not yet flushed."""
        for run_id in run_ids:
            self._runs[(tenant_id, run_id)].pending_until = position

    def forget(self, tenant_id: str, run_ids: Iterable[str]) -> None:
        """Drop deleted runs (retention), so a late span starts a fresh run at seq 0 instead of
        continuing a count whose steps no longer exist."""
        for run_id in run_ids:
            self._runs.pop((tenant_id, run_id), None)

    def flushed(self, position: int) -> None:
        """The flusher has stored everything up to ``position``."""
        self._flushed = position
        self._evict()

    def _evict(self) -> None:
        while len(self._runs) > self.max_runs:
            key, state = next(iter(self._runs.items()))
            if state.pending_until > self._flushed:
                return  # the oldest entry still has unflushed seqs: keep everything for now
            del self._runs[key]


class IngestPipeline:
    """Redact → map → sequence → WAL, under one lock so seqs reach the log in order."""

    def __init__(self, wal: WriteAheadLog, sequencer: Sequencer, *, redact: Redaction | None = None,
                 bind: Bind | None = None, bind_step: BindStep | None = None,
                 on_accepted: AcceptedSpans | None = None, on_accepted_logs: AcceptedLogs | None = None,
                 pause: Callable[[], None] = no_pause) -> None:
        self.wal = wal
        self.pause = pause
        """Called between stages and every ``CHECK_EVERY_SPANS`` spans of an OTLP batch (``otlp_receiver.priority``)."""
        self.sequencer = sequencer
        self.redact = redact
        self.bind = bind
        self.bind_step = bind_step
        self.on_accepted = on_accepted
        self.on_accepted_logs = on_accepted_logs
        self._lock = threading.Lock()

    def ingest_spans(self, tenant_id: str, project_id: str, spans: Sequence[Span]) -> IngestResult:
        """Make a batch of decoded spans durable. Returns once they are in the WAL."""
        if not spans:
            return IngestResult(0, 0, self.wal.end_position())
        bindings: dict[str, tuple[str | None, str | None]] = (
            dict(zip((s.span_id for s in spans), self.bind(tenant_id, project_id, spans), strict=True))
            if self.bind else {})
        self.pause()
        redacted = self._redact_spans(tenant_id, spans)
        drafts = [fields for _, fields in redacted]
        self.pause()
        summaries: dict[str, dict[str, Any]] = {
            k: _summary_dict(v) for k, v in summarize_runs([s for s, _ in redacted]).items()}
        self.pause()
        result = self._append(tenant_id, project_id, drafts, summaries, bindings)
        if self.on_accepted is not None and result.accepted:
            clean = [s for s, _ in redacted]
            if result.duplicates:
                clean = [s for s in clean if (s.trace_id, s.span_id) in result.accepted_keys]
            self.on_accepted(tenant_id, clean)
        return result

    def ingest_drafts(self, tenant_id: str, project_id: str, drafts: Sequence[StepDraft], *,
                      from_logs: bool = False) -> IngestResult:
        """Append server-made steps (policy decisions, approvals; content steps from logs) to the runs of their
        trace ids.

        The run need not exist yet (an agent asks before its spans are exported): it is created."""
        drafts = [self._redact_draft(tenant_id, d) for d in drafts]
        summaries = _draft_summaries(drafts, from_logs=from_logs)
        return self._append(tenant_id, project_id, [draft_fields(d) for d in drafts], summaries, {})

    def ingest_log_content(self, tenant_id: str, project_id: str, content: LogContent) -> IngestResult:
        """Make the content steps of a logs export durable, then hand their records to ``on_accepted_logs``."""
        result = self.ingest_drafts(tenant_id, project_id, content.drafts, from_logs=True)
        if self.on_accepted_logs is not None and result.accepted:
            records = [record for draft, group in zip(content.drafts, content.sources, strict=True)
                       if not result.duplicates or (draft.trace_id, draft.span_id) in result.accepted_keys
                       for record in group]
            self.on_accepted_logs(tenant_id, self._redact_records(tenant_id, records))
        return result

    def _redact_records(self, tenant_id: str, records: Sequence[LogRecord]) -> list[LogRecord]:
        """Log records masked by the tenant's rules: the rules, key and so markers of their stored content step.

        One redaction pass over the whole export; a record whose fields are clean is returned as it came."""
        if self.redact is None or not records:
            return list(records)
        raw = [_record_fields(r) for r in records]
        clean, meta = self.redact.payload(tenant_id, {"records": raw})
        if meta.is_empty():
            return list(records)
        return [record if fields == before else dataclasses.replace(record, **fields)
                for record, before, fields in zip(records, raw, clean["records"], strict=True)]

    def _append(self, tenant_id: str, project_id: str, drafts: Sequence[Fields],
                summaries: dict[str, dict[str, Any]],
                bindings: dict[str, tuple[str | None, str | None]]) -> IngestResult:
        by_run: dict[str, list[Fields]] = {}
        for draft in drafts:
            by_run.setdefault(draft["trace_id"], []).append(draft)
        with self._lock:
            items = self._sequence(tenant_id, by_run, bindings)
            record = {"kind": "steps", "tenant": tenant_id, "project": project_id,
                      "received_ns": time.time_ns(), "runs": summaries, "items": items}
            position = self._append_or_release(tenant_id, record, items)
            self.sequencer.mark_pending(tenant_id, by_run, position)
        keys = frozenset((item[0], item[2]["span_id"]) for item in items) if len(items) < len(drafts) else frozenset()
        return IngestResult(len(items), len(drafts) - len(items), position, keys)

    def _append_or_release(self, tenant_id: str, record: dict[str, Any], items: Sequence[Sequence[Any]]) -> int:
        """Append a steps record; if it never reached the WAL (a full disk), give its seqs back first."""
        try:
            return self.wal.append(orjson.dumps(record))
        except NotAppendedError:
            by_run: dict[str, list[str]] = {}
            for item in items:
                by_run.setdefault(item[0], []).append(item[2]["span_id"])
            for run_id, span_ids in by_run.items():
                self.sequencer.release(tenant_id, run_id, span_ids)
            raise

    def _redact_spans(self, tenant_id: str, spans: Sequence[Span]) -> list[tuple[Span, Fields]]:
        """Redact first, so names, run summaries, error text and payload all derive from safe data.

        For the (rare) span that had something masked, the raw span is mapped too, only to locate
        the masked values in the stored payload's shape; that raw copy never leaves this function."""
        if self.redact is None:
            return [(span, step_fields(span)) for span in paced(spans, self.pause)]
        out: list[tuple[Span, Fields]] = []
        for span, (clean, meta) in paced(zip(spans, self.redact.spans(tenant_id, spans), strict=True), self.pause):
            if meta.is_empty():
                out.append((span, step_fields(span)))
                continue
            fields = step_fields(clean)
            paths = changed_paths(step_fields(span)["payload"], fields["payload"])
            if clean.name != span.name:
                paths.insert(0, "$.name")
            fields["redaction_meta"] = RedactionMeta(tuple(paths), meta.rules)
            out.append((clean, fields))
        return out

    def _sequence(self, tenant_id: str, by_run: dict[str, list[Fields]],
                  bindings: dict[str, tuple[str | None, str | None]]) -> list[list[Any]]:
        items: list[list[Any]] = []
        self.sequencer.load(tenant_id, by_run)
        for run_id, drafts in by_run.items():
            drafts.sort(key=_seq_order)
            seqs = self.sequencer.assign(tenant_id, run_id, [d["span_id"] for d in drafts])
            for seq, d in zip(seqs, drafts, strict=True):
                if seq is None:
                    continue
                if not len(items) % CHECK_EVERY_SPANS:
                    self.pause()  # under the pipeline lock: other exports wait too, and so they should
                items.append(fields_wal_item(run_id, seq, d, bindings.get(d["span_id"])))
        return items

    # -- REST ingest -----------------------------------------------------------------------------------------

    def create_run(self, tenant_id: str, project_id: str, run: dict[str, Any]) -> int:
        """Register a REST-created run (``run`` holds run_id, name, tags, started_ns, ...)."""
        with self._lock:
            if self.sequencer.exists(tenant_id, run["run_id"]):
                raise ConflictError(f"run {run['run_id']} already exists")
            self.sequencer.entry(tenant_id, run["run_id"])
            record = {"kind": "run", "tenant": tenant_id, "project": project_id, "run": run}
            try:
                position = self.wal.append(orjson.dumps(record))
            except NotAppendedError:
                self.sequencer.forget(tenant_id, [run["run_id"]])  # it does not exist: a retry must create it
                raise
            self.sequencer.mark_pending(tenant_id, [run["run_id"]], position)
        return position

    def append_steps(self, tenant_id: str, project_id: str, run_id: str,
                     drafts: Sequence[StepDraft]) -> tuple[list[int], int]:
        """Append REST steps to an existing run; returns their seqs (in request order) and the WAL position."""
        bindings = {d.span_id: self.bind_step(tenant_id, project_id, d) for d in drafts} if self.bind_step else {}
        drafts = [self._redact_draft(tenant_id, d) for d in drafts]
        with self._lock:
            if not self.sequencer.exists(tenant_id, run_id):
                raise NotFoundError(f"run {run_id} not found")
            span_ids = [d.span_id for d in drafts]
            if self.sequencer.duplicates(tenant_id, run_id, span_ids):
                raise ConflictError("a step with this span_id already exists in the run")
            # All fresh (duplicates() found none, under the same lock), so assign() gives every draft a seq.
            seqs = [s for s in self.sequencer.assign(tenant_id, run_id, span_ids) if s is not None]
            items = [wal_item(run_id, seq, d, bindings.get(d.span_id)) for seq, d in zip(seqs, drafts, strict=True)]
            record = {"kind": "steps", "tenant": tenant_id, "project": project_id,
                      "received_ns": time.time_ns(), "runs": {}, "items": items}
            position = self._append_or_release(tenant_id, record, items)
            self.sequencer.mark_pending(tenant_id, [run_id], position)
        return seqs, position

    def _redact_draft(self, tenant_id: str, draft: StepDraft) -> StepDraft:
        """REST and server-made steps: the payload (paths rooted at ``$``) and the free-text fields."""
        if self.redact is None:
            return draft
        payload, meta = self.redact.payload(tenant_id, draft.payload)
        texts = {k: v for k, v in (("name", draft.name), ("error_message", draft.error_message)) if v}
        fixed, field_meta = self.redact.payload(tenant_id, texts)
        if meta.is_empty() and field_meta.is_empty():
            return draft
        rules = tuple(dict.fromkeys((*field_meta.rules, *meta.rules)))
        return dataclasses.replace(
            draft, payload=dict(payload), name=fixed.get("name", draft.name),
            error_message=fixed.get("error_message", draft.error_message),
            redaction_meta=RedactionMeta((*field_meta.paths, *meta.paths), rules))

    def forget_runs(self, tenant_id: str, run_ids: Sequence[str]) -> None:
        """Retention deleted these runs: forget their seq counters and dedupe sets."""
        with self._lock:
            self.sequencer.forget(tenant_id, run_ids)

    def end_idle_runs(self, runs: Sequence[tuple[str, str, int, int]]) -> int:
        """End log-only runs found idle: (tenant, run_id, finished_ns, step_count when found) each. Applied by the
        flusher only to a run still running, log-only and at that step count; returns the WAL position."""
        record = {"kind": IDLE_END, "runs": [list(run) for run in runs]}
        with self._lock:
            return self.wal.append(orjson.dumps(record))

    def finish_run(self, tenant_id: str, run_id: str, status: RunStatus, finished_ns: int) -> int:
        """Record an explicit finish (idempotent: the first finish wins)."""
        with self._lock:
            if not self.sequencer.exists(tenant_id, run_id):
                raise NotFoundError(f"run {run_id} not found")
            record = {"kind": "finish", "tenant": tenant_id, "run_id": run_id,
                      "status": status.value, "finished_ns": finished_ns}
            return self.wal.append(orjson.dumps(record))


def _draft_summaries(drafts: Sequence[StepDraft], *, from_logs: bool) -> dict[str, dict[str, Any]]:
    """One summary per run: its drafts' earliest start and latest end, and whether they came from logs."""
    times: dict[str, tuple[int, int]] = {}
    for d in drafts:
        first, last = times.get(d.trace_id, (d.start_ns, d.end_ns))
        times[d.trace_id] = (min(first, d.start_ns), max(last, d.end_ns))
    return {run_id: _summary_dict(RunSummary(run_id=RunId(run_id), first_start_ns=first, last_end_ns=last,
                                             from_logs=from_logs)) for run_id, (first, last) in times.items()}


def _record_fields(record: LogRecord) -> dict[str, Any]:
    """The free-form fields of a log record, which redaction may change (ids, times and names it may not)."""
    return {"severity_text": record.severity_text, "body": record.body, "attributes": dict(record.attributes),
            "resource": dict(record.resource)}


def _seq_order(fields: Fields) -> tuple[int, str]:
    return fields["start_ns"], fields["span_id"]


def draft_fields(draft: StepDraft) -> Fields:
    """A draft as a dict of its fields (the form :func:`fields_wal_item` takes)."""
    return {name: getattr(draft, name) for name in _DRAFT_FIELDS}


def wal_item(run_id: str, seq: int, draft: StepDraft,
             binding: tuple[str | None, str | None] | None = None) -> list[Any]:
    """The WAL form of one sequenced step: ``[run_id, seq, fields, payload_text, payload_hash]``."""
    return fields_wal_item(run_id, seq, draft_fields(draft), binding)


def fields_wal_item(run_id: str, seq: int, fields: Fields,
                    binding: tuple[str | None, str | None] | None = None) -> list[Any]:
    """:func:`wal_item` of a draft's field dict, which it turns into the WAL's ``fields`` (in place)."""
    payload = fields["payload"]
    fields["binding"], fields["decision_token_id"] = binding or (None, None)
    del fields["payload"]
    del fields["decision_token"]  # the binding hook saw it; only its jti (decision_token_id) is kept
    meta: RedactionMeta = fields["redaction_meta"]
    fields["redaction_meta"] = None if meta.is_empty() else redaction_meta_to_dict(meta)
    resource = payload.get("resource") or {}
    env = resource.get("deployment.environment.name", resource.get("deployment.environment"))
    fields["service"] = _str(resource.get("service.name"))
    fields["service_version"] = _str(resource.get("service.version"))
    fields["environment"] = _str(env)
    payload_text, payload_hash = encode_payload(payload)
    return [run_id, seq, fields, payload_text, payload_hash]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def redaction_meta_to_dict(meta: RedactionMeta) -> dict[str, Any]:
    """The wire form ``{"paths": [...], "rules": [{"rule_id", "reason"}]}``."""
    return {"paths": list(meta.paths),
            "rules": [{"rule_id": r.rule_id, "reason": r.reason} for r in meta.rules]}


def redaction_meta_from_dict(data: dict[str, Any]) -> RedactionMeta:
    """Inverse of :func:`redaction_meta_to_dict`."""
    return RedactionMeta(paths=tuple(data.get("paths", ())),
                         rules=tuple(RedactionRuleHit(r["rule_id"], r["reason"]) for r in data.get("rules", ())))


def changed_paths(raw: Any, clean: Any, path: str = "$") -> list[str]:
    """JSONPaths where ``clean`` differs from ``raw`` (same shape but for masked values and keys)."""
    if isinstance(raw, dict) and isinstance(clean, dict):
        if raw.keys() != clean.keys():
            return [path]  # a masked map key: the whole map is where the redaction is
        return [p for k in raw for p in changed_paths(raw[k], clean[k], _child(path, k))]
    if isinstance(raw, list) and isinstance(clean, list) and len(raw) == len(clean):
        return [p for i, (a, b) in enumerate(zip(raw, clean, strict=True)) for p in changed_paths(a, b, f"{path}[{i}]")]
    return [] if raw == clean else [path]


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{orjson.dumps(key).decode()}]"


def _summary_dict(summary: RunSummary) -> dict[str, Any]:
    out = dataclasses.asdict(summary)
    out["tags"] = dict(summary.tags)
    out["root_status"] = summary.root_status.value if summary.root_status else None
    return out
