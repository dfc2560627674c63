"""Run-level usage from steps: the counting rules of semconv.md §6.3.

- Tokens and cost count only on *usage leaves*: a step's usage is skipped when any descendant step
  (through ``parent_span_id`` links among the given steps) reports usage. This covers ``invoke_agent``
  spans that repeat their chat spans' usage, framework wrappers over provider spans and Vercel's
  outer ``ai.generateText`` over ``….doGenerate``.
- Cache and reasoning counts are subsets of input/output: summed separately, never added to them.
- Cost: the step's reported cost where present, else computed from the price table; a model with
  tokens but no price is listed in ``unpriced_models`` and never priced at zero. The total is the
  correctly rounded sum (``math.fsum``), so it does not depend on the order steps are added in.
- Tools: one per executed tool call, deduplicated by tool call id and by collapsing a tool step nested
  under a tool step of the same name (MCP client → MCP server → ``execute_tool``).

``total_usage`` is the definition: it recounts from all of a run's steps. ``otlp_receiver.usage_tally``
keeps the same totals up to date as spans arrive (the flusher's fast path) and is tested against it.

Pure: imports only the standard library and ``otlp_receiver``'s model and pricing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from otlp_receiver.model import StepDraft, StepType
from otlp_receiver.pricing import PriceTable

StepKey = tuple[str, str]  # (trace_id, span_id)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a run's steps add up to."""

    tokens_in: int
    tokens_out: int
    tokens_total: int
    tokens_cache_read: int
    tokens_cache_write: int
    tokens_reasoning: int
    cost_usd: float | None
    cost_source: str | None  # "reported" | "computed" | "mixed" | "unknown" | None
    model_names: tuple[str, ...]
    tool_names: tuple[str, ...]
    tool_count: int
    error_count: int
    unpriced_models: tuple[str, ...]


def _key(step: StepDraft) -> StepKey:
    return step.trace_id, step.span_id


def has_usage(step: StepDraft) -> bool:
    """True when the step reports tokens or a cost."""
    counts = (step.tokens_in, step.tokens_out, step.tokens_total, step.cost_usd)
    return any(count is not None for count in counts)


def has_tokens(step: StepDraft) -> bool:
    """True when the step reports any of input, output or total tokens."""
    return step.tokens_in is not None or step.tokens_out is not None or step.tokens_total is not None


def _unique_in_order(steps: Sequence[StepDraft]) -> list[StepDraft]:
    """Steps deduplicated by (trace_id, span_id) (retried exports), ordered by start time."""
    unique = {_key(step): step for step in reversed(steps)}
    return sorted(unique.values(), key=lambda step: (step.start_ns, step.span_id))


def _ancestors(step: StepDraft, index: Mapping[StepKey, StepDraft]) -> Iterable[StepDraft]:
    """Ancestors among the given steps, nearest first; stops on a cycle."""
    seen = {_key(step)}
    parent = _parent(step, index)
    while parent is not None and _key(parent) not in seen:
        seen.add(_key(parent))
        yield parent
        parent = _parent(parent, index)


def _parent(step: StepDraft, index: Mapping[StepKey, StepDraft]) -> StepDraft | None:
    return index.get((step.trace_id, step.parent_span_id)) if step.parent_span_id else None


def _usage_ancestors(steps: Sequence[StepDraft], index: Mapping[StepKey, StepDraft]) -> set[StepKey]:
    """Keys of steps with a usage-reporting descendant (their own usage is a repeat)."""
    marked: set[StepKey] = set()
    for step in steps:
        if not has_usage(step):
            continue
        for ancestor in _ancestors(step, index):
            if _key(ancestor) in marked:
                break
            marked.add(_key(ancestor))
    return marked


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value))


@dataclass(frozen=True, slots=True)
class _Cost:
    usd: float | None
    source: str | None
    unpriced: tuple[str, ...]


def _total_cost(counted: Sequence[StepDraft], prices: PriceTable) -> _Cost:
    known: list[float] = []
    sources: set[str] = set()
    unpriced: list[str | None] = []
    for step in counted:
        if step.cost_usd is not None:
            known.append(step.cost_usd)
            sources.add("reported")
        elif has_tokens(step):
            computed = _computed_cost(step, prices)
            sources.add("unknown" if computed is None else "computed")
            if computed is not None:
                known.append(computed)
            elif step.model_name and prices.lookup(step.model_name) is None:
                unpriced.append(step.model_name)
    source = next(iter(sources)) if len(sources) == 1 else ("mixed" if sources else None)
    # fsum: the correctly rounded sum, independent of order, so an incremental tally can match it exactly
    return _Cost(usd=math.fsum(known) if known else None, source=source, unpriced=_distinct(unpriced))


def _computed_cost(step: StepDraft, prices: PriceTable) -> float | None:
    return computed_cost(prices, step.model_name, step.tokens_in, step.tokens_out, step.tokens_cache_read,
                         step.tokens_cache_write)


def computed_cost(prices: PriceTable, model_name: str | None, tokens_in: int | None, tokens_out: int | None,
                  cache_read: int | None, cache_write: int | None) -> float | None:
    """Cost from the price table; None without a model, an in/out split or a price."""
    if not model_name or (tokens_in is None and tokens_out is None):
        return None
    return prices.cost(model_name, tokens_in=tokens_in or 0, tokens_out=tokens_out or 0,
                       cache_read=cache_read or 0, cache_write=cache_write or 0)


class _Groups:
    """Union-find over step keys: one group per executed tool call."""

    def __init__(self, keys: Iterable[StepKey]) -> None:
        self._parent = {key: key for key in keys}

    def find(self, key: StepKey) -> StepKey:
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def union(self, a: StepKey, b: StepKey) -> None:
        self._parent[self.find(a)] = self.find(b)

    def count(self) -> int:
        return len({self.find(key) for key in self._parent})


def count_tools(steps: Sequence[StepDraft], index: Mapping[StepKey, StepDraft]) -> int:
    """Distinct executed tool calls: same tool call id, or nested under a same-name tool step."""
    tools = [step for step in steps if step.type is StepType.TOOL]
    groups = _Groups(_key(step) for step in tools)
    first_with_call_id: dict[str, StepKey] = {}
    for step in tools:
        if step.tool_call_id:
            groups.union(_key(step), first_with_call_id.setdefault(step.tool_call_id, _key(step)))
        parent_tool = next((a for a in _ancestors(step, index) if a.type is StepType.TOOL), None)
        if parent_tool is not None and parent_tool.tool_name == step.tool_name:
            groups.union(_key(step), _key(parent_tool))
    return groups.count()


def total_usage(steps: Sequence[StepDraft], prices: PriceTable) -> UsageTotals:
    """Tokens, cost, models, tools and errors of a run's steps, counted per §6.3."""
    unique = _unique_in_order(steps)
    index = {_key(step): step for step in unique}
    repeated = _usage_ancestors(unique, index)
    counted = [s for s in unique if _key(s) not in repeated and (s.type is StepType.MODEL or has_usage(s))]
    cost = _total_cost(counted, prices)
    return UsageTotals(
        tokens_in=sum(step.tokens_in or 0 for step in counted),
        tokens_out=sum(step.tokens_out or 0 for step in counted),
        tokens_total=sum(_step_total(step) for step in counted),
        tokens_cache_read=sum(step.tokens_cache_read or 0 for step in counted),
        tokens_cache_write=sum(step.tokens_cache_write or 0 for step in counted),
        tokens_reasoning=sum(step.tokens_reasoning or 0 for step in counted),
        cost_usd=cost.usd,
        cost_source=cost.source,
        model_names=_distinct(step.model_name for step in counted),
        tool_names=_distinct(step.tool_name for step in unique if step.type is StepType.TOOL),
        tool_count=count_tools(unique, index),
        error_count=sum(1 for step in unique if step.status == "error" or step.type is StepType.ERROR),
        unpriced_models=cost.unpriced,
    )


def _step_total(step: StepDraft) -> int:
    if step.tokens_total is not None:
        return step.tokens_total
    return (step.tokens_in or 0) + (step.tokens_out or 0)
