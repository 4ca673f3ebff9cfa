"""Retention: finished convoys and beads are deleted a while after they finished (opt-in).

Like a Job's `ttlSecondsAfterFinished` (`policy.retention.ttlSecondsAfterFinished`, unset by
default: finished work is kept forever). A landed or failed convoy is deleted that long after
it finished; Kubernetes' garbage collector then deletes what it owns (its materialised task
beads and landing merge request, and in turn their merge requests and rework beads). A finished
issue that no convoy or bead owns is deleted that long after it closed or failed, once no
existing convoy counts it; its merge requests and rework go with it the same way.

What unfinished work still needs is kept, whatever its age: a dependency of an unfinished bead
(it would turn "missing"), a bead an agent is hooked to, the owner of an unfinished bead (the
garbage collector would take that bead too), a convoy with unfinished members. Deleting finished
work never causes it to be redone: task beads are only deleted with their convoy, merge requests
and rework only with their source, and nothing re-creates a user's issue. Escalations are kept.
At most `MAX_DELETES_PER_PASS` objects are deleted per pass (the loop passes again at once), so
turning retention on in an old town spreads the work over several passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from gastown.model import Convoy, ConvoyPhase
from gastown.reconcile.actions import DeleteFinished
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.finished import FinishedBead, expires, is_finished
from gastown.reconcile.writes import Kind

RETENTION_EXPIRED = "RetentionExpired"
MAX_DELETES_PER_PASS = 100
SETTLED = (ConvoyPhase.LANDED, ConvoyPhase.FAILED)


def convoy_finished_at(convoy: Convoy) -> datetime | None:
    """When a settled convoy finished: `landedAt`, else its latest condition transition."""
    if convoy.status.landed_at is not None:
        return aware(convoy.status.landed_at)
    times = [aware(c.last_transition_time) for c in convoy.status.conditions]
    return max(times) if times else None


def expire_finished(ctx: Pass) -> None:
    """Delete finished convoys and standalone finished issues past the TTL (if one is set)."""
    ttl = ctx.policy.retention.ttl_seconds_after_finished
    if ttl is None:
        return
    cutoff = ctx.now - timedelta(seconds=ttl)
    needed, owners = _still_needed(ctx)
    budget = MAX_DELETES_PER_PASS
    busy = ctx.busy_convoys()
    for name in sorted(ctx.snap.convoys):
        if budget <= 0:
            return
        convoy = ctx.snap.convoys[name]
        if convoy.status.phase not in SETTLED or convoy.metadata.deletion_timestamp is not None:
            continue
        finished_at = convoy_finished_at(convoy)
        if finished_at is None or finished_at > cutoff:
            continue
        if name in busy or ("Convoy", name) in owners or not ctx.free(Kind.CONVOY, name):
            continue
        _delete(ctx, Kind.CONVOY, name, f"convoy {name} finished more than {ttl}s ago")
        budget -= 1
    convoys = ctx.snap.convoys
    for finished_at, name, own in _expired(ctx, cutoff):
        if budget <= 0:
            return
        if name in needed or ("Bead", name) in owners or name in ctx.index.hooked:
            continue  # (hooked in the snapshot: even if this pass unhooks it, wait for that)
        if ctx.is_hooked(name):
            continue
        counted_by = ctx.index.convoy_of_record(name, own)
        if counted_by is not None and counted_by in convoys:
            continue  # counted by an existing convoy: it goes with (or after) the convoy
        if not ctx.free(Kind.BEAD, name):
            continue
        _delete(ctx, Kind.BEAD, name, f"bead {name} finished at {finished_at.isoformat()}")
        budget -= 1


def _still_needed(ctx: Pass) -> tuple[set[str], set[tuple[str, str]]]:
    """Beads unfinished work depends on, and (kind, name) of every owner of unfinished work."""
    needed: set[str] = set()
    owners: set[tuple[str, str]] = set()
    for bead in ctx.index.live.values():
        if is_finished(bead):
            continue  # a plain snapshot's live mapping holds every bead
        needed.update(bead.spec.depends_on)
        for ref in bead.metadata.owner_references:
            owners.add((ref.kind, ref.name))
    return needed, owners


def _expired(ctx: Pass, cutoff: datetime) -> Iterator[tuple[datetime, str, str | None]]:
    """(finishedAt, name, the convoy it names) of the finished issues retention may delete,
    finished at or before `cutoff`, oldest first: from the summary's sorted list, or (plain
    snapshots) from every bead."""
    finished = ctx.index.finished
    if finished is not None:
        records = finished.records
        for at, name in finished.expiry:
            if at > cutoff:
                return
            yield at, name, records[name].convoy
        return
    found: list[tuple[datetime, str, str | None]] = []
    for bead in ctx.snap.beads.values():
        if not is_finished(bead):
            continue
        record = FinishedBead.of(bead)
        if expires(record) and record.finished_at is not None and record.finished_at <= cutoff:
            found.append((record.finished_at, record.name, record.convoy))
    yield from sorted(found, key=lambda entry: entry[:2])


def _delete(ctx: Pass, kind: Kind, name: str, message: str) -> None:
    ctx.add(
        DeleteFinished(kind=kind, name=name, reason=RETENTION_EXPIRED, message=message),
        (kind, name),
    )
