"""Governance API: policies, decisions, approvals, kill switch, break-glass and the token JWKS.

    GET  /v1/policies                         read      versions of a project's policy (?project=, default: the key's)
    POST /v1/policies                         admin     new version (YAML or JSON by Content-Type); 422 + path hint
    GET  /v1/policies/{policy_id}             read      one version with its document
    POST /v1/policies/{policy_id}:activate    admin     the project's only active version (audited)
    POST /v1/decisions                        decide    allow → token, require_approval → approval_id, deny
    GET  /v1/approvals                        read      filters status, tool, agent, run; cursor
    GET  /v1/approvals/{id}?wait=N            read, or decide for the caller's own project (N ≤ 60, long poll)
    POST /v1/approvals/{id}:approve           approve   optional edited args (re-checked by the policy), reason
    POST /v1/approvals/{id}:deny              approve   reason (kept as feedback)
    GET  /v1/kill-switch                      read      tenant and global state
    PUT|POST /v1/kill-switch                  admin     {enabled, reason?} (audited)
    POST /v1/break-glass                      admin     a break_glass token with a justification (audited)
    GET  /.well-known/jwks.json               public    the Ed25519 keys that verify DecisionTokens

Policies belong to a project: people name it with ``?project=`` (any project of their tenant; default:
their credential's project). Decisions always use the ingest key's own project.

GET /v1/approvals/{id} has two audiences, which the one-permission guard cannot express: people
(``read``, any approval of their tenant) and the agent that asked (an ingest key, ``decide``, approvals
of its own tenant and project only; it alone receives the token). The route is declared public to the
app-wide guard and carries its own guard, :func:`approval_reader_guard`, which authenticates and allows
either permission; :meth:`server.approvals.Approvals.get_approval` enforces the project scope.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter

from governance import store
from governance.approvals import ApprovalContext
from governance.evaluate import DecisionRequest
from governance.policy import ACTION_CLASSES, AUTONOMY_LEVELS, parse_policy
from governance.store import ApprovalFilters, ApprovalRecord, KillSwitch, PolicyRecord
from otlp_receiver.errors import AuthenticationError, InvalidInputError, NotFoundError, PermissionDeniedError
from server.auth import PUBLIC, Authenticator, Principal, current_principal, resolve_principal
from server.decisions import DecisionOutcome
from server.governance_wiring import Governance
from server.runtime import Runtime
from server.schemas import rfc3339

READ = {"permission": "read"}
ADMIN = {"permission": "admin"}
DECIDE = {"permission": "decide"}
APPROVE = {"permission": "approve"}
MAX_POLICY_BODY_BYTES = 1024 * 1024
MAX_DECISION_BODY_BYTES = 1024 * 1024
MAX_WAIT_S = 60


# -- request bodies (unknown fields are rejected with 400) ----------------------------------------------------

class DecisionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/decisions (the wire shape of ``governance.sdk``)."""

    tool_name: str
    args: dict[str, Any] = {}
    trace_id: str
    span_id: str
    agent: str | None = None
    environment: str | None = None
    action_class: str | None = None
    autonomy_level: str | None = None
    context: dict[str, Any] | None = None


class ApproveIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/approvals/{id}:approve."""

    args: dict[str, Any] | None = None
    reason: str | None = None


class DenyIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/approvals/{id}:deny."""

    reason: str | None = None


class KillSwitchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PUT /v1/kill-switch."""

    enabled: bool
    reason: str | None = None


class BreakGlassIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/break-glass."""

    tool_name: str
    args: dict[str, Any] = {}
    trace_id: str
    span_id: str | None = None
    justification: str
    ttl_s: int | None = None
    project_id: str | None = None


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid request body: {exc}", details={"body": str(exc)}) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"the request body is not valid JSON: {exc}", details={"body": "expected JSON"}) from exc
    except RecursionError as exc:  # Litestar's own body parsing would answer 500 here
        raise InvalidInputError("the request body is nested too deeply", details={"body": "too deep"}) from exc


def _request(tool_name: str, args: dict[str, Any], agent: str | None = None, environment: str | None = None,
             action_class: str | None = None, autonomy_level: str | None = None) -> DecisionRequest:
    for name, value, allowed in (("action_class", action_class, ACTION_CLASSES),
                                 ("autonomy_level", autonomy_level, AUTONOMY_LEVELS)):
        if value is not None and value not in allowed:
            raise InvalidInputError(f"{name}: one of {', '.join(allowed)}", details={name: "invalid"})
    for name, text in (("agent", agent), ("environment", environment)):
        if text is not None and not 0 < len(text) <= 256:
            raise InvalidInputError(f"{name}: 1 to 256 characters", details={name: "invalid"})
    return DecisionRequest(tool_name=tool_name, args=args, agent=agent, environment=environment,
                           action_class=action_class, autonomy_level=autonomy_level)


def _project(principal: Principal, project: str | None) -> str:
    """The project a person manages: ``?project=`` (any in their tenant), else their credential's."""
    chosen = project if project is not None else principal.project_id
    if not chosen or len(chosen) > 128:
        raise InvalidInputError("name the project: ?project=<project_id> (1 to 128 characters)",
                                details={"project": "required"})
    return chosen


def _action(ref: str, verbs: tuple[str, ...], what: str) -> tuple[str, str]:
    ident, sep, verb = ref.partition(":")
    if not sep or verb not in verbs:
        raise NotFoundError(f"no such action {ref!r}: use POST /v1/{what}/{{id}}:{'|'.join(verbs)}")
    return ident, verb


# -- JSON views -----------------------------------------------------------------------------------------------

def policy_to_json(record: PolicyRecord, *, document: bool = False) -> dict[str, Any]:
    """A stored policy version → the API object (``document`` and ``source`` only when asked)."""
    out = {"policy_id": record.policy_id, "project_id": record.project_id, "version": record.version,
           "active": record.active, "description": record.description, "rule_count": record.rule_count,
           "sha256": record.sha256, "content_type": record.content_type,
           "created_at": rfc3339(record.created_ns), "created_by": record.created_by,
           "activated_at": rfc3339(record.activated_ns), "activated_by": record.activated_by}
    if document:
        out |= {"document": msgspec.json.decode(record.document), "source": record.source}
    return out


def decision_to_json(outcome: DecisionOutcome) -> dict[str, Any]:
    """A decision → the wire shape of ``governance.sdk`` (token on allow, approval_id on require_approval)."""
    d = outcome.decision
    out: dict[str, Any] = {"decision": d.decision, "reason_code": d.reason_code, "rule_id": d.rule_id,
                           "policy_version": outcome.policy_version}
    if outcome.approval is not None:
        out |= {"approval_id": outcome.approval.id, "expires_at": rfc3339(outcome.approval.expires_ns)}
    if outcome.token is not None:
        out |= {"token": outcome.token, "token_id": outcome.token_id, "expires_at": rfc3339(outcome.expires_ns)}
    return out


def approval_to_json(record: ApprovalRecord, *, for_agent: bool, kill_switch: bool) -> dict[str, Any]:
    """An approval → the API object. ``args`` are the approved args (edited if the approver changed them).

    The token goes only to the agent's side (an ingest key). While the kill switch stops the tool, an
    approved approval reads as denied (``kill_switch``) to the agent, and is flagged for people.
    """
    a = record.approval
    status, reason, token = a.status, a.reason, record.token
    if status == "approved" and kill_switch and for_agent:
        status, reason, token = "denied", "kill_switch", None
    out = {
        "approval_id": a.id, "status": status, "tool_name": a.tool, "args": dict(a.approved_args),
        "requested_args": dict(a.args), "edited_args": dict(a.edited_args) if a.edited_args is not None else None,
        "project_id": a.project, "run_id": a.trace_id, "trace_id": a.trace_id, "span_id": a.span_id,
        "links": {"run": f"/v1/runs/{a.trace_id}", "steps": f"/v1/runs/{a.trace_id}/steps",
                  "span": f"/v1/runs/{a.trace_id}/steps#span-{a.span_id}"},
        "agent": a.agent, "environment": a.environment, "action_class": a.action_class,
        "autonomy_level": a.autonomy_level, "policy_version": a.policy_version, "rule_id": a.rule_id,
        "reason_code": a.reason_code, "context": a.context.to_dict(), "requested_by": a.requested_by,
        "created_at": rfc3339(a.created_ns), "expires_at": rfc3339(a.expires_ns),
        "decided_at": rfc3339(a.decided_ns), "decided_by": a.decided_by, "reason": reason,
        "token_id": record.token_id, "kill_switch": kill_switch,
    }
    if for_agent and token is not None:
        out["token"] = token
    return out


def _approval_view(gov: Governance, principal: Principal, record: ApprovalRecord) -> dict[str, Any]:
    a = record.approval
    blocked = gov.policies.kill_switch_blocks(a.tenant, a.project, a.tool, a.action_class)
    return approval_to_json(record, for_agent=not principal.can("read"), kill_switch=blocked)


def kill_switch_to_json(tenant: KillSwitch, *, global_on: bool) -> dict[str, Any]:
    """The kill-switch state: the tenant's own, the global one, and the effective value."""
    return {"enabled": tenant.enabled or global_on, "tenant_enabled": tenant.enabled, "global_enabled": global_on,
            "reason": tenant.reason, "updated_at": rfc3339(tenant.updated_ns), "updated_by": tenant.updated_by}


# -- guards ---------------------------------------------------------------------------------------------------

def approval_reader_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Authenticate and allow people who can ``read`` or agents who can ``decide`` (see the module docstring)."""
    authenticator: Authenticator = connection.app.state.runtime.authenticator
    principal = resolve_principal(authenticator, connection.scope)  # authenticated once per request
    if isinstance(principal, AuthenticationError):
        raise principal
    if not (principal.can("read") or principal.can("decide")):
        raise PermissionDeniedError(f"role {principal.role!r} may not read approvals")
    connection.scope["principal"] = principal  # type: ignore[typeddict-unknown-key]


# -- controllers ----------------------------------------------------------------------------------------------

class PoliciesController(Controller):
    """Versioned, immutable policy documents of the caller's project."""

    path = "/v1/policies"
    tags = ["governance"]

    @get("/", summary="List the project's policy versions, newest first", opt=READ, sync_to_thread=True)
    def list_policies(self, request: Request[Any, Any, Any], runtime: Runtime,
                      project: Annotated[str | None, Parameter(description="project id (default: the credential's)")] = None) -> dict[str, Any]:
        """Every version with its active flag (documents via GET /v1/policies/{policy_id})."""
        p = current_principal(request)
        project_id = _project(p, project)
        records = store.list_policies(runtime.index, p.tenant_id, project_id)
        active = next((r for r in records if r.active), None)
        return {"project_id": project_id, "active_policy_id": active.policy_id if active else None,
                "active_version": active.version if active else None,
                "policies": [policy_to_json(r) for r in records]}

    @post("/", summary="Create a policy version (YAML or JSON body)", opt=ADMIN, sync_to_thread=True,
          status_code=201, request_max_body_size=MAX_POLICY_BODY_BYTES)
    def create_policy(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes,
                      project: Annotated[str | None, Parameter(description="project id (default: the credential's)")] = None) -> dict[str, Any]:
        """Validate and store a new, inactive version; errors are 422 with a path hint in ``details``."""
        content_type = request.headers.get("content-type", "")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError("the policy must be UTF-8 text", details={"body": "not UTF-8"}) from exc
        policy = parse_policy(text, content_type=content_type)
        p = current_principal(request)
        record = runtime.governance.policies.create_policy(p, _project(p, project), policy, source=text,
                                                           content_type=content_type.split(";")[0].strip().lower())
        return policy_to_json(record, document=True)

    @get("/{policy_ref:str}", summary="Get one policy version with its document", opt=READ, sync_to_thread=True)
    def get_policy(self, request: Request[Any, Any, Any], runtime: Runtime, policy_ref: str,
                   project: Annotated[str | None, Parameter(description="project id (default: the credential's)")] = None) -> dict[str, Any]:
        """The version, its canonical document and the source as uploaded."""
        p = current_principal(request)
        record = store.get_policy(runtime.index, p.tenant_id, _project(p, project), policy_ref)
        if record is None:
            raise NotFoundError(f"policy {policy_ref} not found")
        return policy_to_json(record, document=True)

    @post("/{policy_ref:str}", summary="Activate a version: POST /v1/policies/{policy_id}:activate", opt=ADMIN,
          sync_to_thread=True, status_code=200)
    def activate_policy(self, request: Request[Any, Any, Any], runtime: Runtime, policy_ref: str,
                        project: Annotated[str | None, Parameter(description="project id (default: the credential's)")] = None) -> dict[str, Any]:
        """Make it the project's only active version; the next decision uses it (audited)."""
        policy_id, _ = _action(policy_ref, ("activate",), "policies")
        p = current_principal(request)
        return policy_to_json(runtime.governance.policies.activate_policy(p, _project(p, project), policy_id))


class DecisionsController(Controller):
    """Agents ask before running a tool."""

    path = "/v1/decisions"
    tags = ["governance"]

    @post("/", summary="Decide on a tool call", opt={**DECIDE, "urgent": True}, status_code=200,
          request_max_body_size=MAX_DECISION_BODY_BYTES)
    async def decide(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> dict[str, Any]:
        """Evaluate the active policy; recorded as a ``policy`` step in the run of ``trace_id`` and audited.

        Body (JSON, unknown fields rejected): ``DecisionIn`` — tool_name, args, trace_id, span_id, agent?,
        environment?, action_class?, autonomy_level?, context? (summary, risk_score, blast_radius,
        evidence_links, rollback_plan).
        """
        data: DecisionIn = _decode(body, DecisionIn)
        decision_request = _request(data.tool_name, data.args, data.agent, data.environment, data.action_class,
                                    data.autonomy_level)
        outcome = await runtime.governance.decisions.decide_async(current_principal(request), decision_request,
                                                                  trace_id=data.trace_id, span_id=data.span_id,
                                                                  context=ApprovalContext.from_dict(data.context))
        return decision_to_json(outcome)


class ApprovalsController(Controller):
    """Human approvals of gated tool calls."""

    path = "/v1/approvals"
    tags = ["governance"]

    @get("/", summary="List approvals, newest first", opt=READ, sync_to_thread=True)
    def list_approvals(
        self, request: Request[Any, Any, Any], runtime: Runtime, status: str | None = None,
        tool: str | None = None, agent: str | None = None,
        run: Annotated[str | None, Parameter(description="run (trace) id")] = None,
        project: Annotated[str | None, Parameter(description="project id")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50, cursor: str | None = None,
    ) -> dict[str, Any]:
        """Cursor-paged approvals of the caller's tenant (all its projects unless ``project`` is given)."""
        p = current_principal(request)
        gov = runtime.governance
        filters = ApprovalFilters(status=status, tool=tool, agent=agent, run=run, project=project)
        records, next_cursor = gov.approvals.list_approvals(p, filters, limit=limit, cursor=cursor)
        return {"approvals": [_approval_view(gov, p, r) for r in records], "next_cursor": next_cursor}

    @get("/{approval_ref:str}", summary="Get an approval; ?wait=N long-polls until it is decided",
         opt={"permission": PUBLIC, "approval_reader": True}, guards=[approval_reader_guard])
    async def get_approval(
        self, request: Request[Any, Any, Any], runtime: Runtime, approval_ref: str,
        wait: Annotated[int, Parameter(ge=0, le=MAX_WAIT_S, description="seconds to wait for a decision")] = 0,
    ) -> dict[str, Any]:
        """The approval with its context and links to its run and span (the token only for the agent)."""
        p = current_principal(request)
        gov = runtime.governance
        record = await gov.approvals.wait_for_approval(p, approval_ref, wait)
        return _approval_view(gov, p, record)

    @post("/{approval_ref:str}", summary="Decide: POST /v1/approvals/{id}:approve or :deny", opt=APPROVE,
          sync_to_thread=True, status_code=200, request_max_body_size=MAX_DECISION_BODY_BYTES)
    def decide_approval(self, request: Request[Any, Any, Any], runtime: Runtime, approval_ref: str,
                        body: bytes) -> dict[str, Any]:
        """:approve {args?, reason?} (args re-checked by the policy) or :deny {reason?}; the requester can't approve."""
        approval_id, verb = _action(approval_ref, ("approve", "deny"), "approvals")
        p = current_principal(request)
        gov = runtime.governance
        if verb == "approve":
            approve_in: ApproveIn = _decode(body, ApproveIn)
            record = gov.approvals.approve(p, approval_id, edited_args=approve_in.args, reason=approve_in.reason)
        else:
            deny_in: DenyIn = _decode(body, DenyIn)
            record = gov.approvals.deny(p, approval_id, reason=deny_in.reason)
        return _approval_view(gov, p, record)


class GovernanceOpsController(Controller):
    """The kill switch and break-glass."""

    path = "/v1"
    tags = ["governance"]

    @get("/kill-switch", summary="Kill switch for external writes", opt=READ, sync_to_thread=True)
    def get_kill_switch(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """The tenant's switch, the global one (configuration) and the effective state."""
        tenant = store.get_kill_switch(runtime.index, current_principal(request).tenant_id)
        return kill_switch_to_json(tenant, global_on=runtime.governance.config.global_kill_switch)

    @put("/kill-switch", summary="Set the tenant's kill switch", opt=ADMIN, sync_to_thread=True)
    def put_kill_switch(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> dict[str, Any]:
        """Turn the tenant's kill switch on or off (audited): ``{"enabled": bool, "reason"?: str}``."""
        return self._set(request, runtime, _decode(body, KillSwitchIn))

    @post("/kill-switch", summary="Set the tenant's kill switch (same as PUT)", opt=ADMIN, sync_to_thread=True,
          status_code=200)
    def post_kill_switch(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> dict[str, Any]:
        """Same as PUT /v1/kill-switch."""
        return self._set(request, runtime, _decode(body, KillSwitchIn))

    @staticmethod
    def _set(request: Request[Any, Any, Any], runtime: Runtime, data: KillSwitchIn) -> dict[str, Any]:
        if data.reason is not None and len(data.reason) > 4000:
            raise InvalidInputError("reason: at most 4000 characters", details={"reason": "too long"})
        gov = runtime.governance
        state = gov.policies.set_kill_switch(current_principal(request), enabled=data.enabled, reason=data.reason)
        return kill_switch_to_json(state, global_on=gov.config.global_kill_switch)

    @post("/break-glass", summary="Issue a break-glass token (admin, justification required)", opt=ADMIN,
          sync_to_thread=True, status_code=201, request_max_body_size=MAX_DECISION_BODY_BYTES)
    def break_glass(self, request: Request[Any, Any, Any], runtime: Runtime, body: bytes) -> dict[str, Any]:
        """A token flagged break_glass, without policy or approval; audited and marked in the run.

        Body: ``{"tool_name", "args", "trace_id", "span_id"?, "justification", "ttl_s"?, "project_id"?}``.
        """
        data: BreakGlassIn = _decode(body, BreakGlassIn)
        p = current_principal(request)
        outcome = runtime.governance.decisions.break_glass(
            p, _project(p, data.project_id), _request(data.tool_name, data.args), trace_id=data.trace_id,
            span_id=data.span_id or secrets.token_hex(8), justification=data.justification, ttl_s=data.ttl_s)
        return decision_to_json(outcome) | {"break_glass": True}


@get("/.well-known/jwks.json", summary="Public keys that verify DecisionTokens", opt={"permission": PUBLIC},
     sync_to_thread=False, tags=["governance"])
def jwks(runtime: Runtime) -> Response[dict[str, Any]]:
    """The JWK Set (Ed25519, current key first); tokens name their key with ``kid``."""
    return Response(runtime.governance.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


GOVERNANCE_HANDLERS = [PoliciesController, DecisionsController, ApprovalsController, GovernanceOpsController, jwks]
"""Route handlers to register on the API app."""
