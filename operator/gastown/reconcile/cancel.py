"""Cancel: a cancelled bead fails with reason Cancelled, releases its agent AND stops its pod.

The original only unhooked the agent, which kept its session running and spending credits.
"""

from __future__ import annotations

from gastown.model import BeadPhase
from gastown.reconcile.actions import WARNING
from gastown.reconcile.context import Pass
from gastown.reconcile.ops import release_hooked, transition
from gastown.reconcile.writes import Kind

CANCELLED = "Cancelled"


def apply_cancels(ctx: Pass) -> None:
    """Apply `spec.cancel` on every non-terminal bead (once: the bead becomes terminal)."""
    for name in ctx.index.cancels:
        bead = ctx.snap.beads[name]
        if not bead.spec.cancel or bead.status.phase.terminal or not ctx.free(Kind.BEAD, name):
            continue
        transition(
            ctx,
            bead,
            BeadPhase.FAILED,
            CANCELLED,
            "cancelled by the user",
            set={"assignee": None},
            event=WARNING,
        )
        release_hooked(ctx, bead, CANCELLED, stop_pod=True)
