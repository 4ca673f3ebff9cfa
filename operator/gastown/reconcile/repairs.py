"""Repairs of states that should never exist, recorded as facts of the pass.

Some rules repair a state no correct run produces (two agents hooked to one bead, a hook on a
deleted bead, a pod whose agent is gone). The invariant check runs after the pass, when the state
is already gone, so each such rule records a `Repair` here; the adapter publishes it exactly like
a violation (a counter, a Warning Event, the Town's `lastRepairs`). A repair is recorded only for
a state read from the snapshot: what this pass itself decided is never reported as found.
"""

from __future__ import annotations

from gastown.model import BeadPhase
from gastown.model.town import Repair
from gastown.reconcile.context import Pass
from gastown.reconcile.invariants import (
    DUPLICATE_HOOK,
    HOOK_ON_MISSING,
    HOOK_ON_TERMINAL,
    ORPHAN_POD,
)

HOOK_MISMATCH = "HookMismatch"
ASSIGNEE_WITHOUT_HOOK = "AssigneeWithoutHook"

REPAIR_CODES = (
    DUPLICATE_HOOK,
    HOOK_ON_MISSING,
    HOOK_ON_TERMINAL,
    HOOK_MISMATCH,
    ORPHAN_POD,
    ASSIGNEE_WITHOUT_HOOK,
)
"""Every code a repair can carry (the dashboards and alerts key on them)."""


def record_repair(ctx: Pass, code: str, subject: str, message: str) -> None:
    """Add a repair fact to the pass (bounded like a violation's fields)."""
    ctx.repairs.append(Repair(code=code, subject=subject[:253], message=message[:1024], at=ctx.now))


def record_hook_repair(ctx: Pass, agent: str, hook: str) -> None:
    """The agent's hook is released: record what was wrong with it, judged on the snapshot.

    Nothing is recorded when the snapshot's hook was sound and only this pass's own decisions
    made it stale (a bead this pass closed, say): that is ordinary work, not a repair.
    """
    phase = ctx.index.phases.get(hook)
    assignee = ctx.index.assignees.get(hook)
    hooked = ctx.index.hooked.get(hook, [])
    if phase is None:
        record_repair(
            ctx, HOOK_ON_MISSING, agent, f"agent {agent} was hooked to missing bead {hook}"
        )
    elif phase is BeadPhase.CLOSED or phase is BeadPhase.FAILED:
        record_repair(
            ctx, HOOK_ON_TERMINAL, agent, f"agent {agent} was hooked to {phase.value} bead {hook}"
        )
    elif len(hooked) > 1 and assignee != agent and assignee in hooked:
        record_repair(
            ctx,
            DUPLICATE_HOOK,
            hook,
            f"bead {hook} had {len(hooked)} agents hooked ({', '.join(sorted(hooked))}); "
            f"the hook of {agent} was cleared, {assignee} keeps it",
        )
    elif phase is not BeadPhase.IN_PROGRESS or assignee != agent:
        record_repair(
            ctx,
            HOOK_MISMATCH,
            agent,
            f"agent {agent} was hooked to {phase.value} bead {hook} "
            f"assigned to {assignee or 'nobody'}",
        )
