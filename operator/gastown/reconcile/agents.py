"""Agent liveness and hygiene: pod observations, heartbeat loss and restore, hook repair, pods.

The mayor (if present) is never treated as a worker: it is skipped by every rule here.
"""

from __future__ import annotations

from gastown.model import Agent, AgentPhase, AgentRole, BeadPhase
from gastown.reconcile.actions import WARNING, AnnotateBead, StopAgentPod, UpdateAgent
from gastown.reconcile.capacity import session_ending
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.facts import Session, classify_session, current_heartbeat
from gastown.reconcile.invariants import ORPHAN_POD
from gastown.reconcile.ops import release_agent, retry_or_fail
from gastown.reconcile.repairs import record_hook_repair, record_repair
from gastown.reconcile.retries import failure_record
from gastown.reconcile.snapshot import AgentFacts, PodView
from gastown.reconcile.writes import Kind

AGENT_MISSING = "AgentMissing"
SESSION_OVER = "SessionOver"


def is_worker(agent: Agent) -> bool:
    """Polecats and refineries are workers; the mayor is not."""
    return agent.spec.role is not AgentRole.MAYOR


def apply_session_facts(ctx: Pass) -> None:
    """Turn pod observations of working agents into state: ended, lost or healthy."""
    agents, facts, claimed = ctx.snap.agents, ctx.index.agent_facts, ctx.claimed
    working, idle = AgentPhase.WORKING, AgentPhase.IDLE
    timeout = ctx.policy.agents.heartbeat_timeout_seconds
    now, pod_of = ctx.now, ctx.index.pod
    for name in ctx.index.hooked_workers:
        if (Kind.AGENT, name) in claimed:
            continue
        _, _, generation, phase, _, beat_generation, beat, _ = facts[name]
        if phase is working:
            # Fast path, from facts the index read: a running pod of this generation and a
            # fresh heartbeat of it is a healthy session (`classify_session` says the same).
            if beat is not None and beat_generation == generation:
                pod = pod_of(name, generation)
                if (
                    pod is not None
                    and pod.phase == "Running"
                    and not pod.deleting
                    and (now - aware(beat)).total_seconds() <= timeout
                ):
                    continue
            _observe_working(ctx, agents[name])
        elif phase is idle:
            _maybe_restore(ctx, agents[name])


def _observe_working(ctx: Pass, agent: Agent) -> None:
    pod = ctx.index.pod(agent.name, agent.spec.generation)
    session = classify_session(ctx, agent, pod)
    if session.state is Session.HEALTHY or session.state is Session.STARTING:
        return
    bead = ctx.snap.beads.get(agent.spec.hook or "")
    if session.state is Session.ENDED:
        # The session is over without a report (a report would have been applied first): the
        # attempt failed. Release the agent and let the bead be retried with backoff.
        where = f"{agent.name} generation {agent.spec.generation}"
        detail = f"{where}: {session.message}" if session.message else where
        release_agent(ctx, agent, session.reason, detail, stop_pod=True, event=WARNING)
        if bead is not None and ctx.free(Kind.BEAD, bead.name) and _holds(ctx, agent, bead.name):
            retry_or_fail(ctx, bead, session.reason, detail)
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


def finish_releases(ctx: Pass) -> None:
    """Finish releases cut in two: a working agent without a hook.

    A release writes the unhook (spec) and then the idle phase (status); an operator that dies
    between the two, or whose status write loses a conflict to the agent's own status write,
    leaves the agent working without a hook. The second half is written now (its pod, if any,
    is then stopped by `clean_pods` as a session that is over).
    """
    for name in ctx.index.unhooked_working:
        if not ctx.free(Kind.AGENT, name):
            continue
        agent = ctx.snap.agents[name]
        ctx.add(
            UpdateAgent(
                agent=name,
                generation=agent.spec.generation,
                hook=None,
                from_phase=AgentPhase.WORKING,
                to_phase=AgentPhase.IDLE,
                now=ctx.now,
                reason="Released",
                message=f"the release of {name} is complete (it had no hook)",
            ),
            (Kind.AGENT, name),
        )


def repair_hooks(ctx: Pass) -> None:
    """Unhook agents whose bead is missing, terminal, or assigned to someone else."""
    agents, facts, claimed = ctx.snap.agents, ctx.index.agent_facts, ctx.claimed
    in_snapshot = ctx.index.phases
    in_progress, closed, failed = BeadPhase.IN_PROGRESS, BeadPhase.CLOSED, BeadPhase.FAILED
    for name in ctx.index.hooked_workers:
        if (Kind.AGENT, name) in claimed:
            continue
        hook = facts[name][1]
        if hook is None:
            continue
        phase = ctx.phase_of(hook) if hook in in_snapshot else None
        if phase is None:
            reason = "HookedBeadMissing"
        elif phase is closed or phase is failed:
            reason = "HookedBeadTerminal"
        elif phase is not in_progress or ctx.assignee_of(hook) != name:
            reason = "HookMismatch"
        else:
            continue
        release_agent(ctx, agents[name], reason, f"hook {hook} released", stop_pod=True)
        record_hook_repair(ctx, name, hook)


def clean_pods(ctx: Pass) -> None:
    """Stop pods that belong to no current session (no invariant allows them to live)."""
    pods, facts, claimed = ctx.snap.pods, ctx.index.agent_facts, ctx.claimed
    for pod_name in sorted(pods):
        pod = pods[pod_name]
        if pod.deleting or (Kind.POD, pod_name) in claimed:
            continue
        reason = _pod_verdict(facts.get(pod.agent), pod)
        if reason == SESSION_OVER and pod.live and _ending_on_its_own(ctx, pod):
            continue
        if reason is not None:
            ctx.add(StopAgentPod(pod=pod_name, reason=reason), (Kind.POD, pod_name))
            if reason == AGENT_MISSING and pod.live:
                record_repair(
                    ctx, ORPHAN_POD, pod_name, f"pod {pod_name} ran for missing agent {pod.agent}"
                )


def _ending_on_its_own(ctx: Pass, pod: PodView) -> bool:
    """The released agent's pod is still ending its session (see `capacity.session_ending`)."""
    agent = ctx.snap.agents.get(pod.agent)
    return agent is not None and session_ending(ctx, agent)


def _pod_verdict(agent: AgentFacts | None, pod: PodView) -> str | None:
    if agent is None:
        return AGENT_MISSING
    role, hook, agent_generation, phase = agent[:4]
    if role is AgentRole.MAYOR:  # not a worker
        return None
    generation = pod.generation
    if generation < agent_generation:
        return "OldGeneration"
    if generation > agent_generation:
        return None  # created by a dispatch the agent index has not caught up with
    if hook is None:
        # Judged on the snapshot, not this pass's plan: a runtime that has just reported gets
        # until the next pass to exit on its own (and a running one the session-end grace).
        return SESSION_OVER
    if phase is not AgentPhase.WORKING and pod.finished:
        return SESSION_OVER
    return None
