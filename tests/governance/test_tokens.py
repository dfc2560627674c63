"""DecisionTokens: sign/verify, expiry, wrong keys, rotation, JWKS, tampering."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.tokens import (
    SigningKeys,
    TokenClaims,
    TokenExpired,
    TokenInvalid,
    args_sha256,
    issue_token,
    key_id,
    verify_signature,
    verify_token,
)
from otlp_receiver.errors import InvalidInputError

NOW = 1_800_000_000
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


def issue(keys: SigningKeys, **overrides) -> str:
    fields = dict(
        tenant="acme", project="billing", tool="payments.send", args_sha256=args_sha256({"amount": 10}),
        trace_id=TRACE_ID, span_id=SPAN_ID, decision="approved", approval_id="ap-1", policy_version=7,
        break_glass=False, ttl_s=300, now=NOW, jti="jti-1",
    )  # fmt: skip
    return issue_token(keys, **(fields | overrides))


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


def test_issue_then_verify_returns_every_claim(keys):
    claims = verify_token(keys, issue(keys), now=NOW + 10)
    assert claims == TokenClaims(
        jti="jti-1", tenant="acme", project="billing", tool="payments.send",
        args_sha256=args_sha256({"amount": 10}), trace_id=TRACE_ID, span_id=SPAN_ID, decision="approved",
        approval_id="ap-1", policy_version=7, break_glass=False, iat=NOW, exp=NOW + 300, kid=keys.current_kid,
    )  # fmt: skip


def test_header_names_the_algorithm_type_and_key(keys):
    header = jwt.get_unverified_header(issue(keys))
    assert header == {"alg": "EdDSA", "typ": "traceward-decision+jwt", "kid": keys.current_kid}


def test_break_glass_token_has_no_approval_or_policy(keys):
    token = issue(keys, decision="allow", approval_id=None, policy_version=None, break_glass=True)
    claims = verify_token(keys, token, now=NOW)
    assert (claims.break_glass, claims.approval_id, claims.policy_version) == (True, None, None)


def test_jti_is_random_by_default(keys):
    first, second = (verify_token(keys, issue(keys, jti=None), now=NOW).jti for _ in range(2))
    assert first != second and len(first) >= 16


def test_expired_token_raises_token_expired(keys):
    token = issue(keys, ttl_s=60)
    assert verify_token(keys, token, now=NOW + 60 + 5).exp == NOW + 60  # within leeway
    with pytest.raises(TokenExpired):
        verify_token(keys, token, now=NOW + 66)
    with pytest.raises(TokenExpired):
        verify_token(keys, token, now=NOW + 61, leeway_s=0)


def test_token_from_the_future_is_invalid(keys):
    with pytest.raises(TokenInvalid, match="future"):
        verify_token(keys, issue(keys), now=NOW - 60)


def test_wrong_key_is_invalid(keys):
    stranger = SigningKeys.generate()
    with pytest.raises(TokenInvalid, match="unknown signing key id"):
        verify_token(stranger, issue(keys), now=NOW)


def test_forged_signature_with_a_known_kid_is_invalid(keys):
    forger = SigningKeys.generate()
    claims = jwt.decode(issue(keys), options={"verify_signature": False})
    forged = jwt.encode(claims | {"tool": "rm_rf"}, forger.current, algorithm="EdDSA",
                        headers={"kid": keys.current_kid, "typ": "traceward-decision+jwt"})  # fmt: skip
    with pytest.raises(TokenInvalid, match="signature"):
        verify_token(keys, forged, now=NOW)


def test_tampered_payload_is_invalid(keys):
    header, payload, signature = issue(keys).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["args_sha256"] = "0" * 64
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        verify_token(keys, f"{header}.{tampered}.{signature}", now=NOW)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 5000, None])
def test_malformed_tokens_are_invalid(keys, token):
    with pytest.raises(TokenInvalid):
        verify_token(keys, token, now=NOW)


def test_other_algorithms_and_types_are_rejected(keys):
    hs = jwt.encode({"tenant": "acme"}, "secret-key-of-at-least-32-bytes!!", algorithm="HS256",
                    headers={"kid": keys.current_kid, "typ": "traceward-decision+jwt"})  # fmt: skip
    with pytest.raises(TokenInvalid, match="not a Traceward decision token"):
        verify_token(keys, hs, now=NOW)
    other_typ = jwt.encode({"a": 1}, keys.current, algorithm="EdDSA", headers={"kid": keys.current_kid})
    with pytest.raises(TokenInvalid, match="not a Traceward decision token"):
        verify_token(keys, other_typ, now=NOW)


def test_claims_of_the_wrong_shape_are_invalid(keys):
    token = jwt.encode({"tenant": "acme", "iat": NOW, "exp": NOW + 1}, keys.current, algorithm="EdDSA",
                       headers={"kid": keys.current_kid, "typ": "traceward-decision+jwt"})  # fmt: skip
    with pytest.raises(TokenInvalid, match="claims"):
        verify_signature(keys, token)


def test_rotation_keeps_old_tokens_verifiable_until_dropped(keys):
    old_token = issue(keys)
    rotated = keys.rotate()
    assert rotated.current_kid != keys.current_kid
    assert verify_token(rotated, old_token, now=NOW).kid == keys.current_kid
    new_claims = verify_token(rotated, issue(rotated), now=NOW)
    assert new_claims.kid == rotated.current_kid
    dropped = rotated.drop(keys.current_kid)
    with pytest.raises(TokenInvalid):
        verify_token(dropped, old_token, now=NOW)
    with pytest.raises(InvalidInputError):
        rotated.drop(rotated.current_kid)


def test_pem_round_trip_keeps_current_and_retired_keys(keys):
    rotated = keys.rotate()
    loaded = SigningKeys.from_pem(rotated.to_pem())
    assert loaded.current_kid == rotated.current_kid
    assert set(loaded.public_keys) == {keys.current_kid, rotated.current_kid}
    assert verify_token(loaded, issue(keys), now=NOW).kid == keys.current_kid


@pytest.mark.parametrize("pem", ["", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_unreadable_pem_is_rejected(pem):
    with pytest.raises(InvalidInputError):
        SigningKeys.from_pem(pem)


def test_jwks_shape_and_verification_from_jwks(keys):
    rotated = keys.rotate()
    jwks = rotated.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [rotated.current_kid, keys.current_kid]
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
        assert "d" not in jwk
    published = json.loads(json.dumps(jwks))
    assert verify_token(published, issue(keys), now=NOW).tenant == "acme"
    assert verify_token(published, issue(rotated), now=NOW).kid == rotated.current_kid


def test_key_id_is_the_rfc7638_thumbprint():
    # RFC 8037 appendix A.3: the Ed25519 example key's JWK thumbprint.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert key_id(Ed25519PublicKey.from_public_bytes(x)) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_args_hash_is_canonical():
    assert args_sha256({"b": 1, "a": [1.0, "x"]}) == args_sha256({"a": [1, "x"], "b": 1})
    assert args_sha256({"a": 1}) != args_sha256({"a": "1"})
    with pytest.raises(InvalidInputError):
        args_sha256({"a": float("nan")})


@pytest.mark.parametrize(
    "overrides",
    [{"trace_id": "XYZ"}, {"span_id": "0" * 15}, {"decision": "deny"}, {"ttl_s": 0}, {"args_sha256": "nope"}],
)
def test_issue_rejects_bad_fields(keys, overrides):
    with pytest.raises(InvalidInputError):
        issue(keys, **overrides)


def test_generated_keys_are_ed25519():
    assert isinstance(SigningKeys.generate().current, Ed25519PrivateKey)
