"""Semantic actions the reconciler decides, and their lowering to writes.

Each action is an immutable record of one decision, carrying everything needed to write it:
the new values (absolute, never increments, so writing the same action twice is harmless), the
preconditions it assumes (`expect`, compared and set by the adapter), and deterministic names for
anything it creates. `writes()` lowers the action to the small vocabulary of `writes.py`; state
writes come first and side effects (pods, PR polls) last, so a side effect never runs ahead of
the state it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gastown.model import AgentPhase, BeadPhase, BeadType, ConvoyPhase
from gastown.reconcile import names
from gastown.reconcile.writes import (
    Claim,
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
    iso,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "gastown"}
NORMAL = "Normal"
WARNING = "Warning"
label_value = names.label_value
"""A valid label value (at most 63 characters) derived from a name (see `names.label_value`)."""


def labels_for(town: str, **extra: str) -> dict[str, str]:
    """Standard labels of an object the operator creates."""
    result = {**MANAGED_BY, "gastown.dev/town": label_value(town)}
    result.update({f"gastown.dev/{k}": label_value(v) for k, v in extra.items()})
    return result


@dataclass(frozen=True, kw_only=True)
class Action:
    """Base of every action: a CamelCase reason and a human message."""

    reason: str
    message: str = ""

    def writes(self) -> tuple[Write, ...]:
        """Lower the action to writes, state first and side effects last."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for humans (shadow-mode plans, logs)."""
        return f"{type(self).__name__}({self.subject}): {self.reason}"

    @property
    def records_reports(self) -> bool:
        """True if the action records an agent's reports as applied (a fact, exactly once)."""
        return False

    @property
    def subject(self) -> str:
        """Name of the main object the action is about."""
        raise NotImplementedError


# --- agents ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DispatchAgent(Action):
    """Hook an agent to a bead and start a new pod generation for it.

    Reuses an existing agent (compare-and-set on its previous generation and hook) or creates a
    new one (deterministic name). The bead moves to in_progress with its attempt counter bumped,
    compare-and-set on its previous phase, assignee and attempts, so two racing dispatches of the
    same bead cannot both count.
    """

    town: str
    agent: str
    role: str
    rig: str
    create: bool
    generation: int
    old_hook: str | None
    old_phase: AgentPhase
    bead: str
    bead_phase: BeadPhase
    bead_assignee: str | None
    attempts: int
    review: bool
    now: datetime
    applied_seq: int | None = None
    """Set when the dispatch replaces this pass's release of the agent (`beads.dispatch`): the
    agent's status patch also records its reports up to this seq as applied."""
    applied_seq_before: int = 0

    @property
    def subject(self) -> str:
        return self.bead

    @property
    def records_reports(self) -> bool:
        return self.applied_seq is not None

    @property
    def pod(self) -> str:
        """Name of the pod this dispatch starts."""
        return names.pod_name(self.agent, self.generation)

    def _agent_status(self) -> dict[str, Any]:
        return {
            "phase": AgentPhase.WORKING.value,
            "phaseSince": iso(self.now),
            "pod": self.pod,
            "dispatchedAt": iso(self.now),
            "lastHook": self.bead,
            # The GUPP tiers and the watermark belong to a generation: a new generation starts
            # with a clean ladder (the runtime's activity carries its generation too).
            "gupp": {
                "generation": self.generation,
                "warnedAt": None,
                "escalatedAt": None,
                "forceStoppedAt": None,
            },
        }

    def _agent_claim(self) -> Write:
        """The Agent's hook and generation: the one record a pod needs before it exists (its
        runtime checks them; a restart finds the claim and repairs it if nothing followed)."""
        if self.create:
            return CreateObject(
                kind=Kind.AGENT,
                name=self.agent,
                spec={
                    "town": self.town,
                    "role": self.role,
                    "rig": self.rig,
                    "hook": self.bead,
                    "generation": self.generation,
                },
                status=None,  # written after the pod, with the dispatch records
                labels=labels_for(self.town, role=self.role, rig=self.rig),
                owner=(Kind.TOWN, self.town),
            )
        return PatchSpec(
            kind=Kind.AGENT,
            name=self.agent,
            patch={"hook": self.bead, "generation": self.generation, "nudges": []},
            expect={"generation": self.generation - 1, "hook": self.old_hook},
        )

    def _agent_record(self) -> PatchStatus:
        """The Agent's status for the new session (names its pod: the agent token may write
        the status only from that pod)."""
        if self.create:
            # A new Agent has no status yet: nothing to compare; its resourceVersion (the one
            # its create returned) is the precondition.
            status = self._agent_status()
            status["gupp"] = {"generation": self.generation}
            return PatchStatus(kind=Kind.AGENT, name=self.agent, patch=status, expect={})
        return PatchStatus(
            kind=Kind.AGENT,
            name=self.agent,
            patch=self._agent_status() | self._applied(),
            expect={"phase": self.old_phase.value} | self._applied(before=True),
        )

    def _applied(self, *, before: bool = False) -> dict[str, Any]:
        if self.applied_seq is None:
            return {}
        return {"appliedReportSeq": self.applied_seq_before if before else self.applied_seq}

    def _bead_write(self) -> PatchStatus:
        patch: dict[str, Any] = {
            "phase": BeadPhase.IN_PROGRESS.value,
            "assignee": self.agent,
            "attempts": self.attempts + 1,
            "lastAttemptAt": iso(self.now),
            "reason": self.reason,
            "message": None,
        }
        if self.bead_phase is not BeadPhase.IN_PROGRESS:
            patch["phaseSince"] = iso(self.now)
        if self.review:
            patch["review"] = {"refinery": self.agent, "startedAt": iso(self.now)}
        return PatchStatus(
            kind=Kind.BEAD,
            name=self.bead,
            patch=patch,
            expect={
                "phase": self.bead_phase.value,
                "assignee": self.bead_assignee,
                "attempts": self.attempts,
            },
        )

    def writes(self) -> tuple[Write, ...]:
        """Claim, pod, records: the pod goes right after the claim (see `after_pod`)."""
        return (*self.before_pod(), self.start_pod(), *self.after_pod())

    def before_pod(self) -> tuple[Write, ...]:
        """The state the pod needs before it exists: the Agent's hook and generation."""
        return (self._agent_claim(),)

    def start_pod(self) -> StartPod:
        """The side effect: this generation's pod."""
        return StartPod(
            agent=self.agent, generation=self.generation, bead=self.bead, role=self.role
        )

    def after_pod(self) -> tuple[Write, ...]:
        """The records of the dispatch, written right after the pod is created.

        The Agent status (phase, pod, dispatch time) and the Bead (in_progress, assignee,
        attempt) follow the pod rather than precede it, so that a burst of dispatches creates
        its pods at the API server's pace instead of one per four writes. The pod's runtime
        waits until the Agent status names it; a crash between the pod and these records
        leaves an agent hooked to a bead that is not assigned to it, which the next pass
        repairs (unhook, stop the pod; the bead is dispatched again, no attempt spent).
        """
        return (
            self._agent_record(),
            self._bead_write(),
            Emit(
                kind=Kind.BEAD,
                name=self.bead,
                type=NORMAL,
                reason=self.reason,
                message=f"{self.role} {self.agent} dispatched (attempt {self.attempts + 1}, "
                f"pod {self.pod})",
            ),
        )


@dataclass(frozen=True, kw_only=True)
class UpdateAgent(Action):
    """Change an agent's phase and optionally unhook it and stop its pod.

    Unhooking is compare-and-set on the generation and hook the decision was made for, so a
    decision about an old session can never release a newer one.
    """

    agent: str
    generation: int
    hook: str | None
    from_phase: AgentPhase
    to_phase: AgentPhase
    unhook: bool = False
    stop_pod: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    now: datetime
    event: str | None = None
    applied_seq: int | None = None
    """If set, the same status patch records the agent's reports up to this seq as applied
    (see `ops.mark_applied`), compare-and-set on `applied_seq_before`."""
    applied_seq_before: int = 0

    @property
    def subject(self) -> str:
        return self.agent

    @property
    def records_reports(self) -> bool:
        return self.applied_seq is not None

    def writes(self) -> tuple[Write, ...]:
        result: list[Write] = []
        if self.unhook:
            result.append(
                PatchSpec(
                    kind=Kind.AGENT,
                    name=self.agent,
                    patch={"hook": None},
                    expect={"generation": self.generation, "hook": self.hook},
                )
            )
        patch: dict[str, Any] = dict(self.extra)
        expect: dict[str, Any] = {"phase": self.from_phase.value}
        if self.to_phase is not self.from_phase:
            patch["phase"] = self.to_phase.value
            patch["phaseSince"] = iso(self.now)
        if self.applied_seq is not None:
            patch["appliedReportSeq"] = self.applied_seq
            expect["appliedReportSeq"] = self.applied_seq_before
        if patch:
            result.append(PatchStatus(kind=Kind.AGENT, name=self.agent, patch=patch, expect=expect))
        if self.event is not None:
            result.append(
                Emit(
                    kind=Kind.AGENT,
                    name=self.agent,
                    type=self.event,
                    reason=self.reason,
                    message=self.message or self.reason,
                )
            )
        if self.stop_pod is not None:
            result.append(StopPod(pod=self.stop_pod, reason=self.reason))
        return tuple(result)


@dataclass(frozen=True, kw_only=True)
class MarkReportsApplied(Action):
    """Record that an agent's reports up to `seq` have been applied (exactly-once guard)."""

    agent: str
    seq: int
    old_seq: int

    @property
    def subject(self) -> str:
        return self.agent

    @property
    def records_reports(self) -> bool:
        return True

    def writes(self) -> tuple[Write, ...]:
        return (
            PatchStatus(
                kind=Kind.AGENT,
                name=self.agent,
                patch={"appliedReportSeq": self.seq},
                expect={"appliedReportSeq": self.old_seq},
            ),
        )


@dataclass(frozen=True, kw_only=True)
class PostNudge(Action):
    """Ask the agent's runtime to deliver a message into the coding agent's session."""

    agent: str
    generation: int
    nudges: tuple[Mapping[str, Any], ...]

    @property
    def subject(self) -> str:
        return self.agent

    def writes(self) -> tuple[Write, ...]:
        return (
            PatchSpec(
                kind=Kind.AGENT,
                name=self.agent,
                patch={"nudges": [dict(n) for n in self.nudges]},
                expect={"generation": self.generation},
            ),
            Emit(
                kind=Kind.AGENT,
                name=self.agent,
                type=WARNING,
                reason=self.reason,
                message=self.message,
            ),
        )


@dataclass(frozen=True, kw_only=True)
class StopAgentPod(Action):
    """Stop (delete) a pod that no longer belongs to a current session."""

    pod: str

    @property
    def subject(self) -> str:
        return self.pod

    def writes(self) -> tuple[Write, ...]:
        return (StopPod(pod=self.pod, reason=self.reason),)


@dataclass(frozen=True, kw_only=True)
class DeleteAgent(Action):
    """Remove an agent nobody needs. Beads are never touched (finished work stays finished)."""

    town: str
    agent: str
    pods: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return self.agent

    def writes(self) -> tuple[Write, ...]:
        return (
            DeleteObject(kind=Kind.AGENT, name=self.agent),
            Emit(
                kind=Kind.TOWN,
                name=self.town,
                type=NORMAL,
                reason=self.reason,
                message=f"agent {self.agent} removed: {self.message or self.reason}",
            ),
            *(StopPod(pod=p, reason=self.reason) for p in self.pods),
        )


@dataclass(frozen=True, kw_only=True)
class DeleteFinished(Action):
    """Delete a finished convoy or bead past the retention TTL (see `retention`); what it owns
    follows by garbage collection. No Event: a town may expire many objects at once."""

    kind: Kind
    name: str

    @property
    def subject(self) -> str:
        return self.name

    def writes(self) -> tuple[Write, ...]:
        return (DeleteObject(kind=self.kind, name=self.name),)


# --- beads -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TransitionBead(Action):
    """Move a bead from one phase to another (compare-and-set on the expected phase)."""

    bead: str
    from_phase: BeadPhase
    to_phase: BeadPhase
    now: datetime
    set: Mapping[str, Any] = field(default_factory=dict)
    expect: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = NORMAL
    """The Event's type; None when another Event of the same pass already tells this step (a
    merge request's close is told on its source: "merged by <mr>")."""

    @property
    def subject(self) -> str:
        return self.bead

    def describe(self) -> str:
        return (
            f"TransitionBead({self.bead}): {self.from_phase.value} -> {self.to_phase.value} "
            f"({self.reason})"
        )

    def writes(self) -> tuple[Write, ...]:
        patch: dict[str, Any] = {
            "phase": self.to_phase.value,
            "reason": self.reason,
            "message": self.message or None,
        }
        if self.to_phase is not self.from_phase:
            patch["phaseSince"] = iso(self.now)
        if self.to_phase is BeadPhase.CLOSED:
            patch["closedAt"] = iso(self.now)
        patch.update(self.set)
        write = PatchStatus(
            kind=Kind.BEAD,
            name=self.bead,
            patch=patch,
            expect={"phase": self.from_phase.value, **self.expect},
        )
        if self.event is None:
            return (write,)
        return (
            write,
            Emit(
                kind=Kind.BEAD,
                name=self.bead,
                type=self.event,
                reason=self.reason,
                message=self.message or f"{self.from_phase.value} -> {self.to_phase.value}",
            ),
        )


@dataclass(frozen=True, kw_only=True)
class AnnotateBead(Action):
    """Change status fields of a bead without changing its phase."""

    bead: str
    set: Mapping[str, Any]
    expect: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None

    @property
    def subject(self) -> str:
        return self.bead

    def writes(self) -> tuple[Write, ...]:
        result: list[Write] = [
            PatchStatus(kind=Kind.BEAD, name=self.bead, patch=dict(self.set), expect=self.expect)
        ]
        if self.event is not None:
            result.append(
                Emit(
                    kind=Kind.BEAD,
                    name=self.bead,
                    type=self.event,
                    reason=self.reason,
                    message=self.message or self.reason,
                )
            )
        return tuple(result)


@dataclass(frozen=True, kw_only=True)
class CreateBead(Action):
    """Create a bead with a deterministic name (merge request, rework, task, escalation)."""

    town: str
    bead: str
    spec: Mapping[str, Any]
    owner: tuple[Kind, str] | None
    labels: Mapping[str, str] = field(default_factory=dict)
    event: bool = True
    """False when another Event tells the creation (a merge request is announced on its
    source's ReviewRequested Event, the tasks of a convoy in one Event on the convoy)."""

    @property
    def subject(self) -> str:
        return self.bead

    def writes(self) -> tuple[Write, ...]:
        create = CreateObject(
            kind=Kind.BEAD,
            name=self.bead,
            spec=dict(self.spec),
            status=None,
            labels={**labels_for(self.town), **self.labels},
            owner=self.owner,
        )
        if not self.event:
            return (create,)
        return (
            create,
            Emit(
                kind=Kind.BEAD,
                name=self.bead,
                type=WARNING if self.spec.get("type") == BeadType.ESCALATION.value else NORMAL,
                reason=self.reason,
                message=self.message or f"created {self.spec.get('type')} {self.bead}",
            ),
        )


def merge_request_spec(
    *,
    town: str,
    rig: str,
    source: str,
    branch: str,
    target: str,
    title: str,
    description: str,
    priority: str,
    landing: bool = False,
    source_sha: str | None = None,
) -> dict[str, Any]:
    """Spec of a merge_request bead."""
    merge_request: dict[str, Any] = {
        "sourceBead": source,
        "branch": branch,
        "targetBranch": target,
        "landing": landing,
    }
    if source_sha is not None:
        merge_request["sourceSha"] = source_sha
    return {
        "town": town,
        "rig": rig,
        "type": BeadType.MERGE_REQUEST.value,
        "title": title[:256],
        "description": description[:20000],
        "priority": priority,
        "mergeRequest": merge_request,
    }


@dataclass(frozen=True, kw_only=True)
class Announce(Action):
    """One Event that tells what several other actions of the pass did (instead of one Event per
    object): planned after them, so it is posted only if they all were applied."""

    kind: Kind
    name: str
    event: str = NORMAL

    @property
    def subject(self) -> str:
        return self.name

    def writes(self) -> tuple[Write, ...]:
        return (
            Emit(
                kind=self.kind,
                name=self.name,
                type=self.event,
                reason=self.reason,
                message=self.message or self.reason,
            ),
        )


@dataclass(frozen=True, kw_only=True)
class CreateMergeRequest(CreateBead):
    """Queue finished work for review: a merge_request bead owned by the source bead."""


@dataclass(frozen=True, kw_only=True)
class CreateReworkBead(CreateBead):
    """Ask for changes: a rework bead that blocks its merge request until it closes."""


@dataclass(frozen=True, kw_only=True)
class CreateTaskBead(CreateBead):
    """Materialise an inline convoy task as a bead owned by the convoy."""


@dataclass(frozen=True, kw_only=True)
class RaiseEscalation(CreateBead):
    """Surface a problem to humans (and the mayor) as an escalation bead."""


@dataclass(frozen=True, kw_only=True)
class PollPullRequest(Action):
    """Record the poll time (not a lifecycle timestamp) and poll the PR.

    It carries what the PR must be to count: head branch, base branch and (when known) the
    head commit the operator verified for the merge request.
    """

    bead: str
    url: str
    now: datetime
    head_branch: str
    base_branch: str
    head_sha: str | None

    @property
    def subject(self) -> str:
        return self.bead

    def writes(self) -> tuple[Write, ...]:
        return (
            PatchStatus(
                kind=Kind.BEAD,
                name=self.bead,
                patch={"review": {"lastPolledAt": iso(self.now)}},
                expect={"phase": BeadPhase.IN_PROGRESS.value},
            ),
            PollPR(
                bead=self.bead,
                url=self.url,
                head_branch=self.head_branch,
                base_branch=self.base_branch,
                head_sha=self.head_sha,
            ),
        )


@dataclass(frozen=True, kw_only=True)
class VerifyAgentClaim(Action):
    """Have an agent's claim checked against the remote before its report is applied."""

    key: str
    claim: Claim
    bead: str

    @property
    def subject(self) -> str:
        return self.bead

    def writes(self) -> tuple[Write, ...]:
        return (VerifyClaim(key=self.key, claim=self.claim),)


# --- convoys and the town ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UpdateConvoy(Action):
    """Write a convoy's derived status (progress, phase, feature branch, landing)."""

    convoy: str
    set: Mapping[str, Any]
    expect: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None

    @property
    def subject(self) -> str:
        return self.convoy

    def writes(self) -> tuple[Write, ...]:
        result: list[Write] = [
            PatchStatus(
                kind=Kind.CONVOY, name=self.convoy, patch=dict(self.set), expect=self.expect
            )
        ]
        if self.event is not None:
            result.append(
                Emit(
                    kind=Kind.CONVOY,
                    name=self.convoy,
                    type=self.event,
                    reason=self.reason,
                    message=self.message or self.reason,
                )
            )
        return tuple(result)


@dataclass(frozen=True, kw_only=True)
class CreateLandingMR(Action):
    """Create the (attempt-th) landing merge request of a review-then-land convoy."""

    town: str
    convoy: str
    attempt: int
    rig: str
    feature_branch: str
    target_branch: str
    old_phase: ConvoyPhase | None
    now: datetime

    @property
    def subject(self) -> str:
        return self.convoy

    @property
    def merge_request(self) -> str:
        """Deterministic name of the landing merge request."""
        return names.landing_name(self.convoy, self.attempt)

    def writes(self) -> tuple[Write, ...]:
        spec = merge_request_spec(
            town=self.town,
            rig=self.rig,
            source=self.convoy,
            branch=self.feature_branch,
            target=self.target_branch,
            title=f"Land convoy {self.convoy}",
            description=f"Landing {self.feature_branch} into {self.target_branch}.",
            priority="high",
            landing=True,
        )
        return (
            CreateObject(
                kind=Kind.BEAD,
                name=self.merge_request,
                spec=spec,
                status=None,
                labels=labels_for(self.town, convoy=self.convoy),
                owner=(Kind.CONVOY, self.convoy),
            ),
            PatchStatus(
                kind=Kind.CONVOY,
                name=self.convoy,
                patch={
                    "phase": ConvoyPhase.LANDING.value,
                    "reason": self.reason,
                    "landing": {
                        "attempts": self.attempt,
                        "lastAttemptAt": iso(self.now),
                        "mergeRequest": self.merge_request,
                    },
                },
                expect={"phase": None if self.old_phase is None else self.old_phase.value},
            ),
            Emit(
                kind=Kind.CONVOY,
                name=self.convoy,
                type=NORMAL,
                reason=self.reason,
                message=f"landing attempt {self.attempt}: {self.merge_request}",
            ),
        )


@dataclass(frozen=True, kw_only=True)
class SetCircuitBreaker(Action):
    """Record the town's dispatch circuit breaker (open pauses all new dispatch)."""

    town: str
    open: bool
    recent_failures: int
    opened_at: datetime | None

    @property
    def subject(self) -> str:
        return self.town

    def writes(self) -> tuple[Write, ...]:
        patch = {
            "circuitBreaker": {
                "open": self.open,
                "recentFailures": self.recent_failures,
                "openedAt": None if self.opened_at is None else iso(self.opened_at),
            }
        }
        result: list[Write] = [PatchStatus(kind=Kind.TOWN, name=self.town, patch=patch, expect={})]
        if self.message:
            result.append(
                Emit(
                    kind=Kind.TOWN,
                    name=self.town,
                    type=WARNING if self.open else NORMAL,
                    reason=self.reason,
                    message=self.message,
                )
            )
        return tuple(result)


@dataclass(frozen=True, kw_only=True)
class RecordTownSpend(Action):
    """Write the town's spend ledger (compare-and-set on the spend it was computed from)."""

    town: str
    patch: Mapping[str, Any]
    expect_spend: Mapping[str, Any] | None

    @property
    def subject(self) -> str:
        return self.town

    def writes(self) -> tuple[Write, ...]:
        return (
            PatchStatus(
                kind=Kind.TOWN,
                name=self.town,
                patch={"spend": dict(self.patch)},
                expect={"spend": self.expect_spend},
            ),
        )


@dataclass(frozen=True, kw_only=True)
class RecordBeadSpend(AnnotateBead):
    """Fold sessions' usage into a bead's spend; `delta` is what this write adds (metrics)."""

    delta: tuple[tuple[str, str, str, str, int, float], ...] = ()
    """Per session: (rig, role, model, agent, tokens, cost) added by this write."""


def lower(actions: Sequence[Action]) -> list[Write]:
    """All writes of a plan, in order (see `writes.py` for how the adapter applies them)."""
    return [w for action in actions for w in action.writes()]
