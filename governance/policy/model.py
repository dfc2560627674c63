"""The immutable in-memory form of a policy: its dataclasses, closed vocabularies and size limits.

Pure data: imports only the standard library (no YAML, no RE2, nothing from the rest of governance).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

DecisionName = Literal["allow", "deny", "require_approval"]
DECISIONS: tuple[str, ...] = ("allow", "deny", "require_approval")
ACTION_CLASSES: tuple[str, ...] = ("read", "write", "external_write")
EXTERNAL_WRITE = "external_write"
AUTONOMY_LEVELS: tuple[str, ...] = ("L0", "L1", "L2", "L3", "L4")
OPERATORS: tuple[str, ...] = (
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "matches", "exists",
)  # fmt: skip

MAX_POLICY_BYTES = 512 * 1024
MAX_RULES = 5000
MAX_CONDITIONS_PER_RULE = 32
MAX_LIST_ITEMS = 10_000
MAX_PATTERN_CHARS = 1024
MAX_PATH_STEPS = 32
_CACHE_LIMIT = 8192


@dataclass(frozen=True, slots=True)
class Condition:
    """One operator applied to the value at a JSONPath in the tool arguments."""

    path: str
    op: str
    value: Any
    steps: tuple[str | int, ...] = field(compare=False, repr=False, default=())
    compiled: Any = field(compare=False, repr=False, default=None)


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule applies to; an empty tuple means "any"."""

    tools: tuple[str, ...] = ()
    action_classes: tuple[str, ...] = ()
    autonomy_levels: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    args: tuple[Condition, ...] = ()
    tool_re: re.Pattern[str] | None = field(compare=False, repr=False, default=None)
    agent_re: re.Pattern[str] | None = field(compare=False, repr=False, default=None)
    environment_re: re.Pattern[str] | None = field(compare=False, repr=False, default=None)


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule: when ``match`` holds, the decision is ``decision`` for ``reason_code``."""

    rule_id: str
    match: Match
    decision: DecisionName
    reason_code: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision and its reason code, used for the policy's explicit default."""

    decision: DecisionName
    reason_code: str


@dataclass(frozen=True, slots=True)
class ToolConfig:
    """Per-tool settings. The policy's values win over what an agent claims about its tool."""

    action_class: str | None = None
    autonomy_level: str | None = None
    fail_open: bool = False
    gated: bool = False


@dataclass(frozen=True)
class Policy:
    """An immutable, validated policy. Versions are assigned by whoever stores it."""

    rules: tuple[Rule, ...]
    default: Outcome
    tools: tuple[tuple[str, ToolConfig], ...] = ()
    description: str | None = None
    schema_version: int = 1
    cache: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Memoise a derived value (bounded; safe to race: at worst it is computed twice)."""
        try:
            return self.cache[key]
        except KeyError:
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            value = self.cache[key] = compute()
            return value
