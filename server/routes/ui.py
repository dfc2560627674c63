"""The web UI under /ui: public HTML shells and static files, plus two small helpers for them.

    GET /ui, /ui/runs, /ui/runs/{run_id}, /ui/diff, /ui/approvals,    public  HTML shells (no data)
        /ui/policies, /ui/audit, /ui/analytics, /ui/login
    GET /ui/static/{file_path}                                        public  JS, CSS, icons
    GET /ui/diff/latest?agent=|service=|run=                          public  302 to /ui/diff?runA=…&runB=…
    GET /ui/session                                                   read    who the token is (role, tenant)

Shells and static files hold no data: each page's script reads the JSON API with the bearer token
the user pasted on /ui/login (kept in sessionStorage, never in a URL). ``/ui/diff/latest`` is the
link Grafana uses for "this run vs. the previous run of the same agent": with an ``Authorization``
header that may read it answers the redirect itself; a browser following a link sends none (and a
credential that can't read gets no 401/403 from this public route), so it gets the shell of a page
that resolves the pair with the stored token and then redirects. The files come
from ``dashboards/`` (read once, at app creation).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from litestar.response import Redirect

from dashboards.pages import StaticFile, load_static_files, render_all_pages
from otlp_receiver.errors import AuthenticationError, InvalidInputError, NotFoundError
from otlp_receiver.model import Run
from otlp_receiver.store.index import RunFilters
from server.auth import PERMISSIONS, PUBLIC, Principal, current_principal, resolve_principal
from server.routes.ingest import normalise_run_id
from server.runtime import Runtime

PUBLIC_OPT = {"permission": PUBLIC}
READ = {"permission": "read"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
"""Sent with every shell: the token lives in sessionStorage, so no inline script may ever run."""
_SHELLS = render_all_pages()
_STATIC: dict[str, StaticFile] = load_static_files()


def _shell(page: str) -> Response[str]:
    return Response(_SHELLS[page], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


def _reader(request: Request[Any, Any, Any], runtime: Runtime) -> Principal | None:
    """The caller if its bearer credential may read, else None (the route is public: no 401/403 here)."""
    if not request.headers.get("authorization"):
        return None
    principal = resolve_principal(runtime.authenticator, request.scope)
    if isinstance(principal, AuthenticationError) or not principal.can("read"):
        return None
    return principal


def _newest(runtime: Runtime, tenant: str, filters: RunFilters, n: int) -> list[Run]:
    runs, _ = runtime.index.list_runs(tenant, filters, limit=n)
    return runs


def latest_pair(runtime: Runtime, tenant: str, *, agent: str | None, service: str | None,
                run: str | None) -> tuple[str, str]:
    """(previous run, newer run) of one agent: ``run`` and the run before it, or the two newest.

    Raises:
        InvalidInputError: none of ``agent``, ``service`` or ``run`` is given.
        NotFoundError: ``run`` is unknown, or there is no earlier run to compare with.
    """
    if run:
        found = runtime.index.get_run(tenant, normalise_run_id(run))
        if found is None:
            raise NotFoundError(f"run {run} not found")
        filters = RunFilters(agent=found.agent) if found.agent else RunFilters(service=found.service)
        before = _newest(runtime, tenant, RunFilters(agent=filters.agent, service=filters.service,
                                                     started_before_ns=found.started_ns), 1)
        if not before:
            raise NotFoundError(f"run {found.run_id} has no earlier run of the same agent")
        return before[0].run_id, found.run_id
    if not agent and not service:
        raise InvalidInputError("name the agent, the service or a run", details={"agent": "or service, or run"})
    newest = _newest(runtime, tenant, RunFilters(agent=agent or None, service=service or None), 2)
    if len(newest) < 2:
        raise NotFoundError(f"fewer than two runs of {'agent ' + agent if agent else 'service ' + str(service)}")
    return newest[1].run_id, newest[0].run_id


class UiController(Controller):
    """HTML shells of the web UI (data comes from the API, fetched by the page with the user's token)."""

    path = "/ui"
    tags = ["ui"]

    @get("/", summary="Web UI: home (health pulse)", opt=PUBLIC_OPT, sync_to_thread=False)
    def home(self) -> Response[str]:
        """The home page shell."""
        return _shell("home")

    @get("/login", summary="Web UI: sign in with an API key or JWT", opt=PUBLIC_OPT, sync_to_thread=False)
    def login(self) -> Response[str]:
        """The sign-in page shell (the token stays in the browser's sessionStorage)."""
        return _shell("login")

    @get("/runs", summary="Web UI: runs list", opt=PUBLIC_OPT, sync_to_thread=False)
    def runs(self) -> Response[str]:
        """The runs list shell (filters as GET /v1/runs, cursor paging)."""
        return _shell("runs")

    @get("/runs/{run_id:str}", summary="Web UI: one run (timeline and steps)", opt=PUBLIC_OPT,
         sync_to_thread=False)
    def run(self, run_id: str) -> Response[str]:
        """The run view shell (the page reads ``run_id`` from its URL)."""
        del run_id
        return _shell("run")

    @get("/diff", summary="Web UI: diff of two runs (?runA=&runB=&profile=)", opt=PUBLIC_OPT, sync_to_thread=False)
    def diff(self) -> Response[str]:
        """The diff view shell."""
        return _shell("diff")

    @get("/diff/latest", summary="Web UI: redirect to the diff of an agent's newest run with the previous one",
         opt=PUBLIC_OPT, sync_to_thread=True)
    def diff_latest(
        self, request: Request[Any, Any, Any], runtime: Runtime, agent: str | None = None,
        service: str | None = None,
        run: Annotated[str | None, Parameter(description="compare this run with the one before it")] = None,
        profile: str | None = None,
    ) -> Response[Any]:
        """302 to /ui/diff?runA=<previous>&runB=<newer> for a reader's bearer; else a page that resolves it."""
        principal = _reader(request, runtime)
        if principal is None:
            return _shell("diff_latest")
        run_a, run_b = latest_pair(runtime, principal.tenant_id, agent=agent, service=service, run=run)
        query = {"runA": run_a, "runB": run_b, "profile": profile or "default"}
        return Redirect(path=f"/ui/diff?{urlencode(query)}", status_code=302, headers={"Cache-Control": "no-store"})

    @get("/approvals", summary="Web UI: approvals inbox", opt=PUBLIC_OPT, sync_to_thread=False)
    def approvals(self) -> Response[str]:
        """The approvals inbox shell."""
        return _shell("approvals")

    @get("/policies", summary="Web UI: policy versions", opt=PUBLIC_OPT, sync_to_thread=False)
    def policies(self) -> Response[str]:
        """The policies shell."""
        return _shell("policies")

    @get("/audit", summary="Web UI: audit log (admin)", opt=PUBLIC_OPT, sync_to_thread=False)
    def audit(self) -> Response[str]:
        """The audit log shell (the API refuses non-admins)."""
        return _shell("audit")

    @get("/analytics", summary="Web UI: analytics charts", opt=PUBLIC_OPT, sync_to_thread=False)
    def analytics(self) -> Response[str]:
        """The analytics shell."""
        return _shell("analytics")

    @get("/session", summary="Web UI: who the bearer token is (role, tenant, permissions)", opt=READ,
         sync_to_thread=False)
    def session(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """What the UI needs to show or hide actions; the server checks every call anyway."""
        p = current_principal(request)
        return {"role": p.role, "tenant_id": p.tenant_id, "project_id": p.project_id, "actor": p.actor,
                "kind": p.kind, "permissions": sorted(PERMISSIONS.get(p.role, frozenset()))}

    @get("/static/{file_path:path}", summary="Web UI: static files (JS, CSS, icons)", opt=PUBLIC_OPT,
         sync_to_thread=False)
    def static(self, request: Request[Any, Any, Any], file_path: str) -> Response[bytes]:
        """A file of dashboards/ui/static, with an ETag (304 when unchanged)."""
        found = _STATIC.get(file_path.lstrip("/"))
        if found is None:
            raise NotFoundException(f"no static file {file_path}")
        headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == found.etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(found.content, media_type=found.media_type, headers=headers)
