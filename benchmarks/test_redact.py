"""Redaction cost per span (ingest hot path): clean spans, secret-laden spans, and a custom-rule policy.

Budget: ingest targets 40,000 spans/s on 2 cores, i.e. 50 µs per span per core, and redaction may use
under 25% of it: < 12.5 µs for a typical (clean) span.

    .venv/bin/python -m pytest benchmarks/test_redact.py --benchmark-only --benchmark-columns=min,median,mean,rounds
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from otlp_receiver.model import Span, SpanEvent
from otlp_receiver.redact import RedactionPolicy, Redactor

KEY = b"benchmark-fingerprint-key-32byte"
SYSTEM = "You are a helpful travel assistant.\nAnswer briefly and cite the tool you used."
QUESTION = ("What is the weather in Paris tomorrow? I land at 9:30 and have a meeting at 14:00 near the Louvre, "
            "so tell me whether to take an umbrella and which metro line is fastest from CDG.")
ANSWER = ("Tomorrow in Paris: light rain in the morning (12 °C), clearing after 13:00.\n"
          "Take an umbrella. RER B from CDG to Châtelet, then line 1 to Palais-Royal – about 50 minutes.")


def make_span(*, secrets: bool = False, index: int = 0) -> Span:
    """A typical ~1 KB chat span: a dozen attributes, two JSON message lists, an event."""
    question, answer = QUESTION, ANSWER
    if secrets:
        question += f" My card is 4111 1111 1111 1111, email jane.doe{index}@example.com, call +1 415 555 0134."
        answer += "\nUse key sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789 in the header."
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": f"chatcmpl-{index:012d}",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 412,
        "gen_ai.usage.output_tokens": 96, "gen_ai.request.temperature": 0.2, "server.address": "api.openai.com",
        "gen_ai.input.messages": json.dumps([
            {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
            {"role": "user", "parts": [{"type": "text", "content": question}]}]),
        "gen_ai.output.messages": json.dumps([
            {"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]),
        "session.id": "sess-7f3a9c",
    }
    if secrets:
        attributes["http.request.header.authorization"] = ["Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig123456"]
    return Span(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7", parent_span_id=None,
                name="chat gpt-4o-mini", kind=3, start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_001_000_000_000,
                attributes=attributes, resource={"service.name": "travel-agent", "telemetry.sdk.language": "python"},
                events=(SpanEvent("gen_ai.choice", 1_700_000_000_900_000_000, {"index": 0}),))


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionPolicy.default(), fingerprint_key=KEY)


def test_typical_span_is_about_one_kilobyte() -> None:
    span = make_span()
    size = sum(len(str(k)) + len(str(v)) for k, v in span.attributes.items())
    assert 800 <= size <= 1600


def test_redact_clean_span(benchmark: Any, redactor: Redactor) -> None:
    span = make_span()
    out, meta = benchmark(redactor.redact_span, span)
    assert out is span and meta.is_empty()


def test_redact_dirty_span(benchmark: Any, redactor: Redactor) -> None:
    span = make_span(secrets=True)
    out, meta = benchmark(redactor.redact_span, span)
    assert out is not span and len(meta.paths) == 3


def test_redact_clean_span_with_custom_rule(benchmark: Any) -> None:
    policy = RedactionPolicy.from_config({"rules": [
        {"rule_id": "value.employee_id", "reason": "employee id", "kind": "value", "pattern": r"\bEMP-\d{6}\b"}]})
    redactor = Redactor(policy, fingerprint_key=KEY)
    span = make_span()
    out, _ = benchmark(redactor.redact_span, span)
    assert out is span
