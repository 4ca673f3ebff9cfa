"""One Event per step of a unit of work: no Normal Event repeats what another one says."""

from __future__ import annotations

from collections import Counter

from gastown.model import BeadPhase, ConvoyPhase
from gastown.reconcile.writes import Kind
from tests.unit.reconcile.builders import World, bead, convoy, seconds, task, town
from tests.unit.reconcile.test_acceptance import close_via_review, finish, review


def _events(w: World) -> Counter[tuple[str, str, str]]:
    return Counter((str(e.kind), e.name, e.reason) for e in w.events)


def test_a_convoys_tasks_are_announced_in_one_event_on_the_convoy() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a"), task("c")]))
    w.step()
    assert {"c-a", "c-b", "c-c"} <= set(w.beads)
    materialised = [e for e in w.events if e.reason == "TaskMaterialised"]
    assert [(e.kind, e.name) for e in materialised] == [(Kind.CONVOY, "c")]
    assert "3 tasks" in materialised[0].message
    assert all(name in materialised[0].message for name in ("c-a", "c-b", "c-c"))


def test_review_requested_is_told_once_on_the_source_naming_its_merge_request() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    requested = [e for e in w.events if e.reason == "ReviewRequested"]
    assert [(e.kind, e.name) for e in requested] == [(Kind.BEAD, "a")]
    assert mr in requested[0].message
    assert not [e for e in w.events if e.name == mr]  # no creation Event on the MR itself


def test_a_merge_is_told_once_on_the_source_naming_the_merge_request_and_commit() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    review(w, mr, "merged")
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    merged = [e for e in w.events if e.reason == "Merged"]
    assert [(e.kind, e.name) for e in merged] == [(Kind.BEAD, "a")]
    assert mr in merged[0].message
    assert "c0ffee" in merged[0].message


def test_a_landing_merge_is_still_told_on_the_landing_merge_request() -> None:
    """A landing has no source bead to tell it: its own close keeps its Event."""
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    for _ in range(3):
        w.step(seconds(5))
    review(w, "c-land-1", "merged")
    w.step(seconds(5))
    assert w.convoys["c"].status.phase is ConvoyPhase.LANDED
    assert _events(w)[("Bead", "c-land-1", "Merged")] == 1


def test_events_per_bead_of_a_review_then_land_convoy() -> None:
    """Per bead: dispatched, review requested, the refinery dispatched, merged; plus a few
    Events of the convoy itself (tasks, phases, landing). Before: seven per bead."""
    keys = [f"t{i}" for i in range(4)]
    w = World.of(town(), convoy("c", [task(k) for k in keys]))
    w.step()
    w.step(seconds(5))
    for key in keys:
        close_via_review(w, f"c-{key}")
    for _ in range(3):
        w.step(seconds(5))
    review(w, "c-land-1", "merged")
    w.settle(advance=seconds(5))
    assert w.convoys["c"].status.phase is ConvoyPhase.LANDED
    per_bead = [n for (kind, name, _), n in _events(w).items() if name.startswith("c-t")]
    assert sum(per_bead) <= 4 * len(keys), _events(w)
    assert len(w.events) <= 4 * len(keys) + 8, _events(w)
