"""Authentication and authorisation for HTTP routes and the OTLP receivers.

Every route declares the permission it needs in ``opt={"permission": ...}``; a route that
declares none is refused (and a test enumerates the app's routes to enforce it). The
tenant always comes from the credential, never from the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from otlp_receiver.errors import AuthenticationError, PermissionDeniedError
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.keys import KeyStore

PUBLIC = "public"
PERMISSIONS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest", "decide"}),
    "viewer": frozenset({"read"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "approve", "admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's tenant, project and role."""

    tenant_id: str
    project_id: str
    role: str
    key_id: str

    def can(self, permission: str) -> bool:
        """Whether this principal's role grants ``permission``."""
        return permission in PERMISSIONS.get(self.role, frozenset())


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header:
        raise AuthenticationError("missing credentials: send Authorization: Bearer <key>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


class Authenticator:
    """Turns credentials into principals."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def principal(self, header: str | None) -> Principal:
        """Authenticate an Authorization header value."""
        record = self.keys.authenticate(bearer_token(header))
        return Principal(record.tenant_id, record.project_id, record.role, record.key_id)

    def ingest_identity(self, header: str | None) -> IngestIdentity:
        """Authenticate an OTLP export: only keys allowed to ingest."""
        principal = self.principal(header)
        if not principal.can("ingest"):
            raise AuthenticationError("this key may not ingest telemetry: use an ingest key")
        return IngestIdentity(principal.tenant_id, principal.project_id)


def permission_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: authenticate, then check the route's declared permission."""
    permission = handler.opt.get("permission")
    if permission is None:
        raise PermissionDeniedError("route declares no permission")
    if permission == PUBLIC:
        return
    authenticator: Authenticator = connection.app.state.runtime.authenticator
    principal = authenticator.principal(connection.headers.get("authorization"))
    if not principal.can(permission):
        raise PermissionDeniedError(f"role {principal.role!r} may not {permission}")
    connection.scope["principal"] = principal  # type: ignore[typeddict-unknown-key]


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard authenticated for this request."""
    principal = connection.scope.get("principal")  # type: ignore[typeddict-item]
    if not isinstance(principal, Principal):
        raise AuthenticationError("not authenticated")
    return principal
