"""GET /v1/diff: an aligned, normalized diff of two runs of the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import Parameter

from diff.api import diff_runs
from diff.normalize import get_profile
from server.auth import current_principal
from server.routes.ingest import normalise_run_id
from server.runtime import Runtime
from server.steps import read_run


class DiffController(Controller):
    """Run diffs."""

    path = "/v1/diff"
    tags = ["diff"]

    @get("/", summary="Diff two runs (aligned, normalized)", opt={"permission": "read"}, sync_to_thread=True)
    def diff(
        self, request: Request[Any, Any, Any], runtime: Runtime,
        run_a: Annotated[str, Parameter(query="runA", description="the baseline run")],
        run_b: Annotated[str, Parameter(query="runB", description="the run compared with it")],
        normalize_profile: Annotated[str | None, Parameter(description="default|strict|structure|semantic|…")] = None,
        profile: Annotated[str | None, Parameter(description="alias of normalize_profile")] = None,
    ) -> dict[str, Any]:
        """Summary, aligned step pairs with field-level changes, and the profile applied.

        A run of another tenant, or one that doesn't exist, answers 404; an unknown profile 422
        with the known names."""
        tenant = current_principal(request).tenant_id
        chosen = get_profile(runtime.diff_profiles, normalize_profile or profile or "default")
        a, steps_a = read_run(runtime.index, runtime.steps, tenant, normalise_run_id(run_a), runtime.step_cache)
        b, steps_b = read_run(runtime.index, runtime.steps, tenant, normalise_run_id(run_b), runtime.step_cache)
        return diff_runs(a, steps_a, b, steps_b, profile=chosen).to_dict()
