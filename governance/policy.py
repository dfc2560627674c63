"""Policy documents: parsing, validation and the immutable in-memory form.

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

Imports only the standard library, PyYAML, google-re2 and ``otlp_receiver.errors``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import re2
import yaml

from otlp_receiver.errors import UnprocessableError

logger = logging.getLogger(__name__)

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

_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_REASON_RE = re.compile(r"[a-z0-9_.:\-]{1,64}\Z")
_PATH_STEP_RE = re.compile(
    r"""\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d{1,9})\]|\['((?:[^'\\]|\\.)*)'\]|\["((?:[^"\\]|\\.)*)"\]"""
)
_ROOT = "(document)"


class PolicyFileError(UnprocessableError):
    """A policy document that cannot be parsed or validated; the message starts with a path hint."""

    code = "invalid_policy"


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


# ---------------------------------------------------------------- lookups


def glob_regex(globs: Sequence[str]) -> re.Pattern[str] | None:
    """Compile case-sensitive fnmatch globs into one regex (None when there are none)."""
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


def tool_config(policy: Policy, tool_name: str) -> ToolConfig:
    """The tool's settings: its exact entry, else the first glob entry that matches, else defaults."""
    config: ToolConfig = policy.cached(("tool", tool_name), lambda: _find_tool_config(policy, tool_name))
    return config


def _find_tool_config(policy: Policy, tool_name: str) -> ToolConfig:
    configs = dict(policy.tools)
    if tool_name in configs:
        return configs[tool_name]
    for pattern, config in policy.tools:
        if fnmatch.fnmatchcase(tool_name, pattern):
            return config
    return ToolConfig()


def is_gated(policy: Policy, tool_name: str) -> bool:
    """Whether executing ``tool_name`` needs a DecisionToken.

    A tool is gated when it is listed as gated, is classed as an external write (the
    kill switch can always deny those), or when any rule that could match it (or the
    default, if reachable) yields deny or require_approval. An unconditional allow rule
    for the tool makes everything after it unreachable.
    """
    return bool(policy.cached(("gated", tool_name), lambda: _compute_gated(policy, tool_name)))


def _compute_gated(policy: Policy, tool_name: str) -> bool:
    config = tool_config(policy, tool_name)
    if config.gated or config.action_class == EXTERNAL_WRITE:
        return True
    for rule in policy.rules:
        if rule.match.tool_re is not None and not rule.match.tool_re.match(tool_name):
            continue
        if rule.decision != "allow":
            return True
        if _is_unconditional(rule.match, config):
            return False
    return policy.default.decision != "allow"


def _is_unconditional(match: Match, config: ToolConfig) -> bool:
    if match.agents or match.environments or match.args:
        return False
    if match.action_classes and config.action_class not in match.action_classes:
        return False
    return not match.autonomy_levels or config.autonomy_level in match.autonomy_levels


# ---------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, YAML 1.1 yes/no booleans or timestamps."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # types-PyYAML: unannotated
            _fail(_ROOT, f"line {mark.line + 1}: YAML aliases are not allowed")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue  # non-string keys are reported as unknown keys by validation
            if key in seen:
                _fail(_ROOT, f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, _BOOL_RE if tag == "tag:yaml.org,2002:bool" else rx)
        for tag, rx in resolvers
        if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_document(text: str, content_type: str) -> Any:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        _fail(_ROOT, f"policy is {size} bytes, over the {MAX_POLICY_BYTES}-byte limit")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in _JSON_TYPES + _YAML_TYPES:
        _fail(_ROOT, f"unsupported content type {content_type!r} (use yaml or json)")
    try:
        return _load_json(text) if kind in _JSON_TYPES else _load_yaml(text)
    except RecursionError as exc:
        raise _error(_ROOT, "the document is nested too deeply") from exc


_JSON_TYPES = ("json", "application/json")
_YAML_TYPES = ("yaml", "yml", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise _error(_ROOT, f"invalid YAML at line {line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise _error(_ROOT, f"invalid YAML: {exc}") from exc


def _load_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                _fail(_ROOT, f"duplicate key {key!r}")
            seen.add(key)
        return dict(items)

    def reject(name: str) -> NoReturn:
        _fail(_ROOT, f"{name} is not allowed")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=reject)
    except json.JSONDecodeError as exc:
        raise _error(_ROOT, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


# ---------------------------------------------------------------- validation helpers


def _error(hint: str, message: str) -> PolicyFileError:
    return PolicyFileError(f"{hint}: {message}", details={hint: message})


def _fail(hint: str, message: str) -> NoReturn:
    raise _error(hint, message)


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


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


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


def is_scalar(value: Any) -> bool:
    """JSON scalars allowed as operands: str, finite numbers, booleans and null."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


# ---------------------------------------------------------------- parsing

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
    doc = _mapping(_load_document(text, content_type), _ROOT, _TOP_KEYS, required=("default", "rules"))
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
        args=_parse_args(doc["args"], f"{hint}.args") if "args" in doc else (),
        tool_re=glob_regex(tools),
        agent_re=glob_regex(agents),
        environment_re=glob_regex(environments),
    )


def _parse_args(value: Any, hint: str) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        _fail(hint, f"expected a mapping of JSONPath to {{operator: operand}}, got {_type_name(value)}")
    conditions: list[Condition] = []
    for path, ops in value.items():
        steps = parse_jsonpath(path, hint)
        if not isinstance(ops, dict) or not ops:
            _fail(hint, f"{path!r}: expected a mapping of operator to operand")
        conditions += [_compile_condition(path, steps, op, operand, hint) for op, operand in ops.items()]
    if len(conditions) > MAX_CONDITIONS_PER_RULE:
        _fail(hint, f"{len(conditions)} conditions, over the limit of {MAX_CONDITIONS_PER_RULE}")
    return tuple(conditions)


def parse_jsonpath(path: Any, hint: str = "path") -> tuple[str | int, ...]:
    """Parse ``$``, ``.name``, ``['name']`` and ``[index]`` steps; no wildcards or filters."""
    if not isinstance(path, str) or not path.startswith("$"):
        _fail(hint, f"invalid JSONPath {path!r}: must start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP_RE.match(path, pos)
        if m is None:
            _fail(hint, f"invalid JSONPath {path!r} at position {pos}")
        name, index, single, double = m.groups()
        quoted = single if single is not None else double
        steps.append(int(index) if index is not None else name or re.sub(r"\\(.)", r"\1", quoted or ""))
        pos = m.end()
    if len(steps) > MAX_PATH_STEPS:
        _fail(hint, f"JSONPath {path!r} is deeper than {MAX_PATH_STEPS} steps")
    return tuple(steps)


def scalar_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key under which equal JSON scalars collide (1 == 1.0, but True != 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("z", None) if value is None else None


def _compile_condition(
    path: str, steps: tuple[str | int, ...], op: Any, operand: Any, hint: str
) -> Condition:
    if op not in OPERATORS:
        _fail(hint, f"unknown operator {op!r}")
    where = f"{op!r} on {path!r}"
    if op == "exists":
        if not isinstance(operand, bool):
            _fail(hint, f"{where} needs true or false")
        return Condition(path, op, operand, steps, operand)
    if op in ("in", "not_in"):
        if not isinstance(operand, list) or len(operand) > MAX_LIST_ITEMS or not all(map(is_scalar, operand)):
            _fail(hint, f"{where} needs a list of at most {MAX_LIST_ITEMS} scalars")
        return Condition(path, op, tuple(operand), steps, frozenset(map(scalar_key, operand)))
    if not is_scalar(operand):
        _fail(hint, f"{where} needs a scalar operand, got {_type_name(operand)}")
    if op in ("gt", "gte", "lt", "lte") and (operand is None or isinstance(operand, bool)):
        _fail(hint, f"{where} needs a number or a string")
    if op == "matches":
        return Condition(path, op, operand, steps, _compile_regex(operand, hint, where))
    return Condition(path, op, operand, steps, scalar_key(operand))


def _compile_regex(pattern: Any, hint: str, where: str) -> Any:
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
        _fail(hint, f"{where} needs a regex string of at most {MAX_PATTERN_CHARS} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise _error(hint, f"{where}: invalid RE2 regex: {message}") from exc


# ---------------------------------------------------------------- serialising


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The document form of a policy; ``parse_policy(json.dumps(d), content_type="json")`` round-trips."""
    doc: dict[str, Any] = {"schema_version": policy.schema_version}
    if policy.description is not None:
        doc["description"] = policy.description
    doc["default"] = {"decision": policy.default.decision, "reason_code": policy.default.reason_code}
    if policy.tools:
        doc["tools"] = {name: _tool_to_dict(cfg) for name, cfg in policy.tools}
    doc["rules"] = [_rule_to_dict(rule) for rule in policy.rules]
    return doc


def _tool_to_dict(config: ToolConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {"action_class": config.action_class, "autonomy_level": config.autonomy_level}
    doc = {k: v for k, v in doc.items() if v is not None}
    return doc | {k: True for k in ("fail_open", "gated") if getattr(config, k)}


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    m = rule.match
    match: dict[str, Any] = {}
    for key, values in (("tool", m.tools), ("action_class", m.action_classes),
                        ("autonomy_level", m.autonomy_levels), ("agent", m.agents),
                        ("environment", m.environments)):  # fmt: skip
        if values:
            match[key] = values[0] if len(values) == 1 else list(values)
    if m.args:
        args: dict[str, dict[str, Any]] = {}
        for c in m.args:
            args.setdefault(c.path, {})[c.op] = list(c.value) if isinstance(c.value, tuple) else c.value
        match["args"] = args
    out: dict[str, Any] = {"id": rule.rule_id}
    return (
        out
        | ({"match": match} if match else {})
        | {"decision": rule.decision, "reason_code": rule.reason_code}
    )
