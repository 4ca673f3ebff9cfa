"""Garbage collection of agents nobody needs.

Idle agents without a hook are removed after the TTL (24 h by default), measured from their last
sign of use, with their creation time as the floor, so a never-used agent gets the same grace as
any other (the original deleted those at once). In draining mode idle agents go at once, and idle
polecats beyond a lowered cap are removed. GC never reopens or touches any bead.
"""

from __future__ import annotations

from datetime import datetime

from gastown.model import Agent, AgentPhase, AgentRole, TownMode
from gastown.reconcile.actions import DeleteAgent
from gastown.reconcile.capacity import excess_idle_polecats, session_ending
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.writes import Kind


def last_used(agent: Agent) -> datetime | None:
    """The latest of creation, dispatch, phase change and heartbeat."""
    moments = [
        agent.metadata.creation_timestamp,
        agent.status.dispatched_at,
        agent.status.phase_since,
        agent.status.activity.last_heartbeat_at,
    ]
    known = [aware(m) for m in moments if m is not None]
    return max(known) if known else None


def collectable(ctx: Pass, agent: Agent) -> bool:
    """An idle worker without a hook, not being deleted, untouched by this pass."""
    return (
        agent.spec.role is not AgentRole.MAYOR
        and agent.spec.hook is None
        and agent.status.phase is AgentPhase.IDLE
        and agent.metadata.deletion_timestamp is None
        and ctx.free(Kind.AGENT, agent.name)
        and not session_ending(ctx, agent)  # its last report is on the way
    )


def collect_agents(ctx: Pass) -> None:
    """Delete idle agents past their TTL, all idle ones when draining, and excess polecats."""
    ttl = ctx.policy.gc.idle_agent_ttl_seconds
    draining = ctx.town.spec.mode is TownMode.DRAINING
    candidates = ctx.index.unhooked_idle  # idle workers without a hook, not being deleted
    if not candidates:
        return  # nothing collectable (and excess polecats are idle ones, so none either)
    excess = set(excess_idle_polecats(ctx))
    for name in candidates:
        agent = ctx.snap.agents[name]
        if not collectable(ctx, agent):
            continue
        if draining:
            reason = "Draining"
        elif name in excess:
            reason = "OverCapacity"
        elif ctx.older_than(last_used(agent), ttl):
            reason = "IdleExpired"
        else:
            continue
        pods = tuple(
            sorted(p.name for p in ctx.index.pods_by_agent.get(name, ()) if not p.deleting)
        )
        ctx.add(
            DeleteAgent(town=ctx.town.name, agent=name, pods=pods, reason=reason),
            (Kind.AGENT, name),
            *((Kind.POD, p) for p in pods),
        )
