"""Questions asked of a parsed policy: a tool's settings, and whether a tool is gated.

Answers are memoised on the policy (``Policy.cached``). Imports only the standard library and
``governance.policy.model``.
"""

from __future__ import annotations

import fnmatch

from governance.policy.model import EXTERNAL_WRITE, Match, Policy, ToolConfig


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
