"""Policy documents: parsing, path-hinted validation errors, round trip, gating."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.policy import (
    MAX_POLICY_BYTES,
    PolicyFileError,
    ToolConfig,
    is_gated,
    parse_jsonpath,
    parse_policy,
    policy_to_dict,
    tool_config,
)
from otlp_receiver.errors import UnprocessableError

FULL = """
schema_version: 1
description: payments agent
default: {decision: deny, reason_code: default_deny}
tools:
  "payments.*": {action_class: external_write, autonomy_level: L3}
  search_docs: {action_class: read, fail_open: true}
  delete_*: {gated: true}
rules:
  - id: small-payments
    match:
      tool: "payments.*"
      action_class: external_write
      autonomy_level: [L2, L3]
      agent: "billing-*"
      environment: [prod, staging]
      args:
        $.amount: {lte: 1000, gt: 0}
        $.recipient.email: {not_in: [ceo@example.com]}
        $.items[0].sku: {matches: "^SKU-"}
        $['odd key']: {exists: false}
    decision: allow
    reason_code: small_payment
  - id: big-payments
    match: {tool: "payments.*"}
    decision: require_approval
    reason_code: large_payment
  - id: reads
    match: {action_class: read}
    decision: allow
    reason_code: read_only
"""


def rules_doc(*rules: str) -> str:
    body = "".join(f"  - {r}\n" for r in rules)
    return f"default: {{decision: deny, reason_code: default_deny}}\nrules:\n{body}"


def error_of(text: str, content_type: str = "yaml") -> str:
    with pytest.raises(PolicyFileError) as info:
        parse_policy(text, content_type=content_type)
    assert isinstance(info.value, UnprocessableError)
    return str(info.value)


def test_parse_full_document_keeps_every_field():
    policy = parse_policy(FULL)
    rule = policy.rules[0]
    assert policy.description == "payments agent"
    assert (policy.default.decision, policy.default.reason_code) == ("deny", "default_deny")
    assert (
        rule.rule_id == "small-payments" and rule.decision == "allow" and rule.reason_code == "small_payment"
    )
    assert rule.match.tools == ("payments.*",)
    assert rule.match.autonomy_levels == ("L2", "L3")
    assert rule.match.environments == ("prod", "staging")
    assert [(c.path, c.op) for c in rule.match.args] == [
        ("$.amount", "lte"), ("$.amount", "gt"), ("$.recipient.email", "not_in"),
        ("$.items[0].sku", "matches"), ("$['odd key']", "exists"),
    ]  # fmt: skip


def test_round_trip_through_json_is_equal():
    policy = parse_policy(FULL)
    again = parse_policy(json.dumps(policy_to_dict(policy)), content_type="json")
    assert again == policy
    assert policy_to_dict(again) == policy_to_dict(policy)


def test_json_content_type_is_accepted():
    doc = {"default": {"decision": "allow", "reason_code": "open"}, "rules": []}
    assert parse_policy(json.dumps(doc), content_type="application/json").default.decision == "allow"


def test_tool_config_prefers_exact_name_then_first_glob():
    policy = parse_policy(FULL)
    assert tool_config(policy, "payments.refund").action_class == "external_write"
    assert tool_config(policy, "search_docs") == ToolConfig(action_class="read", fail_open=True)
    assert tool_config(policy, "unknown") == ToolConfig()


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.amount", ("amount",)),
        ("$.recipient.email", ("recipient", "email")),
        ("$.items[0].sku", ("items", 0, "sku")),
        ("$.items[-1]", ("items", -1)),
        ("$['a.b'][\"c\"]", ("a.b", "c")),
    ],
)
def test_jsonpath_subset(path, steps):
    assert parse_jsonpath(path) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {gtx: 1}}}}"),
         "rules[0].match.args: unknown operator 'gtx'"),
        (rules_doc("{id: a, decision: allow, reason_code: ok}",
                   "{id: b, decision: allow, reason_code: ok}",
                   "{id: c, decision: allow, reason_code: ok}",
                   "{id: d, decision: allow, reason_code: ok, match: {args: {$.amount: {gtee: 5}}}}"),
         "rules[3].match.args: unknown operator 'gtee'"),
        (rules_doc("{id: r, decision: maybe, reason_code: ok}"), "rules[0].decision: expected one of"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, colour: red}"), "rules[0]: unknown key 'colour'"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {tool: x, user: y}}"),
         "rules[0].match: unknown key 'user'"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {autonomy_level: L9}}"),
         "rules[0].match.autonomy_level: expected one of L0, L1, L2, L3, L4"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {action_class: [read, delete]}}"),
         "rules[0].match.action_class[1]: expected one of read, write, external_write"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {amount: {eq: 1}}}}"),
         "rules[0].match.args: invalid JSONPath 'amount'"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {in: 3}}}}"),
         "rules[0].match.args: 'in' on '$.a' needs a list"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {gt: true}}}}"),
         "rules[0].match.args: 'gt' on '$.a' needs a number or a string"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {exists: 1}}}}"),
         "rules[0].match.args: 'exists' on '$.a' needs true or false"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {matches: '(?=x)'}}}}"),
         "rules[0].match.args: 'matches' on '$.a': invalid RE2 regex"),
        (rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {eq: [1]}}}}"),
         "rules[0].match.args: 'eq' on '$.a' needs a scalar operand"),
        (rules_doc("{id: r, decision: allow, reason_code: 'Bad Code'}"), "rules[0].reason_code:"),
        (rules_doc("{id: r, decision: allow, reason_code: ok}", "{id: r, decision: deny, reason_code: no}"),
         "rules[1].id: duplicate rule id 'r'"),
        (rules_doc("{decision: allow, reason_code: ok}"), "rules[0]: missing required key 'id'"),
        ("rules: []", "(document): missing required key 'default'"),
        ("default: {decision: deny, reason_code: d}\nrules: []\nextra: 1", "(document): unknown key 'extra'"),
        ("default: {decision: deny, reason_code: d}\nrules: {}", "rules: expected a list"),
        ("default: {decision: deny, reason_code: d}\nrules: []\ntools: {x: {action_class: rw}}",
         "tools.x.action_class: expected one of"),
        ("default: {decision: deny, reason_code: d}\nrules: []\ntools: {x: {fail_open: 'yes'}}",
         "tools.x.fail_open: expected a boolean"),
        ("default: {decision: deny, reason_code: d}\nrules: []\nschema_version: 2",
         "schema_version: unsupported schema version 2"),
        ("default: {decision: deny, reason_code: d}\nrules: []\nrules: []", "(document): line 3: duplicate key 'rules'"),
        ("default: &d {decision: deny, reason_code: d}\nrules: [*d]", "(document): line 2: YAML aliases are not allowed"),
        ("default: [", "(document): invalid YAML at line"),
        ("- just a list", "(document): expected a mapping, got a list"),
    ],
)  # fmt: skip
def test_invalid_documents_name_the_path(text, message):
    assert error_of(text).startswith(message)


def test_error_details_map_the_path_to_the_message():
    text = rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.a: {gte_: 1}}}}")
    with pytest.raises(PolicyFileError) as info:
        parse_policy(text)
    assert info.value.details == {"rules[0].match.args": "unknown operator 'gte_'"}


def test_json_errors_are_path_hinted_too():
    assert error_of('{"default": 1,', content_type="json").startswith("(document): invalid JSON at line 1")
    assert error_of('{"a": 1, "a": 2}', content_type="json") == "(document): duplicate key 'a'"
    assert error_of('{"a": NaN}', content_type="json") == "(document): NaN is not allowed"


def test_oversized_document_is_rejected():
    text = "description: '" + "x" * MAX_POLICY_BYTES + "'\n"
    assert "over the 524288-byte limit" in error_of(text)


def test_unknown_content_type_is_rejected():
    assert error_of("{}", content_type="text/plain").startswith("(document): unsupported content type")


def test_yaml_dates_and_yes_no_stay_strings():
    policy = parse_policy(
        rules_doc("{id: r, decision: allow, reason_code: ok, match: {args: {$.d: {in: [2024-01-01, no]}}}}")
    )
    assert policy.rules[0].match.args[0].value == ("2024-01-01", "no")


def test_tool_is_gated_when_a_rule_can_deny_or_require_approval():
    policy = parse_policy(FULL)
    assert is_gated(policy, "payments.send")  # external_write and require_approval
    assert is_gated(policy, "delete_user")  # listed as gated; default deny also reachable
    assert not is_gated(policy, "search_docs")  # unconditional allow via its action class


def test_tool_is_not_gated_behind_an_unconditional_allow():
    policy = parse_policy(rules_doc(
        "{id: a, decision: allow, reason_code: ok, match: {tool: 'read_*'}}",
        "{id: b, decision: deny, reason_code: no, match: {tool: 'read_secret'}}",
    ))  # fmt: skip
    assert not is_gated(policy, "read_secret")
    assert is_gated(policy, "write_file")  # falls to the default deny


def test_conditional_allow_leaves_the_tool_gated():
    policy = parse_policy(
        rules_doc("{id: a, decision: allow, reason_code: ok, match: {tool: t, agent: 'x-*'}}")
    )
    assert is_gated(policy, "t")


def test_allow_default_and_no_deny_rules_means_ungated():
    policy = parse_policy("default: {decision: allow, reason_code: open}\nrules: []")
    assert not is_gated(policy, "anything")


@pytest.mark.parametrize("content_type", ["yaml", "json"])
def test_deeply_nested_document_is_rejected(content_type):
    assert (
        error_of("[" * 50_000, content_type=content_type) == "(document): the document is nested too deeply"
    )


def test_long_values_are_excerpted_in_errors():
    message = error_of(rules_doc(f"{{id: '{'x' * 500}', decision: allow, reason_code: ok}}"))
    assert message.startswith("rules[0].id: 'xxx") and len(message) < 200


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_policy_file_error(text):
    for content_type in ("yaml", "json"):
        with contextlib.suppress(PolicyFileError):
            parse_policy(text, content_type=content_type)


leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["$.a", "L3", "allow", "eq"])
)
keys = st.sampled_from(
    ["id", "match", "decision", "reason_code", "tool", "args", "agent", "$.a", "gt", "in", "x"]
)
json_docs = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4), max_leaves=25
)


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(json_docs, max_size=4), default=json_docs)
def test_arbitrary_structures_parse_or_raise_policy_file_error(rules, default):
    try:
        parse_policy(json.dumps({"default": default, "rules": rules}), content_type="json")
    except PolicyFileError as exc:
        assert ": " in str(exc)
