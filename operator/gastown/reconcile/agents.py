"""Agent liveness and hygiene: pod observations, heartbeat loss and restore, hook repair, pods.

The mayor (if present) is never treated as a worker: it is skipped by every rule here.
"""

from __future__ import annotations

from gastown.model import Agent, AgentPhase, AgentRole, BeadPhase
from gastown.reconcile.actions import WARNING, AnnotateBead, StopAgentPod, UpdateAgent
from gastown.reconcile.context import Pass
from gastown.reconcile.facts import Session, classify_session, current_heartbeat
from gastown.reconcile.ops import release_agent, retry_or_fail
from gastown.reconcile.retries import failure_record
from gastown.reconcile.snapshot import PodView
from gastown.reconcile.writes import Kind


def is_worker(agent: Agent) -> bool:
    """Polecats and refineries are workers; the mayor is not."""
    return agent.spec.role is not AgentRole.MAYOR


def apply_session_facts(ctx: Pass) -> None:
    """Turn pod observations of working agents into state: ended, lost or healthy."""
    agents = ctx.snap.agents
    claimed = ctx.claimed
    working, idle = AgentPhase.WORKING, AgentPhase.IDLE
    for name in ctx.index.hooked_workers:
        if (Kind.AGENT, name) in claimed:
            continue
        agent = agents[name]
        phase = agent.status.phase
        if phase is working:
            _observe_working(ctx, agent)
        elif phase is idle:
            _maybe_restore(ctx, agent)


def _observe_working(ctx: Pass, agent: Agent) -> None:
    pod = ctx.index.pod(agent.name, agent.spec.generation)
    session = classify_session(ctx, agent, pod)
    if session.state is Session.HEALTHY or session.state is Session.STARTING:
        return
    bead = ctx.snap.beads.get(agent.spec.hook or "")
    if session.state is Session.ENDED:
        # The session is over without a report (a report would have been applied first): the
        # attempt failed. Release the agent and let the bead be retried with backoff.
        release_agent(ctx, agent, session.reason, stop_pod=True, event=WARNING)
        if bead is not None and ctx.free(Kind.BEAD, bead.name) and _holds(ctx, agent, bead.name):
            retry_or_fail(
                ctx, bead, session.reason, f"{agent.name} generation {agent.spec.generation}"
            )
    elif session.state is Session.LOST:
        # No sign of life, but the pod may still be running: keep the hook so that a late
        # heartbeat can restore the agent; the re-dispatch rule starts a new generation after
        # the cooldown and backoff otherwise.
        ctx.add(
            UpdateAgent(
                agent=agent.name,
                generation=agent.spec.generation,
                hook=agent.spec.hook,
                from_phase=AgentPhase.WORKING,
                to_phase=AgentPhase.IDLE,
                now=ctx.now,
                reason=session.reason,
                message=f"no heartbeat for generation {agent.spec.generation}",
                event=WARNING,
            ),
            (Kind.AGENT, agent.name),
        )
        if bead is not None and ctx.free(Kind.BEAD, bead.name) and _holds(ctx, agent, bead.name):
            ctx.add(
                AnnotateBead(
                    bead=bead.name,
                    set=failure_record(ctx, session.reason, f"{agent.name} lost"),
                    expect={"attempts": bead.status.attempts, "assignee": agent.name},
                    reason=session.reason,
                ),
                (Kind.BEAD, bead.name),
            )


def _holds(ctx: Pass, agent: Agent, bead_name: str) -> bool:
    bead = ctx.snap.beads.get(bead_name)
    return (
        bead is not None
        and bead.status.assignee == agent.name
        and ctx.phase(bead) is BeadPhase.IN_PROGRESS
    )


def _maybe_restore(ctx: Pass, agent: Agent) -> None:
    """A heartbeat newer than the idling restores a wrongly idled agent (same generation)."""
    pod = ctx.index.pod(agent.name, agent.spec.generation)
    beat = current_heartbeat(agent)
    since = agent.status.phase_since
    if pod is None or not pod.live or pod.phase != "Running" or beat is None or since is None:
        return
    if beat <= since or ctx.older_than(beat, ctx.policy.agents.heartbeat_timeout_seconds):
        return
    if not _holds(ctx, agent, agent.spec.hook or ""):
        return
    ctx.add(
        UpdateAgent(
            agent=agent.name,
            generation=agent.spec.generation,
            hook=agent.spec.hook,
            from_phase=AgentPhase.IDLE,
            to_phase=AgentPhase.WORKING,
            now=ctx.now,
            reason="HeartbeatResumed",
            event="Normal",
        ),
        (Kind.AGENT, agent.name),
    )


def repair_hooks(ctx: Pass) -> None:
    """Unhook agents whose bead is missing, terminal, or assigned to someone else."""
    agents, beads, claimed = ctx.snap.agents, ctx.snap.beads, ctx.claimed
    in_progress, closed, failed = BeadPhase.IN_PROGRESS, BeadPhase.CLOSED, BeadPhase.FAILED
    for name in ctx.index.hooked_workers:
        if (Kind.AGENT, name) in claimed:
            continue
        agent = agents[name]
        hook = agent.spec.hook
        if hook is None:
            continue
        bead = beads.get(hook)
        phase = None if bead is None else ctx.phase_of(hook)
        if bead is None:
            reason = "HookedBeadMissing"
        elif phase is closed or phase is failed:
            reason = "HookedBeadTerminal"
        elif phase is not in_progress or ctx.assignee(bead) != name:
            reason = "HookMismatch"
        else:
            continue
        release_agent(ctx, agent, reason, f"hook {hook} released", stop_pod=True)


def clean_pods(ctx: Pass) -> None:
    """Stop pods that belong to no current session (no invariant allows them to live)."""
    pods, agents, claimed = ctx.snap.pods, ctx.snap.agents, ctx.claimed
    for pod_name in sorted(pods):
        pod = pods[pod_name]
        if pod.deleting or (Kind.POD, pod_name) in claimed:
            continue
        reason = _pod_verdict(agents.get(pod.agent), pod)
        if reason is not None:
            ctx.add(StopAgentPod(pod=pod_name, reason=reason), (Kind.POD, pod_name))


def _pod_verdict(agent: Agent | None, pod: PodView) -> str | None:
    if agent is None:
        return "AgentMissing"
    spec = agent.spec
    if spec.role is AgentRole.MAYOR:  # not a worker
        return None
    generation = pod.generation
    if generation < spec.generation:
        return "OldGeneration"
    if generation > spec.generation:
        return None  # created by a dispatch the agent index has not caught up with
    if spec.hook is None:
        # Judged on the snapshot, not this pass's plan: a runtime that has just reported gets
        # until the next pass to exit on its own.
        return "SessionOver"
    if agent.status.phase is not AgentPhase.WORKING and pod.finished:
        return "SessionOver"
    return None
