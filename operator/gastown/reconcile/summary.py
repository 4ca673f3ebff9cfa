"""Pure counts of a town, shared by the Town status (the adapter) and `kubectl gastown status`.

Work beads (issues and rework) are counted by phase; merge requests are the review queue and
escalations are counted apart, so "open" means work waiting for an agent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gastown.model import Agent, AgentPhase, Bead, BeadPhase, BeadType

WORK_TYPES = (BeadType.ISSUE, BeadType.REWORK)


def work_bead_counts(beads: Iterable[Bead]) -> Counter[BeadPhase]:
    """Issue and rework beads by phase."""
    return Counter(bead.status.phase for bead in beads if bead.spec.type in WORK_TYPES)


def agent_phase_counts(agents: Iterable[Agent]) -> Counter[AgentPhase]:
    """Agents (all roles) by phase."""
    return Counter(agent.status.phase for agent in agents)


def review_queue_lengths(beads: Iterable[Bead]) -> dict[str, int]:
    """Merge requests not yet terminal, per rig (sorted by rig)."""
    queue: Counter[str] = Counter(
        bead.spec.rig or ""
        for bead in beads
        if bead.spec.type is BeadType.MERGE_REQUEST and not bead.status.phase.terminal
    )
    return dict(sorted(queue.items()))
