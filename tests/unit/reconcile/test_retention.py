"""Retention (`policy.retention.ttlSecondsAfterFinished`): finished convoys and standalone
finished issues are deleted after the TTL, on a controlled clock; what unfinished work needs is
kept; off by default; a town with it on decides the same with and without the summary."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gastown.model import Bead
from gastown.model.resources import OwnerReference
from gastown.reconcile.actions import DeleteFinished
from gastown.reconcile.retention import MAX_DELETES_PER_PASS
from gastown.reconcile.writes import Kind
from tests.unit.reconcile.builders import (
    T0,
    World,
    agent,
    bead,
    convoy,
    merge_request,
    seconds,
    town,
)
from tests.unit.reconcile.test_finished import check
from tests.unit.reconcile.test_properties import EVENTS, SETTINGS, act, build, dags

HOUR = 3600


def kept_for(ttl: int | None) -> dict[str, Any]:
    """Town policy with a retention TTL (None: the default, off)."""
    return {"retention": {"ttlSecondsAfterFinished": ttl}} if ttl is not None else {}


def at(hours: float) -> str:
    """A timestamp `hours` after T0."""
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def deletes(world: World) -> list[tuple[Kind, str]]:
    """What the next pass deletes (the clock is not advanced)."""
    return [(a.kind, a.name) for a in world.step() if isinstance(a, DeleteFinished)]


def owned_by(obj: Bead, kind: str, name: str) -> Bead:
    """The bead with an owner reference (as the operator creates merge requests and tasks)."""
    ref = OwnerReference(api_version="gastown.dev/v1alpha1", kind=kind, name=name, uid="u")
    meta = obj.metadata.model_copy(update={"owner_references": [ref]})
    return obj.model_copy(update={"metadata": meta})


def landed(name: str, hours: float, members: int = 0) -> Any:
    """A landed convoy of closed members (nothing left to do) that landed at T0 + hours."""
    return convoy(
        name,
        [],
        mode="review-and-merge",
        phase="Landed",
        total=members,
        closed=members,
        progress=f"{members}/{members}",
        landedAt=at(hours),
        startedAt=at(0),
        observedGeneration=1,
    )


def test_off_by_default_nothing_is_ever_deleted() -> None:
    world = World.of(town(), landed("c", 0), bead("x", phase="closed", closedAt=at(0)))
    world.now = T0 + timedelta(days=3650)
    assert deletes(world) == []


def test_a_settled_convoy_is_deleted_after_the_ttl_and_not_before() -> None:
    world = World.of(town(policy=kept_for(2 * HOUR)), landed("c", 1))
    world.now = T0 + timedelta(hours=3) - timedelta(seconds=1)
    assert deletes(world) == []
    world.now += timedelta(seconds=1)
    assert deletes(world) == [(Kind.CONVOY, "c")]
    assert "c" not in world.convoys


def test_a_standalone_finished_issue_is_deleted_after_the_ttl() -> None:
    world = World.of(
        town(policy=kept_for(HOUR)),
        bead("old", phase="closed", closedAt=at(0)),
        bead("failed", phase="failed", phaseSince=at(0)),
        bead("young", phase="closed", closedAt=at(0.5)),
        bead("open"),
    )
    world.now = T0 + timedelta(hours=1)
    assert sorted(deletes(world)) == [(Kind.BEAD, "failed"), (Kind.BEAD, "old")]
    assert "young" in world.beads
    assert "open" in world.beads


def test_what_unfinished_work_needs_is_kept() -> None:
    world = World.of(
        town(policy=kept_for(HOUR)),
        bead("dep", phase="closed", closedAt=at(0)),
        bead("waiting", depends_on=["dep"], phase="open"),
        bead("hooked", phase="closed", closedAt=at(0)),
        agent("a", hook="hooked", phase="idle"),
        bead("owner", phase="closed", closedAt=at(0)),
        owned_by(merge_request("owner-mr-1", "owner", phase="open"), "Bead", "owner"),
        landed("c", 0, members=1),
        bead("member", convoy="c", phase="closed", closedAt=at(0)),
        bead("busy-member", convoy="d", phase="closed", closedAt=at(0)),
        convoy("d", [], mode="review-and-merge", phase="InProgress"),
        bead("live-member", convoy="d"),
    )
    world.now = T0 + timedelta(hours=2)
    found = deletes(world)
    assert (Kind.CONVOY, "c") in found  # the convoy goes first; its member is then standalone
    gone = {name for _, name in found}
    assert gone.isdisjoint({"dep", "hooked", "owner", "owner-mr-1", "busy-member", "d"})
    assert "member" not in gone
    assert "member" in {name for _, name in deletes(world)}


def test_owned_beads_and_escalations_are_left_to_their_owners() -> None:
    world = World.of(
        town(policy=kept_for(HOUR)),
        owned_by(merge_request("x-mr-1", "x", phase="closed", closedAt=at(0)), "Bead", "x"),
        owned_by(bead("c-t1", convoy="c", phase="closed", closedAt=at(0)), "Convoy", "c"),
        bead("esc", type="escalation", phase="closed", closedAt=at(0)),
    )
    world.now = T0 + timedelta(hours=2)
    assert deletes(world) == []


def test_deletes_are_spread_over_passes() -> None:
    count = MAX_DELETES_PER_PASS + 5
    world = World.of(
        town(policy=kept_for(HOUR)),
        *(bead(f"b{i:04d}", phase="closed", closedAt=at(0)) for i in range(count)),
    )
    world.now = T0 + timedelta(hours=2)
    assert len(deletes(world)) == MAX_DELETES_PER_PASS
    assert len(deletes(world)) == 5
    assert world.beads == {}


@SETTINGS
@given(
    deps=dags(),
    mode=st.sampled_from(["review-then-land", "review-and-merge"]),
    strategy=st.sampled_from(["direct", "pr"]),
    loose=st.integers(0, 2),
    ttl=st.sampled_from([0, 60, 600]),
    events=st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 50)), max_size=30),
)
def test_random_towns_with_retention_decide_the_same_with_and_without_the_summary(
    deps: list[list[int]],
    mode: str,
    strategy: str,
    loose: int,
    ttl: int,
    events: list[tuple[str, int]],
) -> None:
    world = build(deps, mode, strategy, loose).world
    world.town = town(per_rig=2, total=3, strategy=strategy, policy=kept_for(ttl))
    check(world)
    for event, pick in events:
        act(world, event, pick)
        world.step(seconds(20 + pick))
        check(world)
        assert world.violations() == []
