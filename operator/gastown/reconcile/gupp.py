"""GUPP, "work on your hook must run": the stuck-agent ladder.

Measured from the last *progress* event of the current generation (not from liveness: an agent
can heartbeat while stuck), and from the dispatch when the generation has no event yet, so the
watermark is reset on every dispatch. Warn at 15 min (unless a tool call is running), escalate at
60 min, force-stop at 120 min (stop the pod once, mark the agent stalled, raise an escalation).
Each tier fires once per stall: the time it fired is recorded in the agent's status and it fires
again only after new progress. The mayor is never nudged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gastown.model import Agent, AgentPhase
from gastown.reconcile.actions import WARNING, AnnotateBead, PostNudge, UpdateAgent
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.ops import escalate, live_pod_name
from gastown.reconcile.retries import failure_record
from gastown.reconcile.writes import Kind, iso

WARN_MESSAGE = (
    "No progress for {minutes} minutes and no tool running. Please check your progress, "
    "continue, or report if you are stuck."
)
ESCALATE_MESSAGE = (
    "No progress for {minutes} minutes. Please wrap up, or report (escalate) if you are stuck."
)
_MAX_NUDGES = 20


def progress_base(agent: Agent) -> datetime | None:
    """Last progress of the current generation, or the dispatch time if there is none yet."""
    status = agent.status
    activity = status.activity
    return _base(
        agent.spec.generation, activity.generation, activity.last_event_at, status.dispatched_at
    )


def _base(
    generation: int, event_generation: int, event: datetime | None, dispatched: datetime | None
) -> datetime | None:
    """`progress_base` from the fields it reads."""
    if event_generation != generation:
        event = None
    if event is None:
        return None if dispatched is None else aware(dispatched)
    if dispatched is None:
        return aware(event)
    return max(aware(event), aware(dispatched))  # the event wins a tie, as before


def _fired(agent: Agent, tier_at: datetime | None, base: datetime) -> bool:
    """A tier fired for this stall if it fired in this generation after the last progress."""
    gupp = agent.status.gupp
    return (
        gupp.generation == agent.spec.generation
        and tier_at is not None
        and (aware(tier_at) >= base)
    )


def apply_gupp(ctx: Pass) -> None:
    """Run the ladder for every working worker."""
    policy = ctx.policy.gupp
    agents, facts, claimed, now = ctx.snap.agents, ctx.index.agent_facts, ctx.claimed, ctx.now
    quiet = min(policy.warn_seconds, policy.escalate_seconds, policy.force_stop_seconds)
    for name in ctx.index.working:  # working workers with a hook
        if (Kind.AGENT, name) in claimed:
            continue
        _, _, generation, _, dispatched, event_generation, _, event = facts[name]
        base = _base(generation, event_generation, event, dispatched)
        if base is None:
            continue
        elapsed = (now - base).total_seconds()
        if elapsed < 0 or elapsed <= quiet:
            continue  # clock skew (never act on a future timestamp), or no tier is due yet
        agent = agents[name]
        gupp = agent.status.gupp
        if elapsed > policy.force_stop_seconds:
            if not _fired(agent, gupp.force_stopped_at, base):
                _force_stop(ctx, agent, base, elapsed)
        elif elapsed > policy.escalate_seconds:
            if not _fired(agent, gupp.escalated_at, base):
                _escalate(ctx, agent, base, elapsed)
        elif (
            elapsed > policy.warn_seconds
            and not _tools_running(agent)
            and not _fired(agent, gupp.warned_at, base)
        ):
            _warn(ctx, agent, base, elapsed)


def _tools_running(agent: Agent) -> bool:
    activity = agent.status.activity
    return activity.generation == agent.spec.generation and bool(activity.active_tools)


def _gupp_patch(agent: Agent, field: str, ctx: Pass) -> dict[str, Any]:
    gupp = agent.status.gupp
    patch: dict[str, Any] = {"generation": agent.spec.generation, field: iso(ctx.now)}
    if gupp.generation != agent.spec.generation:
        # A new generation starts a clean ladder: clear the other tiers explicitly.
        for other in ("warnedAt", "escalatedAt", "forceStoppedAt"):
            patch.setdefault(other, None)
    return {"gupp": patch}


def _nudge(ctx: Pass, agent: Agent, tier: str, base: datetime, message: str) -> None:
    delivered = set(agent.status.delivered_nudges)
    keep = [n.to_api() for n in agent.spec.nudges if n.id not in delivered]
    nudge = {
        "id": f"gupp-{tier}-g{agent.spec.generation}-{int(base.timestamp())}",
        "message": message,
        "source": f"gupp-{tier}",
        "createdAt": iso(ctx.now),
    }
    nudges = tuple([*keep, nudge][-_MAX_NUDGES:])
    ctx.add(
        PostNudge(
            agent=agent.name,
            generation=agent.spec.generation,
            nudges=nudges,
            reason=f"Gupp{tier.capitalize()}",
            message=message,
        ),
        (Kind.AGENT, agent.name),
    )


def _mark(ctx: Pass, agent: Agent, field: str, reason: str, to: AgentPhase, stop: bool) -> None:
    ctx.add(
        UpdateAgent(
            agent=agent.name,
            generation=agent.spec.generation,
            hook=agent.spec.hook,
            from_phase=AgentPhase.WORKING,
            to_phase=to,
            extra=_gupp_patch(agent, field, ctx),
            stop_pod=live_pod_name(ctx, agent) if stop else None,
            now=ctx.now,
            reason=reason,
            event=WARNING if stop else None,
            message=f"stopped after no progress for {ctx.policy.gupp.force_stop_seconds // 60}"
            " minutes"
            if stop
            else "",
        ),
        (Kind.AGENT, agent.name),
    )


def _warn(ctx: Pass, agent: Agent, base: datetime, elapsed: float) -> None:
    message = WARN_MESSAGE.format(minutes=int(elapsed // 60))
    _nudge(ctx, agent, "warn", base, message)
    _mark(ctx, agent, "warnedAt", "GuppWarn", AgentPhase.WORKING, stop=False)


def _escalate(ctx: Pass, agent: Agent, base: datetime, elapsed: float) -> None:
    minutes = int(elapsed // 60)
    _nudge(ctx, agent, "escalate", base, ESCALATE_MESSAGE.format(minutes=minutes))
    _mark(ctx, agent, "escalatedAt", "GuppEscalate", AgentPhase.WORKING, stop=False)
    escalate(
        ctx,
        agent.name,
        f"g{agent.spec.generation}-{int(base.timestamp())}",
        f"{agent.name} made no progress on {agent.spec.hook} for {minutes} min",
        f"GUPP escalation: agent {agent.name} (generation {agent.spec.generation}) has made no "
        f"progress on bead {agent.spec.hook} for {minutes} minutes.",
    )


def _force_stop(ctx: Pass, agent: Agent, base: datetime, elapsed: float) -> None:
    minutes = int(elapsed // 60)
    _mark(ctx, agent, "forceStoppedAt", "GuppForceStop", AgentPhase.STALLED, stop=True)
    escalate(
        ctx,
        agent.name,
        f"g{agent.spec.generation}-stop",
        f"{agent.name} stopped: no progress on {agent.spec.hook} for {minutes} min",
        f"GUPP force stop: agent {agent.name} (generation {agent.spec.generation}) made no "
        f"progress on bead {agent.spec.hook} for {minutes} minutes; its pod was stopped and "
        "the bead will be re-dispatched after its backoff.",
    )
    bead = ctx.snap.beads.get(agent.spec.hook or "")
    if bead is not None and ctx.free(Kind.BEAD, bead.name) and bead.status.assignee == agent.name:
        ctx.add(
            AnnotateBead(
                bead=bead.name,
                set=failure_record(ctx, "GuppForceStop", f"{agent.name} made no progress"),
                expect={"attempts": bead.status.attempts, "assignee": agent.name},
                reason="GuppForceStop",
            ),
            (Kind.BEAD, bead.name),
        )
