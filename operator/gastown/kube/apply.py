"""Execute the reconciler's writes against the API server, safely.

Semantics (see `gastown.reconcile.writes`):
- state writes of each action run in order; a patch is sent only if its `expect` holds on the
  object we hold, and it carries that object's resourceVersion, so the API server refuses it
  (409) if anybody — a user, an agent, another pass — changed the object since: the write is
  skipped and the next pass recomputes from fresh state. A user's change is never overwritten;
- creates use deterministic names: "already exists" is success;
- every object the API server returns is put into the store at once, so the next pass sees our
  own writes even before the watch delivers them (no duplicate pods, agents, MRs or landings
  under watch lag);
- side effects run after all state writes, and only for actions whose state writes all held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gastown.kube import conditions, labels, metrics
from gastown.kube.client import ApiError, Conflict, Kube, NotFound
from gastown.kube.events import build_event, post_event
from gastown.kube.identity import (
    build_identity,
    build_town_identity,
    identity_name,
    owner_reference,
    town_identity_name,
)
from gastown.kube.pods import build_pod
from gastown.kube.store import Store, TownStore
from gastown.model import Agent, Town
from gastown.model.common import API_VERSION
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.writes import (
    CreateObject,
    DeleteObject,
    Emit,
    PatchSpec,
    PatchStatus,
    PollPR,
    StartPod,
    StopPod,
    Write,
    expect_holds,
)

log = logging.getLogger(__name__)

CONCURRENCY = 64
"""Dispatches applied at once; bounded so a burst does not flood the API server."""

PRPoller = Callable[[TownStore, PollPR], Awaitable[dict[str, Any] | None]]


class Lowerable(Protocol):
    """A semantic action of the reconciler."""

    def writes(self) -> tuple[Write, ...]:
        """The writes that carry the action out."""
        ...


@dataclass
class ApplyResult:
    """What one apply did."""

    writes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    side_effects_ok: int = 0
    side_effects_failed: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False


class Applier:
    """Applies the actions of one pass of one town."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        town: TownStore,
        pr_poller: PRPoller | None = None,
        *,
        town_identity: bool = True,
    ) -> None:
        self.kube = kube
        self.town_identity = town_identity
        self.store = store
        self.town = town
        self.ns = town.namespace
        self.pr_poller = pr_poller
        self.result = ApplyResult()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._emits: list[Emit] = []
        self._identity_requests: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def apply(self, actions: Sequence[Lowerable]) -> ApplyResult:
        """Apply every action: its state writes in order, then (if they all held) its effects.

        Actions run in plan order, except that a run of consecutive dispatches — which by
        construction touch disjoint agents, beads and pods — runs concurrently (bounded), so
        hundreds of beads becoming ready at once do not queue behind each other's API calls.
        The first conflict ends the pass (see below). Events of applied actions are posted
        last; they never fail a pass.
        """
        self._emits = []
        for batch, concurrent in _batches(actions):
            if concurrent:
                await asyncio.gather(*(self._bounded(action) for action in batch))
            else:
                for action in batch:
                    await self._run(action)
                    if self.result.conflicts:
                        break
            if self.result.conflicts:
                # The plan was made on a state that has changed since. Later actions may record
                # the effects of earlier ones (e.g. "reports applied" after the bead moved), so
                # none of them may land: stop here; the next pass recomputes from fresh state.
                self.result.stopped_early = True
                break
        await asyncio.gather(*(self._bounded_emit(emit) for emit in self._emits))
        return self.result

    async def _bounded_emit(self, emit: Emit) -> None:
        async with self._limit:
            await self._emit(emit)

    async def _bounded(self, action: Lowerable) -> None:
        async with self._limit:
            await self._run(action)

    async def _run(self, action: Lowerable) -> None:
        effects: list[StartPod | StopPod | PollPR] = []
        emits: list[Emit] = []
        held = True
        for write in action.writes():
            if isinstance(write, Emit):
                emits.append(write)
            elif isinstance(write, StartPod | StopPod | PollPR):
                effects.append(write)
            elif held:
                held = await self._state_write(write)
        if not held:
            self.result.conflicts += 1
            metrics.CONFLICTS.labels(self.town.name).inc()
            return
        self._emits.extend(emits)  # only what really happened is announced
        for effect in effects:
            await self._side_effect(effect)

    # -- state writes ----------------------------------------------------------------------

    async def _state_write(
        self, write: CreateObject | PatchStatus | PatchSpec | DeleteObject
    ) -> bool:
        try:
            if isinstance(write, CreateObject):
                await self._create(write)
            elif isinstance(write, PatchStatus | PatchSpec):
                return await self._patch(write)
            else:
                await self._delete(write)
        except Conflict:
            return False
        except ApiError as err:
            metrics.API_ERRORS.labels(str(err.status)).inc()
            self.result.errors.append(f"{type(write).__name__} {write.kind} {write.name}: {err}")
            log.warning(
                "write failed: %s %s %s: %s", type(write).__name__, write.kind, write.name, err
            )
            return False
        return True

    def _count(self, kind: str) -> None:
        self.result.writes[kind] += 1
        metrics.API_WRITES.labels(self.town.name, kind).inc()

    async def _create(self, write: CreateObject) -> None:
        metadata: dict[str, Any] = {
            "name": write.name,
            "labels": {**labels.common(self.town.name), **dict(write.labels)},
        }
        if write.owner is not None:
            owner_kind, owner_name = write.owner
            uid = self.town.uids.get((str(owner_kind), owner_name))
            if uid:
                metadata["ownerReferences"] = [owner_reference(str(owner_kind), owner_name, uid)]
        body = {
            "apiVersion": API_VERSION,
            "kind": str(write.kind),
            "metadata": metadata,
            "spec": dict(write.spec),
        }
        try:
            created = await self.kube.create(str(write.kind), self.ns, body)
            self._count(str(write.kind))
        except Conflict:
            # Deterministic name: it already exists (a retry, or a pass before a restart).
            created = await self.kube.get(str(write.kind), self.ns, write.name)
        self.store.observe(str(write.kind), created)
        if write.status:
            rv = created["metadata"]["resourceVersion"]
            status_patch = dict(write.status)
            derived = conditions.derive(
                str(write.kind),
                dict(write.spec),
                status_patch,
                [],
                created["metadata"].get("generation"),
                datetime.now(UTC),
            )
            if derived is not None:
                status_patch["conditions"] = derived
            patched = await self.kube.patch(
                str(write.kind),
                self.ns,
                write.name,
                {"metadata": {"resourceVersion": rv}, "status": status_patch},
                status=True,
            )
            self._count(str(write.kind))
            self.store.observe(str(write.kind), patched)

    async def _patch(self, write: PatchStatus | PatchSpec) -> bool:
        kind = str(write.kind)
        held = self.town.get(kind, write.name)
        if held is None:
            return False
        part = held.status if isinstance(write, PatchStatus) else held.spec
        if not expect_holds(part, write.expect):
            return False
        section = "status" if isinstance(write, PatchStatus) else "spec"
        patch = {
            "metadata": {"resourceVersion": held.metadata.resource_version},
            section: dict(write.patch),
        }
        self._add_conditions(kind, held, patch)
        try:
            result = await self.kube.patch(
                kind, self.ns, write.name, patch, status=isinstance(write, PatchStatus)
            )
        except NotFound:
            return False
        self._count(kind)
        self.store.observe(kind, result)
        return True

    def _add_conditions(self, kind: str, held: Any, patch: dict[str, Any]) -> None:
        """Put derived conditions into the same status patch when the new state changes them.

        A spec patch cannot carry status: conditions for it wait for the next status patch.
        """
        if "status" not in patch:
            return
        derived = conditions.after_patch(kind, held, {}, patch["status"], datetime.now(UTC))
        if derived is not None:
            patch["status"]["conditions"] = derived

    async def _delete(self, write: DeleteObject) -> None:
        try:
            await self.kube.delete(str(write.kind), self.ns, write.name)
            self._count(str(write.kind))
        except NotFound:
            pass
        self.store.forget(self.town, str(write.kind), write.name)

    # -- side effects ----------------------------------------------------------------------

    async def _side_effect(self, effect: StartPod | StopPod | PollPR) -> None:
        try:
            if isinstance(effect, StartPod):
                await self._start_pod(effect)
            elif isinstance(effect, StopPod):
                await self._stop_pod(effect)
            else:
                await self._poll_pr(effect)
        except ApiError as err:
            metrics.API_ERRORS.labels(str(err.status)).inc()
            self.result.side_effects_failed += 1
            metrics.SIDE_EFFECTS.labels(self.town.name, "failed").inc()
            self.result.errors.append(f"{type(effect).__name__}: {err}")
            log.warning("side effect failed: %s: %s", type(effect).__name__, err)
            return
        self.result.side_effects_ok += 1
        metrics.SIDE_EFFECTS.labels(self.town.name, "ok").inc()

    async def _start_pod(self, effect: StartPod) -> None:
        town = self.town.town
        agent = self.town.objects["Agent"].get(effect.agent)
        assert agent is None or isinstance(agent, Agent)
        uid = self.town.uids.get(("Agent", effect.agent))
        if town is None or agent is None or not uid:
            raise NotFound(404, f"agent {effect.agent} is not known yet")
        started = time.monotonic()
        account, identity = self._identity(town, agent, uid)
        # The ServiceAccount must exist before the Pod (admission checks it). The Role must
        # exist before its RoleBinding: without `bind`, the API server lets us bind only a Role
        # that exists and whose rules we hold. The binding goes in parallel with the Pod (the
        # agent needs it only for its first API call). Each is created once (`identities`).
        for kind, body in identity[:2]:
            await self._create_core(kind, body)
        pod = build_pod(town, agent, uid, effect.generation, effect.bead, account)
        results = await asyncio.gather(
            self._create_pod(pod),
            *(self._create_core(kind, body) for kind, body in identity[2:]),
        )
        created = results[0]
        if created is None:
            return  # this generation's pod exists already: never a second one
        self.store.observe("Pod", created)
        metrics.DISPATCH_LATENCY.labels(self.town.name).observe(time.monotonic() - started)

    def _identity(
        self, town: Town, agent: Agent, agent_uid: str
    ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """The ServiceAccount an agent's pod runs as, and the identity objects it needs."""
        if town.spec.agent.service_account_name:
            return town.spec.agent.service_account_name, []  # the user's own, not ours to make
        town_uid = self.town.uids.get(("Town", town.name))
        if self.town_identity and town_uid:
            return town_identity_name(town.name), build_town_identity(town, town_uid, self.ns)
        return identity_name(agent.name), build_identity(town, agent, agent_uid, self.ns)

    async def _create_core(self, kind: str, body: dict[str, Any]) -> None:
        """Create an identity object once: concurrent dispatches of a burst share one request."""
        key = (kind, body["metadata"]["name"])
        if key in self.town.identities:
            return
        pending = self._identity_requests.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._create_identity_object(kind, body, key))
            self._identity_requests[key] = pending
        await pending

    async def _create_identity_object(
        self, kind: str, body: dict[str, Any], key: tuple[str, str]
    ) -> None:
        try:
            try:
                await self.kube.create_core(kind, self.ns, body)
                self._count(kind)
            except Conflict:
                pass  # made by an earlier pass or a previous run of the operator
            self.town.identities.add(key)
        finally:
            # A failure is not remembered: the next dispatch (or pass) tries again.
            self._identity_requests.pop(key, None)

    async def _create_pod(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        try:
            created = await self.kube.create_pod(self.ns, pod)
        except Conflict:
            return None
        self._count("Pod")
        return created

    async def _stop_pod(self, effect: StopPod) -> None:
        grace = self.town.town.spec.agent.termination_grace_seconds if self.town.town else 30
        try:
            await self.kube.delete_pod(self.ns, effect.pod, grace)
            self._count("Pod")
        except NotFound:
            return

    async def _poll_pr(self, effect: PollPR) -> None:
        if self.pr_poller is None:
            return
        patch = await self.pr_poller(self.town, effect)
        if patch is None:
            return
        held = self.town.get("Bead", effect.bead)
        if held is None:
            return
        result = await self.kube.patch(
            "Bead",
            self.ns,
            effect.bead,
            {"metadata": {"resourceVersion": held.metadata.resource_version}, "status": patch},
            status=True,
        )
        self._count("Bead")
        self.store.observe("Bead", result)

    async def _emit(self, emit: Emit) -> None:
        uid = self.town.uids.get((str(emit.kind), emit.name), "")
        event = build_event(
            self.ns, str(emit.kind), emit.name, uid, emit.type, emit.reason, emit.message
        )
        if await post_event(self.kube, event):
            self.result.events += 1
            self._count("Event")


def _batches(actions: Sequence[Lowerable]) -> list[tuple[list[Lowerable], bool]]:
    """Split the plan into sequential actions and runs of concurrent dispatches."""
    batches: list[tuple[list[Lowerable], bool]] = []
    for action in actions:
        concurrent = isinstance(action, DispatchAgent)
        if batches and batches[-1][1] and concurrent:
            batches[-1][0].append(action)
        else:
            batches.append(([action], concurrent))
    return batches
