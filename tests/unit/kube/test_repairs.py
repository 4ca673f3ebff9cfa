"""The adapter's side of repairs: the Town's bounded `lastRepairs`, the counter and the Event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from gastown.kube.repairs import (
    EVENT_REASON,
    MAX_REPAIRS,
    REPAIR_RETENTION,
    merge_repairs,
    new_repairs,
    publish_repairs,
    unwritten,
    with_repairs,
)
from gastown.model.town import Repair, TownStatus
from gastown.reconcile.writes import Emit, Kind

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def repair(code: str, at: datetime, subject: str = "b") -> Repair:
    """A repair found at `at`."""
    return Repair(code=code, subject=subject, message=f"{code} on {subject}", at=at)


def test_recent_repairs_are_kept_and_old_ones_expire() -> None:
    old = repair("HookMismatch", NOW - REPAIR_RETENTION - timedelta(seconds=1))
    recent = repair("OrphanPod", NOW - timedelta(minutes=5))
    found = repair("DuplicateHook", NOW)
    assert merge_repairs([old, recent], [found], NOW) == [recent, found]


def test_the_list_is_bounded_and_keeps_the_newest() -> None:
    previous = [repair("HookMismatch", NOW, subject=f"b{i}") for i in range(MAX_REPAIRS)]
    found = [repair("DuplicateHook", NOW, subject="new")]
    merged = merge_repairs(previous, found, NOW)
    assert len(merged) == MAX_REPAIRS
    assert merged[-1].subject == "new"
    assert merged[0].subject == "b1"


def test_status_carries_the_repairs_on_the_wire() -> None:
    status = with_repairs(TownStatus(), [], [repair("DuplicateHook", NOW)], NOW)
    wire = status.to_api()
    assert wire["lastRepairs"][0]["code"] == "DuplicateHook"
    assert wire["lastRepairs"][0]["at"].startswith("2026-05-01T12:00:00")


def _count(town: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "gastown_invariant_repairs_total", {"town": town, "code": code}
    )
    return value or 0.0


def test_publishing_counts_and_posts_one_warning_per_repair() -> None:
    emitted: list[Emit] = []

    async def emit(event: Emit) -> None:
        emitted.append(event)

    before = _count("unit-town", "DuplicateHook")
    found = [repair("DuplicateHook", NOW, "a"), repair("DuplicateHook", NOW, "b")]
    asyncio.run(publish_repairs("unit-town", found, emit))
    assert _count("unit-town", "DuplicateHook") == before + 2
    assert [(e.kind, e.name, e.type, e.reason) for e in emitted] == [
        (Kind.TOWN, "unit-town", "Warning", EVENT_REASON)
    ] * 2
    assert emitted[0].message.startswith("DuplicateHook: DuplicateHook on a")


def test_a_repair_whose_status_write_was_lost_is_carried_to_the_next_pass() -> None:
    lost = repair("OrphanPod", NOW - timedelta(seconds=5), "pod-g1")
    shown = repair("HookMismatch", NOW - timedelta(minutes=1))
    found = repair("DuplicateHook", NOW)
    wanted = merge_repairs([shown], new_repairs([lost], [found], [shown]), NOW)
    assert wanted == [shown, lost, found]
    assert unwritten(wanted, [shown]) == [lost, found]  # the write failed: both wait
    assert unwritten(wanted, wanted) == []  # written: nothing is carried
    assert new_repairs([found], [found], []) == [found]  # never twice
    assert new_repairs([lost], [], [shown, lost]) == []  # already on the Town
