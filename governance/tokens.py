"""DecisionTokens: compact JWS (EdDSA / Ed25519) proving what Traceward decided.

A token is issued when a tool call is allowed (``decision="allow"``) or approved by a
person (``decision="approved"``); a break-glass token is ``decision="allow"`` with
``break_glass=true``, no approval and no policy version. Header::

    {"alg": "EdDSA", "typ": "traceward-decision+jwt", "kid": "<RFC 7638 thumbprint>"}

Claims: jti (nonce), tenant, project, tool, args_sha256 (sha256 hex of the canonical
JSON of the approved args), trace_id (32 hex), span_id (16 hex, the requesting span),
decision, approval_id, policy_version, break_glass, iat, exp (seconds since the epoch).

Keys rotate: ``SigningKeys.rotate()`` makes a new current key and keeps the old public
key so tokens it signed still verify until it is dropped. Key ids are RFC 7638 JWK
thumbprints, so they are stable across restarts without being stored.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otlp_receiver.chain import canonical_json
from otlp_receiver.errors import InvalidInputError

logger = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
TOKEN_TYPE = "traceward-decision+jwt"
TOKEN_DECISIONS: tuple[str, ...] = ("allow", "approved")
DEFAULT_LEEWAY_S = 5.0
MAX_TTL_S = 24 * 3600
MAX_TOKEN_CHARS = 4096
_TRACE_ID_RE = re.compile(r"[0-9a-f]{32}\Z")
_SPAN_ID_RE = re.compile(r"[0-9a-f]{16}\Z")
_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class TokenError(InvalidInputError):
    """A DecisionToken that cannot be accepted.

    TokenError
    ├── TokenInvalid   malformed, bad signature, unknown kid, wrong claims
    └── TokenExpired   well signed, but past its exp (after leeway)
    """

    code = "token_invalid"


class TokenInvalid(TokenError):
    """Malformed token, bad signature, unknown key id, or claims of the wrong shape."""


class TokenExpired(TokenError):
    """A genuine token used after its expiry."""

    code = "token_expired"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified content of a DecisionToken (``kid`` comes from its header)."""

    jti: str
    tenant: str
    project: str
    tool: str
    args_sha256: str
    trace_id: str
    span_id: str
    decision: str
    approval_id: str | None
    policy_version: int | None
    break_glass: bool
    iat: int
    exp: int
    kid: str


# ---------------------------------------------------------------- keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    members = f'{{"crv":"Ed25519","kty":"OKP","x":"{_b64url(_raw_public(key))}"}}'
    return _b64url(hashlib.sha256(members.encode("ascii")).digest())


@dataclass(frozen=True)
class SigningKeys:
    """The current signing key plus retired public keys that still verify."""

    current: Ed25519PrivateKey
    retired: tuple[Ed25519PublicKey, ...] = ()
    public_keys: Mapping[str, Ed25519PublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = {key_id(k): k for k in self.retired}
        keys[key_id(self.current.public_key())] = self.current.public_key()
        object.__setattr__(self, "public_keys", keys)

    @classmethod
    def generate(cls) -> SigningKeys:
        """A fresh key set with one new Ed25519 key."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def current_kid(self) -> str:
        """Key id of the key new tokens are signed with."""
        return key_id(self.current.public_key())

    def rotate(self, new_key: Ed25519PrivateKey | None = None) -> SigningKeys:
        """A key set signing with a new key; the old current key is kept for verification."""
        return SigningKeys(
            new_key or Ed25519PrivateKey.generate(), (self.current.public_key(), *self.retired)
        )

    def drop(self, kid: str) -> SigningKeys:
        """A key set without the retired key ``kid`` (tokens it signed stop verifying)."""
        if kid == self.current_kid:
            raise InvalidInputError("cannot drop the current signing key; rotate first")
        return SigningKeys(self.current, tuple(k for k in self.retired if key_id(k) != kid))

    def to_pem(self) -> str:
        """PEM text: the current private key (PKCS#8) first, then each retired public key."""
        blocks = [
            self.current.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ]
        blocks += [
            k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            for k in self.retired
        ]
        return b"".join(blocks).decode("ascii")

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SigningKeys:
        """Load ``to_pem`` output: the first block must be the current Ed25519 private key."""
        text = pem.decode("ascii") if isinstance(pem, bytes) else pem
        blocks = [m.group(0).encode("ascii") for m in _PEM_BLOCK_RE.finditer(text)]
        if not blocks:
            raise InvalidInputError("no PEM blocks found")
        try:
            current = serialization.load_pem_private_key(blocks[0], password=None)
            retired = [serialization.load_pem_public_key(b) for b in blocks[1:]]
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"unreadable PEM key: {exc}") from exc
        if not isinstance(current, Ed25519PrivateKey) or not all(
            isinstance(k, Ed25519PublicKey) for k in retired
        ):
            raise InvalidInputError("signing keys must be Ed25519")
        return cls(current, tuple(retired))  # type: ignore[arg-type]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set for ``/.well-known/jwks.json`` (current key first)."""
        ordered = (self.current.public_key(), *self.retired)
        return {"keys": [_jwk(key_id(key), key) for key in ordered]}


def _jwk(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(key)),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def public_keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Ed25519 keys of a JWK Set by kid; other key types are skipped."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", ()) if isinstance(jwks, Mapping) else ():
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            x = str(jwk["x"])
            key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
        except (KeyError, ValueError) as exc:
            raise InvalidInputError(f"unusable JWK {jwk.get('kid')!r}") from exc
        keys[str(jwk.get("kid") or key_id(key))] = key
    return keys


# ---------------------------------------------------------------- tokens


def args_sha256(args: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON (RFC 8785) of tool arguments: what a token binds to.

    Raises:
        InvalidInputError: the arguments cannot be canonicalised (NaN, non-JSON types, huge ints).
    """
    try:
        encoded = canonical_json(args)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"tool arguments cannot be canonicalised: {exc}") from exc
    return hashlib.sha256(encoded).hexdigest()


def issue_token(
    keys: SigningKeys,
    *,
    tenant: str,
    project: str,
    tool: str,
    args_sha256: str,
    trace_id: str,
    span_id: str,
    decision: str,
    approval_id: str | None,
    policy_version: int | None,
    break_glass: bool,
    ttl_s: int,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """Sign a DecisionToken. ``now`` is seconds since the epoch (default: the clock)."""
    _check_issue(trace_id=trace_id, span_id=span_id, decision=decision, ttl_s=ttl_s, digest=args_sha256)
    iat = int(time.time() if now is None else now)
    claims = {
        "jti": jti or secrets.token_urlsafe(16),
        "tenant": tenant,
        "project": project,
        "tool": tool,
        "args_sha256": args_sha256,
        "trace_id": trace_id,
        "span_id": span_id,
        "decision": decision,
        "approval_id": approval_id,
        "policy_version": policy_version,
        "break_glass": bool(break_glass),
        "iat": iat,
        "exp": iat + int(ttl_s),
    }
    headers = {"kid": keys.current_kid, "typ": TOKEN_TYPE}
    return jwt.encode(claims, keys.current, algorithm=ALGORITHM, headers=headers)


def _check_issue(*, trace_id: str, span_id: str, decision: str, ttl_s: int, digest: str) -> None:
    if not isinstance(trace_id, str) or not _TRACE_ID_RE.match(trace_id):
        raise InvalidInputError(
            "trace_id must be 32 lower-case hex characters", details={"trace_id": "invalid"}
        )
    if not isinstance(span_id, str) or not _SPAN_ID_RE.match(span_id):
        raise InvalidInputError(
            "span_id must be 16 lower-case hex characters", details={"span_id": "invalid"}
        )
    if decision not in TOKEN_DECISIONS:
        raise InvalidInputError(f"tokens are only issued for {', '.join(TOKEN_DECISIONS)}, not {decision!r}")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidInputError(f"ttl_s must be in (0, {MAX_TTL_S}], got {ttl_s}")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidInputError("args_sha256 must be 64 lower-case hex characters")


def verify_signature(keys_or_jwks: SigningKeys | Mapping[str, Any], token: str) -> TokenClaims:
    """Check format, header, key id and signature, and the claims' shape; not the times.

    Raises:
        TokenInvalid: anything wrong with the token.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenInvalid("malformed token") from exc
    if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise TokenInvalid("not a Traceward decision token")
    keys = (
        keys_or_jwks.public_keys
        if isinstance(keys_or_jwks, SigningKeys)
        else public_keys_from_jwks(keys_or_jwks)
    )
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise TokenInvalid("unknown signing key id")
    try:
        payload = jwt.decode(token, keys[kid], algorithms=[ALGORITHM], options=_NO_TIME_CHECKS)
    except jwt.PyJWTError as exc:
        raise TokenInvalid("bad token signature or payload") from exc
    return _claims(payload, kid)


_NO_TIME_CHECKS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}


def verify_token(
    keys_or_jwks: SigningKeys | Mapping[str, Any],
    token: str,
    *,
    now: float | None = None,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> TokenClaims:
    """Verify a token completely: signature and claims, then not expired and not issued in the future.

    Raises:
        TokenInvalid: malformed, forged, unknown kid, wrong claim shapes, or iat in the future.
        TokenExpired: genuine but ``now > exp + leeway_s``.
    """
    claims = verify_signature(keys_or_jwks, token)
    check_times(claims, time.time() if now is None else now, leeway_s=leeway_s)
    return claims


def check_times(claims: TokenClaims, now: float, *, leeway_s: float = DEFAULT_LEEWAY_S) -> None:
    """Raise TokenExpired / TokenInvalid when ``now`` (seconds) is outside [iat, exp] ± leeway."""
    if now > claims.exp + leeway_s:
        raise TokenExpired("decision token expired")
    if now < claims.iat - leeway_s:
        raise TokenInvalid("decision token issued in the future")


_STR_CLAIMS = ("jti", "tenant", "project", "tool", "args_sha256", "trace_id", "span_id", "decision")


def _claims(payload: Mapping[str, Any], kid: str) -> TokenClaims:
    values: dict[str, Any] = {name: payload.get(name) for name in _STR_CLAIMS}
    if not all(isinstance(v, str) and v for v in values.values()):
        raise TokenInvalid("token claims are missing or of the wrong type")
    approval_id, version = payload.get("approval_id"), payload.get("policy_version")
    iat, exp, glass = payload.get("iat"), payload.get("exp"), payload.get("break_glass")
    if not (approval_id is None or isinstance(approval_id, str)) or not _is_int_or_none(version):
        raise TokenInvalid("token claims are missing or of the wrong type")
    if not (isinstance(glass, bool) and _is_int_or_none(iat) and _is_int_or_none(exp) and iat and exp):
        raise TokenInvalid("token claims are missing or of the wrong type")
    return TokenClaims(
        **values,
        approval_id=approval_id,
        policy_version=version,
        break_glass=glass,
        iat=iat,
        exp=exp,
        kid=kid,
    )


def _is_int_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))
