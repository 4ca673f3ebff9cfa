"""Compound operations shared by several rule families (release, retry, merge, fail).

Each helper checks that the objects it writes are still unclaimed in this pass, appends the
actions, claims the objects and returns whether it did anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gastown.model import Agent, AgentPhase, Bead, BeadPhase, BeadType
from gastown.reconcile import names
from gastown.reconcile.actions import (
    NORMAL,
    WARNING,
    MarkReportsApplied,
    RaiseEscalation,
    TransitionBead,
    UpdateAgent,
)
from gastown.reconcile.context import Pass
from gastown.reconcile.retries import attempts_exhausted, failure_record
from gastown.reconcile.writes import Kind

MAX_ATTEMPTS = "MaxAttemptsExceeded"


def live_pod_name(ctx: Pass, agent: Agent) -> str | None:
    """The agent's current-generation pod, if it exists and is not already being deleted."""
    pod = ctx.index.pod(agent.name, agent.spec.generation)
    if pod is None or pod.deleting:
        return None
    return pod.name


def release_agent(
    ctx: Pass,
    agent: Agent,
    reason: str,
    message: str = "",
    *,
    stop_pod: bool = False,
    event: str | None = None,
) -> None:
    """Unhook an agent and make it idle (compare-and-set on its generation and hook).

    A plain release (no pod to stop, no Event) is registered so that a dispatch later in the
    same pass can hand the agent its next bead in the same writes (see `dispatch`).
    """
    ctx.plan_hook(agent.name, None)
    update = UpdateAgent(
        agent=agent.name,
        generation=agent.spec.generation,
        hook=agent.spec.hook,
        from_phase=agent.status.phase,
        to_phase=AgentPhase.IDLE,
        unhook=True,
        stop_pod=live_pod_name(ctx, agent) if stop_pod else None,
        now=ctx.now,
        reason=reason,
        message=message,
        event=event,
    )
    ctx.add(update, (Kind.AGENT, agent.name))
    if update.stop_pod is None and event is None and agent.metadata.deletion_timestamp is None:
        ctx.releases[agent.name] = update


def mark_applied(ctx: Pass, agent: Agent, seq: int) -> None:
    """Record that the agent's reports up to `seq` are applied (after their effects).

    When applying the report also released or re-phased the agent, that update moves here, to
    the end of the report's actions, and carries the mark in its own status patch: one write
    instead of two, and still after every effect of the report (a crash before it leaves the
    report unapplied; re-applying it then finds its bead already moved on and drops it).
    """
    if seq <= agent.status.applied_report_seq:
        return
    update = _pending_update(ctx, agent.name)
    if update is not None:
        fused = dataclasses.replace(
            update, applied_seq=seq, applied_seq_before=agent.status.applied_report_seq
        )
        ctx.replace(update, fused)
        if ctx.releases.get(agent.name) is update:
            ctx.releases[agent.name] = fused
        return
    ctx.add(
        MarkReportsApplied(
            agent=agent.name,
            seq=seq,
            old_seq=agent.status.applied_report_seq,
            reason="ReportsApplied",
        ),
        (Kind.AGENT, agent.name),
    )


def _pending_update(ctx: Pass, agent: str) -> UpdateAgent | None:
    """The UpdateAgent this pass already planned for `agent`, if any (at most one per agent)."""
    for action in reversed(ctx.actions):
        if isinstance(action, UpdateAgent) and action.agent == agent:
            return action
    return None


def transition(
    ctx: Pass,
    bead: Bead,
    to: BeadPhase,
    reason: str,
    message: str = "",
    *,
    set: dict[str, Any] | None = None,
    expect: dict[str, Any] | None = None,
    event: str | None = NORMAL,
) -> None:
    """Move a bead to another phase (compare-and-set on its current phase); `event` is the
    type of its Event, None for none (another Event of the pass tells it)."""
    ctx.plan_phase(bead.name, to)
    if set is not None and "assignee" in set:
        ctx.plan_assignee(bead.name, set["assignee"])
    ctx.add(
        TransitionBead(
            bead=bead.name,
            from_phase=bead.status.phase,
            to_phase=to,
            now=ctx.now,
            set=set or {},
            expect=expect or {},
            reason=reason,
            message=message,
            event=event,
        ),
        (Kind.BEAD, bead.name),
    )


def retry_or_fail(ctx: Pass, bead: Bead, reason: str, message: str = "") -> None:
    """A dispatch attempt of `bead` failed: reopen it for a later attempt, or fail it.

    The failure time drives the backoff and the circuit breaker. A merge request that fails for
    good takes its source back with it (see `fail_merge_request`).
    """
    if attempts_exhausted(ctx, bead):
        text = f"{reason}: {message}" if message else reason
        if bead.spec.type is BeadType.MERGE_REQUEST:
            fail_merge_request(ctx, bead, MAX_ATTEMPTS, text)
            return
        gave_up = f"gave up after {bead.status.attempts} attempts; last: {text}"[:1024]
        transition(
            ctx,
            bead,
            BeadPhase.FAILED,
            MAX_ATTEMPTS,
            gave_up,
            # The failure record carries the message too (an empty one would erase it).
            set={"assignee": None, **failure_record(ctx, MAX_ATTEMPTS, gave_up)},
            event=WARNING,
        )
        return
    fields: dict[str, Any] = {"assignee": None, **failure_record(ctx, reason, message)}
    transition(
        ctx,
        bead,
        BeadPhase.OPEN,
        reason,
        message,
        set=fields,
        expect={"attempts": bead.status.attempts},
        event=WARNING,
    )


def source_of(ctx: Pass, mr: Bead) -> Bead | None:
    """The issue a merge request reviews (None for landing MRs and missing sources)."""
    spec = mr.spec.merge_request
    if spec is None or spec.landing:
        return None
    return ctx.snap.beads.get(spec.source_bead)


def release_hooked(ctx: Pass, bead: Bead, reason: str, *, stop_pod: bool) -> None:
    """Unhook every agent hooked to `bead` that this pass has not touched yet."""
    for name in ctx.hooked_to(bead.name):
        agent = ctx.snap.agents.get(name)
        if agent is not None and ctx.free(Kind.AGENT, name) and agent.spec.hook == bead.name:
            release_agent(ctx, agent, reason, stop_pod=stop_pod)


def fail_merge_request(
    ctx: Pass, mr: Bead, reason: str, message: str = "", *, set: dict[str, Any] | None = None
) -> None:
    """Fail a merge request for good; its source goes back to open (or fails if exhausted).

    `set` adds status fields to the MR's own write (e.g. the record of a refused claim).
    """
    if not ctx.free(Kind.BEAD, mr.name) or ctx.phase(mr).terminal:
        return
    fields = {"assignee": None, **(set or {})}
    transition(ctx, mr, BeadPhase.FAILED, reason, message, set=fields, event=WARNING)
    release_hooked(ctx, mr, reason, stop_pod=True)
    source = source_of(ctx, mr)
    if (
        source is not None
        and ctx.free(Kind.BEAD, source.name)
        and ctx.phase(source) is BeadPhase.IN_REVIEW
    ):
        retry_or_fail(ctx, source, "ReviewFailed", f"{mr.name}: {reason} {message}".strip())


def close_merged(ctx: Pass, mr: Bead, merge_commit: str | None, reason: str) -> None:
    """Record a verified merge: the MR and its source close."""
    review: dict[str, Any] = {"mergeCommit": merge_commit} if merge_commit else {}
    # A verified merge settles the question an earlier refused claim raised.
    fields: dict[str, Any] = {"assignee": None}
    if mr.status.refused_claim is not None:
        fields["refusedClaim"] = None
    if review:
        fields["review"] = review
    source = source_of(ctx, mr)
    closes_source = (
        source is not None and ctx.free(Kind.BEAD, source.name) and not ctx.phase(source).terminal
    )
    # One Event tells the merge: the source's ("merged by <mr> (<commit>)") when it closes too.
    event = None if closes_source else NORMAL
    transition(ctx, mr, BeadPhase.CLOSED, reason, merge_commit or "", set=fields, event=event)
    if source is not None and closes_source:
        transition(
            ctx,
            source,
            BeadPhase.CLOSED,
            "Merged",
            f"merged by {mr.name}" + (f" ({merge_commit})" if merge_commit else ""),
            set={"assignee": None},
        )


def agent_escalation_tag(agent: Agent) -> str:
    """The tag of the escalation an agent asks for: one per dispatch generation.

    This caps what an agent can create: its first `escalate` report of a generation raises the
    escalation bead; later ones in the same generation are applied (acknowledged) but find the
    bead's deterministic name taken and create nothing. The next generation may ask again.
    """
    return f"g{agent.spec.generation}-asked"


def escalate(ctx: Pass, subject: str, tag: str, title: str, message: str) -> None:
    """Raise an escalation bead about `subject` (deterministic name per occasion)."""
    name = names.escalation_name(subject, tag)
    if name in ctx.snap.beads or not ctx.free(Kind.BEAD, name):
        return
    spec = {
        "town": ctx.town.name,
        "type": BeadType.ESCALATION.value,
        "title": title[:256],
        "description": message[:20000],
        "priority": "high",
    }
    ctx.add(
        RaiseEscalation(
            town=ctx.town.name,
            bead=name,
            spec=spec,
            owner=(Kind.TOWN, ctx.town.name),
            reason="Escalated",
            message=title,
        ),
        (Kind.BEAD, name),
    )
