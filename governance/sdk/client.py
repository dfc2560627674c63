"""``GovernanceClient``: asks ``POST /v1/decisions``, waits on approvals, and runs gated tools in their span.

The wire contract is in the ``governance.sdk`` package docstring. Imports only httpx, the OpenTelemetry
API, the standard library and the rest of ``governance.sdk`` (never server/ or storage).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from opentelemetry import trace

from governance.sdk.errors import ApprovalTimeout, GovernanceError, GovernanceUnavailable, ToolDenied
from governance.sdk.result import DecisionResult, _approval_outcome, _optional_str, _with
from governance.sdk.spans import _requesting_span, _tool_span, current_span_ids

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_APPROVAL_TIMEOUT_S = 300.0
DEFAULT_POLL_WAIT_S = 30
_MIN_POLL_INTERVAL_S = 0.5


class GovernanceClient:
    """Asks Traceward before tools run; see the module docstring for the wire contract."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 5.0,
        approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
        fail_open_tools: frozenset[str] | set[str] = frozenset(),
        transport: httpx.BaseTransport | None = None,
        poll_wait_s: int = DEFAULT_POLL_WAIT_S,
        tracer_provider: trace.TracerProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create a client; ``tracer_provider`` defaults to the global one, ``clock``/``sleep`` are for tests."""
        self._tracer = trace.get_tracer("traceward.governance", tracer_provider=tracer_provider)
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "traceward-sdk/0.1"},
        )
        self._timeout_s = timeout_s
        self._approval_timeout_s = approval_timeout_s
        self._fail_open_tools = frozenset(fail_open_tools)
        self._poll_wait_s = poll_wait_s
        self._clock, self._sleep = clock, sleep

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> GovernanceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ deciding

    def decide(
        self,
        tool_name: str,
        args: Mapping[str, Any],
        *,
        agent: str | None = None,
        environment: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> DecisionResult:
        """Ask for a decision under the current span; block for an approval if one is needed.

        Returns:
            The decision, when the tool may run.

        Raises:
            ToolDenied: denied by the policy or by an approver.
            ApprovalTimeout: no approval within ``approval_timeout_s``.
            GovernanceUnavailable: Traceward unreachable and the tool is not fail-open.
            GovernanceError: no active span, a rejected request, or a malformed answer.
        """
        ids = current_span_ids()
        if ids is None:
            raise GovernanceError("no active OpenTelemetry span: run the tool inside a recording span")
        body: dict[str, Any] = {
            "tool_name": tool_name,
            "args": dict(args),
            "trace_id": ids[0],
            "span_id": ids[1],
        }
        body |= {k: v for k, v in (("agent", agent), ("environment", environment), ("context", context)) if v}
        try:
            answer = self._call("POST", "/v1/decisions", json=body)
        except GovernanceUnavailable:
            if tool_name not in self._fail_open_tools:
                raise
            logger.warning(
                "Traceward unavailable; tool %r is fail-open and runs without a decision", tool_name
            )
            return DecisionResult("allow", "fail_open", dict(args), ids[0], ids[1], fail_open=True)
        return self._conclude(tool_name, dict(args), ids, answer)

    def _conclude(
        self, tool_name: str, args: dict[str, Any], ids: tuple[str, str], answer: Mapping[str, Any]
    ) -> DecisionResult:
        decision, reason = answer.get("decision"), str(answer.get("reason_code") or "")
        rule_id = answer.get("rule_id")
        if decision == "deny":
            raise ToolDenied(tool_name, reason or "denied", rule_id=rule_id)
        base = DecisionResult(
            "allow", reason, args, ids[0], ids[1], rule_id, answer.get("policy_version"), raw=answer
        )
        if decision == "allow":
            return _with(base, token=_optional_str(answer, "token"))
        if decision == "require_approval" and isinstance(answer.get("approval_id"), str):
            return self._await_approval(tool_name, base, answer["approval_id"])
        raise GovernanceError(f"malformed decision for tool {tool_name!r}: {decision!r}")

    def _await_approval(self, tool_name: str, base: DecisionResult, approval_id: str) -> DecisionResult:
        deadline = self._clock() + self._approval_timeout_s
        logger.info("tool %r waits for approval %s", tool_name, approval_id)
        while (remaining := deadline - self._clock()) > 0:
            started = self._clock()
            wait = max(0, min(self._poll_wait_s, int(remaining)))
            try:
                answer = self._call(
                    "GET",
                    f"/v1/approvals/{approval_id}",
                    params={"wait": wait},
                    timeout=wait + self._timeout_s,
                )
            except GovernanceUnavailable:
                answer = {"status": "pending"}  # keep waiting: the approval lives on the server
            result = _approval_outcome(tool_name, base, approval_id, answer)
            if result is not None:
                return result
            if self._clock() - started < _MIN_POLL_INTERVAL_S:
                self._sleep(min(_MIN_POLL_INTERVAL_S, max(0.0, deadline - self._clock())))
        raise ApprovalTimeout(
            f"no decision on approval {approval_id} for tool {tool_name!r} within {self._approval_timeout_s:g}s"
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Mapping[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GovernanceUnavailable(f"Traceward unreachable ({type(exc).__name__}): {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise GovernanceUnavailable(f"Traceward unavailable: HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise GovernanceError(f"Traceward answered HTTP {response.status_code} without JSON") from exc
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise GovernanceError(
                f"Traceward rejected the request ({response.status_code} {code}): {message}", code=code
            )
        if not isinstance(payload, dict):
            raise GovernanceError("Traceward answered with a non-object JSON body")
        return payload

    # ------------------------------------------------------------ running

    @contextlib.contextmanager
    def guard(
        self,
        tool_name: str,
        args: Mapping[str, Any],
        *,
        agent: str | None = None,
        environment: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Iterator[DecisionResult]:
        """Decide, then run the ``with`` body inside the tool's span; yields the decision (use ``.args``)."""
        with _requesting_span(self._tracer, tool_name) as requesting:
            result = self.decide(tool_name, args, agent=agent, environment=environment, context=context)
            with _tool_span(self._tracer, tool_name, result, requesting):
                yield result

    def gated(self, tool_name: str | None = None, **decide_kwargs: Any) -> Callable[[F], F]:
        """Decorator: the tool runs only when allowed, and receives the approved args as keywords.

        Works on plain and ``async`` functions whose parameters can be passed by keyword (not
        bound methods: ``self`` would become an argument). The call's arguments, defaults
        applied and ``**kwargs`` flattened, are what is decided on; they must be JSON-serialisable.
        """

        def decorate(fn: F) -> F:
            name, signature = tool_name or fn.__name__, inspect.signature(fn)
            _check_signature(fn, signature)
            if inspect.iscoroutinefunction(fn):
                return self._wrap_async(fn, name, signature, decide_kwargs)  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*a: Any, **k: Any) -> Any:
                with self.guard(name, _bind(signature, a, k), **decide_kwargs) as result:
                    return fn(**result.args)

            return wrapper  # type: ignore[return-value]

        return decorate

    def _wrap_async(
        self, fn: Callable[..., Any], name: str, signature: inspect.Signature, kw: Mapping[str, Any]
    ) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*a: Any, **k: Any) -> Any:
            args = _bind(signature, a, k)
            with _requesting_span(self._tracer, name) as requesting:
                result = await asyncio.to_thread(self.decide, name, args, **kw)  # copies the OTel context
                with _tool_span(self._tracer, name, result, requesting):
                    return await fn(**result.args)

        return wrapper


def _check_signature(fn: Callable[..., Any], signature: inspect.Signature) -> None:
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            raise TypeError(
                f"@gated tool {fn.__name__!r}: parameter {param.name!r} cannot be passed by keyword"
            )


def _bind(signature: inspect.Signature, a: tuple[Any, ...], k: Mapping[str, Any]) -> dict[str, Any]:
    bound = signature.bind(*a, **k)
    bound.apply_defaults()
    args = dict(bound.arguments)
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            args.update(args.pop(param.name, {}))
    return args
