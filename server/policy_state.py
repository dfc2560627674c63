"""Each project's active policy and each tenant's kill switch, cached, and the changes that invalidate them.

Policy versions and kill switches are created, activated and flipped here (audited by ``governance.store``
in the same transaction), so the caches are cleared in the one place they can go stale. Imports only the
governance core and store, ``otlp_receiver.store.index`` and ``server.auth``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from governance import store
from governance.policy import EXTERNAL_WRITE, Policy, tool_config
from otlp_receiver.store.index import RunIndex
from server.auth import Principal

_MISS: Any = object()


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """A project's active policy, parsed, with its stored identity."""

    policy: Policy
    version: int
    policy_id: str


class PolicyState:
    """Active policies and kill switches: cached reads, and the audited changes that invalidate them."""

    def __init__(self, index: RunIndex, *, global_kill_switch: bool = False) -> None:
        self.index = index
        self.global_kill_switch = global_kill_switch
        self._cache_lock = threading.Lock()
        self._generation = 0
        self._policies: dict[tuple[str, str], ActivePolicy | None] = {}
        self._kill_switches: dict[str, bool] = {}

    # -- cached reads -----------------------------------------------------------------------------------------

    def active_policy(self, tenant_id: str, project_id: str) -> ActivePolicy | None:
        """The project's active policy (cached until the next activation)."""
        key = (tenant_id, project_id)
        hit = self._policies.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        generation = self._generation
        record = store.active_policy(self.index, tenant_id, project_id)
        value = ActivePolicy(record.to_policy(), record.version, record.policy_id) if record else None
        with self._cache_lock:
            if generation == self._generation:  # no activation raced with this load
                self._policies[key] = value
        return value

    def kill_switch_on(self, tenant_id: str) -> bool:
        """Whether external writes are stopped for this tenant (its switch, or the global one)."""
        if self.global_kill_switch:
            return True
        hit = self._kill_switches.get(tenant_id)
        if hit is not None:
            return hit
        generation = self._generation
        enabled = store.get_kill_switch(self.index, tenant_id).enabled
        with self._cache_lock:
            if generation == self._generation:
                self._kill_switches[tenant_id] = enabled
        return enabled

    def kill_switch_blocks(self, tenant_id: str, project_id: str, tool: str, claimed_class: str | None) -> bool:
        """Whether the kill switch denies this tool now (external writes, or tools of unknown class)."""
        if not self.kill_switch_on(tenant_id):
            return False
        active = self.active_policy(tenant_id, project_id)
        action_class = (tool_config(active.policy, tool).action_class if active else None) or claimed_class
        return action_class in (None, EXTERNAL_WRITE)

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._generation += 1
            self._policies.clear()
            self._kill_switches.clear()

    # -- changes ----------------------------------------------------------------------------------------------

    def create_policy(self, principal: Principal, project_id: str, policy: Policy, *, source: str,
                      content_type: str) -> store.PolicyRecord:
        """Store a new (inactive) version of a project's policy in the principal's tenant."""
        return store.create_policy(self.index, tenant_id=principal.tenant_id, project_id=project_id,
                                   policy=policy, source=source, content_type=content_type,
                                   actor=principal.actor)

    def activate_policy(self, principal: Principal, project_id: str, policy_id: str) -> store.PolicyRecord:
        """Activate a version; the next decision uses it."""
        record = store.activate_policy(self.index, tenant_id=principal.tenant_id, project_id=project_id,
                                       policy_id=policy_id, actor=principal.actor)
        self._invalidate()
        return record

    def set_kill_switch(self, principal: Principal, *, enabled: bool, reason: str | None) -> store.KillSwitch:
        """Flip the principal's tenant kill switch (audited)."""
        state = store.set_kill_switch(self.index, principal.tenant_id, enabled=enabled, reason=reason,
                                      actor=principal.actor)
        self._invalidate()
        return state
