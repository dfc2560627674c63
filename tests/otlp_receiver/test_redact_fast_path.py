"""The redaction fast path (one scan over a span's joined strings, keys judged once per key shape) only
decides whether the exact pass runs: with it, a span comes out exactly as the exact pass alone makes it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otlp_receiver.model import SpanEvent
from otlp_receiver.redact import RedactionPolicy, Redactor, _Rewrite, is_upstream_redacted
from tests.otlp_receiver.test_redact import KEY, SECRETS, attribute_values, make_span

# Shared across examples on purpose: key shapes repeat with new values, as they do in production.
DEFAULT = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
CUSTOM = Redactor(RedactionPolicy.from_config({"rules": [
    {"rule_id": "acme.ticket", "reason": "ticket id", "kind": "value", "pattern": r"TCK-\d{4}"},
    {"rule_id": "acme.pin", "reason": "pin", "kind": "key", "pattern": "*pin*"}]}), fingerprint_key=KEY)

keys = st.sampled_from(["note", "api_key", "client_secret", "gen_ai.usage.input_tokens", "token_count", "pin.code",
                        "input.value", "user.password", "redaction.masked.count"]) | st.text(max_size=6)
leaves = st.sampled_from([secret for secret, _ in SECRETS.values()] + ["", "****", "TCK-1234", "jane@example.com",
                                                                      '{"password": "x1y2z3"}', "1", "None"])
values = leaves | attribute_values | st.lists(leaves, max_size=2) | st.dictionaries(keys, leaves, max_size=2)
attributes = st.dictionaries(keys, values, max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attributes, attributes, attributes, st.sampled_from(["chat", "mail jane@example.com", ""]),
       st.sampled_from([DEFAULT, CUSTOM]))
def test_fast_path_changes_nothing_but_speed(attrs: dict[str, Any], resource: dict[str, Any],
                                             event_attrs: dict[str, Any], name: str, redactor: Redactor) -> None:
    span = make_span(attrs, name=name, resource=resource, events=(SpanEvent(name, 1, event_attrs),))
    exact = _Rewrite(redactor, is_upstream_redacted(span)).span(span)
    assert redactor.redact_span(span) == exact


def test_a_key_shape_seen_clean_is_still_masked_when_its_value_is_maskable() -> None:
    redactor = Redactor(RedactionPolicy.default(), fingerprint_key=KEY)
    for value in ("", None, False):  # nothing a key rule would mask
        assert redactor.redact_span(make_span({"api_key": value, "note": "hi"}))[1].is_empty()
    out, meta = redactor.redact_span(make_span({"api_key": "k-123", "note": "hi"}))
    assert out.attributes["api_key"].startswith("[REDACTED:key.api_key:")
    assert meta.paths == ("$.attributes['api_key']",)
