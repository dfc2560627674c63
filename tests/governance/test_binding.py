"""Binding approved → executed: all seven outcomes."""

from __future__ import annotations

import pytest

from governance.binding import VIOLATIONS, check_binding
from governance.tokens import SigningKeys, args_sha256, issue_token

NOW_S = 1_800_000_000
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ARGS = {"amount": 500, "to": "bob"}


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


def token_for(keys: SigningKeys, **overrides) -> str:
    fields = dict(
        tenant="acme", project="billing", tool="pay", args_sha256=args_sha256(ARGS), trace_id=TRACE_ID,
        span_id="b7ad6b7169203331", decision="approved", approval_id="ap-1", policy_version=3, break_glass=False,
        ttl_s=300, now=NOW_S, jti="jti-1",
    )  # fmt: skip
    return issue_token(keys, **(fields | overrides))


class SeenJti:
    """A fake jti ledger: records each jti and says whether it was already used."""

    def __init__(self, *used: str) -> None:
        self.used = set(used)
        self.calls: list[str] = []

    def __call__(self, jti: str) -> bool:
        self.calls.append(jti)
        seen = jti in self.used
        self.used.add(jti)
        return seen


def check(keys, *, token, gated=True, seen=None, **overrides):
    fields = dict(
        keys=keys, tenant="acme", tool_name="pay", trace_id=TRACE_ID, recorded_args=ARGS,
        seen_jti=seen or SeenJti(), now_ns=(NOW_S + 10) * 10**9, gated=gated,
    )  # fmt: skip
    return check_binding(token=token, **(fields | overrides))


def test_bound(keys):
    seen = SeenJti()
    outcome, claims = check(keys, token=token_for(keys), seen=seen)
    assert outcome == "bound" and claims is not None and claims.jti == "jti-1"
    assert seen.calls == ["jti-1"]


def test_bound_without_recorded_args(keys):
    assert check(keys, token=token_for(keys), recorded_args=None)[0] == "bound"


def test_ungated_tools_are_not_flagged(keys):
    seen = SeenJti()
    assert check(keys, token=None, gated=False, seen=seen) == ("ungated", None)
    assert check(keys, token="garbage", gated=False, seen=seen) == ("ungated", None)
    assert seen.calls == []


@pytest.mark.parametrize("token", [None, ""])
def test_missing(keys, token):
    assert check(keys, token=token) == ("missing", None)


def test_invalid_signature(keys):
    forged = token_for(SigningKeys.generate())
    assert check(keys, token=forged) == ("invalid", None)
    assert check(keys, token="not.a.token") == ("invalid", None)


@pytest.mark.parametrize("executed", [{"tenant": "other"}, {"tool_name": "refund"}, {"trace_id": "1" * 32}])
def test_invalid_when_tenant_tool_or_trace_differ(keys, executed):
    seen = SeenJti()
    assert check(keys, token=token_for(keys), seen=seen, **executed) == ("invalid", None)
    assert seen.calls == []  # a foreign token does not consume the jti


def test_expired_at_execution_time(keys):
    outcome, claims = check(keys, token=token_for(keys, ttl_s=60), now_ns=(NOW_S + 600) * 10**9)
    assert outcome == "expired" and claims is not None


def test_args_mismatch(keys):
    outcome, _ = check(keys, token=token_for(keys), recorded_args={"amount": 50_000, "to": "mallory"})
    assert outcome == "args_mismatch"


def test_args_that_cannot_be_canonicalised_mismatch(keys):
    assert check(keys, token=token_for(keys), recorded_args={"amount": float("nan")})[0] == "args_mismatch"


def test_args_compare_canonically(keys):
    assert check(keys, token=token_for(keys), recorded_args={"to": "bob", "amount": 500.0})[0] == "bound"


def test_replayed(keys):
    seen = SeenJti()
    token = token_for(keys)
    assert check(keys, token=token, seen=seen)[0] == "bound"
    assert check(keys, token=token, seen=seen)[0] == "replayed"


def test_verifies_against_a_jwks(keys):
    assert check(keys.jwks(), token=token_for(keys))[0] == "bound"


def test_violations_are_everything_but_bound_and_ungated():
    assert {"missing", "invalid", "expired", "args_mismatch", "replayed"} == VIOLATIONS
