"""Publishing the repairs a pass made of states that should never exist.

The pure reconciler reports each repair as a fact (`gastown.reconcile.repairs`); this adapter
makes it visible the way a violation is: the `gastown_invariant_repairs_total{town,code}` counter,
a Warning Event on the Town naming what was found, and the Town status's `lastRepairs`, which
keeps the recent ones for an hour (at most 20) so a glance at the Town shows them after the fact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from gastown.kube import metrics
from gastown.model.town import Repair, TownStatus
from gastown.reconcile.context import aware
from gastown.reconcile.writes import Emit, Kind

REPAIR_RETENTION = timedelta(hours=1)
"""How long a repair stays in the Town's status."""

MAX_REPAIRS = 20
"""At most this many repairs in the Town's status (the newest are kept)."""

EVENT_REASON = "InvariantRepaired"


def merge_repairs(
    previous: Sequence[Repair], found: Sequence[Repair], now: datetime
) -> list[Repair]:
    """The Town's `lastRepairs` after a pass: recent earlier ones, then this pass's, bounded."""
    horizon = aware(now) - REPAIR_RETENTION
    kept = [r for r in previous if r.at is not None and aware(r.at) > horizon]
    return (kept + list(found))[-MAX_REPAIRS:]


def new_repairs(
    carried: Sequence[Repair], found: Sequence[Repair], on_town: Sequence[Repair]
) -> list[Repair]:
    """Repairs to add to the Town: those of earlier passes whose write was lost, then this
    pass's, without any the Town already shows."""
    pending = [r for r in carried if r not in found] + list(found)
    return [r for r in pending if r not in on_town]


def unwritten(wanted: Sequence[Repair], on_town: Sequence[Repair]) -> list[Repair]:
    """Repairs of the status just built that the Town does not show (its write failed)."""
    return [r for r in wanted if r not in on_town]


def with_repairs(
    status: TownStatus, previous: Sequence[Repair], found: Sequence[Repair], now: datetime
) -> TownStatus:
    """`status` with its `lastRepairs` brought up to date."""
    return status.model_copy(update={"last_repairs": merge_repairs(previous, found, now)})


def repair_event(town: str, repair: Repair) -> Emit:
    """The Warning Event about one repair, on the Town."""
    return Emit(
        kind=Kind.TOWN,
        name=town,
        type="Warning",
        reason=EVENT_REASON,
        message=f"{repair.code}: {repair.message} (repaired)",
    )


async def publish_repairs(
    town: str, repairs: Sequence[Repair], emit: Callable[[Emit], Awaitable[object]]
) -> None:
    """Count every repair and post its Warning Event (best effort, like every Event)."""
    for repair in repairs:
        metrics.REPAIRS.labels(town, repair.code).inc()
        await emit(repair_event(town, repair))
