"""The pure reconciler core of a town: facts, rules, actions and invariants.

`reconcile(snapshot, now)` decides the actions of one pass; `lower(actions)` turns them into the
small write vocabulary the Kubernetes adapter executes; `check_invariants(snapshot)` reports what
must never hold. Nothing here performs I/O, reads the clock or imports a Kubernetes client.
"""

from gastown.reconcile.actions import Action, lower
from gastown.reconcile.core import reconcile
from gastown.reconcile.invariants import check_invariants
from gastown.reconcile.snapshot import PodView, Snapshot
from gastown.reconcile.summary import agent_phase_counts, review_queue_lengths, work_bead_counts

__all__ = [
    "Action",
    "PodView",
    "Snapshot",
    "agent_phase_counts",
    "check_invariants",
    "lower",
    "reconcile",
    "review_queue_lengths",
    "work_bead_counts",
]
