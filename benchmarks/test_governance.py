"""Governance hot paths: policy evaluation (target ≤ 50 µs with 200 rules) and token issue + verify."""

from __future__ import annotations

import json

import pytest

from governance.evaluate import DecisionRequest, evaluate
from governance.policy import Policy, parse_policy
from governance.tokens import SigningKeys, args_sha256, issue_token, verify_token

RULES = 200
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def policy_with(rule_count: int, *, same_tool: bool) -> Policy:
    """``rule_count`` rules with argument conditions; only the one at ``rule_count - 5`` matches the request."""
    rules = []
    for i in range(rule_count):
        tool = "payments.*" if same_tool else f"tool_{i % 40}.*"
        args = {"$.amount": {"gt": 1000 + i}, "$.recipient.email": {"not_in": [f"vip{i}@example.com"]},
                "$.items[0].sku": {"matches": f"^SKU-{i}-"}}  # fmt: skip
        rules.append({"id": f"r{i}", "match": {"tool": tool, "environment": ["prod", "staging"], "args": args},
                      "decision": "require_approval", "reason_code": "large_payment"})  # fmt: skip
    target = rules[rule_count - 5]
    target["match"]["tool"] = "payments.*"
    target["match"]["args"] = {"$.amount": {"gt": 100}, "$.items[0].sku": {"matches": "^SKU-"}}
    doc = {"default": {"decision": "deny", "reason_code": "default_deny"}, "rules": rules}
    return parse_policy(json.dumps(doc), content_type="json")


REQUEST = DecisionRequest(
    tool_name="payments.send",
    args={"amount": 250, "recipient": {"email": "bob@example.com"}, "items": [{"sku": "SKU-7-A", "qty": 2}]},
    agent="billing-agent",
    environment="prod",
)


@pytest.mark.parametrize("same_tool", [False, True], ids=["mixed-tools", "all-rules-same-tool"])
def test_evaluate_200_rules_match_near_the_end(benchmark, same_tool):
    policy = policy_with(RULES, same_tool=same_tool)
    decision = benchmark(evaluate, policy, REQUEST)
    assert (decision.decision, decision.rule_id) == ("require_approval", f"r{RULES - 5}")


def test_issue_and_verify_token(benchmark):
    keys = SigningKeys.generate()
    digest = args_sha256(REQUEST.args)

    def issue_and_verify() -> str:
        token = issue_token(
            keys, tenant="acme", project="billing", tool="payments.send", args_sha256=digest, trace_id=TRACE_ID,
            span_id="b7ad6b7169203331", decision="approved", approval_id="ap-1", policy_version=3,
            break_glass=False, ttl_s=300,
        )  # fmt: skip
        return verify_token(keys, token).jti

    assert benchmark(issue_and_verify)
