"""Deterministic failure scan: findings about a run from its steps (no model, no randomness).

Kinds (each links to the step(s) it is about by ``seq``):

- ``tool_error``: tool steps that failed (one finding per tool per run);
- ``permission_denied``: error text (or a tool's output) saying access was refused;
- ``loop``: ``LOOP_MIN_REPEATS`` or more consecutive tool calls with the same tool and the same
  recorded arguments (payload ``input``); calls without recorded arguments are not compared;
- ``retry_storm``: ``RETRY_STORM_MIN_CALLS`` calls of one tool within ``RETRY_STORM_WINDOW_NS``
  of which at least ``RETRY_STORM_MIN_ERRORS`` failed;
- ``abrupt_end``: a running run idle past the idle window, or a finished (not canceled) run
  that produced no output at all (model, span or log-content output: a conversation that
  ends on a user turn never answered is one);
- ``user_rejection``: a short negative user message right after an assistant message, seen in a
  model step's input messages;
- ``cost_spike`` / ``latency_spike``: the run's cost / duration above the agent's recent p99
  times a factor (only with a baseline of at least ``BASELINE_MIN_RUNS`` runs);
- ``unbound_execution``: a step whose decision-token binding is missing/invalid/expired/
  args_mismatch/replayed; ``policy_violation``: a failed policy step that is not such a binding.

A finding's id is the sha256 of ``run_id:kind:first seq``, so scanning a run again yields the
same ids. The string work (JSON paths into payloads, regular expressions) is vectorised in one
polars query per call; the per-run logic (streaks, windows, first sightings) is a Python loop over
the run's few dozen prepared rows, which is faster than a polars plan per detector for small
runs. :func:`scan_runs` prepares a whole batch in one query: use it when runs finish together.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, Final, NamedTuple

import orjson
import polars as pl

LOOP_MIN_REPEATS: Final = 3
"""Consecutive identical tool calls (same tool, same arguments) that make a loop."""
RETRY_STORM_MIN_CALLS: Final = 5
"""Calls of one tool, within ``RETRY_STORM_WINDOW_NS``, that make a retry storm..."""
RETRY_STORM_MIN_ERRORS: Final = 2
"""...when at least this many of them failed."""
RETRY_STORM_WINDOW_NS: Final = 60 * 10**9
"""Time from the first to the last start of the calls of a retry storm."""
USER_REJECTION_MAX_CHARS: Final = 60
"""A user message longer than this is a new request, not a rejection."""
USER_REJECTION_PATTERN: Final = r"(?i)\b(?:no|nope|stop|wrong|incorrect|not what|broken|undo|that's not)\b"
"""Words of a negative user turn (after spec 001 §5.6)."""
USER_REJECTION_EXCEPTIONS: Final = r"(?i)\bno (?:problem|worries)\b"
"""Turns that contain a negative word but are not a rejection."""
PERMISSION_DENIED_PATTERN: Final = r"(?i)permission denied|forbidden|\b403\b|unauthori[sz]ed|access denied"
"""Error text (error type or message) of a refused access."""
PERMISSION_DENIED_OUTPUT_PATTERN: Final = r"(?i)permission denied|access denied"
"""The same in a tool's output, limited to phrases that rarely occur by chance."""
COST_SPIKE_FACTOR: Final = 2.0
"""A run costing more than the agent's p99 cost times this is a cost spike."""
LATENCY_SPIKE_FACTOR: Final = 2.0
"""A run lasting longer than the agent's p99 duration times this is a latency spike."""
BASELINE_MIN_RUNS: Final = 20
"""Fewer finished runs than this in the baseline window: no spike findings (p99 is noise)."""
UNBOUND_BINDINGS: Final = ("missing", "invalid", "expired", "args_mismatch", "replayed")
"""Binding outcomes of a gated tool execution that was not bound to a valid decision."""
SEVERITY: Final[Mapping[str, str]] = {
    "tool_error": "error",
    "permission_denied": "error",
    "loop": "warning",
    "retry_storm": "warning",
    "abrupt_end": "warning",
    "user_rejection": "warning",
    "cost_spike": "warning",
    "latency_spike": "warning",
    "unbound_execution": "error",
    "policy_violation": "error",
}
"""Severity per kind: info | warning | error."""
_NO_OUTPUT: Final = ("", "[]", "{}", "null", '""')
_REJECTION: Final = re.compile(USER_REJECTION_PATTERN)
_NOT_A_REJECTION: Final = re.compile(USER_REJECTION_EXCEPTIONS)


@dataclass(frozen=True)
class Finding:
    """Something a person should look at in a run."""

    finding_id: str
    run_id: str
    kind: str
    severity: str
    message: str
    step_seqs: tuple[int, ...]
    detected_ns: int


@dataclass(frozen=True)
class Baseline:
    """An agent's recent normal: p99 cost and duration over its finished runs in a window."""

    agent: str
    runs: int
    cost_p99_usd: float | None
    duration_p99_ns: int | None


def finding_id(run_id: str, kind: str, first_seq: int) -> str:
    """The deterministic id of a finding: sha256 of ``run_id:kind:first seq`` (32 hex chars)."""
    return hashlib.sha256(f"{run_id}:{kind}:{first_seq}".encode()).hexdigest()[:32]


def agent_baselines(runs: pl.LazyFrame, *, window_ns: int, now_ns: int) -> dict[str, Baseline]:
    """Per agent, p99 cost and p99 duration of its finished runs started in the last ``window_ns``."""
    recent = runs.filter(
        (pl.col("started_ns") >= now_ns - window_ns)
        & (pl.col("started_ns") < now_ns)
        & (pl.col("status") != "running")
        & pl.col("agent").is_not_null()
    )
    table = recent.group_by("agent").agg(
        runs=pl.len(),
        cost=pl.col("cost_usd").quantile(0.99, "linear"),
        duration=pl.col("duration_ns").quantile(0.99, "linear").round().cast(pl.Int64),
    )
    return {
        row["agent"]: Baseline(row["agent"], row["runs"], row["cost"], row["duration"])
        for row in table.collect().iter_rows(named=True)
    }


def scan_run(
    run: Mapping[str, Any],
    steps: pl.DataFrame,
    *,
    now_ns: int,
    idle_window_ns: int,
    agent_baseline: Baseline | None,
) -> list[Finding]:
    """Findings of one run (a ``RUN_COLUMNS`` mapping) from its steps (a ``STEP_COLUMNS`` frame)."""
    return _scan_one(run, _prepare(steps), now_ns, idle_window_ns, agent_baseline)


def scan_runs(
    runs: pl.DataFrame,
    steps: pl.DataFrame,
    *,
    now_ns: int,
    idle_window_ns: int,
    baselines: Mapping[str, Baseline],
) -> list[Finding]:
    """Findings of many runs from their steps, prepared in one batch, in run order.

    ``runs`` needs run_id, agent, status, started_ns, duration_ns and cost_usd (``RUN_COLUMNS``
    has them); ``steps`` the :func:`step_columns` of those runs' steps (more are ignored), in any order.
    """
    by_run = {run_id: list(rows) for run_id, rows in groupby(_prepare(steps), key=itemgetter(0))}
    findings = []
    for run in runs.iter_rows(named=True):
        baseline = baselines.get(run.get("agent") or "")
        findings += _scan_one(run, by_run.get(run["run_id"], []), now_ns, idle_window_ns, baseline)
    return findings


@functools.cache
def step_columns() -> tuple[str, ...]:
    """The step columns :func:`scan_runs` reads: a caller loading steps for it may leave out the others
    (the hashes, ids and redaction metadata), which saves reading them."""
    names = (name for expr in _prepared_columns() for name in expr.meta.root_names())
    return tuple(dict.fromkeys(names))


# --- preparation: the vectorised part ---------------------------------------------------------


class _Step(NamedTuple):
    """A step as the detectors read it: the columns they need and the features derived from them."""

    run_id: str
    seq: int
    type: str
    name: str
    status: str
    tool: str | None
    start_ns: int
    end_ns: int
    cost_usd: float | None
    duration_ns: int
    binding: str | None
    error_message: str | None
    args: str | None
    """A tool step's payload ``input`` as JSON text (None when not recorded)."""
    has_output: bool
    """A model, span or artifact step with a non-empty payload ``output`` (an artifact: the content a model's
    log records carried, ``otlp_receiver/log_content.py``)."""
    refused: str | None
    """The text saying access was refused, when it does."""
    payload: str | None
    """The payload of a model step that may hold a user rejection (None for the others)."""


def _prepare(steps: pl.DataFrame) -> list[_Step]:
    """``_Step`` rows sorted by run and seq, their JSON paths and patterns computed all at once.

    Sorted in Python: for one run's few dozen rows a polars sort costs ten times more.
    """
    # Lazy, so that the JSON paths several columns read (output, input) are parsed once, not per column.
    rows = [_Step(*row) for row in steps.lazy().select(_prepared_columns()).collect().iter_rows()]
    rows.sort(key=itemgetter(0, 1))
    return rows


@functools.cache
def _prepared_columns() -> list[pl.Expr]:
    """The ``_Step`` columns as expressions, built once: building them costs as much as running
    them on a 50-step run."""
    kind, payload = pl.col("type"), pl.col("payload")
    error_text = pl.concat_str("error_type", "error_message", separator=": ", ignore_nulls=True)
    output = payload.str.json_path_match("$.output")
    tool_refusal = pl.when(kind == "tool").then(output).str.contains(PERMISSION_DENIED_OUTPUT_PATTERN)
    # The payload's input, unquoted when it is JSON text: a user turn after an answer, with a rejection word in it.
    # (The whole payload would let most model steps through: "stop" is also a finish reason.)
    given = payload.str.json_path_match("$.input")
    maybe_rejection = (
        (kind == "model")
        & given.str.contains(r'(?i)"(?:user|human)"')
        & given.str.contains(r'(?i)"(?:assistant|ai|model)"')
        & given.str.contains(USER_REJECTION_PATTERN)
    ).fill_null(False)
    derived = {
        "args": pl.when(kind == "tool").then(payload.str.json_path_match("$.input")),
        "has_output": kind.is_in(("model", "span", "artifact")) & ~output.fill_null("").is_in(_NO_OUTPUT),
        "refused": pl.when(error_text.str.contains(PERMISSION_DENIED_PATTERN))
        .then(error_text)
        .when(tool_refusal)
        .then(output.str.slice(0, 200)),
        "payload": pl.when(maybe_rejection).then(payload),
    }
    plain = ["run_id", "seq", "type", "name", "status", "tool_name", "start_ns", "end_ns", "cost_usd"]
    plain += ["duration_ns", "binding", "error_message"]
    return [pl.col(name) for name in plain] + [expr.alias(name) for name, expr in derived.items()]


# --- per-run detectors ---------------------------------------------------------------------------

_Hit = tuple[str, Sequence[int], str]
"""(kind, step seqs, message)."""


def _scan_one(
    run: Mapping[str, Any], steps: list[_Step], now_ns: int, idle_window_ns: int, baseline: Baseline | None
) -> list[Finding]:
    tools = [step for step in steps if step.type == "tool"]
    hits = [
        *_tool_errors(tools),
        *_permission_denied(steps),
        *_loops(tools),
        *_retry_storms(tools),
        *_abrupt_end(run, steps, now_ns, idle_window_ns),
        *_user_rejections(steps),
        *_spikes(run, steps, baseline),
        *_governance(steps),
    ]
    findings = [_finding(run["run_id"], kind, tuple(seqs), message, now_ns) for kind, seqs, message in hits]
    return sorted(findings, key=lambda f: (f.step_seqs[:1] or (-1,), f.kind))


def _finding(run_id: str, kind: str, seqs: tuple[int, ...], message: str, now_ns: int) -> Finding:
    first_seq = seqs[0] if seqs else -1
    return Finding(finding_id(run_id, kind, first_seq), run_id, kind, SEVERITY[kind], message, seqs, now_ns)


def _tool_errors(tools: list[_Step]) -> Iterator[_Hit]:
    failed: dict[str, list[_Step]] = {}
    for step in tools:
        if step.status == "error":
            failed.setdefault(step.tool or "?", []).append(step)
    for tool, calls in failed.items():
        error = next((call.error_message for call in calls if call.error_message), "no error message")
        yield "tool_error", [call.seq for call in calls], f"tool {tool} failed {len(calls)} time(s): {error}"


def _permission_denied(steps: list[_Step]) -> Iterator[_Hit]:
    refused = [step for step in steps if step.refused is not None]
    if refused:
        yield "permission_denied", [step.seq for step in refused], f"access refused: {refused[0].refused}"


def _loops(tools: list[_Step]) -> Iterator[_Hit]:
    """Streaks of consecutive calls with the same tool and the same recorded arguments."""
    streaks = groupby(tools, key=lambda step: (step.tool, step.args))
    for (tool, args), streak in streaks:
        seqs = [step.seq for step in streak]
        if args is not None and len(seqs) >= LOOP_MIN_REPEATS:
            yield "loop", seqs, f"{len(seqs)} identical calls of tool {tool} in a row"


def _retry_storms(tools: list[_Step]) -> Iterator[_Hit]:
    """Per tool, every call inside a window of ``RETRY_STORM_MIN_CALLS`` calls that qualifies."""
    n = RETRY_STORM_MIN_CALLS
    by_tool: dict[str | None, list[_Step]] = {}
    for step in sorted(tools, key=lambda s: (s.start_ns, s.seq)):
        by_tool.setdefault(step.tool, []).append(step)
    for tool, calls in by_tool.items():
        members: set[_Step] = set()
        for first in range(len(calls) - n + 1):
            window = calls[first : first + n]
            fast = window[-1].start_ns - window[0].start_ns <= RETRY_STORM_WINDOW_NS
            if fast and sum(call.status == "error" for call in window) >= RETRY_STORM_MIN_ERRORS:
                members.update(window)
        if members:
            errors = sum(call.status == "error" for call in members)
            message = f"tool {tool} called {len(members)} times in quick succession, {errors} failed"
            yield "retry_storm", sorted(call.seq for call in members), message


def _abrupt_end(
    run: Mapping[str, Any], steps: list[_Step], now_ns: int, idle_window_ns: int
) -> Iterator[_Hit]:
    last = steps[-1].seq if steps else None
    seqs = [] if last is None else [last]
    if run["status"] == "running":
        idle_ns = now_ns - max([run["started_ns"], *(step.end_ns for step in steps)])
        if idle_ns > idle_window_ns:
            yield "abrupt_end", seqs, f"still running, no activity for {idle_ns // 10**9} s"
    elif run["status"] in ("succeeded", "failed") and not any(step.has_output for step in steps):
        yield "abrupt_end", seqs, f"run {run['status']} without any output"


def _spikes(run: Mapping[str, Any], steps: list[_Step], baseline: Baseline | None) -> Iterator[_Hit]:
    if baseline is None or baseline.runs < BASELINE_MIN_RUNS:
        return
    cost, p99 = run.get("cost_usd"), baseline.cost_p99_usd
    if cost is not None and p99 and cost > p99 * COST_SPIKE_FACTOR:
        message = f"cost ${cost:.4g} is {cost / p99:.1f}x the agent's recent p99 (${p99:.4g})"
        yield "cost_spike", _top_seq(steps, lambda s: s.cost_usd), message
    duration, p99_ns = run.get("duration_ns"), baseline.duration_p99_ns
    if duration is not None and p99_ns and duration > p99_ns * LATENCY_SPIKE_FACTOR:
        seconds, p99_s = duration / 1e9, p99_ns / 1e9
        message = f"duration {seconds:.1f} s is {seconds / p99_s:.1f}x the agent's recent p99 ({p99_s:.1f} s)"
        yield "latency_spike", _top_seq(steps, lambda s: s.duration_ns if s.type != "span" else None), message


def _top_seq(steps: Iterable[_Step], value: Any) -> list[int]:
    """The seq of the step with the highest non-null ``value(step)`` (the first on ties), if any."""
    ranked = [(value(step), -step.seq) for step in steps if value(step) is not None]
    return [-max(ranked)[1]] if ranked else []


def _governance(steps: list[_Step]) -> Iterator[_Hit]:
    """unbound_execution for a bad binding, else policy_violation for a failed policy step."""
    for step in steps:
        if step.binding in UNBOUND_BINDINGS:
            yield (
                "unbound_execution",
                [step.seq],
                f"{step.tool or step.name} ran without a valid decision (binding: {step.binding})",
            )
        elif step.type == "policy" and step.status == "error":
            yield (
                "policy_violation",
                [step.seq],
                f"policy {step.name} violated: {step.error_message or 'no detail'}",
            )


def _user_rejections(steps: list[_Step]) -> Iterator[_Hit]:
    """Short negative user turns after an answer, each at the first model step that shows it."""
    first_seen: dict[tuple[int, str], int] = {}
    for step in steps:
        if step.payload is not None:
            for position, text in _rejections(step.payload):
                first_seen.setdefault((position, text), step.seq)
    if first_seen:
        (_, text), _ = min(first_seen.items(), key=lambda item: (item[1], item[0]))
        yield "user_rejection", sorted(set(first_seen.values())), f'user pushed back: "{text}"'


def _rejections(payload: str) -> Iterator[tuple[int, str]]:
    """(position, text) of each short negative user message that follows an assistant message."""
    messages = _input_messages(payload)
    previous = ""
    for position, message in enumerate(messages):
        role = str(message.get("role", "")).lower()
        text = _message_text(message).strip()
        after_answer = role in ("user", "human") and previous in ("assistant", "ai", "model")
        if after_answer and len(text) <= USER_REJECTION_MAX_CHARS and _REJECTION.search(text) \
                and not _NOT_A_REJECTION.search(text):
            yield position, text
        if role != "system":
            previous = role


def _input_messages(payload: str) -> list[dict[str, Any]]:
    """The chat messages of a model step's payload ``input`` (a list, ``{"messages": [...]}``,
    or either one as a JSON string); empty when there are none."""
    try:
        value: Any = orjson.loads(payload).get("input")
        if isinstance(value, str):
            value = orjson.loads(value)
    except (ValueError, AttributeError):
        return []
    if isinstance(value, dict):
        value = value.get("messages")
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def _message_text(message: Mapping[str, Any]) -> str:
    """Text of a message: ``content`` as a string, or the text parts of ``parts``/``content``."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts") if isinstance(message.get("parts"), list) else content
    if not isinstance(parts, list):
        return ""
    texts = [
        p.get("content") or p.get("text")
        for p in parts
        if isinstance(p, dict) and p.get("type", "text") == "text"
    ]
    return " ".join(t for t in texts if isinstance(t, str))
