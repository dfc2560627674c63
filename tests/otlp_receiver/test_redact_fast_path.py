"""The redaction fast path (one scan over a span's joined strings, keys judged once per key shape) only
decides whether the exact pass runs: with it, a span comes out exactly as the exact pass alone makes it."""

from __future__ import annotations

import copy
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


# A secret split over the end of one span's strings and the start of the next (the batch scan joins them).
_halves = st.sampled_from(["", "jane.roe@", "example.org", "5555 5555", " 5555 4444", '{"pass', 'word": "x"}', "note"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(attributes, _halves, _halves), min_size=0, max_size=6), st.sampled_from([DEFAULT, CUSTOM]))
def test_a_batch_is_redacted_exactly_as_each_span_alone(
        batch: list[tuple[dict[str, Any], str, str]], redactor: Redactor) -> None:
    spans = [make_span({**attrs, "tail": tail}, name=head) for attrs, head, tail in batch]
    assert redactor.redact_spans(spans) == [_Rewrite(redactor, is_upstream_redacted(s)).span(s) for s in spans]


def test_one_scan_per_clean_batch_and_every_dirty_span_found() -> None:
    """The fast path's point: a clean batch is one RE2 call, not one per span (each call drops the GIL)."""
    calls = []

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def Match(self, *args: Any) -> Any:  # noqa: N802 - RE2's name
            calls.append(args[2:])
            return self.inner.Match(*args)

    policy = copy.copy(RedactionPolicy.default())  # the default policy is shared: count on a copy
    policy.detect = Counting(policy.detect)
    redactor = Redactor(policy, fingerprint_key=KEY)
    clean = [make_span({"note": f"step {i}", "gen_ai.request.model": "gpt-4o"}, name=f"chat {i}") for i in range(200)]
    assert all(meta.is_empty() for _, meta in redactor.redact_spans(clean))
    assert len(calls) == 1
    dirty = list(clean)
    for i in (0, 57, 199):
        dirty[i] = make_span({"note": "mail jane.roe@example.org"}, name="chat")
    out = redactor.redact_spans(dirty)
    assert [i for i, (_, meta) in enumerate(out) if not meta.is_empty()] == [0, 57, 199]
    assert "jane.roe@example.org" not in repr(out)
