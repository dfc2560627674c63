"""Attribute names Traceward reads from agent telemetry, and the field resolution of semconv.md §6.2.

Our own string constants, not imports from the semantic-convention packages: those deprecate every
``gen_ai.*`` name and warn when their enums are used (semconv.md §0.1). Each ``*_KEYS`` tuple is one
row of the §6.2 precedence table: the first attribute holding a *valid* value wins, so a garbage value
falls through to the next name instead of raising.

Pure: imports only the standard library and ``otlp_receiver.model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from otlp_receiver.key_profile import KeyProfile, key_profile
from otlp_receiver.model import Span

T = TypeVar("T")
Attributes = Mapping[str, Any]

# --- Classification and identity (§1.1, §2, §3, MCP) -------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"
TRACELOOP_ENTITY_NAME: Final = "traceloop.entity.name"
LLM_REQUEST_TYPE: Final = "llm.request.type"
MCP_METHOD_NAME: Final = "mcp.method.name"
MCP_TOOLS_CALL: Final = "tools/call"

# --- Errors (§1.5, §3) --------------------------------------------------------------------------------
ERROR_TYPE: Final = "error.type"
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
GEN_AI_TASK_STATUS: Final = "gen_ai.task.status"

# --- Traceward's own attributes -----------------------------------------------------------------------
TRACEWARD_STEP_TYPE: Final = "traceward.step.type"
TRACEWARD_DECISION_TOKEN: Final = "traceward.decision_token"
TRACEWARD_APPROVAL_PREFIX: Final = "traceward.approval."
TRACEWARD_ARTIFACT_PREFIX: Final = "traceward.artifact."

# --- Resource and run-level attributes (§4.2) ---------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
SESSION_ID: Final = "session.id"
USER_ID: Final = "user.id"
OPENINFERENCE_TAGS: Final = "tag.tags"
TRACELOOP_ASSOCIATION_PREFIX: Final = "traceloop.association.properties."

# --- §6.2 precedence rows -----------------------------------------------------------------------------
MODEL_KEYS: Final = (
    "gen_ai.response.model", "gen_ai.request.model", "llm.response.model_name", "llm.model_name",
    "llm.request.model_name", "embedding.model_name", "reranker.model_name", "ai.model.id",
    "langfuse.observation.model.name",
)  # fmt: skip
PROVIDER_KEYS: Final = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
    "ai.model.provider",
)
PROVIDER_ALIASES: Final = {
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "xai": "x_ai",
}
TOKENS_IN_KEYS: Final = (
    "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
    "ai.usage.inputTokens", "ai.usage.promptTokens",
)  # fmt: skip
TOKENS_OUT_KEYS: Final = (
    "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
    "ai.usage.outputTokens", "ai.usage.completionTokens",
)  # fmt: skip
TOKENS_TOTAL_KEYS: Final = (
    "llm.token_count.total", "gen_ai.usage.total_tokens", "llm.usage.total_tokens", "ai.usage.totalTokens",
)  # fmt: skip
CACHE_READ_KEYS: Final = (
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)  # fmt: skip
CACHE_WRITE_KEYS: Final = (
    "gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write",
)  # fmt: skip
REASONING_KEYS: Final = (
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning", "ai.usage.reasoningTokens",
)  # fmt: skip
COST_TOTAL_KEYS: Final = (
    "llm.cost.total", "gen_ai.usage.cost", "operation.cost", "gen_ai.cost.total_tokens", "gen_ai.usage.total_cost",
)  # fmt: skip
COST_PART_KEYS: Final = (
    ("llm.cost.prompt", "llm.cost.completion"),
    ("gen_ai.usage.input_cost", "gen_ai.usage.output_cost"),
)
TOOL_NAME_KEYS: Final = ("gen_ai.tool.name", "tool.name", "ai.toolCall.name")
TOOL_CALL_ID_KEYS: Final = ("gen_ai.tool.call.id", "tool.id", "ai.toolCall.id", "jsonrpc.request.id")
AGENT_NAME_KEYS: Final = ("gen_ai.agent.name", "agent.name")
AGENT_FALLBACK_KEYS: Final = ("ai.telemetry.functionId",)
RUN_NAME_KEYS: Final = (
    "gen_ai.workflow.name", "traceloop.workflow.name", "gen_ai.agent.name", "agent.name", TRACELOOP_ENTITY_NAME,
)  # fmt: skip
SESSION_KEYS: Final = (
    "gen_ai.conversation.id", SESSION_ID, "langfuse.session.id", TRACELOOP_ASSOCIATION_PREFIX + "session_id",
    "ai.telemetry.metadata.sessionId", "ai.telemetry.metadata.conversationId",
    "ai.telemetry.metadata.conversation_id",
)  # fmt: skip
USER_KEYS: Final = (
    USER_ID, "enduser.id", "langfuse.user.id", TRACELOOP_ASSOCIATION_PREFIX + "user_id",
    "ai.telemetry.metadata.userId", "gen_ai.user", "llm.user",
)  # fmt: skip

USAGE_KEYS: Final = frozenset(
    (*TOKENS_IN_KEYS, *TOKENS_OUT_KEYS, *TOKENS_TOTAL_KEYS, *CACHE_READ_KEYS, *CACHE_WRITE_KEYS, *REASONING_KEYS,
     *COST_TOTAL_KEYS, *(key for pair in COST_PART_KEYS for key in pair)))
"""Every key :func:`resolve_usage` reads: a span holding none of them has an empty usage."""
_USAGE_ROW: Final = tuple(sorted(USAGE_KEYS))
_INT64_MAX: Final = 2**63 - 1


# --- Defensive coercion: never raise on a bad attribute value ------------------------------------------
def _parse_number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def as_count(value: object) -> int | None:
    """A non-negative int64 count from an int, a whole-ish float or a numeric string, else None."""
    if isinstance(value, str):
        value = _parse_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = round(value)
    return value if 0 <= value <= _INT64_MAX else None


def as_amount(value: object) -> float | None:
    """A non-negative finite float (e.g. USD) from a number or numeric string, else None."""
    if isinstance(value, str):
        value = _parse_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None


def as_text(value: object) -> str | None:
    """A non-blank string (ints are accepted and rendered, e.g. a JSON-RPC id), else None."""
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def first_of(attrs: Attributes, keys: Iterable[str], coerce: Callable[[object], T | None]) -> T | None:
    """The first attribute among ``keys`` whose value coerces; None when none does."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            coerced = coerce(value)
            if coerced is not None:
                return coerced
    return None


def lower_text(attrs: Attributes, key: str) -> str | None:
    """An attribute as lower-case text (for enum-like values such as operation names)."""
    text = as_text(attrs.get(key))
    return text.lower() if text else None


# --- §6.2 field resolution ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and reported cost of one span; None where the span says nothing."""

    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_total: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    cost_usd: float | None = None

    def has_tokens(self) -> bool:
        """True when the span reports input, output or total tokens."""
        return self.tokens_in is not None or self.tokens_out is not None or self.tokens_total is not None


_NO_USAGE: Final = Usage()


def resolve_usage(attrs: Attributes, profile: KeyProfile | None = None) -> Usage:
    """Tokens per §6.2; the total falls back to in + out. Cache and reasoning are subsets, never added.

    ``profile`` (of ``attrs``' keys) only saves work: rows the attributes hold no key of are skipped.
    """
    profile = profile or key_profile(attrs)
    if not profile.present(_USAGE_ROW):
        return _NO_USAGE
    present = profile.present
    tokens_in = first_of(attrs, present(TOKENS_IN_KEYS), as_count)
    tokens_out = first_of(attrs, present(TOKENS_OUT_KEYS), as_count)
    total = first_of(attrs, present(TOKENS_TOTAL_KEYS), as_count)
    if total is None and (tokens_in is not None or tokens_out is not None):
        total = (tokens_in or 0) + (tokens_out or 0)
    return Usage(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens_total=total,
        cache_read=first_of(attrs, present(CACHE_READ_KEYS), as_count),
        cache_write=first_of(attrs, present(CACHE_WRITE_KEYS), as_count),
        reasoning=first_of(attrs, present(REASONING_KEYS), as_count),
        cost_usd=resolve_reported_cost(attrs, profile),
    )


def resolve_reported_cost(attrs: Attributes, profile: KeyProfile | None = None) -> float | None:
    """A cost the emitter reported (USD): a total, else the sum of its prompt/completion parts."""
    present = (profile or key_profile(attrs)).present
    total = first_of(attrs, present(COST_TOTAL_KEYS), as_amount)
    if total is not None:
        return total
    for part_keys in COST_PART_KEYS:
        if not present(part_keys):
            continue
        parts = [as_amount(attrs.get(key)) for key in part_keys]
        if any(part is not None for part in parts):
            return sum(part or 0.0 for part in parts)
    return None


def resolve_model(attrs: Attributes, profile: KeyProfile | None = None) -> str | None:
    """The model that answered, else the one asked for (§6.2 "model")."""
    return first_of(attrs, (profile or key_profile(attrs)).present(MODEL_KEYS), as_text)


def resolve_provider(attrs: Attributes, profile: KeyProfile | None = None) -> str | None:
    """The provider, with deprecated ``gen_ai.system`` spellings normalised (§1.3)."""
    provider = first_of(attrs, (profile or key_profile(attrs)).present(PROVIDER_KEYS), as_text)
    return PROVIDER_ALIASES.get(provider, provider) if provider else None


def resolve_tool_name(span: Span, profile: KeyProfile | None = None) -> str | None:
    """Tool name: explicit attributes, then a traceloop tool entity, then the MCP span-name target."""
    attrs = span.attributes
    name = first_of(attrs, (profile or key_profile(attrs)).present(TOOL_NAME_KEYS), as_text)
    if name is None and lower_text(attrs, TRACELOOP_SPAN_KIND) == "tool":
        name = as_text(attrs.get(TRACELOOP_ENTITY_NAME))
    if name is None and as_text(attrs.get(MCP_METHOD_NAME)) == MCP_TOOLS_CALL:
        _, _, target = span.name.partition(" ")
        name = target.strip() or None
    return name


def resolve_tool_call_id(attrs: Attributes, profile: KeyProfile | None = None) -> str | None:
    """Tool call id (the dedupe key of §6.3); the JSON-RPC request id is a weak last resort."""
    return first_of(attrs, (profile or key_profile(attrs)).present(TOOL_CALL_ID_KEYS), as_text)


def resolve_agent_name(attrs: Attributes, profile: KeyProfile | None = None) -> str | None:
    """Agent name: GenAI / OpenInference, then a traceloop agent entity, then Vercel's functionId."""
    present = (profile or key_profile(attrs)).present
    name = first_of(attrs, present(AGENT_NAME_KEYS), as_text)
    if name is None and lower_text(attrs, TRACELOOP_SPAN_KIND) == "agent":
        name = as_text(attrs.get(TRACELOOP_ENTITY_NAME))
    return name if name is not None else first_of(attrs, present(AGENT_FALLBACK_KEYS), as_text)


def has_error_signal(attrs: Attributes) -> bool:
    """An error recorded in attributes alone: ``error.type`` or a failed traceloop task."""
    return as_text(attrs.get(ERROR_TYPE)) is not None or lower_text(attrs, GEN_AI_TASK_STATUS) == "failure"


def first_exception(span: Span) -> Attributes:
    """Attributes of the span's first ``exception`` event ({} when there is none)."""
    for event in span.events:
        if event.name == EXCEPTION_EVENT:
            return event.attributes
    return {}
