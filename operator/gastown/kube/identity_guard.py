"""The agent identity mode, decided at start-up and then checked for as long as the operator runs.

Town identities (one ServiceAccount per town) are safe only while the admission policy
`gastown-agent-own-status` and its binding are installed and intact: without them every agent
token of the town could patch any Agent status of its town. So the operator does not trust a
one-time look at start-up: the guard re-reads both objects every few seconds (two GETs) and
compares them with what `agent_status_policy` builds (`policy_weakness`). While they are missing
or weakened, every Town carries the fault `AgentIdentityUnprotected`: the reconciler starts no new
agent pod (running pods go on), the Town turns Degraded with the reason, and a Warning Event is
posted. Restoring the objects clears the fault on the next check; the towns resume by themselves.

Modes (`GASTOWN_AGENT_IDENTITY`):

* `auto` (default): town identities if the policy is installed and intact at start-up, and from
  then on it is required; otherwise one identity per agent, for the life of the process.
* `town`: town identities, the policy required from the start (dispatch held until it is there).
* `agent`: one ServiceAccount, Role and RoleBinding per Agent, whose Role names that one Agent.
  Legitimate on clusters without the policy (Kubernetes < 1.30, or no cluster-admin to install
  it): RBAC keeps a pod to its own Agent, but without the policy nothing stops the pod from
  rewriting the operator-owned fields of its own Agent's status. Nothing is held in this mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from gastown.kube.client import ApiError, Kube
from gastown.kube.identity import POLICY_NAME, policy_weakness
from gastown.kube.store import Store
from gastown.reconcile.snapshot import Fault

log = logging.getLogger(__name__)

MODE_ENV = "GASTOWN_AGENT_IDENTITY"
INTERVAL_ENV = "GASTOWN_IDENTITY_CHECK_SECONDS"
DEFAULT_INTERVAL = 5.0

UNPROTECTED = "AgentIdentityUnprotected"
"""Reason of the Town fault (and Degraded condition) while the policy is missing or weakened."""

MODES = ("auto", "town", "agent")


@dataclass(frozen=True)
class IdentityMode:
    """Which identity new agent pods get, and whether the admission policy is required."""

    town_identity: bool
    policy_required: bool


def choose_mode(requested: str, weakness: str | None) -> IdentityMode:
    """The identity mode for a requested mode and the policy's state at start-up.

    `weakness` is `policy_weakness(...)` of what was read (None: installed and intact).
    """
    if requested not in MODES:
        raise ValueError(f"{MODE_ENV}={requested!r}: use one of {', '.join(MODES)}")
    if requested == "agent":
        return IdentityMode(town_identity=False, policy_required=False)
    if requested == "town" or weakness is None:
        return IdentityMode(town_identity=True, policy_required=True)
    return IdentityMode(town_identity=False, policy_required=False)


def unprotected_fault(weakness: str) -> Fault:
    """The Town fault that holds dispatch while the policy does not protect agent writes."""
    return Fault(
        UNPROTECTED,
        f"agent identity unprotected: {weakness} (admission policy {POLICY_NAME}, see "
        "docs/helm.md); agent pods would be able to write other agents' status",
    )


class IdentityGuard:
    """Reads the admission policy and binding periodically and publishes the result as a fault
    shared by every town of the store (`Store.identity_faults`)."""

    def __init__(self, kube: Kube, store: Store, mode: IdentityMode) -> None:
        self.kube = kube
        self.store = store
        self.mode = mode
        self.weakness: str | None = None

    async def read_weakness(self) -> str | None:
        """What is wrong with the installed policy and binding now, or None if they protect."""
        try:
            policy, binding = await self.kube.read_admission_policy(POLICY_NAME)
        except ApiError as err:
            return f"cannot read admission policy {POLICY_NAME}: {err}"
        return policy_weakness(policy, binding)

    async def check(self) -> None:
        """One check; publishes a change (and wakes every town) only when the state changed."""
        weakness = await self.read_weakness()
        if not self.mode.policy_required or weakness == self.weakness:
            self.weakness = weakness
            return
        self.weakness = weakness
        if weakness is None:
            log.info("admission policy %s is back: agent dispatch resumes", POLICY_NAME)
            self.store.set_identity_faults(())
        else:
            log.warning("agent dispatch held: %s", weakness)
            self.store.set_identity_faults((unprotected_fault(weakness),))

    async def run(self, interval: float) -> None:
        """Check every `interval` seconds until cancelled; a failed check is retried."""
        while True:
            try:
                await self.check()
            except Exception:  # the guard must outlive any one bad answer
                log.exception("checking admission policy %s failed", POLICY_NAME)
            await asyncio.sleep(interval)


async def start_guard(kube: Kube, store: Store) -> tuple[IdentityGuard, asyncio.Task[None]]:
    """Decide the mode from the environment and the policy, check once, then keep checking."""
    requested = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    probe = IdentityGuard(kube, store, IdentityMode(town_identity=False, policy_required=False))
    weakness = await probe.read_weakness() if requested != "agent" else None
    mode = choose_mode(requested, weakness)
    guard = IdentityGuard(kube, store, mode)
    await guard.check()
    interval = float(os.environ.get(INTERVAL_ENV, "") or DEFAULT_INTERVAL)
    task = asyncio.create_task(guard.run(interval))
    if mode.town_identity:
        log.info(
            "agent identity: one per town, scoped by admission policy %s (checked every %gs)",
            POLICY_NAME,
            interval,
        )
    else:
        log.warning(
            "agent identity: one per agent (%s); agent pods can rewrite operator-owned fields "
            "of their own Agent's status unless admission policy %s is installed",
            f"{MODE_ENV}=agent" if requested == "agent" else weakness,
            POLICY_NAME,
        )
    return guard, task
