"""A plain policy document to a validated ``Policy``: the top level, tools, rules and their matches.

Globs are compiled here, once, so evaluation stays a fast pure function; argument conditions are
compiled by ``governance.policy.conditions``. Imports only the standard library and the package's
load, conditions, errors and model modules.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from typing import Any

from governance.policy.conditions import parse_conditions
from governance.policy.errors import _ROOT, _fail, _type_name
from governance.policy.load import load_document
from governance.policy.model import (
    ACTION_CLASSES,
    AUTONOMY_LEVELS,
    DECISIONS,
    MAX_PATTERN_CHARS,
    MAX_RULES,
    Match,
    Outcome,
    Policy,
    Rule,
    ToolConfig,
)

_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_REASON_RE = re.compile(r"[a-z0-9_.:\-]{1,64}\Z")

_TOP_KEYS = ("schema_version", "description", "default", "tools", "rules")
_RULE_KEYS = ("id", "match", "decision", "reason_code")
_MATCH_KEYS = ("tool", "action_class", "autonomy_level", "agent", "environment", "args")
_TOOL_KEYS = ("action_class", "autonomy_level", "fail_open", "gated")


def parse_policy(text: str, *, content_type: str = "yaml") -> Policy:
    """Parse and validate a policy document.

    Raises:
        PolicyFileError: the document is oversized, malformed, or invalid; the message
            starts with a path hint such as ``rules[3].match.args``.
    """
    doc = _mapping(load_document(text, content_type), _ROOT, _TOP_KEYS, required=("default", "rules"))
    if doc.get("schema_version", 1) != 1 or isinstance(doc.get("schema_version"), bool):
        _fail("schema_version", f"unsupported schema version {doc['schema_version']!r} (only 1)")
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        _fail("description", f"expected a string, got {_type_name(description)}")
    return Policy(
        rules=_parse_rules(doc["rules"]),
        default=_parse_outcome(doc["default"], "default"),
        tools=_parse_tools(doc.get("tools", {})),
        description=description,
    )


def _parse_outcome(value: Any, hint: str) -> Outcome:
    doc = _mapping(value, hint, ("decision", "reason_code"), required=("decision", "reason_code"))
    decision: Any = _choice(doc["decision"], f"{hint}.decision", DECISIONS)
    return Outcome(decision, _string(doc["reason_code"], f"{hint}.reason_code", _REASON_RE, "a reason code"))


def _parse_tools(value: Any) -> tuple[tuple[str, ToolConfig], ...]:
    if not isinstance(value, dict):
        _fail("tools", f"expected a mapping, got {_type_name(value)}")
    return tuple(
        (_string(name, "tools", what="a tool name or glob"), _parse_tool(cfg, f"tools.{name}"))
        for name, cfg in value.items()
    )


def _parse_tool(value: Any, hint: str) -> ToolConfig:
    doc = _mapping(value, hint, _TOOL_KEYS)
    for key in ("fail_open", "gated"):
        if not isinstance(doc.get(key, False), bool):
            _fail(f"{hint}.{key}", f"expected a boolean, got {_type_name(doc[key])}")
    action = doc.get("action_class")
    level = doc.get("autonomy_level")
    return ToolConfig(
        action_class=None if action is None else _choice(action, f"{hint}.action_class", ACTION_CLASSES),
        autonomy_level=None if level is None else _choice(level, f"{hint}.autonomy_level", AUTONOMY_LEVELS),
        fail_open=doc.get("fail_open", False),
        gated=doc.get("gated", False),
    )


def _parse_rules(value: Any) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        _fail("rules", f"expected a list, got {_type_name(value)}")
    if len(value) > MAX_RULES:
        _fail("rules", f"{len(value)} rules, over the limit of {MAX_RULES}")
    rules = tuple(_parse_rule(item, f"rules[{i}]") for i, item in enumerate(value))
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.rule_id in seen:
            _fail(f"rules[{i}].id", f"duplicate rule id {rule.rule_id!r}")
        seen.add(rule.rule_id)
    return rules


def _parse_rule(value: Any, hint: str) -> Rule:
    doc = _mapping(value, hint, _RULE_KEYS, required=("id", "decision", "reason_code"))
    outcome = _parse_outcome({"decision": doc["decision"], "reason_code": doc["reason_code"]}, hint)
    return Rule(
        rule_id=_string(doc["id"], f"{hint}.id", _NAME_RE, "a rule id ([A-Za-z0-9_.:-], at most 128)"),
        match=_parse_match(doc.get("match", {}), f"{hint}.match"),
        decision=outcome.decision,
        reason_code=outcome.reason_code,
    )


def _parse_match(value: Any, hint: str) -> Match:
    doc = _mapping(value, hint, _MATCH_KEYS)

    def many(key: str, check: Callable[[Any, str], str]) -> tuple[str, ...]:
        return _one_or_many(doc[key], f"{hint}.{key}", check) if key in doc else ()

    def glob(item: Any, item_hint: str) -> str:
        return _string(item, item_hint, what="a name or glob")

    tools, agents, environments = many("tool", glob), many("agent", glob), many("environment", glob)
    return Match(
        tools=tools,
        action_classes=many("action_class", lambda v, h: _choice(v, h, ACTION_CLASSES)),
        autonomy_levels=many("autonomy_level", lambda v, h: _choice(v, h, AUTONOMY_LEVELS)),
        agents=agents,
        environments=environments,
        args=parse_conditions(doc["args"], f"{hint}.args") if "args" in doc else (),
        tool_re=glob_regex(tools),
        agent_re=glob_regex(agents),
        environment_re=glob_regex(environments),
    )


def glob_regex(globs: Sequence[str]) -> re.Pattern[str] | None:
    """Compile case-sensitive fnmatch globs into one regex (None when there are none)."""
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


def _mapping(value: Any, hint: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(hint, f"expected a mapping, got {_type_name(value)}")
    for key in value:
        if key not in allowed:
            _fail(hint, f"unknown key {key!r}")
    for key in required:
        if key not in value:
            _fail(hint, f"missing required key {key!r}")
    return value


def _string(value: Any, hint: str, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
    if not isinstance(value, str):
        _fail(hint, f"expected {what}, got {_type_name(value)}")
    if not value or len(value) > MAX_PATTERN_CHARS or (pattern is not None and not pattern.match(value)):
        _fail(hint, f"{_excerpt(value)} is not {what}")
    return value


def _excerpt(value: str) -> str:
    return repr(value) if len(value) <= 60 else repr(value[:57] + "...")


def _choice(value: Any, hint: str, choices: Sequence[str]) -> str:
    if value not in choices or not isinstance(value, str):
        _fail(hint, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _one_or_many(value: Any, hint: str, check: Callable[[Any, str], str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        _fail(hint, "expected at least one value")
    return tuple(
        check(item, f"{hint}[{i}]" if isinstance(value, list) else hint) for i, item in enumerate(items)
    )
