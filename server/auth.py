"""Authentication and authorisation for HTTP routes and the OTLP receivers.

Credentials, all sent as ``Authorization: Bearer <token>`` (an HTTP header or gRPC metadata), told
apart by their format:

- ``tw_<8 hex>_<secret>``: an API key (``otlp_receiver/store/keys.py``). Ingest keys belong to a
  (tenant, project); personal/service keys carry a tenant and a role.
- ``<b64url>.<b64url>.<b64url>``: a JWT (JWS compact form) for people and services, verified with
  PyJWT: HS256 with a shared secret, or RS256/EdDSA with a PEM public key or keys from a JWKS URL.
  ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``exp``/``nbf``/``iat`` allow a configured
  clock skew. Claims: ``sub`` (who; audited as ``jwt:<sub>``), ``tenant_id`` (the tenant) and
  ``role`` (viewer, approver or admin; JWTs never act as ingest credentials); both claim names are
  configurable (TRACEWARD_JWT_TENANT_CLAIM / TRACEWARD_JWT_ROLE_CLAIM); optional ``project_id``.

Every route declares the permission it needs in ``opt={"permission": ...}`` (a tuple: any of them); a route that
declares none is refused (and a test enumerates the app's routes to enforce it). Litestar's own
generated OPTIONS handlers are the one exception: they are public. The tenant always comes from
the credential, never from the request: a ``tenant_id`` query parameter is rejected (bodies reject
unknown fields already).

The rate-limit middleware (``server/ratelimit.py``) authenticates each request once, before the
guard, and leaves the outcome in the ASGI scope; :func:`permission_guard` uses it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from otlp_receiver.errors import (
    AuthenticationError,
    ConfigError,
    InvalidInputError,
    PermissionDeniedError,
    StorageError,
)
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.keys import KeyStore, check_tenant_id
from server.settings import Settings

logger = logging.getLogger(__name__)

PUBLIC = "public"
PERMISSIONS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest", "decide"}),
    "viewer": frozenset({"read"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "approve", "admin"}),
}
JWT_ROLES = ("viewer", "approver", "admin")
SCOPE_AUTH = "traceward.auth"
"""ASGI scope key: the Principal (or the AuthenticationError) of the request, set once per request."""
TENANT_SELECTORS = ("tenant_id", "tenant")
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_PUBLIC_KEY_ALGORITHMS = ("RS256", "EdDSA")


class KeySetUnavailableError(StorageError):
    """The JWKS endpoint cannot be reached: the credential can't be checked right now (503, retryable)."""

    code = "jwks_unavailable"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential's tenant, project and role."""

    tenant_id: str
    project_id: str
    role: str
    key_id: str
    kind: str = "api_key"
    """``api_key`` or ``jwt``."""
    subject: str = ""
    """The JWT's ``sub`` (empty for API keys)."""
    rate_limit_per_min: int | None = None
    """This credential's own rate limit, overriding its role's."""

    def can(self, permission: str) -> bool:
        """Whether this principal's role grants ``permission``."""
        return permission in PERMISSIONS.get(self.role, frozenset())

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"jwt:{self.subject}" if self.kind == "jwt" else f"key:{self.key_id}"

    @property
    def limit_key(self) -> str:
        """The rate-limit bucket of this credential."""
        return f"jwt:{self.tenant_id}:{self.subject}" if self.kind == "jwt" else f"key:{self.key_id}"


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header:
        raise AuthenticationError("missing credentials: send Authorization: Bearer <key>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


def is_jwt(token: str) -> bool:
    """Whether a bearer token has the JWS compact form (API keys never contain a dot)."""
    return bool(_JWS.match(token))


class JwtVerifier:
    """Checks bearer JWTs: signature, ``exp``/``nbf``/``iat`` with leeway, ``iss``, ``aud``, then the claims."""

    def __init__(self, *, issuer: str, audience: str, hs256_secret: str | None = None,
                 public_key: RSAPublicKey | Ed25519PublicKey | None = None, jwks_url: str | None = None,
                 leeway_s: float = 30.0, tenant_claim: str = "tenant_id", role_claim: str = "role") -> None:
        self.issuer, self.audience, self.leeway_s = issuer, audience, leeway_s
        self.hs256_secret = hs256_secret
        self.public_key = public_key
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5) if jwks_url else None
        self.tenant_claim, self.role_claim = tenant_claim, role_claim

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; AuthenticationError for anything else."""
        try:
            header = jwt.get_unverified_header(token)
            algorithm, key = self._key_for(header, token)
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("JWT expired") from exc
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("cannot fetch the JWKS: %s", exc)
            raise KeySetUnavailableError("cannot fetch the JWT signing keys; retry later") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid JWT: {exc}") from exc
        return self._principal(claims)

    def _key_for(self, header: Mapping[str, Any], token: str) -> tuple[str, Any]:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.hs256_secret:
            return algorithm, self.hs256_secret
        if algorithm in _PUBLIC_KEY_ALGORITHMS:
            if self.jwks is not None and header.get("kid"):
                key = self.jwks.get_signing_key_from_jwt(token).key
            elif self.public_key is not None:
                key = self.public_key
            else:
                raise jwt.InvalidKeyError(f"no key configured for {algorithm}")
            if algorithm != _algorithm_of(key):
                raise jwt.InvalidAlgorithmError(f"{algorithm} does not match the signing key")
            return algorithm, key
        raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        tenant, role, subject = claims.get(self.tenant_claim), claims.get(self.role_claim), claims.get("sub")
        if not isinstance(tenant, str) or not isinstance(subject, str) or not subject:
            raise AuthenticationError(f"JWT lacks a string {self.tenant_claim!r} or 'sub' claim")
        try:
            check_tenant_id(tenant)
        except InvalidInputError as exc:
            raise AuthenticationError(f"JWT {self.tenant_claim!r} claim is not a valid tenant id") from exc
        if role not in JWT_ROLES:
            raise AuthenticationError(f"JWT {self.role_claim!r} claim must be one of {', '.join(JWT_ROLES)}")
        project = claims.get("project_id")
        return Principal(tenant, project if isinstance(project, str) else "", str(role), f"jwt:{subject}",
                         kind="jwt", subject=subject)


def _algorithm_of(key: object) -> str | None:
    if isinstance(key, RSAPublicKey):
        return "RS256"
    if isinstance(key, Ed25519PublicKey):
        return "EdDSA"
    return None


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """The configured JWT verifier, or None when no JWT key is configured."""
    if not settings.jwt_enabled:
        return None
    public_key = None
    if settings.jwt_public_key_file is not None:
        try:
            loaded = load_pem_public_key(settings.jwt_public_key_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"TRACEWARD_JWT_PUBLIC_KEY_FILE={settings.jwt_public_key_file}: {exc}") from exc
        if not isinstance(loaded, RSAPublicKey | Ed25519PublicKey):
            raise ConfigError("TRACEWARD_JWT_PUBLIC_KEY_FILE: an RSA or Ed25519 public key is required")
        public_key = loaded
    assert settings.jwt_issuer and settings.jwt_audience  # checked by Settings
    return JwtVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                       hs256_secret=settings.jwt_hs256_secret, public_key=public_key, jwks_url=settings.jwt_jwks_url,
                       leeway_s=settings.jwt_leeway_s, tenant_claim=settings.jwt_tenant_claim,
                       role_claim=settings.jwt_role_claim)


class Authenticator:
    """Turns credentials into principals."""

    def __init__(self, keys: KeyStore, jwt_verifier: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.jwt = jwt_verifier

    @property
    def may_block(self) -> bool:
        """Whether authenticating can wait on the network (a JWKS fetch): then call it off the event loop."""
        return self.jwt is not None and self.jwt.jwks is not None

    def principal(self, header: str | None) -> Principal:
        """Authenticate an Authorization header value."""
        token = bearer_token(header)
        if token.startswith("tw_"):
            record = self.keys.authenticate(token)
            return Principal(record.tenant_id, record.project_id, record.role, record.key_id,
                             rate_limit_per_min=record.rate_limit_per_min)
        if is_jwt(token):
            if self.jwt is None:
                raise AuthenticationError("JWT bearer tokens are not enabled on this server")
            return self.jwt.verify(token)
        raise AuthenticationError("unrecognised credential: expected an API key (tw_…) or a JWT")

    def ingest_identity(self, header: str | None) -> IngestIdentity:
        """Authenticate an OTLP export: only keys allowed to ingest."""
        return self.ingest_identity_of(self.principal(header))

    @staticmethod
    def ingest_identity_of(principal: Principal) -> IngestIdentity:
        """The ingest identity of an authenticated principal allowed to ingest."""
        if not principal.can("ingest"):
            raise AuthenticationError("this key may not ingest telemetry: use an ingest key")
        return IngestIdentity(principal.tenant_id, principal.project_id)


def is_framework_options(handler: BaseRouteHandler) -> bool:
    """Litestar's generated OPTIONS handler (answers 204 + Allow; public, as CORS preflights carry no credentials)."""
    fn = getattr(handler, "fn", None)
    return (getattr(handler, "http_methods", None) == {"OPTIONS"} and getattr(fn, "__name__", "") == "options_handler"
            and getattr(fn, "__module__", "") == "litestar.routes.http")


def route_permissions(handler: BaseRouteHandler) -> frozenset[str] | None:
    """The permissions a route declares (any one admits the caller), or None if it declares none.

    ``opt={"permission": "read"}`` or, for a route with two audiences, ``opt={"permission": ("read", "decide")}``.
    ``{PUBLIC}`` for public routes and Litestar's generated OPTIONS handlers.
    """
    declared = handler.opt.get("permission")
    if declared is None:
        return frozenset({PUBLIC}) if is_framework_options(handler) else None
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, tuple | list | set | frozenset) and declared and all(isinstance(p, str) for p in declared):
        return frozenset(declared)
    return None


def resolve_principal(authenticator: Authenticator, scope: Any) -> Principal | AuthenticationError:
    """Authenticate the request once and remember the outcome in the scope."""
    found = scope.get(SCOPE_AUTH)
    if found is None:
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        try:
            found = authenticator.principal(header)
        except AuthenticationError as exc:
            found = exc
        scope[SCOPE_AUTH] = found
    return found  # type: ignore[no-any-return]


async def permission_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: authenticate, then check the route's declared permission.

    Async on purpose: Litestar runs a sync guard in a worker thread, and that hop cost more CPU than the
    whole check (the rate-limit middleware has normally authenticated the request already)."""
    permissions = route_permissions(handler)
    if permissions is None:
        raise PermissionDeniedError("route declares no permission")
    if PUBLIC in permissions:
        return
    authenticator: Authenticator = connection.app.state.runtime.authenticator
    if SCOPE_AUTH not in connection.scope and authenticator.may_block:
        principal = await anyio.to_thread.run_sync(resolve_principal, authenticator, connection.scope)
    else:
        principal = resolve_principal(authenticator, connection.scope)
    if isinstance(principal, AuthenticationError):
        raise principal
    if not any(principal.can(p) for p in permissions):
        raise PermissionDeniedError(f"role {principal.role!r} may not {' or '.join(sorted(permissions))}")
    for name in TENANT_SELECTORS:
        if name in connection.query_params:
            raise InvalidInputError("the tenant comes from the credential; do not send it",
                                    details={name: "not accepted"})
    connection.scope["principal"] = principal  # type: ignore[typeddict-unknown-key]


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard authenticated for this request."""
    principal = connection.scope.get("principal")
    if not isinstance(principal, Principal):
        raise AuthenticationError("not authenticated")
    return principal
