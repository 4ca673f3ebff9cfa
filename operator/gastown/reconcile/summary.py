"""Pure summaries of a town for its status: counts by phase, queue lengths, one line."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gastown.model import AgentRole, BeadPhase, BeadType
from gastown.reconcile.snapshot import Snapshot

_PHASE_KEYS = {
    BeadPhase.OPEN: "open",
    BeadPhase.IN_PROGRESS: "inProgress",
    BeadPhase.IN_REVIEW: "inReview",
    BeadPhase.CLOSED: "closed",
    BeadPhase.FAILED: "failed",
}


def town_status_counts(snapshot: Snapshot) -> dict[str, Any]:
    """camelCase `beads`, `agents`, `queue` (open MRs per rig) and `summary` for Town status."""
    beads: Counter[str] = Counter({key: 0 for key in _PHASE_KEYS.values()})
    queue: Counter[str] = Counter()
    for bead in snapshot.beads.values():
        if bead.spec.type is BeadType.ESCALATION:
            continue
        beads[_PHASE_KEYS[bead.status.phase]] += 1
        if bead.spec.type is BeadType.MERGE_REQUEST and bead.status.phase is BeadPhase.OPEN:
            queue[bead.spec.rig or ""] += 1
    agents: Counter[str] = Counter({"idle": 0, "working": 0, "stalled": 0})
    for agent in snapshot.agents.values():
        if agent.spec.role is not AgentRole.MAYOR:
            agents[agent.status.phase.value] += 1
    summary = (
        f"{beads['inProgress']} in progress, {beads['inReview']} in review, "
        f"{beads['open']} open, {beads['closed']} closed, {beads['failed']} failed; "
        f"{agents['working']} agents working"
    )
    if snapshot.town.status.circuit_breaker.open:
        summary = "dispatch paused (circuit breaker); " + summary
    return {
        "beads": dict(beads),
        "agents": dict(agents),
        "queue": dict(sorted(queue.items())),
        "summary": summary[:256],
    }
