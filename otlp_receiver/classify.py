"""Step classification: which ``StepType`` a span is (semconv.md §6.1).

``CLASSIFICATION_RULES`` is the single source of truth: an ordered tuple of named predicates, each
naming the convention it comes from; the first rule that matches wins. Before the table, an explicit
``traceward.step.type`` attribute overrides everything. A span no rule matches is structural
(``StepType.SPAN``). Error handling (a failed structural span becoming an ``error`` step) is the
mapping's job, not this module's.

Pure: imports only the standard library and ``otlp_receiver``'s model and conventions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from otlp_receiver.conventions import (
    GEN_AI_OPERATION_NAME,
    LLM_REQUEST_TYPE,
    MCP_METHOD_NAME,
    MCP_TOOLS_CALL,
    OPENINFERENCE_SPAN_KIND,
    TOOL_NAME_KEYS,
    TRACELOOP_SPAN_KIND,
    TRACEWARD_APPROVAL_PREFIX,
    TRACEWARD_ARTIFACT_PREFIX,
    TRACEWARD_STEP_TYPE,
    as_text,
    first_of,
    lower_text,
    resolve_model,
    resolve_usage,
)
from otlp_receiver.model import Span, StepType

Predicate = Callable[[Span], bool]

# OTel GenAI operation names (§1.1), plus older spellings seen in the wild (OpenLLMetry, any-agent).
MODEL_OPERATIONS: Final = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "fetch_response", "llm_request", "call_llm"}
)
TOOL_OPERATIONS: Final = frozenset(
    {"execute_tool", "retrieval", "vector_db_retrieve", "create_memory_store", "delete_memory_store",
     "create_memory", "update_memory", "upsert_memory", "search_memory", "delete_memory"}
)  # fmt: skip
POLICY_OPERATIONS: Final = frozenset({"apply_guardrail"})
STRUCTURAL_OPERATIONS: Final = frozenset(
    {"invoke_agent", "invoke_workflow", "create_agent", "plan", "execute_task"}
)

_VERCEL_PROVIDER_CALL: Final = re.compile(r"ai\.\w+\.do(?:Generate|Stream|Embed)")
_VERCEL_EMBED: Final = frozenset({"ai.embed", "ai.embedMany"})
_VERCEL_OUTER: Final = frozenset({"ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject"})
_VENDOR_LLM_SPAN: Final = re.compile(
    r"(?:openai|azure_openai|anthropic|bedrock|cohere|mistralai|groq|ollama|together|vertexai|gemini"
    r"|google_genai|watsonx|replicate|deepseek|xai)\.(?:chat|completion|embeddings|response)s?",
    re.IGNORECASE,
)
_PROMPT_PREFIXES: Final = ("llm.prompt_template.", "traceloop.prompt.")
_OUTPUT_MEDIA_PREFIXES: Final = ("output.images", "output.documents")


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the classification table."""

    name: str
    matches: Predicate
    step_type: StepType
    source: str


# --- Predicate builders: each returns a small named predicate ----------------------------------------
def _operation_in(values: frozenset[str]) -> Predicate:
    def operation_in(span: Span) -> bool:
        return lower_text(span.attributes, GEN_AI_OPERATION_NAME) in values

    return operation_in


def _openinference_kind_in(*kinds: str) -> Predicate:
    def openinference_kind_in(span: Span) -> bool:
        kind = as_text(span.attributes.get(OPENINFERENCE_SPAN_KIND))
        return kind is not None and kind.upper() in kinds

    return openinference_kind_in


def _traceloop_kind_in(*kinds: str) -> Predicate:
    def traceloop_kind_in(span: Span) -> bool:
        return lower_text(span.attributes, TRACELOOP_SPAN_KIND) in kinds

    return traceloop_kind_in


def _has_key_prefix(*prefixes: str) -> Predicate:
    def has_key_prefix(span: Span) -> bool:
        return any(isinstance(key, str) and key.startswith(prefixes) for key in span.attributes)

    return has_key_prefix


def _name_in(names: frozenset[str]) -> Predicate:
    def name_in(span: Span) -> bool:
        return span.name in names

    return name_in


def _name_matches(pattern: re.Pattern[str]) -> Predicate:
    def name_matches(span: Span) -> bool:
        return pattern.fullmatch(span.name) is not None

    return name_matches


# --- Plain predicates ---------------------------------------------------------------------------------
def is_mcp_tool_call(span: Span) -> bool:
    """An MCP ``tools/call`` client or server span."""
    return as_text(span.attributes.get(MCP_METHOD_NAME)) == MCP_TOOLS_CALL


def has_model_and_tokens(span: Span) -> bool:
    """A model attribute and token counts: an LLM call whatever the emitter."""
    return resolve_model(span.attributes) is not None and resolve_usage(span.attributes).has_tokens()


def is_plan_with_usage(span: Span) -> bool:
    """A GenAI ``plan`` span that reports its own model usage."""
    return lower_text(span.attributes, GEN_AI_OPERATION_NAME) == "plan" and has_model_and_tokens(span)


def has_tool_name(span: Span) -> bool:
    """A tool-name attribute (GenAI, OpenInference or Vercel)."""
    return first_of(span.attributes, TOOL_NAME_KEYS, as_text) is not None


def has_llm_request_type(span: Span) -> bool:
    """OpenLLMetry's ``llm.request.type`` (chat, completion, embedding, rerank…)."""
    return as_text(span.attributes.get(LLM_REQUEST_TYPE)) is not None


_has_prompt_prefix: Final = _has_key_prefix(*_PROMPT_PREFIXES)


def has_prompt_reference(span: Span) -> bool:
    """A prompt template or managed prompt (OpenInference, OpenLLMetry, GenAI ``gen_ai.prompt.name``)."""
    return "gen_ai.prompt.name" in span.attributes or _has_prompt_prefix(span)


# First match wins. Order matters where conventions overlap: GenAI operations before everything
# (§6.1.1), but a *structural* GenAI operation never overrides an OpenInference LLM/TOOL kind, so the
# structural row sits after the OpenInference typed rows (§6.1 "Conflicts"). Traceward's own
# approval/artifact attributes precede the heuristics, which would otherwise claim e.g. an approval
# span that names the tool it approves.
CLASSIFICATION_RULES: Final[tuple[Rule, ...]] = (
    Rule("genai_model_operation", _operation_in(MODEL_OPERATIONS), StepType.MODEL, "OTel GenAI §1.1"),
    Rule("genai_tool_operation", _operation_in(TOOL_OPERATIONS), StepType.TOOL, "OTel GenAI §1.1"),
    Rule("genai_guardrail_operation", _operation_in(POLICY_OPERATIONS), StepType.POLICY, "OTel GenAI §1.1"),
    Rule("mcp_tools_call", is_mcp_tool_call, StepType.TOOL, "OTel MCP §1.1"),
    Rule("openinference_model_kind", _openinference_kind_in("LLM", "EMBEDDING", "DECISION"), StepType.MODEL,
         "OpenInference §2"),
    Rule("openinference_tool_kind", _openinference_kind_in("TOOL", "RETRIEVER", "RERANKER"), StepType.TOOL,
         "OpenInference §2"),
    Rule("openinference_guardrail_kind", _openinference_kind_in("GUARDRAIL", "EVALUATOR"), StepType.POLICY,
         "OpenInference §2"),
    Rule("openinference_prompt_kind", _openinference_kind_in("PROMPT"), StepType.PROMPT, "OpenInference §2"),
    Rule("genai_plan_with_usage", is_plan_with_usage, StepType.MODEL, "OTel GenAI §1.1 (plan)"),
    Rule("genai_structural_operation", _operation_in(STRUCTURAL_OPERATIONS), StepType.SPAN, "OTel GenAI §1.1"),
    Rule("openinference_structural_kind", _openinference_kind_in("AGENT", "CHAIN"), StepType.SPAN,
         "OpenInference §2"),
    Rule("traceloop_tool_kind", _traceloop_kind_in("tool"), StepType.TOOL, "OpenLLMetry §3"),
    Rule("traceloop_structural_kind", _traceloop_kind_in("workflow", "agent", "task"), StepType.SPAN,
         "OpenLLMetry §3"),
    Rule("traceloop_llm_request_type", has_llm_request_type, StepType.MODEL, "OpenLLMetry §3"),
    Rule("vercel_tool_call", _name_in(frozenset({"ai.toolCall"})), StepType.TOOL, "Vercel AI SDK §4.3"),
    Rule("vercel_provider_call", _name_matches(_VERCEL_PROVIDER_CALL), StepType.MODEL, "Vercel AI SDK §4.3"),
    Rule("vercel_embed", _name_in(_VERCEL_EMBED), StepType.MODEL, "Vercel AI SDK §4.3"),
    Rule("vercel_outer_call", _name_in(_VERCEL_OUTER), StepType.SPAN, "Vercel AI SDK §4.3, §5"),
    Rule("traceward_approval", _has_key_prefix(TRACEWARD_APPROVAL_PREFIX), StepType.APPROVAL, "Traceward §6.1"),
    Rule("traceward_artifact", _has_key_prefix(TRACEWARD_ARTIFACT_PREFIX), StepType.ARTIFACT, "Traceward §6.1"),
    Rule("heuristic_model_with_tokens", has_model_and_tokens, StepType.MODEL, "heuristic §6.1.6"),
    Rule("heuristic_tool_name", has_tool_name, StepType.TOOL, "heuristic §6.1.6"),
    Rule("heuristic_guardrail_attributes", _has_key_prefix("gen_ai.guardrail."), StepType.POLICY,
         "heuristic §6.1.6"),
    Rule("heuristic_prompt_reference", has_prompt_reference, StepType.PROMPT, "heuristic §6.1 (prompt)"),
    Rule("heuristic_vendor_span_name", _name_matches(_VENDOR_LLM_SPAN), StepType.MODEL, "heuristic §6.1.6"),
    Rule("openinference_output_media", _has_key_prefix(*_OUTPUT_MEDIA_PREFIXES), StepType.ARTIFACT,
         "OpenInference §2 (artifact)"),
)  # fmt: skip


def explicit_step_type(span: Span) -> StepType | None:
    """The ``traceward.step.type`` override, when it names a valid step type."""
    value = as_text(span.attributes.get(TRACEWARD_STEP_TYPE))
    try:
        return StepType(value.lower()) if value else None
    except ValueError:
        return None


def match_rule(span: Span) -> Rule | None:
    """The first classification rule the span matches, or None (structural)."""
    for rule in CLASSIFICATION_RULES:
        if rule.matches(span):
            return rule
    return None


def classify_span(span: Span) -> StepType:
    """The span's step type: the explicit override, else the first matching rule, else ``SPAN``."""
    explicit = explicit_step_type(span)
    if explicit is not None:
        return explicit
    rule = match_rule(span)
    return rule.step_type if rule is not None else StepType.SPAN
