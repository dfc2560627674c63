"""Policy documents: parsing, validation and the immutable in-memory form (the public face).

A policy is a YAML or JSON document. Everything evaluation needs (globs, JSONPaths,
regexes, membership sets) is compiled here, once, so ``governance.evaluate`` stays a
fast pure function. Every validation error names where it is, e.g.
``rules[3].match.args: unknown operator 'gtx'`` (indexes are 0-based)::

    schema_version: 1                 # optional, only 1 exists
    description: payments agent       # optional
    default: {decision: deny, reason_code: default_deny}      # required
    tools:                            # optional; keys are tool names or globs (exact name wins)
      "payments.*": {action_class: external_write, autonomy_level: L3}
      search_docs: {action_class: read, fail_open: true}
      delete_*: {gated: true}
    rules:                            # first match wins
      - id: small-payments
        match:                        # every key optional; all present keys must match
          tool: "payments.*"          # glob or list of globs
          action_class: external_write        # read | write | external_write, or a list
          autonomy_level: [L2, L3]            # L0..L4, or a list
          agent: "billing-*"                  # glob or list of globs
          environment: prod                   # glob or list (deployment.environment)
          args:                               # JSONPath -> {operator: operand}; all must hold
            $.amount: {lte: 1000}
            $.recipient.email: {not_in: [ceo@example.com]}
        decision: allow               # allow | deny | require_approval
        reason_code: small_payment

Operators: eq, ne, gt, gte, lt, lte, in, not_in, contains, matches (RE2, search), exists.
A condition on a path that is absent from the arguments is false, except ``exists: false``.

The package, one responsibility a module (this module only re-exports them)::

    model       the dataclasses (Policy, Rule, Match, Condition, ToolConfig, Outcome), vocabularies, limits
    errors      PolicyFileError and its path-hinted messages
    load        text -> plain document: size limit, content type, strict YAML / JSON
    parse       plain document -> Policy: parse_policy, glob_regex
    conditions  match.args: parse_jsonpath, scalar_key, is_scalar, compiled operators
    lookup      questions about a parsed policy: tool_config, is_gated
    serialise   Policy -> document: policy_to_dict

Imports only the standard library, PyYAML, google-re2 and ``otlp_receiver.errors``.
"""

from __future__ import annotations

from governance.policy.conditions import is_scalar, parse_jsonpath, scalar_key
from governance.policy.errors import PolicyFileError
from governance.policy.lookup import is_gated, tool_config
from governance.policy.model import (
    ACTION_CLASSES,
    AUTONOMY_LEVELS,
    DECISIONS,
    EXTERNAL_WRITE,
    MAX_CONDITIONS_PER_RULE,
    MAX_LIST_ITEMS,
    MAX_PATH_STEPS,
    MAX_PATTERN_CHARS,
    MAX_POLICY_BYTES,
    MAX_RULES,
    OPERATORS,
    Condition,
    DecisionName,
    Match,
    Outcome,
    Policy,
    Rule,
    ToolConfig,
)
from governance.policy.parse import glob_regex, parse_policy
from governance.policy.serialise import policy_to_dict

__all__ = [
    "ACTION_CLASSES",
    "AUTONOMY_LEVELS",
    "DECISIONS",
    "EXTERNAL_WRITE",
    "MAX_CONDITIONS_PER_RULE",
    "MAX_LIST_ITEMS",
    "MAX_PATH_STEPS",
    "MAX_PATTERN_CHARS",
    "MAX_POLICY_BYTES",
    "MAX_RULES",
    "OPERATORS",
    "Condition",
    "DecisionName",
    "Match",
    "Outcome",
    "Policy",
    "PolicyFileError",
    "Rule",
    "ToolConfig",
    "glob_regex",
    "is_gated",
    "is_scalar",
    "parse_jsonpath",
    "parse_policy",
    "policy_to_dict",
    "scalar_key",
    "tool_config",
]
