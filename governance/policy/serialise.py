"""A ``Policy`` back to its document form (the inverse of ``parse_policy``).

Imports only the standard library and ``governance.policy.model``.
"""

from __future__ import annotations

from typing import Any

from governance.policy.model import Policy, Rule, ToolConfig


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
