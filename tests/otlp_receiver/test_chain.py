"""Tests for otlp_receiver.chain: canonical JSON, the per-run hash chain, verification and seals."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
import rfc8785  # the reference JCS implementation (a dev dependency)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from otlp_receiver.chain import (
    ChainBreak,
    audit_genesis_hash,
    canonical_json,
    chain_hash,
    encode_payload,
    format_number,
    genesis_hash,
    payload_hash,
    seal_hash,
    seal_record,
    sign_seal,
    step_record,
    verify_chain,
    verify_seal,
)
from otlp_receiver.model import RedactionMeta, RedactionRuleHit, StepType

TENANT, RUN = "tenant-a", "0af7651916cd43dd8448eb211c80319c"
SAFE_INT = 2**53 - 1


# --- builders -------------------------------------------------------------------------------------------
def make_rows(n: int, *, tenant: str = TENANT, run: str = RUN) -> list[dict[str, Any]]:
    """A valid chain of ``n`` stored rows, as the store would return them (payload and meta as JSON text)."""
    rows: list[dict[str, Any]] = []
    prev = genesis_hash(tenant, run)
    for seq in range(n):
        payload = {"attributes": {"i": seq, "gen_ai.request.temperature": 0.5 + seq}, "input": f"step {seq}"}
        meta = {"paths": ["$.attributes['k']"], "rules": [{"rule_id": "value.email", "reason": "email"}]}
        text, p_hash = encode_payload(payload)
        row = {"seq": seq, "type": "tool", "name": f"tool-{seq}", "trace_id": run, "span_id": f"{seq:016x}",
               "parent_span_id": None if seq == 0 else f"{seq - 1:016x}", "start_ns": 1_700_000_000_000_000_000 + seq,
               "payload": text, "payload_hash": p_hash, "redaction_meta": orjson.dumps(meta).decode() if seq % 2 else None,
               "prev_hash": prev}
        row["chain_hash"] = chain_hash(prev, step_record(**{k: row[k] for k in _RECORD_KEYS}))
        prev = row["chain_hash"]
        rows.append(row)
    return rows


_RECORD_KEYS = ("seq", "type", "name", "trace_id", "span_id", "parent_span_id", "start_ns", "payload_hash",
                "redaction_meta")

json_scalars = (st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


# --- canonical JSON -------------------------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(json_values)
def test_canonical_json_equals_rfc8785_within_its_domain(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_number_matches_rfc8785_and_round_trips(value: float) -> None:
    text = format_number(value)
    assert float(text) == value
    if rfc8785 is not None:
        assert text.encode() == rfc8785.dumps(value)


@pytest.mark.parametrize(("value", "expected"), [
    (1.0, "1"), (-0.0, "0"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (1e-6, "0.000001"),
    (1e-7, "1e-7"), (123456789012345680000.0, "123456789012345680000"), (5e-324, "5e-324"), (0.1, "0.1"),
    (-1.5e300, "-1.5e+300"), (2.5e-5, "0.000025"),
])
def test_format_number_follows_ecmascript(value: float, expected: str) -> None:
    assert format_number(value) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_is_deterministic_and_a_fixed_point(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    encoded = canonical_json(value)
    assert encoded == canonical_json(reordered)
    assert canonical_json(orjson.loads(encoded)) == encoded  # what verify re-parses hashes the same


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonical_json(value) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()


def test_canonical_json_keeps_large_integers_exact() -> None:
    start_ns = 1_700_000_000_123_456_789
    assert canonical_json({"start_ns": start_ns}) == b'{"start_ns":1700000000123456789}'


def test_canonical_json_serializes_enums_as_their_values() -> None:
    assert canonical_json({StepType.MODEL: StepType.TOOL}) == b'{"model":"tool"}'


@pytest.mark.parametrize("bad", [{"a": float("nan")}, {"a": math.inf}])
def test_canonical_json_rejects_non_finite_floats(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


@pytest.mark.parametrize("bad", [{"a": b"raw"}, {1: "x"}, {"a": {1, 2}}, {"a": 2**70}, {"a": "\ud800"}])
def test_canonical_json_rejects_what_json_cannot_carry(bad: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(bad)


# --- hashes ---------------------------------------------------------------------------------------------
def test_payload_hash_is_prefixed_sha256_of_canonical_json() -> None:
    digest = payload_hash({"b": 1, "a": 2})
    assert digest.startswith("sha256:") and len(digest) == 71
    assert digest == payload_hash({"a": 2, "b": 1})
    assert encode_payload({"b": 1, "a": 2}) == ('{"a":2,"b":1}', digest)


def test_genesis_hash_binds_tenant_and_run() -> None:
    assert genesis_hash("t1", "r1") != genesis_hash("t2", "r1") != genesis_hash("t1", "r2")
    assert genesis_hash("t1", "r1") == genesis_hash("t1", "r1")


def test_step_record_accepts_meta_as_model_dict_or_text() -> None:
    meta = RedactionMeta(paths=("$.name",), rules=(RedactionRuleHit("value.email", "email address"),))
    wire = {"paths": ["$.name"], "rules": [{"rule_id": "value.email", "reason": "email address"}]}
    common = dict(seq=0, type=StepType.MODEL, name="chat", trace_id=RUN, span_id="a" * 16, parent_span_id=None,
                  start_ns=1, payload_hash="sha256:" + "0" * 64)
    records = [step_record(**common, redaction_meta=m) for m in (meta, wire, orjson.dumps(wire).decode())]
    assert records[0] == records[1] == records[2]
    assert step_record(**common, redaction_meta=RedactionMeta())["redaction_meta"] is None
    assert step_record(**common, redaction_meta="")["redaction_meta"] is None


def test_chain_hash_depends_on_prev_and_record() -> None:
    record = step_record(seq=0, type="tool", name="x", trace_id=RUN, span_id="b" * 16, parent_span_id=None,
                         start_ns=5, payload_hash=payload_hash({}), redaction_meta=None)
    prev = genesis_hash(TENANT, RUN)
    assert chain_hash(prev, record) != chain_hash(genesis_hash(TENANT, "other"), record)
    assert chain_hash(prev, record) != chain_hash(prev, {**record, "name": "y"})


# --- verify_chain ---------------------------------------------------------------------------------------
def test_verify_chain_accepts_an_intact_run() -> None:
    rows = make_rows(5)
    verdict = verify_chain(TENANT, RUN, rows, expected_head=rows[-1]["chain_hash"], expected_count=5)
    assert verdict.ok and verdict.steps_checked == 5 and verdict.first_break is None
    assert verdict.head_hash == rows[-1]["chain_hash"]


def test_verify_chain_accepts_an_empty_run() -> None:
    verdict = verify_chain(TENANT, RUN, [], expected_count=0)
    assert verdict.ok and verdict.head_hash == genesis_hash(TENANT, RUN)


def test_verify_chain_accepts_dict_payloads_and_non_canonical_text() -> None:
    rows = make_rows(3)
    rows[0]["payload"] = orjson.loads(rows[0]["payload"])
    rows[1]["payload"] = orjson.dumps(orjson.loads(rows[1]["payload"]), option=orjson.OPT_INDENT_2).decode()
    rows[2]["redaction_meta"] = orjson.loads(rows[2]["redaction_meta"] or "null")
    assert verify_chain(TENANT, RUN, rows).ok


def test_verify_chain_detects_an_edited_payload() -> None:
    rows = make_rows(5)
    rows[2]["payload"] = rows[2]["payload"].replace("step 2", "step X")
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(2, "payload_hash mismatch (payload altered)")


def test_verify_chain_detects_an_edited_payload_with_recomputed_payload_hash() -> None:
    rows = make_rows(5)
    rows[2]["payload"], rows[2]["payload_hash"] = encode_payload({"forged": True})
    verdict = verify_chain(TENANT, RUN, rows)
    assert verdict.first_break == ChainBreak(2, "chain_hash mismatch (step record altered)")
    assert verdict.steps_checked == 2 and verdict.head_hash == rows[1]["chain_hash"]


def test_verify_chain_detects_a_deleted_step() -> None:
    rows = make_rows(5)
    del rows[2]
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(2, "seq gap (expected 2, got 3)")


def test_verify_chain_detects_a_deleted_step_with_renumbered_seqs() -> None:
    rows = make_rows(5)
    del rows[2]
    for seq, row in enumerate(rows):
        row["seq"] = seq
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(2, "prev_hash does not link to the previous step")


def test_verify_chain_detects_two_swapped_steps() -> None:
    rows = make_rows(5)
    rows[1], rows[2] = rows[2], rows[1]
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(1, "seq gap (expected 1, got 2)")


def test_verify_chain_detects_a_replayed_step() -> None:
    rows = make_rows(3)
    verdict = verify_chain(TENANT, RUN, [*rows, rows[1]])
    assert verdict.first_break == ChainBreak(3, "seq out of order (expected 3, got 1)")


def test_verify_chain_detects_swapped_contents_under_kept_seqs() -> None:
    rows = make_rows(5)
    rows[1], rows[2] = rows[2], rows[1]
    rows[1]["seq"], rows[2]["seq"] = 1, 2
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(1, "prev_hash does not link to the previous step")


def test_verify_chain_detects_a_truncated_tail_by_count_and_by_head() -> None:
    rows = make_rows(5)
    head = rows[-1]["chain_hash"]
    by_count = verify_chain(TENANT, RUN, rows[:4], expected_count=5)
    by_head = verify_chain(TENANT, RUN, rows[:4], expected_head=head)
    assert not by_count.ok and by_count.first_break is not None and "expected 5" in by_count.first_break.reason
    assert not by_head.ok and by_head.first_break is not None and "head hash" in by_head.first_break.reason
    assert verify_chain(TENANT, RUN, rows[:4]).ok  # without a seal, a clean truncation is undetectable


def test_verify_chain_detects_edited_redaction_meta() -> None:
    rows = make_rows(5)
    rows[3]["redaction_meta"] = None
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(3, "chain_hash mismatch (step record altered)")


@pytest.mark.parametrize(("column", "value"), [("name", "renamed"), ("start_ns", 1), ("type", "model"),
                                                ("parent_span_id", "f" * 16)])
def test_verify_chain_detects_edited_step_columns(column: str, value: object) -> None:
    rows = make_rows(3)
    rows[1][column] = value
    assert verify_chain(TENANT, RUN, rows).first_break == ChainBreak(1, "chain_hash mismatch (step record altered)")


def test_verify_chain_detects_a_chain_moved_to_another_run() -> None:
    rows = make_rows(3)
    verdict = verify_chain(TENANT, "another-run", rows)
    assert verdict.first_break == ChainBreak(0, "prev_hash does not link to the previous step")


@pytest.mark.parametrize("mutation", ["drop_column", "bad_json", "bad_meta", "bad_seq"])
def test_verify_chain_reports_malformed_rows_as_breaks(mutation: str) -> None:
    rows = make_rows(3)
    if mutation == "drop_column":
        del rows[1]["chain_hash"]
    elif mutation == "bad_json":
        rows[1]["payload"] = "{not json"
    elif mutation == "bad_meta":
        rows[1]["redaction_meta"] = "{not json"
    else:
        rows[1]["seq"] = "1"
    verdict = verify_chain(TENANT, RUN, rows)
    assert not verdict.ok and verdict.first_break is not None and verdict.first_break.seq == 1


# --- seals ----------------------------------------------------------------------------------------------
def make_seal(key: Ed25519PrivateKey) -> dict[str, Any]:
    rows = make_rows(3)
    record = seal_record(tenant_id=TENANT, run_id=RUN, head_hash=rows[-1]["chain_hash"], step_count=3,
                         sealed_ns=1_700_000_000_000_000_000, prev_seal_hash=audit_genesis_hash(TENANT))
    return sign_seal(record, key, "k1")


def test_seal_signs_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    sealed = make_seal(key)
    assert sealed["key_id"] == "k1" and "=" not in sealed["signature"]
    assert verify_seal(sealed, key.public_key())
    assert verify_seal(orjson.loads(orjson.dumps(sealed)), key.public_key())  # survives a JSON round trip


@pytest.mark.parametrize(("field", "value"), [("head_hash", "sha256:" + "1" * 64), ("step_count", 2),
                                              ("run_id", "other"), ("key_id", "k2"), ("prev_seal_hash", "x")])
def test_seal_verification_fails_when_tampered(field: str, value: object) -> None:
    key = Ed25519PrivateKey.generate()
    sealed = {**make_seal(key), field: value}
    assert not verify_seal(sealed, key.public_key())


@pytest.mark.parametrize("signature", [None, "", "!!not-base64!!", "AAAA"])
def test_seal_verification_fails_on_bad_signatures(signature: object) -> None:
    key = Ed25519PrivateKey.generate()
    sealed = {**make_seal(key), "signature": signature}
    assert not verify_seal(sealed, key.public_key())


def test_seal_verification_fails_with_another_key() -> None:
    sealed = make_seal(Ed25519PrivateKey.generate())
    assert not verify_seal(sealed, Ed25519PrivateKey.generate().public_key())


def test_seal_hash_links_the_audit_chain() -> None:
    key = Ed25519PrivateKey.generate()
    first = make_seal(key)
    second = sign_seal(seal_record(tenant_id=TENANT, run_id="r2", head_hash=genesis_hash(TENANT, "r2"),
                                   step_count=0, sealed_ns=2, prev_seal_hash=seal_hash(first)), key, "k1")
    assert second["prev_seal_hash"] == seal_hash(first) != seal_hash({**first, "step_count": 4})
    assert audit_genesis_hash(TENANT) != audit_genesis_hash("other")
