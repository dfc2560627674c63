"""JWT bearer tokens: HS256, RS256 and EdDSA (PEM key or JWKS), iss/aud/exp/nbf with leeway, claims, formats.

In-process against :class:`server.auth.Authenticator`; the JWKS is served by a real ``http.server`` on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from otlp_receiver.errors import AuthenticationError, ConfigError
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.keys import KeyStore
from server.auth import Authenticator, KeySetUnavailableError, jwt_verifier
from server.settings import Settings

ISSUER = "https://idp.example.test/"
AUDIENCE = "traceward-api"
SECRET = "a-shared-hs256-secret-of-at-least-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice@example.test", "tenant_id": "acme", "role": "viewer", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def pem(private_key: Any) -> bytes:
    return bytes(private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))


def authenticator(tmp_path: Path, **settings: Any) -> Authenticator:
    base: dict[str, Any] = {"data_dir": tmp_path, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    return Authenticator(KeyStore(RunIndex(":memory:")), jwt_verifier(Settings(**{**base, **settings})))


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture
def hs(tmp_path: Path) -> Authenticator:
    return authenticator(tmp_path, jwt_hs256_secret=SECRET, jwt_leeway_s=30)


# --- HS256 ---------------------------------------------------------------------------------------------------
def test_hs256_token_names_tenant_role_and_subject(hs: Authenticator) -> None:
    principal = hs.principal(bearer(hs256(role="approver", project_id="p1")))
    assert (principal.tenant_id, principal.role, principal.subject, principal.kind) == \
        ("acme", "approver", "alice@example.test", "jwt")
    assert principal.project_id == "p1"
    assert principal.actor == "jwt:alice@example.test"
    assert principal.limit_key == "jwt:acme:alice@example.test"
    assert principal.can("approve") and not principal.can("admin") and not principal.can("ingest")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"exp": int(time.time()) - 120}, "expired"),
    ({"nbf": int(time.time()) + 600}, "not yet valid"),
    ({"iss": "https://evil.example.test/"}, "(?i)issuer"),
    ({"aud": "someone-else"}, "(?i)audience"),
    ({"exp": None}, "exp"),
    ({"sub": None}, "sub"),
    ({"iss": None}, "iss"),
    ({"aud": None}, "aud"),
    ({"role": "ingest"}, "role"),
    ({"role": "root"}, "role"),
    ({"role": None}, "role"),
    ({"tenant_id": None}, "tenant_id"),
    ({"tenant_id": "../etc"}, "tenant"),
    ({"tenant_id": 42}, "tenant_id"),
])
def test_hs256_token_with_bad_claims_is_refused(hs: Authenticator, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        hs.principal(bearer(hs256(**overrides)))


def test_clock_skew_within_leeway_is_tolerated(hs: Authenticator) -> None:
    assert hs.principal(bearer(hs256(exp=int(time.time()) - 10))).role == "viewer"
    assert hs.principal(bearer(hs256(nbf=int(time.time()) + 10))).role == "viewer"


def test_wrong_secret_and_tampered_payload_are_refused(hs: Authenticator) -> None:
    forged = jwt.encode(claims(role="admin"), "another-secret-that-is-also-32-bytes-long", algorithm="HS256")
    with pytest.raises(AuthenticationError, match="Signature"):
        hs.principal(bearer(forged))
    head, _, sig = hs256().split(".")
    tampered = ".".join([head, jwt.utils.base64url_encode(json.dumps(claims(role="admin")).encode()).decode(), sig])
    with pytest.raises(AuthenticationError):
        hs.principal(bearer(tampered))


def test_alg_none_is_refused(hs: Authenticator) -> None:
    unsigned = jwt.encode(claims(role="admin"), key=None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError):
        hs.principal(bearer(unsigned))


def test_custom_claim_names(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, jwt_hs256_secret=SECRET, jwt_tenant_claim="https://tw/tenant",
                         jwt_role_claim="https://tw/role")
    token = jwt.encode(claims(tenant_id=None, role=None, **{"https://tw/tenant": "t9", "https://tw/role": "admin"}),
                       SECRET, algorithm="HS256")
    principal = auth.principal(bearer(token))
    assert (principal.tenant_id, principal.role) == ("t9", "admin")


# --- RS256 / EdDSA with a PEM public key ------------------------------------------------------------------------
@pytest.mark.parametrize(("private_key", "algorithm"), [(RSA_KEY, "RS256"), (ED_KEY, "EdDSA")])
def test_public_key_file_verifies_its_algorithm(tmp_path: Path, private_key: Any, algorithm: str) -> None:
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(pem(private_key))
    auth = authenticator(tmp_path, jwt_public_key_file=key_file)
    token = jwt.encode(claims(role="admin"), private_key, algorithm=algorithm)
    assert auth.principal(bearer(token)).role == "admin"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS256" \
        else ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(AuthenticationError):
        auth.principal(bearer(jwt.encode(claims(), other, algorithm=algorithm)))


def test_hs256_signed_with_the_public_key_is_refused(tmp_path: Path) -> None:
    """Algorithm confusion: a token 'signed' with the RSA public key as an HMAC secret."""
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(pem(RSA_KEY))
    auth = authenticator(tmp_path, jwt_public_key_file=key_file)
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.utils.base64url_encode(json.dumps(claims(role="admin")).encode())
    sig = jwt.utils.base64url_encode(hmac.new(pem(RSA_KEY), header + b"." + body, hashlib.sha256).digest())
    with pytest.raises(AuthenticationError, match="not accepted"):
        auth.principal(bearer((header + b"." + body + b"." + sig).decode()))


def test_rs256_token_against_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(pem(ED_KEY))
    auth = authenticator(tmp_path, jwt_public_key_file=key_file)
    with pytest.raises(AuthenticationError):
        auth.principal(bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256")))


# --- JWKS ---------------------------------------------------------------------------------------------------
def _jwk(private_key: Any, kid: str, algorithm: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if algorithm == "RS256" else jwt.algorithms.OKPAlgorithm
    jwk = json.loads(algo.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).hits += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def jwks_url() -> Iterator[str]:
    _Jwks.body = json.dumps({"keys": [_jwk(RSA_KEY, "rsa-1", "RS256"), _jwk(ED_KEY, "ed-1", "EdDSA")]}).encode()
    _Jwks.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_jwks_keys_verify_rs256_and_eddsa_by_kid(tmp_path: Path, jwks_url: str) -> None:
    auth = authenticator(tmp_path, jwt_jwks_url=jwks_url)
    assert auth.may_block
    rs = jwt.encode(claims(role="admin"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    ed = jwt.encode(claims(role="approver"), ED_KEY, algorithm="EdDSA", headers={"kid": "ed-1"})
    assert auth.principal(bearer(rs)).role == "admin"
    assert auth.principal(bearer(ed)).role == "approver"
    assert auth.principal(bearer(rs)).role == "admin"
    assert _Jwks.hits == 1  # the key set is cached


def test_jwks_unknown_kid_and_mismatched_algorithm_are_refused(tmp_path: Path, jwks_url: str) -> None:
    auth = authenticator(tmp_path, jwt_jwks_url=jwks_url)
    with pytest.raises(AuthenticationError):
        auth.principal(bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})))
    with pytest.raises(AuthenticationError, match="does not match"):
        auth.principal(bearer(jwt.encode(claims(), ED_KEY, algorithm="EdDSA", headers={"kid": "rsa-1"})))
    with pytest.raises(AuthenticationError):  # HS256 is not enabled on this server
        auth.principal(bearer(hs256()))


def test_unreachable_jwks_is_a_retryable_unavailable_error(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, jwt_jwks_url="http://127.0.0.1:9/jwks.json")
    with pytest.raises(KeySetUnavailableError) as caught:
        auth.principal(bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})))
    assert caught.value.retryable


# --- formats and configuration ------------------------------------------------------------------------------
def test_credentials_are_told_apart_by_format(hs: Authenticator) -> None:
    key, record = hs.keys.create(tenant_id="acme", project_id="p", role="viewer")
    assert hs.principal(bearer(key)).key_id == record.key_id
    assert hs.principal(bearer(key)).kind == "api_key"
    for bad, message in (("nonsense", "unrecognised"), ("a.b", "unrecognised"), ("tw_short_x", "malformed"),
                         ("tw_0123abcd_wrong", "invalid API key")):
        with pytest.raises(AuthenticationError, match=message):
            hs.principal(bearer(bad))
    with pytest.raises(AuthenticationError, match="missing"):
        hs.principal(None)
    with pytest.raises(AuthenticationError, match="malformed"):
        hs.principal(f"Basic {key}")


def test_jwt_refused_when_not_configured(tmp_path: Path) -> None:
    auth = Authenticator(KeyStore(RunIndex(":memory:")), jwt_verifier(Settings(data_dir=tmp_path)))
    with pytest.raises(AuthenticationError, match="not enabled"):
        auth.principal(bearer(hs256()))


def test_jwt_cannot_ingest(hs: Authenticator) -> None:
    with pytest.raises(AuthenticationError, match="ingest"):
        hs.ingest_identity(bearer(hs256(role="admin")))


@pytest.mark.parametrize("settings", [
    {"jwt_hs256_secret": SECRET},
    {"jwt_hs256_secret": SECRET, "jwt_issuer": ISSUER},
    {"jwt_jwks_url": "http://127.0.0.1/jwks", "jwt_audience": AUDIENCE},
    {"jwt_hs256_secret": "short", "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE},
])
def test_incomplete_jwt_configuration_fails_at_startup(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Settings(**settings)


def test_unreadable_public_key_file_fails_at_startup(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY_FILE"):
        jwt_verifier(Settings(jwt_public_key_file=bad, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
