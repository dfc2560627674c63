"""Builders for diff tests and benchmarks: agent runs from a script of step specs.

A run is built from a list of :class:`StepSpec`; building the same script twice with different
seeds gives two runs that differ only in ids, timestamps and durations (and in the UUIDs, dates and
provider ids embedded in their text). Planted differences are edits of the script.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from otlp_receiver.model import (
    ProjectId,
    Run,
    RunId,
    RunStatus,
    SpanId,
    Step,
    StepDraft,
    StepType,
    TenantId,
    TraceId,
    make_step_id,
)

TENANT = TenantId("tenant-1")
PROJECT = ProjectId("project-1")
T0_NS = 1_760_000_000_000_000_000


@dataclass(frozen=True)
class StepSpec:
    """One step of a run script. ``payload`` strings may hold ``{call_id}``, ``{uuid}``, ``{date}``, ``{resp}``."""

    key: str
    type: StepType
    name: str
    parent: str | None = "root"
    tool_name: str | None = None
    model_name: str | None = None
    status: str = "ok"
    error_type: str | None = None
    error_message: str | None = None
    tokens: tuple[int, int] | None = None
    cost_usd: float | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


def root_spec() -> StepSpec:
    """The structural root span of an agent run."""
    return StepSpec("root", StepType.SPAN, "invoke_agent support-bot", parent=None)


def model_spec(
    key: str, prompt: str, answer: str, *, model: str = "gpt-4o", parent: str = "root"
) -> StepSpec:
    """A chat model call with input/output messages and usage."""
    payload = {
        "input": {"messages": [
            {"role": "system", "parts": [{"type": "text", "content": "You are a support bot. Today is {date}."}]},
            {"role": "user", "parts": [{"type": "text", "content": prompt}]},
        ]},
        "output": {"messages": [{"role": "assistant", "finish_reason": "stop",
                                 "parts": [{"type": "text", "content": answer},
                                           {"type": "tool_call", "id": "{call_id}", "name": "lookup"}]}]},
        "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                       "gen_ai.response.id": "{resp}", "gen_ai.request.temperature": 0.2},
    }  # fmt: skip
    return StepSpec(key, StepType.MODEL, f"chat {model}", parent=parent, model_name=model,
                    tokens=(120, 40), cost_usd=0.0012, payload=payload)  # fmt: skip


def tool_spec(key: str, tool: str, args: Mapping[str, Any], output: Any, *, parent: str = "root") -> StepSpec:
    """A tool execution with arguments, result and a call id."""
    payload = {"input": dict(args), "output": {"result": output, "ticket": "{uuid}", "at": "{date}"},
               "attributes": {"gen_ai.tool.name": tool, "gen_ai.tool.call.id": "{call_id}"}}  # fmt: skip
    return StepSpec(
        key, StepType.TOOL, f"execute_tool {tool}", parent=parent, tool_name=tool, payload=payload
    )


def base_script() -> list[StepSpec]:
    """A small support-agent run: prompt, model, tools (two of them parallel), a final answer."""
    return [
        root_spec(),
        StepSpec("prompt", StepType.PROMPT, "user prompt",
                 payload={"input": {"text": "Where is my order {uuid}? Placed {date}."}}),
        model_spec("plan", "Where is my order?", "Let me look it up."),
        tool_spec("search", "search_orders", {"customer": "c-42", "limit": 5}, ["o-1", "o-2"]),
        tool_spec("fetch", "fetch_order", {"order": "o-1"}, {"state": "shipped", "carrier": "UPS"}),
        tool_spec("weather", "get_weather", {"city": "Paris"}, {"temp_c": 18.5}),
        tool_spec("eta", "carrier_eta", {"carrier": "UPS", "order": "o-1"}, {"days": 2}),
        model_spec("answer", "Summarise for the customer.", "Your order ships in 2 days."),
    ]  # fmt: skip


# --- building runs ---------------------------------------------------------------------------


class _Ids:
    """Seeded id and text-token source for one run."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def hex(self, chars: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(chars))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def build_run(
    script: Sequence[StepSpec], *, seed: int, t0_ns: int = T0_NS, run_status: RunStatus = RunStatus.SUCCEEDED
) -> tuple[Run, list[Step]]:
    """A run and its steps from ``script``: ids from ``seed``, steps 10 ms apart from ``t0_ns``."""
    ids = _Ids(seed)
    trace_id = TraceId(ids.hex(32))
    spans = {spec.key: SpanId(ids.hex(16)) for spec in script}
    drafts = [_draft(spec, k, spans, trace_id, ids, t0_ns) for k, spec in enumerate(script)]
    drafts = _stretch_parents(drafts)
    steps = [
        Step(TENANT, PROJECT, RunId(trace_id), make_step_id(TENANT, trace_id, d.span_id), seq, d)
        for seq, d in enumerate(drafts)
    ]
    return _run_for(RunId(trace_id), trace_id, steps, run_status), steps


def _draft(
    spec: StepSpec, k: int, spans: Mapping[str, SpanId], trace_id: TraceId, ids: _Ids, t0_ns: int
) -> StepDraft:
    start = t0_ns + k * 10_000_000 + ids.rng.randrange(1_000_000)
    tokens = spec.tokens or (None, None)
    call_id = f"call_{ids.hex(12)}" if spec.type is StepType.TOOL else None
    fill = {"{call_id}": call_id or f"call_{ids.hex(12)}", "{uuid}": ids.uuid(), "{resp}": f"chatcmpl-{ids.hex(20)}",
            "{date}": _iso(start)}  # fmt: skip
    return StepDraft(
        trace_id=trace_id, span_id=spans[spec.key], parent_span_id=spans.get(spec.parent) if spec.parent else None,
        type=spec.type, name=spec.name, start_ns=start, end_ns=start + 5_000_000 + ids.rng.randrange(3_000_000),
        status=spec.status, tool_name=spec.tool_name, tool_call_id=call_id, model_name=spec.model_name,
        provider="openai" if spec.model_name else None, tokens_in=tokens[0], tokens_out=tokens[1],
        cost_usd=spec.cost_usd, error_type=spec.error_type, error_message=spec.error_message,
        payload=_fill(spec.payload, fill),
    )  # fmt: skip


def _iso(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _fill(value: Any, tokens: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for token, text in tokens.items():
            value = value.replace(token, text)
        return value
    if isinstance(value, Mapping):
        return {key: _fill(item, tokens) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, tokens) for item in value]
    return value


def _stretch_parents(drafts: list[StepDraft]) -> list[StepDraft]:
    """Make every parent end after its last descendant (children are built after their parent)."""
    end = {d.span_id: d.end_ns for d in drafts}
    parent = {d.span_id: d.parent_span_id for d in drafts}
    for d in drafts:
        up = parent[d.span_id]
        while up is not None and up in end:
            end[up] = max(end[up], d.end_ns)
            up = parent[up]
    return [replace(d, end_ns=end[d.span_id]) for d in drafts]


def run_from_drafts(drafts: Sequence[StepDraft]) -> tuple[Run, list[Step]]:
    """A succeeded run of ``drafts`` (all of one trace, e.g. ``map_span`` output), seqs in the given order."""
    trace_id = drafts[0].trace_id
    steps = [Step(TENANT, PROJECT, RunId(trace_id), make_step_id(TENANT, trace_id, d.span_id), seq, d)
             for seq, d in enumerate(drafts)]
    return _run_for(RunId(trace_id), trace_id, steps, RunStatus.SUCCEEDED), steps


def _run_for(run_id: RunId, trace_id: TraceId, steps: Sequence[Step], status: RunStatus) -> Run:
    drafts = [s.draft for s in steps]
    models = tuple(dict.fromkeys(d.model_name for d in drafts if d.model_name))
    tools = tuple(dict.fromkeys(d.tool_name for d in drafts if d.tool_name))
    costs = [d.cost_usd for d in drafts if d.cost_usd is not None]
    return Run(
        tenant_id=TENANT, project_id=PROJECT, run_id=run_id, trace_id=trace_id, parent_run_id=None,
        status=status, name="support-bot", started_ns=min(d.start_ns for d in drafts),
        finished_ns=max(d.end_ns for d in drafts), tags={}, model_names=models, tool_names=tools,
        tool_count=sum(d.type is StepType.TOOL for d in drafts), step_count=len(drafts),
        error_count=sum(d.status == "error" for d in drafts),
        tokens_in=sum(d.tokens_in or 0 for d in drafts), tokens_out=sum(d.tokens_out or 0 for d in drafts),
        tokens_cache_read=0, tokens_cache_write=0, tokens_reasoning=0,
        cost_usd=round(sum(costs), 9) if costs else None, cost_source="reported" if costs else None,
    )  # fmt: skip


# --- planted differences ---------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """A script edit and what the default-profile diff must report: ``(status, a key, b key, paths)``."""

    name: str
    edit: Callable[[list[StepSpec]], list[StepSpec]]
    expected: tuple[tuple[str, str | None, str | None, tuple[str, ...]], ...]


def _at(script: list[StepSpec], key: str) -> int:
    return next(k for k, spec in enumerate(script) if spec.key == key)


def _replace_spec(script: list[StepSpec], key: str, **changes: Any) -> list[StepSpec]:
    out = list(script)
    out[_at(out, key)] = replace(out[_at(out, key)], **changes)
    return out


def _insert_retry(script: list[StepSpec]) -> list[StepSpec]:
    failed = replace(script[_at(script, "fetch")], key="fetch_retry", status="error", error_type="TimeoutError",
                     error_message="upstream timed out")  # fmt: skip
    return script[: _at(script, "fetch")] + [failed] + script[_at(script, "fetch") :]


def _remove_tool(script: list[StepSpec]) -> list[StepSpec]:
    return [spec for spec in script if spec.key != "search"]


def _swap_parallel(script: list[StepSpec]) -> list[StepSpec]:
    out = list(script)
    i, j = _at(out, "weather"), _at(out, "eta")
    out[i], out[j] = out[j], out[i]
    return out


def _change_model(script: list[StepSpec]) -> list[StepSpec]:
    spec = model_spec(
        "answer", "Summarise for the customer.", "Your order ships in 2 days.", model="gpt-4o-mini"
    )
    return _replace_spec(script, "answer", name=spec.name, model_name=spec.model_name, payload=spec.payload)


def _change_prompt(script: list[StepSpec]) -> list[StepSpec]:
    payload = {"input": {"text": "Where is my parcel {uuid}? Placed {date}."}}
    return _replace_spec(script, "prompt", payload=payload)


def _change_argument(script: list[StepSpec]) -> list[StepSpec]:
    spec = tool_spec("fetch", "fetch_order", {"order": "o-2"}, {"state": "shipped", "carrier": "UPS"})
    return _replace_spec(script, "fetch", payload=spec.payload)


def _change_output(script: list[StepSpec]) -> list[StepSpec]:
    spec = tool_spec("eta", "carrier_eta", {"carrier": "UPS", "order": "o-1"}, {"days": 5})
    return _replace_spec(script, "eta", payload=spec.payload)


def _change_status(script: list[StepSpec]) -> list[StepSpec]:
    return _replace_spec(
        script, "weather", status="error", error_type="HTTPError", error_message="502 from upstream"
    )


PLANTED: tuple[Planted, ...] = (
    Planted("inserted_retry", _insert_retry, (("added", None, "fetch_retry", ()),)),
    Planted("removed_tool_call", _remove_tool, (("removed", "search", None, ()),)),
    Planted("swapped_parallel_calls", _swap_parallel, (("moved", "weather|eta", "weather|eta", ()),)),
    Planted("changed_model", _change_model, (("changed", "answer", "answer", (
        "$.model_name", "$.name", "$.payload.attributes['gen_ai.request.model']")),)),
    Planted("changed_prompt_text", _change_prompt, (("changed", "prompt", "prompt", ("$.payload.input.text",)),)),
    Planted("changed_tool_argument", _change_argument, (("changed", "fetch", "fetch", ("$.payload.input.order",)),)),
    Planted("changed_output", _change_output, (("changed", "eta", "eta", ("$.payload.output.result.days",)),)),
    Planted("changed_status", _change_status, (("changed", "weather", "weather", (
        "$.error_message", "$.error_type", "$.status")),)),
    Planted("identical_but_ids_and_times", list, ()),
)  # fmt: skip
"""The correctness fixture set: each edit of :func:`base_script` and exactly what it must produce."""


def planted_pair(planted: Planted) -> tuple[Run, list[Step], Run, list[Step], dict[str, str]]:
    """Run A from the base script, run B from the edited one (other seed, later start).

    Returns ``(run_a, steps_a, run_b, steps_b, span_keys)`` where ``span_keys`` maps every span id
    of both runs back to its script key, so tests can name steps.
    """
    script_a, script_b = base_script(), planted.edit(base_script())
    run_a, steps_a = build_run(script_a, seed=1)
    run_b, steps_b = build_run(script_b, seed=2, t0_ns=T0_NS + 86_400_000_000_000)
    keys = {s.draft.span_id: spec.key for s, spec in zip(steps_a, script_a, strict=True)}
    keys |= {s.draft.span_id: spec.key for s, spec in zip(steps_b, script_b, strict=True)}
    return run_a, steps_a, run_b, steps_b, keys


# --- synthetic runs for benchmarks and properties ----------------------------------------------

_WORDS = (
    "order", "shipment", "carrier", "invoice", "refund", "customer", "account", "parcel", "delay", "route",
    "warehouse", "address", "status", "tracking", "label", "return", "policy", "window", "payment", "card",
    "charge", "balance", "ticket", "agent", "escalate", "weather", "forecast", "city", "temperature",
    "schedule", "update", "notify", "confirm", "cancel", "search", "result",
)  # fmt: skip
_TOOLS = ("search_orders", "fetch_order", "carrier_eta", "get_weather", "refund_payment", "send_email")


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def synthetic_script(n_steps: int, *, seed: int) -> list[StepSpec]:
    """A realistic agent script of about ``n_steps`` steps with ~1 KB payloads.

    A root span holds iteration spans; each iteration is a model call followed by one to three
    tool calls. All texts are seeded random sentences, so step contents are (almost) all distinct.
    """
    rng = random.Random(seed)
    script = [root_spec()]
    iteration = 0
    while len(script) < n_steps:
        parent = f"it{iteration}"
        script.append(StepSpec(parent, StepType.SPAN, f"agent step {iteration}", parent="root"))
        script.append(model_spec(f"{parent}.model", _sentence(rng, 60), _sentence(rng, 50), parent=parent))
        for call in range(rng.randint(1, 3)):
            args = {"query": _sentence(rng, 8), "limit": rng.randint(1, 20), "page": call}
            output = {"text": _sentence(rng, 70), "score": round(rng.random(), 4)}
            script.append(tool_spec(f"{parent}.tool{call}", rng.choice(_TOOLS), args, output, parent=parent))
        iteration += 1
    return script[:n_steps]


def plant_differences(script: list[StepSpec], *, seed: int) -> list[StepSpec]:
    """Six planted differences at seeded places: retry, removed call, swap, model, argument, output."""
    rng = random.Random(seed)
    out = list(script)
    tools = [spec.key for spec in out if spec.type is StepType.TOOL]
    models = [spec.key for spec in out if spec.type is StepType.MODEL]
    retry, removed, argument, output = rng.sample(tools, 4)
    at = _at(out, retry)
    out.insert(at, replace(out[at], key=f"{retry}.retry", status="error", error_type="TimeoutError"))
    out = [spec for spec in out if spec.key != removed]
    out = _replace_spec(out, rng.choice(models), model_name="gpt-4o-mini")
    out = _replace_spec(
        out, argument, payload={**out[_at(out, argument)].payload, "input": {"query": "changed"}}
    )
    out = _replace_spec(out, output, payload={**out[_at(out, output)].payload, "output": {"text": "changed"}})
    return _swap_first_siblings(out)


def _swap_first_siblings(script: list[StepSpec]) -> list[StepSpec]:
    for k in range(len(script) - 1):
        a, b = script[k], script[k + 1]
        if a.type is b.type is StepType.TOOL and a.parent == b.parent:
            return script[:k] + [b, a] + script[k + 2 :]
    return script


def synthetic_pair(n_steps: int, *, seed: int = 7) -> tuple[Run, list[Step], Run, list[Step]]:
    """A baseline run of ``n_steps`` and a later run of the same script with planted differences."""
    script = synthetic_script(n_steps, seed=seed)
    run_a, steps_a = build_run(script, seed=seed + 1)
    run_b, steps_b = build_run(
        plant_differences(script, seed=seed), seed=seed + 2, t0_ns=T0_NS + 3_600_000_000_000
    )
    return run_a, steps_a, run_b, steps_b
