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
import contextvars
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gastown.agent.redaction import Redactor
from gastown.kube import conditions, labels, metrics
from gastown.kube.client import ApiError, Conflict, Kube, NotFound, NotLeading
from gastown.kube.events import build_event, record_event
from gastown.kube.identity import (
    build_identity,
    build_town_identity,
    identity_name,
    owner_reference,
    town_identity_name,
    town_role_rules,
)
from gastown.kube.pods import build_pod
from gastown.kube.redaction import NO_SECRETS, TownSecrets
from gastown.kube.store import Store, TownStore
from gastown.model import Agent, Bead, BeadPhase, BeadType, Town
from gastown.model.common import API_VERSION
from gastown.reconcile.actions import DispatchAgent, RecordBeadSpend, TransitionBead, UpdateAgent
from gastown.reconcile.writes import (
    CreateObject,
    DeleteObject,
    Emit,
    Kind,
    PatchSpec,
    PatchStatus,
    PollPR,
    StartPod,
    StopPod,
    VerifyClaim,
    Write,
    expect_holds,
    iso,
)

log = logging.getLogger(__name__)

CONCURRENCY = 64
"""Dispatches applied at once; bounded so a burst does not flood the API server."""

CAUSE: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "gastown_write_cause", default=("Other", "")
)
"""The action (type, reason) whose writes are being made: each write is counted under it."""

PRPoller = Callable[[TownStore, PollPR], Awaitable[dict[str, Any] | None]]


class ClaimRequester(Protocol):
    """Starts the check of an agent's claim (see `gastown.kube.verify.ClaimVerifier`)."""

    def request(self, town: TownStore, effect: VerifyClaim) -> None:
        """Start checking (never blocks); the verdict lands in `town.verdicts`."""
        ...


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
        verifier: ClaimRequester | None = None,
        secrets: TownSecrets | None = None,
    ) -> None:
        self.kube = kube
        self.verifier = verifier
        self.secrets = secrets
        self._redactor: Redactor | None = None
        self.town_identity = town_identity
        self.store = store
        self.town = town
        self.ns = town.namespace
        self.pr_poller = pr_poller
        self.result = ApplyResult()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._emits: list[Emit] = []
        self._identity_requests: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._batch_agents: set[str] = set()
        """The Agents of the dispatch batch being applied (named in the town's Role together)."""

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
                await self._dispatch_all([a for a in batch if isinstance(a, DispatchAgent)])
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
        # Events about different objects go out concurrently; those about one object in order,
        # so a repeat within the pass is folded into the Event its first one created.
        by_object: dict[tuple[Kind, str], list[Emit]] = {}
        for emit in self._emits:
            by_object.setdefault((emit.kind, emit.name), []).append(emit)
        await asyncio.gather(*(self._bounded_emits(emits) for emits in by_object.values()))
        return self.result

    async def _bounded_emits(self, emits: list[Emit]) -> None:
        async with self._limit:
            for emit in emits:
                await self._emit(emit)

    async def _dispatch_all(self, dispatches: Sequence[DispatchAgent]) -> None:
        """Run dispatches concurrently (bounded), pods first: every claim and its pod, then
        every record (see `DispatchAgent.after_pod`).

        In a burst the API server is the bottleneck; creating all pods before any record
        means the median pod waits for half of the claims and pods, not half of all writes.
        """
        # The town's agent Role names every Agent by name: name the whole batch at once (one
        # Role write per burst, not one per pod that happens to find itself missing).
        self._batch_agents = {d.agent for d in dispatches}
        started = await asyncio.gather(
            *(self._bounded(self._claim_and_start, d) for d in dispatches)
        )
        await asyncio.gather(
            *(
                self._bounded(self._record, d)
                for d, ok in zip(dispatches, started, strict=True)
                if ok
            )
        )

    async def _bounded(
        self, step: Callable[[DispatchAgent], Awaitable[bool]], action: DispatchAgent
    ) -> bool:
        async with self._limit:
            cause = CAUSE.set(_cause(action))
            try:
                return await step(action)
            finally:
                CAUSE.reset(cause)

    async def _claim_and_start(self, action: DispatchAgent) -> bool:
        """The dispatch's claim (Agent hook and generation), then its pod if the claim held."""
        held, _, _ = await self._hold(action.before_pod())
        if held:
            await self._side_effect(action.start_pod())
        return held

    async def _record(self, action: DispatchAgent) -> bool:
        """The dispatch's records (Agent status, Bead), and its Event if they all held."""
        held, _, emits = await self._hold(action.after_pod())
        self._emits.extend(emits)
        return held

    async def _run(self, action: Lowerable) -> None:
        if isinstance(action, DispatchAgent):
            await self._dispatch_all([action])
            return
        cause = CAUSE.set(_cause(action))
        try:
            await self._run_action(action)
        finally:
            CAUSE.reset(cause)

    async def _run_action(self, action: Lowerable) -> None:
        held, effects, emits = await self._hold(action.writes())
        if not held:
            return
        self._emits.extend(emits)  # only what really happened is announced
        if isinstance(action, RecordBeadSpend):
            count_spend(self.town.name, action)
        count_outcome(self.town, action)
        for effect in effects:
            await self._side_effect(effect)

    async def _hold(
        self, writes: Sequence[Write]
    ) -> tuple[bool, list[StartPod | StopPod | PollPR | VerifyClaim], list[Emit]]:
        """Write the state writes in order, setting side effects and Events aside for the caller.

        The first write that does not hold ends it (a conflict of the action, counted here);
        then nothing is returned to run or announce.
        """
        effects: list[StartPod | StopPod | PollPR | VerifyClaim] = []
        emits: list[Emit] = []
        for write in writes:
            if isinstance(write, Emit):
                emits.append(write)
            elif isinstance(write, StartPod | StopPod | PollPR | VerifyClaim):
                effects.append(write)
            elif not await self._state_write(write):
                self.result.conflicts += 1
                metrics.CONFLICTS.labels(self.town.name).inc()
                return False, [], []
        return True, effects, emits

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
        except NotLeading:
            raise  # not a failed write: this replica stopped writing (the pass ends here)
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
        if kind != "Event":
            action, reason = CAUSE.get()
            metrics.WRITE_CAUSES.labels(self.town.name, kind, action, reason).inc()

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
        body = await self._redacted(
            {
                "apiVersion": API_VERSION,
                "kind": str(write.kind),
                "metadata": metadata,
                "spec": dict(write.spec),
            }
        )
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
                {"metadata": {"resourceVersion": rv}, "status": await self._redacted(status_patch)},
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
        patch = await self._redacted(patch)
        try:
            result = await self.kube.patch(
                kind, self.ns, write.name, patch, status=isinstance(write, PatchStatus)
            )
        except NotFound:
            # Gone, though the store still holds it: its DELETED event was lost (a watch that
            # resumed by relisting reports what exists, never what vanished meanwhile). Drop
            # it, or every pass would plan on it again.
            self.store.forget(self.town, kind, write.name)
            return False
        except Conflict:
            await self._refresh(kind, write.name)
            raise
        self._count(kind)
        self.store.observe(kind, result)
        return True

    async def _refresh(self, kind: str, name: str) -> None:
        """Re-read an object whose write conflicted, so the next pass plans on its current state.

        Normally the watch brings the newer version within milliseconds; but a watch that is
        reconnecting (after an API server restart, kopf backs off for up to a minute) would
        leave the store stale and every pass conflicting on the same object. One GET per
        conflict ends that; the store keeps whichever version is newer.
        """
        try:
            self.store.observe(kind, await self.kube.get(kind, self.ns, name))
        except NotFound:
            self.store.forget(self.town, kind, name)
        except ApiError:
            pass  # the next pass tries again

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

    async def _side_effect(self, effect: StartPod | StopPod | PollPR | VerifyClaim) -> None:
        try:
            if isinstance(effect, VerifyClaim):
                if self.verifier is not None:
                    self.verifier.request(self.town, effect)  # runs in the background
            elif isinstance(effect, StartPod):
                await self._start_pod(effect)
            elif isinstance(effect, StopPod):
                await self._stop_pod(effect)
            else:
                await self._poll_pr(effect)
        except NotLeading:
            raise
        except ApiError as err:
            metrics.API_ERRORS.labels(str(err.status)).inc()
            self.result.side_effects_failed += 1
            metrics.SIDE_EFFECTS.labels(self.town.name, "failed").inc()
            self.result.errors.append(f"{type(effect).__name__}: {err}")
            log.warning("side effect failed: %s: %s", type(effect).__name__, err)
            if isinstance(effect, StartPod) and refused(err):
                await self._pod_refused(effect, err)
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
        if identity and account == town_identity_name(town.name):
            await self._allow_in_town_role(town.name, agent.name)
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

    async def _pod_refused(self, effect: StartPod, err: ApiError) -> None:
        """Record that the API server refused this generation's pod, and say so at once.

        The pod will never exist, so waiting for it would hold the worker slot until the
        startup grace runs out, with nothing on the bead. The refusal becomes a durable fact
        on the Agent's status (`podRejection`, naming the generation); the reconciler reads it
        on its next pass as "session ended: PodRejected" and applies its usual rules (release
        the agent, retry the bead with backoff or fail it after the last attempt).
        """
        message = (err.message or f"HTTP {err.status}")[:1024]
        rejection = {
            "generation": effect.generation,
            "message": message,
            "at": iso(datetime.now(UTC)),
        }
        try:
            # A plain merge patch of one operator-owned field: the fact names its generation,
            # so a late or repeated write can never affect another dispatch.
            patched = await self.kube.patch(
                "Agent", self.ns, effect.agent, {"status": {"podRejection": rejection}}, status=True
            )
        except ApiError as patch_err:
            log.warning("cannot record the refused pod of %s: %s", effect.agent, patch_err)
        else:
            self._count("Agent")
            self.store.observe("Agent", patched)
        text = f"the API server refused the pod of {effect.agent} generation {effect.generation}"
        for kind, name in ((Kind.AGENT, effect.agent), (Kind.BEAD, effect.bead)):
            if name:
                self._emits.append(
                    Emit(
                        kind=kind,
                        name=name,
                        type="Warning",
                        reason="PodRejected",
                        message=f"{text}: {message}",
                    )
                )

    def _identity(
        self, town: Town, agent: Agent, agent_uid: str
    ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """The ServiceAccount an agent's pod runs as, and the identity objects it needs."""
        if town.spec.agent.service_account_name:
            return town.spec.agent.service_account_name, []  # the user's own, not ours to make
        town_uid = self.town.uids.get(("Town", town.name))
        if self.town_identity and town_uid:
            agents = sorted({*self.town.objects["Agent"], *self._batch_agents, agent.name})
            return town_identity_name(town.name), build_town_identity(
                town, town_uid, self.ns, agents
            )
        return identity_name(agent.name), build_identity(town, agent, agent_uid, self.ns)

    async def _allow_in_town_role(self, town: str, agent: str) -> None:
        """Make sure the town's agent Role names `agent` before its pod starts.

        The Role lists the town's Agents by name (RBAC `resourceNames`), so a pod cannot read
        or write the Agents of another town in the namespace. A new Agent costs one Role patch
        (not every dispatch): the patch names every Agent the store holds and every Agent of
        the dispatch batch, so a burst costs one write (the Role's creation names the batch).
        Patches are serialised per town, so a slower patch never drops a name a later one
        added.
        """
        if agent in self.town.role_agents:
            return
        async with self.town.role_lock:
            if agent in self.town.role_agents:
                return
            names = sorted({*self.town.objects["Agent"], *self._batch_agents, agent})
            patch = {"rules": town_role_rules(town, names)}
            await self.kube.patch_core("Role", self.ns, town_identity_name(town), patch)
            self._count("Role")
            self.town.role_agents = set(names)

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
                if kind == "Role":
                    self.town.role_agents = set(_role_names(body))
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
        if self.pr_poller is None or self.town.faults:
            return  # a faulty town (e.g. an insecure apiUrl, a token not opted in) sends no token
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
        # Redacted before build_event cuts the message to its limit (never half a secret).
        message = (await self._redactor_of_town()).redact(emit.message)
        correlator = self.town.events
        event = build_event(
            self.ns,
            str(emit.kind),
            emit.name,
            uid,
            emit.type,
            emit.reason,
            message,
            correlator.now(),
        )
        # A repeat of an Event already posted raises its count instead (see `kube.events`).
        if await record_event(self.kube, correlator, event, self.town.name):
            self.result.events += 1
            self._count("Event")

    # -- redaction -------------------------------------------------------------------------

    async def _redactor_of_town(self) -> Redactor:
        """The town's redactor, asked for once per pass and only when the pass writes."""
        if self._redactor is None:
            if self.secrets is None:
                self._redactor = NO_SECRETS
            else:
                self._redactor = await self.secrets.redactor(self.town.town)
        return self._redactor

    async def _redacted(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with every value of the town's Secrets replaced (see `gastown.kube.redaction`).

        An agent may write a secret into its reports; whatever the operator copies from them
        into a Bead, a spec or a condition must not carry it further.
        """
        redacted: dict[str, Any] = (await self._redactor_of_town()).redact_json(body)
        return redacted


def _cause(action: Lowerable) -> tuple[str, str]:
    """What a write is counted under: the action's type and reason."""
    return type(action).__name__, str(getattr(action, "reason", ""))


def refused(err: ApiError) -> bool:
    """True if the API server refused a request for good (its content or policy), not because
    of contention, rate limits or a missing object of ours (those are retried as they are)."""
    return 400 <= err.status < 500 and err.status not in (404, 409, 429)


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


def _role_names(role: dict[str, Any]) -> list[str]:
    """The Agent names a town's agent Role grants (its rules on agents)."""
    return [
        name
        for rule in role.get("rules", [])
        if any(r.startswith("agents") for r in rule.get("resources", []))
        for name in rule.get("resourceNames", [])
    ]


GUPP_TIER_OF_REASON = {
    "GuppWarn": "warn",
    "GuppEscalate": "escalate",
    "GuppForceStop": "force-stop",
}


def count_outcome(town: TownStore, action: Lowerable) -> None:
    """Counters of what an applied action did: GUPP tiers fired, merge requests merged."""
    if isinstance(action, UpdateAgent):
        tier = GUPP_TIER_OF_REASON.get(action.reason)
        if tier is not None:
            metrics.GUPP_TIERS.labels(town.name, tier).inc()
    elif isinstance(action, TransitionBead) and action.to_phase is BeadPhase.CLOSED:
        record = town.finished.records.get(action.bead)  # closed: held in the summary now
        if record is not None:
            if record.type is BeadType.MERGE_REQUEST:
                metrics.MERGES.labels(town.name).inc()
            return
        bead = town.objects["Bead"].get(action.bead)  # the write's result not seen yet
        if isinstance(bead, Bead) and bead.spec.type is BeadType.MERGE_REQUEST:
            metrics.MERGES.labels(town.name).inc()


def count_spend(town: str, action: RecordBeadSpend) -> None:
    """Spend counters, from the bead write that counted it (applied, so exactly once too)."""
    for rig, role, model, _agent, tokens, cost in action.delta:
        labels = (town, rig, role, model or "unknown")
        if tokens > 0:
            metrics.TOKENS.labels(*labels).inc(tokens)
        if cost > 0:
            metrics.COST.labels(*labels).inc(cost)
