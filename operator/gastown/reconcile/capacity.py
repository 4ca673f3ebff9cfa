"""Worker capacity: per-rig and per-town polecat caps, really enforced.

A polecat counts against the caps while it holds a hook (it is busy, whatever its phase), and
while its released session is still ending (see `session_ending`). Idle polecats of a rig are
reused before new ones are created, so the number of polecats of a rig stays at most its cap;
when a cap is lowered the excess drains gracefully (idle polecats are removed first; busy ones
finish their bead and are removed once idle, see `gc.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gastown.model import Agent, AgentPhase, Rig
from gastown.reconcile import names
from gastown.reconcile.context import Pass
from gastown.reconcile.writes import Kind


def rig_cap(ctx: Pass, rig: Rig) -> int:
    """Polecats allowed on a rig: its own cap, else the town's per-rig cap."""
    if rig.max_polecats is not None:
        return rig.max_polecats
    return ctx.town.spec.limits.max_polecats_per_rig


def town_cap(ctx: Pass) -> int:
    """Polecats allowed in the whole town."""
    return ctx.town.spec.limits.max_polecats


SESSION_END_GRACE_SECONDS = 30.0
"""How long a released agent's running pod may take to end its session on its own."""


def session_ending(ctx: Pass, agent: Agent) -> bool:
    """The agent is released but its pod of the current generation still runs.

    A coding agent reports `done` in the middle of its last turn and prints its final figures
    (Claude Code's cost, for one) when that turn ends; the runtime then writes them as a last
    `usage` report and exits. That write is refused once the agent is re-dispatched (a new
    generation), so the agent is not reused, and its pod not stopped, until the pod has ended or
    the grace has passed since the release (a pod that never started has nothing to report).
    """
    if ctx.hook(agent) is not None:
        return False
    running = any(
        pod.live and pod.started_at is not None and pod.generation == agent.spec.generation
        for pod in ctx.index.pods_by_agent.get(agent.name, ())
    )
    if not running:
        return False
    if agent.name in ctx.releases or agent.spec.hook is not None:
        return True  # released by this pass
    return not ctx.older_than(agent.status.phase_since, SESSION_END_GRACE_SECONDS)


def is_free_polecat(ctx: Pass, agent: Agent) -> bool:
    """An idle, unhooked polecat not being deleted and not touched by this pass."""
    return (
        agent.spec.hook is None
        and agent.status.phase is AgentPhase.IDLE
        and agent.metadata.deletion_timestamp is None
        and ctx.free(Kind.AGENT, agent.name)
    )


@dataclass
class Capacity:
    """Remaining polecat slots of this pass, per rig and town-wide."""

    town_left: int
    rig_left: dict[str, int]
    idle: dict[str, list[str]] = field(default_factory=dict)
    taken_names: set[str] = field(default_factory=set)

    def available(self, rig: str) -> bool:
        """True if one more polecat may work on `rig`."""
        return self.town_left > 0 and self.rig_left.get(rig, 0) > 0

    def take(self, rig: str) -> None:
        """Account for one more busy polecat on `rig`."""
        self.town_left -= 1
        self.rig_left[rig] = self.rig_left.get(rig, 0) - 1


def measure(ctx: Pass) -> Capacity:
    """Count busy polecats and collect reusable idle ones, per rig."""
    busy_total = 0
    rig_left: dict[str, int] = {}
    idle: dict[str, list[str]] = {}
    for rig_name, rig in ctx.index.rigs.items():
        busy = 0
        free: list[str] = []
        for name in ctx.index.polecats_by_rig.get(rig_name, ()):
            agent = ctx.snap.agents[name]
            if ctx.hook(agent) is not None or session_ending(ctx, agent):
                busy += 1
            elif is_free_polecat(ctx, agent) or name in ctx.releases:
                free.append(name)  # idle, or released by this pass with no session to end
        busy_total += busy
        rig_left[rig_name] = rig_cap(ctx, rig) - busy
        idle[rig_name] = free
    return Capacity(
        town_left=town_cap(ctx) - busy_total,
        rig_left=rig_left,
        idle=idle,
        taken_names=set(ctx.snap.agents),
    )


def next_polecat(ctx: Pass, cap: Capacity, rig: str) -> tuple[str, bool]:
    """The polecat to use for a dispatch on `rig`: (name, must_create).

    Reuse the first idle one; otherwise the smallest free index, which is deterministic, so two
    passes racing over the same snapshot create the same agent, not two.
    """
    free = cap.idle.get(rig)
    if free:
        return free.pop(0), False
    index = 1
    while True:
        name = names.polecat_name(ctx.town.name, rig, index)
        if name not in cap.taken_names:
            cap.taken_names.add(name)
            return name, True
        index += 1


def excess_idle_polecats(ctx: Pass) -> list[str]:
    """Idle polecats beyond the caps, to be removed (highest names first, idle ones only)."""
    excess: list[str] = []
    kept_total = 0
    for rig_name, rig in ctx.index.rigs.items():
        polecats = [ctx.snap.agents[n] for n in ctx.index.polecats_by_rig.get(rig_name, ())]
        busy = [a for a in polecats if ctx.hook(a) is not None or session_ending(ctx, a)]
        idle = sorted(
            (a for a in polecats if is_free_polecat(ctx, a) and not session_ending(ctx, a)),
            key=_index_key,
        )
        allowed_idle = max(0, rig_cap(ctx, rig) - len(busy))
        excess.extend(a.name for a in idle[allowed_idle:])
        kept_total += len(busy) + min(len(idle), allowed_idle)
    # Town-wide cap: drop more idle ones (from the end) if the town is still above its cap.
    over = kept_total - town_cap(ctx)
    if over > 0:
        remaining = [
            n
            for rig_name in sorted(ctx.index.polecats_by_rig)
            for n in ctx.index.polecats_by_rig[rig_name]
            if n not in excess
            and is_free_polecat(ctx, ctx.snap.agents[n])
            and not session_ending(ctx, ctx.snap.agents[n])
        ]
        remaining.sort(key=lambda n: _index_key(ctx.snap.agents[n]))
        excess.extend(remaining[::-1][:over])
    return excess


def _index_key(agent: Agent) -> tuple[int, str]:
    tail = agent.name.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, agent.name)
