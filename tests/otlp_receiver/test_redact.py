"""Tests for otlp_receiver.redact and redact_rules: default rules, walking, markers, config, robustness."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otlp_receiver.errors import ConfigError
from otlp_receiver.model import RedactionRuleHit, Span, SpanEvent, SpanLink
from otlp_receiver.redact import (
    DEFAULT_RULES,
    MAX_DEPTH,
    RedactionPolicy,
    RedactionRule,
    Redactor,
    fingerprint,
    is_upstream_redacted,
)
from otlp_receiver.redact_rules import UNANCHORED

KEY = b"tenant-a-fingerprint-key-0123456"
OTHER_KEY = b"tenant-b-fingerprint-key-6543210"
MARKER = re.compile(r"\[REDACTED:([A-Za-z0-9_.-]+):([0-9a-f]{16})\]")
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\nggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def make_span(attributes: dict[str, Any] | None = None, **overrides: Any) -> Span:
    """A minimal span; keyword overrides replace any field."""
    fields: dict[str, Any] = dict(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7",
                                  parent_span_id=None, name="chat gpt-4o", kind=3, start_ns=1, end_ns=2,
                                  attributes=attributes or {})
    fields.update(overrides)
    return Span(**fields)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(RedactionPolicy.default(), fingerprint_key=KEY)


def redact_value(redactor: Redactor, value: Any, key: str = "note") -> tuple[Any, Any]:
    """Redact one attribute; returns (new value, meta)."""
    out, meta = redactor.redact_span(make_span({key: value}))
    return out.attributes[key], meta


def rule_ids(meta: Any) -> set[str]:
    return {hit.rule_id for hit in meta.rules}


# --- value rules: one hit and one near miss each ----------------------------------------------------------
VALUE_CASES = [
    ("value.private_key", f"key:\n{PEM}\nthanks", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw",
     "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----"),
    ("value.jwt", f"token {JWT} end", JWT, "the header eyJhbGciOi is truncated"),
    ("value.sk_api_key", "use sk-proj-Abcdefghijklmnopqrstuvwx0123 now", "sk-proj-Abcdefghijklmnopqrstuvwx0123",
     "ask-the-team and task-force-alpha, sk-short"),
    ("value.sk_api_key", "anthropic sk-ant-api03-" + "x1" * 40, "sk-ant-api03-" + "x1" * 40, "sk-ant is a prefix"),
    ("value.aws_access_key_id", "id AKIAIOSFODNN7EXAMPLE ok", "AKIAIOSFODNN7EXAMPLE", "AKIA1234 and AKIAIOSFODNN7EXAMPLEXYZ"),
    ("value.github_token", "ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9, "ghp_short and gh_pages"),
    ("value.github_token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_11ABCDEFG0123456789",
     "see github_pat_docs"),
    ("value.slack_token", "xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF", "xoxo-friends forever"),
    ("value.google_api_key", "AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv",
     "AIzaShort"),
    ("value.bearer_token", "Authorization: Bearer abc123def456ghi789", "abc123def456ghi789",
     "the bearer instruments were lost"),
    ("value.credential_assignment", "db password=hunter2!x and more", "hunter2!x",
     "password: None, prompt_tokens=5, token_count: 7"),
    ("value.email", "write to jane.doe+tw@example.co.uk today", "jane.doe+tw@example.co.uk",
     "user@localhost and @decorator"),
    ("value.iban", "pay GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32",
     "GB83 WEST 1234 5698 7654 32 has a bad checksum"),
    ("value.iban", "IBAN DE89370400440532013000.", "DE89370400440532013000", "DE00370400440532013000"),
    ("value.payment_card", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111",
     "order 4111111111111112 and ts 1700000000123456789"),
    ("value.payment_card", "amex 378282246310005", "378282246310005", "order 1234567812345678"),
    ("value.us_ssn", "ssn 123-45-6789.", "123-45-6789", "000-12-3456, 666-12-3456, 123-00-4567"),
    ("value.phone", "call +1 415 555 0134 or (415) 555-0134", "415 555 0134",
     "on 2024-01-15 at 10:30, id 1700000000, version 1.2.3, 3.14159"),
    ("value.phone", "uk +44 20 7946 0958", "+44 20 7946 0958", "score 20 to 7946"),
]


@pytest.mark.parametrize(("rule_id", "text", "secret", "near_miss"), VALUE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(VALUE_CASES)])
def test_value_rule_masks_hit_and_keeps_near_miss(redactor: Redactor, rule_id: str, text: str, secret: str,
                                                  near_miss: str) -> None:
    value, meta = redact_value(redactor, text)
    assert secret not in value
    assert rule_id in {m.group(1) for m in MARKER.finditer(value)} | rule_ids(meta)
    assert meta.paths == ("$.attributes['note']",)
    kept, kept_meta = redact_value(redactor, near_miss)
    assert kept == near_miss and kept_meta.is_empty()


def test_every_default_value_rule_has_a_case() -> None:
    covered = {case[0] for case in VALUE_CASES}
    assert covered == {r.rule_id for r in DEFAULT_RULES if r.kind == "value"}


def test_bearer_rule_keeps_the_scheme_word(redactor: Redactor) -> None:
    value, _ = redact_value(redactor, "Bearer abc123def456ghi789")
    assert value.startswith("Bearer [REDACTED:value.bearer_token:")


def test_value_rules_only_mask_the_matching_part(redactor: Redactor) -> None:
    value, _ = redact_value(redactor, "mail jane@example.com now")
    assert MARKER.fullmatch(value.removeprefix("mail ").removesuffix(" now"))


# --- key rules ------------------------------------------------------------------------------------------
KEY_CASES = [
    ("key.authorization", "Authorization", "http.request.header.author"),
    ("key.authorization", "http.request.header.authorization", "gen_ai.agent.author"),
    ("key.cookie", "Set-Cookie", "cook_time"),
    ("key.api_key", "x-api-key", "api_version"),
    ("key.api_key", "OPENAI_APIKEY", "apiary"),
    ("key.password", "db.password", "pass_rate"),
    ("key.secret", "client_secret", "secretary_name" if False else "section"),
    ("key.private_key", "private_key", "private_note"),
    ("key.credential", "aws.credentials", "cred_card_brand"),
    ("key.token", "session_token", "gen_ai.usage.input_tokens"),
    ("key.token", "X-Auth-Token", "llm.token_count.prompt"),
    ("key.token", "refreshToken", "tokenizer"),
]


@pytest.mark.parametrize(("rule_id", "key", "near_key"), KEY_CASES, ids=[f"{c[0]}-{c[1]}" for c in KEY_CASES])
def test_key_rule_masks_whole_value_and_spares_near_keys(redactor: Redactor, rule_id: str, key: str,
                                                         near_key: str) -> None:
    out, meta = redactor.redact_span(make_span({key: "opaque value 42", near_key: "opaque value 42"}))
    assert MARKER.fullmatch(out.attributes[key]) and MARKER.fullmatch(out.attributes[key]).group(1) == rule_id
    assert out.attributes[near_key] == "opaque value 42"
    assert meta.paths == (f"$.attributes['{key}']",)
    assert meta.rules == (RedactionRuleHit(rule_id, next(r.reason for r in DEFAULT_RULES if r.rule_id == rule_id)),)


def test_every_default_key_rule_has_a_case() -> None:
    assert {c[0] for c in KEY_CASES} == {r.rule_id for r in DEFAULT_RULES if r.kind == "key"}


def test_token_counts_are_untouched(redactor: Redactor) -> None:
    attributes = {"gen_ai.usage.input_tokens": 412, "gen_ai.usage.output_tokens": "96",
                  "llm.token_count.prompt": 7, "llm.token_count.completion": 3, "gen_ai.request.max_tokens": 1024,
                  "gen_ai.usage.cache_read.input_tokens": 5}
    span = make_span(attributes)
    out, meta = redactor.redact_span(span)
    assert out is span and meta.is_empty()


def test_key_rule_masks_numbers_and_containers_but_not_bools(redactor: Redactor) -> None:
    out, meta = redactor.redact_span(make_span({
        "pin_password": 123456, "http.request.header.authorization": ["Bearer a", "Basic b"],
        "credentials": {"user": "bob", "pass": "x"}, "password_set": True}))
    attrs = out.attributes
    assert MARKER.fullmatch(attrs["pin_password"])
    assert isinstance(attrs["http.request.header.authorization"], list)
    assert all(MARKER.fullmatch(v) for v in attrs["http.request.header.authorization"])
    assert set(attrs["credentials"]) == {"user", "pass"} and all(MARKER.fullmatch(v) for v in attrs["credentials"].values())
    assert attrs["password_set"] is True
    assert len(meta.paths) == 3


def test_key_rules_apply_to_nested_and_json_keys(redactor: Redactor) -> None:
    args = json.dumps({"api_key": "zzz-123", "city": "Paris"})
    messages = json.dumps([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": args}}]}])
    out, meta = redactor.redact_span(make_span({"gen_ai.output.messages": messages,
                                                "config": {"nested": {"Password": "pw-1"}}}))
    decoded = json.loads(out.attributes["gen_ai.output.messages"])
    inner = json.loads(decoded[0]["tool_calls"][0]["function"]["arguments"])
    assert MARKER.fullmatch(inner["api_key"]) and inner["city"] == "Paris"
    assert MARKER.fullmatch(out.attributes["config"]["nested"]["Password"])
    assert meta.paths == ("$.attributes['gen_ai.output.messages'][0].tool_calls[0].function.arguments.api_key",
                          "$.attributes['config'].nested.Password")


# --- structure: JSON in strings, kvlists, arrays, events, resource, links, name, status ----------------
def test_json_in_string_is_redacted_inside_and_stays_json(redactor: Redactor) -> None:
    messages = json.dumps([{"role": "user", "content": "I am jane@example.com"}, {"role": "system", "content": "hi"}])
    out, meta = redactor.redact_span(make_span({"gen_ai.input.messages": messages}))
    decoded = json.loads(out.attributes["gen_ai.input.messages"])
    assert decoded[1] == {"role": "system", "content": "hi"}
    assert decoded[0]["content"].startswith("I am [REDACTED:value.email:")
    assert meta.paths == ("$.attributes['gen_ai.input.messages'][0].content",)


@pytest.mark.parametrize("neighbour", ["\n", "\t", "\u00a0", "é", '"', "\\"])
def test_json_escapes_next_to_a_secret_do_not_hide_it(redactor: Redactor, neighbour: str) -> None:
    for secret in ("4111 1111 1111 1111", JWT, "AKIAIOSFODNN7EXAMPLE", "123-45-6789", "sk-" + "a" * 24):
        for ensure_ascii in (True, False):
            text = json.dumps({"content": f"x{neighbour}{secret}{neighbour}y"}, ensure_ascii=ensure_ascii)
            value, meta = redact_value(redactor, text, key="input.value")
            assert secret not in json.loads(value)["content"], (secret, neighbour, ensure_ascii)


def test_truncated_json_is_still_searched(redactor: Redactor) -> None:
    truncated = json.dumps({"content": "line one\n4111 1111 1111 1111 and more text"})[:-8]
    value, meta = redact_value(redactor, truncated, key="output.value")
    assert "4111 1111 1111 1111" not in value and rule_ids(meta) == {"value.payment_card"}


def test_kvlist_and_array_values_are_walked(redactor: Redactor) -> None:
    value = {"a": ["x", "mail jane@example.com"], "b": ("call +1 415 555 0134",), "c": 5}
    new, meta = redact_value(redactor, value, key="tool.args")
    assert new["a"][0] == "x" and "jane@example.com" not in new["a"][1]
    assert isinstance(new["b"], tuple) and "555 0134" not in new["b"][0] and new["c"] == 5
    assert meta.paths == ("$.attributes['tool.args'].a[1]", "$.attributes['tool.args'].b[0]")


def test_nested_map_keys_holding_secrets_are_masked(redactor: Redactor) -> None:
    new, meta = redact_value(redactor, {"jane@example.com": {"visits": 3}}, key="users")
    (only_key,) = new
    assert MARKER.fullmatch(only_key) and new[only_key] == {"visits": 3}
    assert meta.paths[0].startswith("$.attributes['users']['[REDACTED:value.email:")


def test_events_resource_links_name_and_status_are_walked(redactor: Redactor) -> None:
    span = make_span(
        {"ok": "fine"}, name="lookup jane@example.com", status_message="failed for bob@example.com",
        events=(SpanEvent("exception", 5, {"exception.message": "card 4111111111111111 declined"}),
                SpanEvent("user mail ann@example.com", 6)),
        links=(SpanLink("a" * 32, "b" * 16, {"peer.token": "tok-1"}),),
        resource={"service.name": "svc", "owner.email": "ops@example.com"})
    out, meta = redactor.redact_span(span)
    assert set(meta.paths) == {"$.name", "$.status.message", "$.events[0].attributes['exception.message']",
                               "$.events[1].name", "$.links[0].attributes['peer.token']",
                               "$.resource['owner.email']"}
    assert "example.com" not in repr(out) and "4111111111111111" not in repr(out)
    assert out.attributes is span.attributes and out.events[0].time_ns == 5


def test_bytes_values_holding_text_are_searched(redactor: Redactor) -> None:
    new, _ = redact_value(redactor, b"mail jane@example.com")
    assert isinstance(new, bytes) and b"jane@example.com" not in new
    binary = bytes(range(256))
    assert redact_value(redactor, binary)[0] is binary


def test_clean_span_is_returned_as_the_same_object(redactor: Redactor) -> None:
    span = make_span({"gen_ai.input.messages": json.dumps([{"role": "user", "content": "weather in Paris?"}]),
                      "gen_ai.usage.input_tokens": 5, "usage": json.dumps({"prompt_tokens": 5, "total_tokens": 9}),
                      "list": ["a", {"b": 1.5}], "blob": b"\x00\x01"})
    out, meta = redactor.redact_span(span)
    assert out is span and meta.is_empty()


def test_meta_lists_distinct_rules_in_firing_order(redactor: Redactor) -> None:
    _, meta = redactor.redact_span(make_span({"a": "x@example.com y@example.com", "b": "z@example.com",
                                              "c": "4111 1111 1111 1111"}))
    assert [hit.rule_id for hit in meta.rules] == ["value.email", "value.payment_card"]
    assert meta.paths == ("$.attributes['a']", "$.attributes['b']", "$.attributes['c']")


def test_deep_nesting_is_masked_without_raising(redactor: Redactor) -> None:
    deep: Any = "jane@example.com"
    for _ in range(5000):
        deep = [deep]
    out, meta = redactor.redact_span(make_span({"deep": deep, "shallow": [[["x"]]]}))
    assert "limit.depth" in rule_ids(meta) and "jane@example.com" not in repr(out.attributes["deep"])[:10_000]
    assert out.attributes["shallow"] == [[["x"]]]
    assert MAX_DEPTH >= 16


def test_attribute_paths_quote_odd_keys(redactor: Redactor) -> None:
    _, meta = redactor.redact_span(make_span({"it's": {"a b": "jane@example.com"}}))
    assert meta.paths == ("$.attributes['it\\'s']['a b']",)


def test_redact_payload_roots_paths_at_the_payload(redactor: Redactor) -> None:
    payload = {"input": {"messages": [{"role": "user", "content": "I am jane@example.com"}]},
               "attributes": {"gen_ai.request.model": "m", "api_key": "k-1"}, "output": "fine"}
    new, meta = redactor.redact_payload(payload)
    assert meta.paths == ("$.input.messages[0].content", "$.attributes.api_key")
    assert "jane@example.com" not in json.dumps(new) and new["output"] == "fine"
    clean = {"input": "hello", "n": 1}
    same, empty = redactor.redact_payload(clean)
    assert same is clean and empty.is_empty()


def test_anchored_custom_rules_still_apply() -> None:
    policy = RedactionPolicy.from_config({"rules": [
        {"rule_id": "value.order", "reason": "order id", "kind": "value", "pattern": r"^ORDER-\d+$"},
        {"rule_id": "value.whole", "reason": "whole", "kind": "value", "pattern": r"\Acode-\d+\z"},
        {"rule_id": "value.literal_backslash", "reason": "x", "kind": "value", "pattern": r"C:\\\\1x"}]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    out, meta = redactor.redact_span(make_span({"a": "x", "b": "ORDER-123", "c": "code-9", "d": "see ORDER-1"}))
    assert out.attributes["a"] == "x" and out.attributes["d"] == "see ORDER-1"
    assert MARKER.fullmatch(out.attributes["b"]) and MARKER.fullmatch(out.attributes["c"])
    assert not policy.batchable


# --- markers and fingerprints ---------------------------------------------------------------------------
def test_fingerprint_is_truncated_hmac_sha256() -> None:
    assert fingerprint(KEY, "secret") == hmac.new(KEY, b"secret", hashlib.sha256).hexdigest()[:16]


def test_same_secret_gives_the_same_marker_across_spans(redactor: Redactor) -> None:
    first, _ = redact_value(redactor, "jane@example.com")
    other = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
    second, _ = redact_value(other, "hello jane@example.com", key="other")
    assert first == second.removeprefix("hello ")
    assert first == f"[REDACTED:value.email:{fingerprint(KEY, 'jane@example.com')}]"


def test_different_secrets_give_different_markers(redactor: Redactor) -> None:
    first, _ = redact_value(redactor, "jane@example.com")
    second, _ = redact_value(redactor, "john@example.com")
    assert first != second


def test_different_tenant_keys_give_different_markers() -> None:
    first, _ = redact_value(Redactor(RedactionPolicy.default(), fingerprint_key=KEY), "jane@example.com")
    second, _ = redact_value(Redactor(RedactionPolicy.default(), fingerprint_key=OTHER_KEY), "jane@example.com")
    assert first != second


def test_short_fingerprint_keys_are_rejected() -> None:
    with pytest.raises(ValueError):
        Redactor(RedactionPolicy.default(), fingerprint_key=b"short")


def test_redacting_twice_changes_nothing(redactor: Redactor) -> None:
    once, _ = redactor.redact_span(make_span({"a": "jane@example.com 4111111111111111", "password": "pw"}))
    twice, meta = redactor.redact_span(once)
    assert twice is once and meta.is_empty()


# --- upstream (Collector redaction processor) -----------------------------------------------------------
def test_upstream_masks_are_not_reflagged(redactor: Redactor) -> None:
    span = make_span({"redaction.masked.keys": "authorization,password", "redaction.masked.count": 2,
                      "authorization": "****", "password": "Bearer ****", "note": "card ****, password: ****"})
    out, meta = redactor.redact_span(span)
    assert is_upstream_redacted(span)
    assert out is span and meta.is_empty()


def test_partly_masked_values_under_secret_keys_are_still_masked(redactor: Redactor) -> None:
    out, meta = redactor.redact_span(make_span({"password": "hunter****2", "api_key": "[REDACTED:x:0123456789abcdef]"}))
    assert MARKER.fullmatch(out.attributes["password"]) and meta.paths == ("$.attributes['password']",)
    assert out.attributes["api_key"] == "[REDACTED:x:0123456789abcdef]"


def test_upstream_hex_digests_are_recognised_only_on_hashed_spans(redactor: Redactor) -> None:
    digest = hashlib.sha256(b"pw").hexdigest()
    hashed = make_span({"redaction.masked.count": "1", "password": digest})
    assert redactor.redact_span(hashed)[0] is hashed
    plain, meta = redactor.redact_span(make_span({"password": digest}))
    assert MARKER.fullmatch(plain.attributes["password"]) and not is_upstream_redacted(make_span({}))


# --- policy configuration -------------------------------------------------------------------------------
def test_custom_rule_is_added_and_fires() -> None:
    policy = RedactionPolicy.from_config({"rules": [
        {"rule_id": "value.employee_id", "reason": "employee id", "kind": "value", "pattern": r"\bEMP-\d{6}\b"},
        {"rule_id": "key.internal", "reason": "internal", "kind": "key", "pattern": "x-internal-*"}]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    out, meta = redactor.redact_span(make_span({
        "note": "ticket for EMP-123456", "X-Internal-Route": "r1",
        "input.value": json.dumps({"who": "EMP-654321"})}))
    assert "EMP-123456" not in out.attributes["note"] and "EMP-654321" not in out.attributes["input.value"]
    assert MARKER.fullmatch(out.attributes["X-Internal-Route"])
    assert {"value.employee_id", "key.internal"} <= rule_ids(meta)


def test_custom_rule_with_secret_group_and_validator() -> None:
    policy = RedactionPolicy.from_config({"rules": [
        {"rule_id": "value.acct", "reason": "account", "kind": "value", "pattern": r"acct:(?P<secret>[\d ]{13,23})",
         "validator": "luhn"}]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    value, _ = redact_value(redactor, "acct:4111111111111111")
    assert value.startswith("acct:[REDACTED:")


def test_disable_and_enable_rules() -> None:
    policy = RedactionPolicy.from_config({"disable": ["value.email", "key.token"]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    out, meta = redactor.redact_span(make_span({"a": "jane@example.com", "session_token": "t1"}))
    assert out.attributes == {"a": "jane@example.com", "session_token": "t1"} and meta.is_empty()
    again = RedactionPolicy.from_config({"enable": ["value.email"]}, base=policy)
    assert redact_value(Redactor(again, fingerprint_key=KEY), "jane@example.com")[0] != "jane@example.com"


def test_override_changes_a_default_rule() -> None:
    policy = RedactionPolicy.from_config({"override": {"value.phone": {"pattern": r"\b\d{3}-\d{4}\b",
                                                                       "reason": "local phone"}}})
    redactor = Redactor(policy, fingerprint_key=KEY)
    value, meta = redact_value(redactor, "call 555-0134")
    assert "555-0134" not in value and meta.rules == (RedactionRuleHit("value.phone", "local phone"),)


CATASTROPHIC = r"(a+)+$"


def test_catastrophic_patterns_run_in_linear_time() -> None:
    policy = RedactionPolicy.from_config({"rules": [
        {"rule_id": "value.aaa", "reason": "test", "kind": "value", "pattern": CATASTROPHIC},
        {"rule_id": "value.nested", "reason": "test", "kind": "value", "pattern": r"(x+x+)+y"}]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    evil = "a" * 100_000 + "!" + " " + "x" * 100_000
    started = time.perf_counter()
    out, _ = redactor.redact_span(make_span({"evil": evil, "json": json.dumps({"v": evil})}))
    assert time.perf_counter() - started < 2.0
    assert out.attributes["evil"].endswith("x" * 1000)
    assert redact_value(redactor, "baaa")[0] != "baaa"  # and it still matches what it should


@pytest.mark.parametrize(("doc", "path", "message"), [
    ({"rules": [{}, {}, {"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": r"(a)\1"}]},
     "rules[2]", "rules[0].rule_id"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": r"(a)\1"}]},
     "rules[0].pattern", "backreferences are not supported"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": r"(?P<n>a)(?P=n)"}]},
     "rules[0].pattern", "backreferences are not supported"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": r"foo(?=bar)"}]},
     "rules[0].pattern", "lookahead/lookbehind is not supported"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": r"(?<!a)b"}]},
     "rules[0].pattern", "lookahead/lookbehind is not supported"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": "([a-z"}]},
     "rules[0].pattern", "invalid RE2 pattern"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": "a*"}]},
     "rules[0].pattern", "matches the empty string"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": "a", "validator": "nope"}]},
     "rules[0].validator", "unknown validator"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "other", "pattern": "a"}]}, "rules[0].kind", "must be"),
    ({"rules": [{"rule_id": "value.email", "reason": "r", "kind": "value", "pattern": "a"}]},
     "rules[0].rule_id", "already exists"),
    ({"rules": [{"rule_id": "bad id!", "reason": "r", "kind": "value", "pattern": "a"}]},
     "rules[0].rule_id", "rule_id must be"),
    ({"rules": [{"rule_id": "v.x", "reason": "r", "kind": "value", "pattern": "a", "colour": 1}]},
     "rules[0].colour", "unknown field"),
    ({"rules": [{"rule_id": "k.x", "reason": "r", "kind": "key", "pattern": "a||b"}]},
     "rules[0].pattern", "glob"),
    ({"disable": ["value.nope"]}, "disable[0]", "unknown rule_id"),
    ({"override": {"value.nope": {"reason": "x"}}}, "override.value.nope", "unknown rule_id"),
    ({"override": {"value.email": {"pattern": r"(\w)\1"}}}, "override.value.email.pattern", "backreferences"),
    ({"override": {"value.email": {"kind": "key"}}}, "override.value.email", "other than rule_id and kind"),
    ({"colour": []}, "colour", "unknown key"),
    ({"rules": "nope"}, "rules", "must be a list"),
])
def test_invalid_config_is_rejected_with_a_path_hint(doc: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedactionPolicy.from_config(doc)
    assert info.value.message.startswith(message if message.startswith("rules[0].rule_id") else f"{path}:")
    assert message in info.value.message


def test_default_policy_is_shared_and_rules_are_plain_data() -> None:
    assert RedactionPolicy.default() is RedactionPolicy.default()
    rule = RedactionRule("value.x", "reason", "value", "abc")
    assert RedactionPolicy([rule]).value_matchers[0].rule is rule


# --- properties -----------------------------------------------------------------------------------------
SECRETS = {
    "value.email": ("jane.roe@example.org", "jane.roe@example.org"),
    "value.phone": ("+1 415 555 0134", "415 555 0134"),
    "value.payment_card": ("5555 5555 5555 4444", "5555 5555 5555 4444"),
    "value.us_ssn": ("123-45-6789", "123-45-6789"),
    "value.iban": ("GB82 WEST 1234 5698 7654 32", "WEST 1234 5698 7654"),
    "value.jwt": (JWT, "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    "value.bearer_token": ("Bearer Zx9Yw8Vu7Ts6Rq5Po4", "Zx9Yw8Vu7Ts6Rq5Po4"),
    "value.private_key": (PEM, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw"),
    "value.sk_api_key": ("sk-proj-Qw3rTy8uI0oPaSdFgHjKlZxCv", "Qw3rTy8uI0oPaSdFgHjKlZxCv"),
    "value.aws_access_key_id": ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "value.github_token": ("ghp_" + "Ab3" * 12, "Ab3" * 12),
    "value.slack_token": ("xoxb-123456789012-abcdefABCDEF", "123456789012-abcdefABCDEF"),
    "value.google_api_key": ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "SyA1234567890abcdefghijklmnopqrstuv"),
    "value.credential_assignment": ("password=Hunter2Pass!", "Hunter2Pass!"),
}
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
separators = st.sampled_from([" ", "\n", "\t", ", ", ": ", " (", ") ", '"', " \u00e9 "])


@st.composite
def planted_text(draw: st.DrawFn) -> tuple[str, str]:
    """Random text with one planted secret; returns (text, needle that must not survive)."""
    secret, needle = SECRETS[draw(st.sampled_from(sorted(SECRETS)))]
    before, after = draw(filler), draw(filler)
    return f"{before}{draw(separators)}{secret}{draw(separators)}{after}", needle


@st.composite
def planted_value(draw: st.DrawFn) -> tuple[Any, str]:
    """A planted secret as plain text, JSON text, inside a kvlist or array, or under a secret key."""
    text, needle = draw(planted_text())
    shape = draw(st.sampled_from(["plain", "json", "json_ascii", "nested_json", "kvlist", "array", "key"]))
    if shape == "plain":
        return text, needle
    if shape in ("json", "json_ascii"):
        return json.dumps([{"role": "user", "content": text}], ensure_ascii=shape == "json_ascii"), needle
    if shape == "nested_json":
        return json.dumps({"arguments": json.dumps({"q": text})}), needle
    if shape == "kvlist":
        return {"outer": {"inner": [1, text]}}, needle
    if shape == "array":
        return ["a", text], needle
    secret = "§" + draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20))
    return {"client_secret": secret}, secret


attribute_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(planted_value(), min_size=1, max_size=3),
       st.dictionaries(st.text(max_size=12), st.text(st.characters(exclude_characters="§"), max_size=40), max_size=4),
       st.sampled_from(["attributes", "event", "resource"]))
def test_planted_secrets_never_survive(planted: list[tuple[Any, str]], noise: dict[str, str], where: str) -> None:
    redactor = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
    attributes: dict[str, Any] = dict(noise)
    for i, (value, _) in enumerate(planted):
        attributes[f"planted.{i}"] = value
    if where == "event":
        span = make_span({}, events=(SpanEvent("e", 1, attributes),))
    elif where == "resource":
        span = make_span({}, resource=attributes)
    else:
        span = make_span(attributes)
    out, meta = redactor.redact_span(span)
    dumped = _all_strings(out)
    for _, needle in planted:
        assert needle not in dumped
    assert meta.paths


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), attribute_values, max_size=6), st.text(max_size=30))
def test_redact_span_never_raises(attributes: dict[str, Any], name: str) -> None:
    redactor = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
    span = make_span(attributes, name=name, events=(SpanEvent(name, 1, attributes),))
    out, meta = redactor.redact_span(span)
    assert (out is span) == meta.is_empty()


@pytest.mark.parametrize("value", ["\ud800 jane@example.com", '{"a": "\udfff", "b": "x@example.com"}',
                                   float("nan"), 2**80, b"\xff\xfe", {"k": float("inf")}, "[" * 3000])
def test_odd_values_do_not_raise(redactor: Redactor, value: Any) -> None:
    out, meta = redactor.redact_span(make_span({"v": value}))
    assert isinstance(out, Span)


@settings(max_examples=500, deadline=None)
@given(planted_text(), st.text(max_size=3), st.text(max_size=3), st.booleans())
def test_raw_json_scan_finds_everything_the_decoded_scan_finds(planted: tuple[str, str], before: str, after: str,
                                                                ensure_ascii: bool) -> None:
    redactor = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
    text = before + planted[0] + after
    data = text.encode("utf-8", "surrogatepass")
    if redactor.policy.leaf.Match(UNANCHORED, data, 0, len(data))[0] != (-1, -1):
        assert redactor.is_text_dirty(json.dumps({"content": text}, ensure_ascii=ensure_ascii))


def _all_strings(span: Span) -> str:
    """Every string in the span, JSON-in-string decoded too, joined (to search for planted values)."""
    out: list[str] = [span.name, span.status_message]

    def walk(value: Any) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            out.append(value)
            with contextlib.suppress(orjson.JSONDecodeError):
                walk(orjson.loads(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                out.append(str(key))
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for mapping in (span.attributes, span.resource, *(e.attributes for e in span.events)):
        walk(dict(mapping))
    return "\n".join(out)
