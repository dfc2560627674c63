"""Governance in the running server: the parts it is made of, their settings, lifecycle and background job.

Builds on the pure core (``governance.*``) and its tables (``governance.store``). What only a long-lived
process has is split by responsibility, and ``Governance`` puts the parts together:

    server.signing         the Ed25519 signing keys (a 0600 PEM file under the data dir), issuing tokens
    server.policy_state    caches of each project's active policy and each tenant's kill switch, and the
                           audited changes that invalidate them
    server.decisions       decisions (``POST /v1/decisions``) and break-glass tokens
    server.approvals       approvals, and the waiters of ``GET /v1/approvals/{id}?wait=N``
    server.binding         the binding check of executed tools (OTLP spans and REST steps)
    server.step_recorder   the background recorder of decision/approval/violation steps and audit records

Steps are appended off the request path, in batches (one WAL append and fsync per batch, not per
decision), and so are the audit records of allow/deny decisions (one SQLite transaction per batch, within
milliseconds): a decision's answer never waits on the single SQLite writer, which the flusher also holds.
What an answer depends on is written before it: a pending approval (with its audit record) before
``require_approval`` is returned; approvals, policy changes, the kill switch and break-glass are audited in
the same transaction as the change. Before the receiver sequences any span, pending steps are flushed (see
:meth:`Governance.bind`), so a decision always precedes the execution it governs in its run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from governance import store
from governance.tokens import MAX_TTL_S, SigningKeys
from otlp_receiver.model import Span as OtelSpan
from otlp_receiver.model import StepDraft
from otlp_receiver.store.index import RunIndex
from server.approvals import Approvals
from server.binding import Binder
from server.decisions import Decisions
from server.policy_state import PolicyState
from server.settings import Settings
from server.signing import TokenIssuer, load_signing_keys
from server.step_recorder import RecordSteps, StepRecorder

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    """The settings governance needs (from ``server.settings.Settings``)."""

    approval_timeout_s: float = 300.0
    token_ttl_s: int = 300
    global_kill_switch: bool = False
    expiry_interval_s: float = 1.0
    step_linger_s: float = 1.0
    prune_interval_s: float = 3600.0


class Governance:
    """Decisions, approvals, policies, kill switch, break-glass and the ingest binding hook, put together."""

    def __init__(self, index: RunIndex, keys: SigningKeys, record: RecordSteps,
                 config: GovernanceConfig | None = None) -> None:
        self.index, self.config = index, config or GovernanceConfig()
        self._keys = keys
        self.key_listeners: list[Callable[[SigningKeys], None]] = []
        """Told of rotated keys (the flusher process's sealer); each has them when the setter returns."""
        self.recorder = StepRecorder(record, index, linger_s=self.config.step_linger_s)
        self.policies = PolicyState(index, global_kill_switch=self.config.global_kill_switch)
        issuer = TokenIssuer(lambda: self.keys, ttl_s=self.config.token_ttl_s)
        self.decisions = Decisions(index, self.policies, issuer, self.recorder,
                                   approval_timeout_s=self.config.approval_timeout_s)
        self.approvals = Approvals(index, self.policies, issuer, self.recorder)
        self.binder = Binder(index, keys=lambda: self.keys, active_policy=self.policies.active_policy,
                             record_step=self.recorder.add, before_check=self.recorder.flush)
        self._stop = threading.Event()
        self._jobs: threading.Thread | None = None

    @property
    def keys(self) -> SigningKeys:
        """The Ed25519 keys that sign decision tokens and run seals."""
        return self._keys

    @keys.setter
    def keys(self, keys: SigningKeys) -> None:
        self._keys = keys
        for listener in self.key_listeners:
            listener(keys)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the step recorder and the approvals expiry job."""
        self.recorder.start()
        self._jobs = threading.Thread(target=self._run_jobs, name="governance-jobs", daemon=True)
        self._jobs.start()

    def stop(self) -> None:
        """Stop the jobs and record the last steps (call before the flusher stops)."""
        self._stop.set()
        if self._jobs is not None:
            self._jobs.join(timeout=10)
        self.recorder.stop()

    def _run_jobs(self) -> None:
        last_prune = time.monotonic()
        while not self._stop.wait(self.config.expiry_interval_s):
            try:
                self.approvals.expire_overdue()
                if time.monotonic() - last_prune >= self.config.prune_interval_s:
                    last_prune = time.monotonic()
                    store.prune_binding_state(self.index, before_ns=time.time_ns() - (MAX_TTL_S + 3600) * 10**9)
            except Exception:  # a background loop: log and keep going
                logger.exception("governance job failed")

    # -- binding (the ingest hook) ----------------------------------------------------------------------------

    def bind(self, tenant_id: str, project_id: str, spans: Sequence[OtelSpan]) -> list[tuple[str | None, str | None]]:
        """``IngestPipeline``'s ``bind=`` hook: (binding, decision_token_id) of an export's raw spans, in order
        (``server.binding``)."""
        return self.binder.bind_spans(tenant_id, project_id, spans)

    def bind_step(self, tenant_id: str, project_id: str, draft: StepDraft) -> tuple[str | None, str | None]:
        """The same for a REST step."""
        return self.binder.bind_step(tenant_id, project_id, draft)


def governance_from_settings(settings: Settings, index: RunIndex, record: RecordSteps) -> Governance:
    """Load (or create) the signing keys and build the service from the server's settings."""
    config = GovernanceConfig(approval_timeout_s=settings.approval_timeout_s,
                              token_ttl_s=settings.decision_token_ttl_s,
                              global_kill_switch=settings.kill_switch_external_write,
                              step_linger_s=settings.decision_step_linger_s)
    return Governance(index, load_signing_keys(settings.signing_key_file), record, config)
