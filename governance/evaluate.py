"""The policy decision: a pure, fast function of (policy, request, kill switch).

No I/O and no clock. Everything that can be compiled was compiled by
``governance.policy``; here we only resolve JSONPaths and compare. Rules that cannot
match a request's (tool, agent, environment, action class, autonomy level) are
filtered once per distinct combination and cached on the policy, so a decision only
walks the rules that are still in play.

Fail safe: every path that cannot reach a clear answer ends in deny —
no policy (``no_active_policy``), any unexpected error (``evaluation_error``), the
kill switch for external writes (``kill_switch``).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from governance.policy import (
    EXTERNAL_WRITE,
    DecisionName,
    Match,
    Policy,
    Rule,
    scalar_key,
    tool_config,
)

logger = logging.getLogger(__name__)

NO_ACTIVE_POLICY = "no_active_policy"
EVALUATION_ERROR = "evaluation_error"
KILL_SWITCH = "kill_switch"


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """What an agent asks: may it run ``tool_name`` with ``args``?

    ``action_class`` and ``autonomy_level`` are the agent's claims; the policy's
    ``tools`` entry for the tool overrides them.
    """

    tool_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    agent: str | None = None
    environment: str | None = None
    action_class: str | None = None
    autonomy_level: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allow, deny or require_approval, why, and which rule said so (None: default/fail-safe)."""

    decision: DecisionName
    reason_code: str
    rule_id: str | None = None


def evaluate(policy: Policy | None, request: DecisionRequest, *, kill_switch: bool = False) -> Decision:
    """Decide on a request. Never raises: errors become ``deny("evaluation_error")``.

    Args:
        policy: the active policy, or None when the project has none (→ deny).
        request: the tool call to decide on.
        kill_switch: when set, actions classed as external writes (or not classed at
            all) are denied whatever the rules say.
    """
    try:
        return _evaluate(policy, request, kill_switch)
    except Exception:  # fail closed: a policy bug must never turn into an allow
        logger.exception("policy evaluation failed; denying (tool %r)", _safe_tool(request))
        return Decision("deny", EVALUATION_ERROR)


def _evaluate(policy: Policy | None, request: DecisionRequest, kill_switch: bool) -> Decision:
    if not isinstance(request.tool_name, str) or not isinstance(request.args, Mapping):
        raise TypeError("a decision request needs a str tool_name and a mapping of args")
    if policy is None:
        if kill_switch and request.action_class in (None, EXTERNAL_WRITE):
            return Decision("deny", KILL_SWITCH)
        return Decision("deny", NO_ACTIVE_POLICY)
    config = tool_config(policy, request.tool_name)
    action_class = config.action_class or request.action_class
    if kill_switch and action_class in (None, EXTERNAL_WRITE):
        return Decision("deny", KILL_SWITCH)
    level = config.autonomy_level or request.autonomy_level
    key = ("rules", request.tool_name, request.agent, request.environment, action_class, level)
    candidates: tuple[_Candidate, ...] = policy.cached(key, lambda: _candidates(policy, key))
    return _first_match(candidates, request.args) or Decision(
        policy.default.decision, policy.default.reason_code
    )


def _first_match(candidates: tuple[_Candidate, ...], args: Mapping[str, Any]) -> Decision | None:
    """The first candidate whose argument checks all hold; each path is resolved at most once."""
    values: dict[str, Any] = {}
    for rule, checks in candidates:
        for path, steps, test in checks:
            value = values.get(path, _UNSET)
            if value is _UNSET:
                value = values[path] = resolve_path(args, steps)
            if not test(value):
                break
        else:
            return Decision(rule.decision, rule.reason_code, rule.rule_id)
    return None


def _candidates(policy: Policy, key: tuple[Any, ...]) -> tuple[_Candidate, ...]:
    """The rules whose non-argument parts match, with their compiled argument checks, in order."""
    _, tool, agent, environment, action_class, level = key
    return tuple(
        (rule, policy.cached(("checks", rule.rule_id), partial(_compile_checks, rule)))
        for rule in policy.rules
        if _matches_context(rule.match, tool, agent, environment, action_class, level)
    )


def _matches_context(
    match: Match,
    tool: str,
    agent: str | None,
    environment: str | None,
    action_class: str | None,
    level: str | None,
) -> bool:
    if match.tool_re is not None and not match.tool_re.match(tool):
        return False
    if match.agent_re is not None and (agent is None or not match.agent_re.match(agent)):
        return False
    if match.environment_re is not None and (
        environment is None or not match.environment_re.match(environment)
    ):
        return False
    if match.action_classes and action_class not in match.action_classes:
        return False
    return not match.autonomy_levels or level in match.autonomy_levels


# ---------------------------------------------------------------- argument conditions

_MISSING: Any = object()
_UNSET: Any = object()
_NUMBER = (int, float)
Test = Callable[[Any], bool]
_Check = tuple[str, tuple[str | int, ...], Test]
_Candidate = tuple[Rule, tuple[_Check, ...]]


def resolve_path(args: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at a parsed JSONPath, or ``_MISSING`` when any step is absent."""
    current = args
    for step in steps:
        if isinstance(step, str):
            if not isinstance(current, Mapping):
                return _MISSING
            current = current.get(step, _MISSING)
            if current is _MISSING:
                return _MISSING
        elif isinstance(current, list | tuple) and -len(current) <= step < len(current):
            current = current[step]
        else:
            return _MISSING
    return current


def _compile_checks(rule: Rule) -> tuple[_Check, ...]:
    return tuple((c.path, c.steps, _TESTS[c.op](c.compiled, c.value)) for c in rule.match.args)


def _exists(want: bool, _: Any) -> Test:
    return lambda v: (v is not _MISSING) is want


def _equals(key: tuple[str, Any], _: Any) -> Test:
    """Equality of JSON scalars: 1 == 1.0, but a boolean never equals a number."""
    kind, operand = key
    if kind == "s":
        return lambda v: isinstance(v, str) and v == operand
    if kind == "n":
        return lambda v: isinstance(v, _NUMBER) and v.__class__ is not bool and v == operand
    return lambda v: v is operand  # True, False, None are singletons


def _not_equals(key: tuple[str, Any], value: Any) -> Test:
    equals = _equals(key, value)
    return lambda v: v is not _MISSING and not equals(v)


def _member(members: frozenset[Any], _: Any) -> Test:
    return lambda v: scalar_key(v) in members


def _not_member(members: frozenset[Any], _: Any) -> Test:
    return lambda v: v is not _MISSING and scalar_key(v) not in members


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[tuple[str, Any], Any], Test]:
    """gt/gte/lt/lte: numbers with numbers, strings with strings; anything else is false."""

    def make(key: tuple[str, Any], _: Any) -> Test:
        kind, operand = key
        if kind == "n":
            return lambda v: isinstance(v, _NUMBER) and v.__class__ is not bool and compare(v, operand)
        return lambda v: isinstance(v, str) and compare(v, operand)

    return make


def _contains(key: tuple[str, Any], operand: Any) -> Test:
    """A substring of a string, or an element of a list."""

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return isinstance(operand, str) and operand in v
        return isinstance(v, list | tuple) and any(scalar_key(item) == key for item in v)

    return test


def _matches(pattern: Any, _: Any) -> Test:
    return lambda v: isinstance(v, str) and pattern.search(v) is not None


_TESTS: dict[str, Callable[[Any, Any], Test]] = {
    "exists": _exists,
    "eq": _equals,
    "ne": _not_equals,
    "gt": _ordered(operator.gt),
    "gte": _ordered(operator.ge),
    "lt": _ordered(operator.lt),
    "lte": _ordered(operator.le),
    "in": _member,
    "not_in": _not_member,
    "contains": _contains,
    "matches": _matches,
}


def _safe_tool(request: Any) -> str:
    name = getattr(request, "tool_name", None)
    return name[:200] if isinstance(name, str) else "?"
