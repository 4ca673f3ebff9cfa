"""Gauges for alerting that the Town status alone does not give as numbers.

Set after every pass from the pass's snapshot and status; pure reads, no API call.
"""

from __future__ import annotations

from gastown.kube import metrics
from gastown.model import ConvoyPhase
from gastown.model.town import TownStatus
from gastown.reconcile.snapshot import Snapshot

WAITING_TO_LAND = (ConvoyPhase.READY_TO_LAND, ConvoyPhase.LANDING)


def landing_attempts(snapshot: Snapshot) -> int:
    """The most landing attempts of any convoy still waiting to land (0 if none is)."""
    return max(
        (
            convoy.status.landing.attempts
            for convoy in snapshot.convoys.values()
            if convoy.status.phase in WAITING_TO_LAND
        ),
        default=0,
    )


def export_alert_gauges(town: str, snapshot: Snapshot, status: TownStatus) -> None:
    """The circuit breaker and the landing retries of one town."""
    metrics.BREAKER_OPEN.labels(town).set(1 if status.circuit_breaker.open else 0)
    metrics.LANDING_ATTEMPTS.labels(town).set(landing_attempts(snapshot))
