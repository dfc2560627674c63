"""Pure policy evaluation: each rule feature passing and failing, order, defaults, fail-safe paths."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.evaluate import Decision, DecisionRequest, evaluate
from governance.policy import parse_policy

DEFAULT = "default: {decision: deny, reason_code: default_deny}\n"


def one_rule(match: str, decision: str = "require_approval") -> str:
    return DEFAULT + f"rules:\n  - {{id: r1, decision: {decision}, reason_code: hit, match: {match}}}\n"


HIT = Decision("require_approval", "hit", "r1")
MISS = Decision("deny", "default_deny", None)


@pytest.mark.parametrize(
    ("match", "passing", "failing"),
    [
        ("{tool: 'pay*'}", DecisionRequest("payments.send"), DecisionRequest("search")),
        ("{tool: [a, 'b?']}", DecisionRequest("b1"), DecisionRequest("b12")),
        ("{action_class: external_write}", DecisionRequest("t", action_class="external_write"),
         DecisionRequest("t", action_class="read")),
        ("{autonomy_level: [L3, L4]}", DecisionRequest("t", autonomy_level="L3"),
         DecisionRequest("t", autonomy_level="L2")),
        ("{agent: 'billing-*'}", DecisionRequest("t", agent="billing-eu"), DecisionRequest("t", agent="support")),
        ("{agent: 'billing-*'}", DecisionRequest("t", agent="billing-eu"), DecisionRequest("t")),
        ("{environment: prod}", DecisionRequest("t", environment="prod"), DecisionRequest("t", environment="dev")),
        ("{environment: prod}", DecisionRequest("t", environment="prod"), DecisionRequest("t")),
    ],
)  # fmt: skip
def test_context_feature_passes_and_fails(match, passing, failing):
    policy = parse_policy(one_rule(match))
    assert evaluate(policy, passing) == HIT
    assert evaluate(policy, failing) == MISS


@pytest.mark.parametrize(
    ("condition", "passing", "failing"),
    [
        ("{$.amount: {eq: 5}}", {"amount": 5.0}, {"amount": 6}),
        ("{$.flag: {eq: true}}", {"flag": True}, {"flag": 1}),
        ("{$.to: {eq: null}}", {"to": None}, {"to": "x"}),
        ("{$.currency: {ne: EUR}}", {"currency": "USD"}, {"currency": "EUR"}),
        ("{$.amount: {gt: 1000}}", {"amount": 1000.5}, {"amount": 1000}),
        ("{$.amount: {gte: 1000}}", {"amount": 1000}, {"amount": 999}),
        ("{$.amount: {lt: 10}}", {"amount": 9}, {"amount": 10}),
        ("{$.amount: {lte: 10}}", {"amount": 10}, {"amount": "10"}),
        ("{$.day: {gte: '2024-06-01'}}", {"day": "2024-07-01"}, {"day": "2024-05-31"}),
        ("{$.recipient.email: {in: [a@x.com, b@x.com]}}", {"recipient": {"email": "b@x.com"}},
         {"recipient": {"email": "c@x.com"}}),
        ("{$.recipient.email: {not_in: [a@x.com]}}", {"recipient": {"email": "z@evil.com"}},
         {"recipient": {"email": "a@x.com"}}),
        ("{$.body: {contains: password}}", {"body": "my password is"}, {"body": "hello"}),
        ("{$.tags: {contains: urgent}}", {"tags": ["a", "urgent"]}, {"tags": ["a"]}),
        ("{$.to: {matches: '@(evil|spam)\\.com$'}}", {"to": "x@evil.com"}, {"to": "x@good.com"}),
        ("{'$.items[0].sku': {matches: '^SKU-'}}", {"items": [{"sku": "SKU-1"}]}, {"items": [{"sku": "X"}]}),
        ("{'$.items[-1].qty': {gt: 9}}", {"items": [{"qty": 1}, {"qty": 10}]}, {"items": []}),
        ("{\"$['odd key']\": {eq: 1}}", {"odd key": 1}, {"odd_key": 1}),
        ("{$.dry_run: {exists: true}}", {"dry_run": False}, {}),
        ("{$.dry_run: {exists: false}}", {}, {"dry_run": None}),
        ("{$.amount: {gt: 0, lt: 100}}", {"amount": 50}, {"amount": 500}),
    ],
)  # fmt: skip
def test_args_condition_passes_and_fails(condition, passing, failing):
    policy = parse_policy(one_rule(f"{{args: {condition}}}"))
    assert evaluate(policy, DecisionRequest("t", passing)) == HIT
    assert evaluate(policy, DecisionRequest("t", failing)) == MISS


@pytest.mark.parametrize(
    "op", ["eq: 1", "ne: 1", "gt: 1", "in: [1]", "not_in: [1]", "contains: a", "matches: a"]
)
def test_condition_on_a_missing_path_is_false(op):
    policy = parse_policy(one_rule(f"{{args: {{$.a.b: {{{op}}}}}}}"))
    assert evaluate(policy, DecisionRequest("t", {"a": {}})) == MISS
    assert evaluate(policy, DecisionRequest("t", {"a": "scalar"})) == MISS


def test_first_matching_rule_wins():
    policy = parse_policy(
        DEFAULT + "rules:\n"
        "  - {id: first, decision: allow, reason_code: small, match: {tool: pay, args: {$.amount: {lte: 10}}}}\n"
        "  - {id: second, decision: require_approval, reason_code: any_pay, match: {tool: pay}}\n"
        "  - {id: third, decision: allow, reason_code: never, match: {tool: pay}}\n"
    )
    assert evaluate(policy, DecisionRequest("pay", {"amount": 5})) == Decision("allow", "small", "first")
    assert evaluate(policy, DecisionRequest("pay", {"amount": 50})) == Decision(
        "require_approval", "any_pay", "second"
    )


def test_explicit_default_applies_when_nothing_matches():
    policy = parse_policy("default: {decision: allow, reason_code: open}\nrules: []\n")
    assert evaluate(policy, DecisionRequest("anything")) == Decision("allow", "open", None)


def test_policy_tool_config_overrides_the_agents_claim():
    policy = parse_policy(
        DEFAULT + "tools: {wire: {action_class: external_write, autonomy_level: L3}}\nrules:\n"
        "  - {id: r1, decision: require_approval, reason_code: hit, match: {action_class: external_write, autonomy_level: L3}}\n"
    )
    claim = DecisionRequest("wire", action_class="read", autonomy_level="L0")
    assert evaluate(policy, claim) == HIT


def test_no_policy_denies():
    assert evaluate(None, DecisionRequest("t")) == Decision("deny", "no_active_policy", None)


def test_kill_switch_denies_external_writes_whatever_the_rules_say():
    policy = parse_policy(
        "default: {decision: allow, reason_code: open}\ntools: {wire: {action_class: external_write}}\n"
        "rules:\n  - {id: ok, decision: allow, reason_code: ok, match: {tool: wire}}\n"
    )
    assert evaluate(policy, DecisionRequest("wire")) == Decision("allow", "ok", "ok")
    assert evaluate(policy, DecisionRequest("wire"), kill_switch=True) == Decision(
        "deny", "kill_switch", None
    )
    assert (
        evaluate(None, DecisionRequest("t", action_class="external_write"), kill_switch=True).reason_code
        == "kill_switch"
    )


def test_kill_switch_spares_classified_non_external_actions_but_not_unclassified_ones():
    policy = parse_policy(
        "default: {decision: allow, reason_code: open}\ntools: {search: {action_class: read}}\nrules: []"
    )
    assert evaluate(policy, DecisionRequest("search"), kill_switch=True) == Decision("allow", "open", None)
    assert (
        evaluate(policy, DecisionRequest("fs.write", action_class="write"), kill_switch=True).decision
        == "allow"
    )
    assert evaluate(policy, DecisionRequest("mystery"), kill_switch=True) == Decision(
        "deny", "kill_switch", None
    )


class ExplodingArgs(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_evaluation_error_denies():
    policy = parse_policy(one_rule("{args: {$.a: {eq: 1}}}", decision="allow"))
    assert evaluate(policy, DecisionRequest("t", ExplodingArgs())) == Decision(
        "deny", "evaluation_error", None
    )
    assert evaluate(policy, DecisionRequest(None)).reason_code == "evaluation_error"  # type: ignore[arg-type]
    assert evaluate(policy, DecisionRequest("t", [("a", 1)])).reason_code == "evaluation_error"  # type: ignore[arg-type]


def test_decisions_are_not_cached_across_arguments():
    policy = parse_policy(one_rule("{args: {$.a: {eq: 1}}}"))
    assert [evaluate(policy, DecisionRequest("t", {"a": a})) for a in (1, 2, 1)] == [HIT, MISS, HIT]


FUZZ_POLICY = parse_policy(
    DEFAULT + "rules:\n"
    "  - {id: a, decision: allow, reason_code: x, match: {args: {'$.a.b[0]': {gt: 1}, $.c: {in: [1, x, null]}}}}\n"
    "  - {id: b, decision: allow, reason_code: x, match: {args: {$.s: {matches: '^a+$', contains: a}}}}\n"
    "  - {id: c, decision: allow, reason_code: x, match: {args: {$.l: {contains: 1}, $.e: {exists: false}}}}\n"
    "  - {id: d, decision: allow, reason_code: x, match: {args: {$.n: {ne: 3, lte: zz}}}}\n"
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(st.sampled_from(["a", "b", "c", "s", "l", "e", "n", "zz"]) | st.text(max_size=4),
                            json_values, max_size=6))  # fmt: skip
def test_evaluate_never_raises_for_arbitrary_args(args):
    decision = evaluate(FUZZ_POLICY, DecisionRequest("t", args))
    assert decision.decision in ("allow", "deny")
    assert decision.reason_code in ("x", "default_deny")
