"""The finished-bead summary: maintained incrementally it equals one built from scratch, and a
pass over a snapshot that carries it decides exactly what a pass over every bead decides.

The adapter hands the core only live beads as models plus the summary (see
`gastown.reconcile.finished`); rules and invariants read finished beads through it. A summary
that drifts from its definition, or a rule that reads it wrongly, would skip or redo work, so
these tests compare both ways on random towns under random events, including events the
simulated world does not produce by itself (deleting finished beads, as retention does, and
beads leaving a finished phase).
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from gastown.model import Bead, BeadPhase
from gastown.reconcile import Snapshot, check_invariants, reconcile
from gastown.reconcile.context import Pass
from gastown.reconcile.convoys import listed_names, quiet_convoys
from gastown.reconcile.finished import (
    BeadMap,
    FinishedBead,
    FinishedBeads,
    FinishedView,
    LayeredDict,
)
from gastown.reconcile.ratelimits import rate_limit_state
from tests.unit.reconcile.builders import T0, World, bead, convoy, seconds, town
from tests.unit.reconcile.test_properties import EVENTS, SETTINGS, act, build, dags


def plain(snap: Snapshot, world: World) -> Snapshot:
    """The same state with every bead in one plain mapping (the index sweeps them all)."""
    return Snapshot(
        town=snap.town,
        beads=dict(world.beads),
        convoys=snap.convoys,
        agents=snap.agents,
        pods=snap.pods,
        verdicts=snap.verdicts,
        faults=snap.faults,
    )


def facts(view: FinishedView) -> tuple[object, ...]:
    """Everything a view says, with records compared by their facts (not their payload)."""
    records = {
        name: (
            r.phase,
            r.type,
            r.convoy,
            r.source,
            r.landing,
            r.rework_source,
            r.assignee,
            r.deps,
            r.failed_at,
            r.rate_limited_at,
            r.spend,
            r.uid,
        )
        for name, r in view.records.items()
    }
    return (
        records,
        {c: dict(m) for c, m in view.named.items()},
        dict(view.by_source),
        view.failures,
        view.rate_limited,
        {p: n for p, n in view.work_counts.items() if n},
        set(view.spent),
    )


def check(world: World) -> None:
    """The incremental summary equals a fresh one; both kinds of snapshot decide the same."""
    snap = world.snapshot()
    assert isinstance(snap.beads, BeadMap)
    listed = {name: listed_names(c) for name, c in world.convoys.items()}
    scratch = FinishedBeads.build(world.beads.values(), listed)
    assert facts(snap.beads.finished) == facts(scratch.view())
    assert set(snap.beads) == set(world.beads)
    assert len(snap.beads) == len(world.beads)
    for name, obj in world.beads.items():
        assert name in snap.beads
        assert snap.beads[name] == obj
    full = plain(snap, world)
    assert reconcile(snap, world.now) == reconcile(full, world.now)
    again = world.snapshot()  # a second pass on the same objects reuses memoised tallies
    assert reconcile(again, world.now) == reconcile(plain(again, world), world.now)
    assert check_invariants(snap, world.now) == check_invariants(full, world.now)


def disturb(world: World, kind: str, pick: int) -> None:
    """Events outside the simulated world's repertoire."""
    finished = sorted(n for n, b in world.beads.items() if b.status.phase.terminal)
    if not finished:
        return
    name = finished[pick % len(finished)]
    if kind == "delete":  # as retention or a user does
        del world.beads[name]
    else:  # a finished bead seen in another phase (a user edit of its status)
        old = world.beads[name]
        status = old.status.model_copy(update={"phase": BeadPhase.OPEN})
        world.beads[name] = old.model_copy(update={"status": status})


@SETTINGS
@given(
    deps=dags(),
    mode=st.sampled_from(["review-then-land", "review-and-merge"]),
    strategy=st.sampled_from(["direct", "pr"]),
    loose=st.integers(0, 2),
    events=st.lists(
        st.tuples(st.sampled_from((*EVENTS, "delete", "reopen")), st.integers(0, 50)),
        max_size=30,
    ),
)
def test_summary_matches_scratch_and_passes_match_plain_snapshots(
    deps: list[list[int]], mode: str, strategy: str, loose: int, events: list[tuple[str, int]]
) -> None:
    world = build(deps, mode, strategy, loose).world
    # Members by every route: beads that name the convoy without being its tasks, and a second
    # convoy that lists beads by name (one of them missing).
    world.put(bead("y0", convoy="c"))
    world.put(convoy("d", [], beads=["x0", "y0", "missing"], mode="review-and-merge"))
    check(world)
    for event, pick in events:
        if event in ("delete", "reopen"):
            disturb(world, event, pick)
        else:
            act(world, event, pick)
        world.step(seconds(20 + pick))
        check(world)


def test_progress_of_listed_and_named_members_with_some_finished() -> None:
    world = World.of(
        town(),
        convoy("c", [], beads=["x", "y", "gone"]),
        bead("x", phase="closed"),
        bead("y"),
        bead("z", convoy="c", phase="failed"),
        bead("w", convoy="c", phase="closed"),
    )
    world.step(seconds(1))
    status = world.convoys["c"].status
    assert (status.total, status.closed, status.failed) == (5, 2, 1)
    check(world)


def test_a_finished_bead_keeps_its_name_taken_and_decodes_from_its_raw_form() -> None:
    done = bead("done", phase="closed")
    raw = json.loads(done.model_dump_json(by_alias=True, exclude_none=True))
    raw["metadata"]["managedFields"] = [{"manager": "x"}]
    summary = FinishedBeads()
    summary.add(done, raw)
    record = summary.records["done"]
    assert isinstance(record.payload, bytes)
    assert record.bead() == done
    beads = BeadMap({}, summary.view())
    assert "done" in beads
    assert beads.get("done") == done
    assert beads.get("nope") is None
    summary.discard("done")
    assert "done" in beads, "a view never changes after it was handed out"
    assert "done" not in BeadMap({}, summary.view())


def test_views_are_reused_until_something_changes() -> None:
    summary = FinishedBeads.build([bead("a", phase="closed")])
    view = summary.view()
    assert summary.view() is view
    summary.add(bead("b", phase="failed"))
    assert summary.view() is not view
    assert set(summary.view().records) == {"a", "b"}


def test_breaker_windows_count_finished_failures_by_bisection() -> None:
    world = World.of(town(), *(bead(f"f{i}", phase="failed") for i in range(3)))
    now = world.now
    for i, name in enumerate(sorted(world.beads)):
        old = world.beads[name]
        status = old.status.model_copy(update={"last_failure_at": now - timedelta(minutes=i * 20)})
        world.beads[name] = old.model_copy(update={"status": status})
    snap = world.snapshot()
    assert len(snap.index.finished_failures) == 3
    check(world)


def _record(name: str) -> FinishedBead:
    return FinishedBead.of(bead(name, phase="closed"))


def test_records_know_their_convoy_route() -> None:
    assert _record("a").convoy is None
    assert FinishedBead.of(bead("b", convoy="c", phase="closed")).convoy == "c"
    assert isinstance(_record("a").bead(), Bead)


def _landed_world() -> World:
    """A landed convoy whose three members are closed (one named, two listed)."""
    world = World.of(
        town(),
        convoy(
            "c",
            [],
            beads=["x", "y"],
            mode="review-and-merge",
            phase="Landed",
            total=3,
            closed=3,
            failed=0,
            progress="3/3",
            startedAt="2026-01-01T00:00:00Z",
            observedGeneration=1,
        ),
        bead("x", phase="closed"),
        bead("y", phase="closed"),
        bead("z", convoy="c", phase="closed"),
    )
    assert world.step(seconds(1)) == []
    assert world.violations() == []
    assert "c" in world.snapshot().beads.finished.quiet["pass"]  # type: ignore[attr-defined]
    return world


def _progress(world: World) -> tuple[int, int, int]:
    status = world.convoys["c"].status
    return (status.total, status.closed, status.failed)


def test_a_settled_convoy_is_skipped_until_a_member_changes() -> None:
    world = _landed_world()
    assert world.step(seconds(1)) == []  # skipped: nothing changed
    del world.beads["z"]  # deleted (retention, or a user)
    check(world)
    world.step(seconds(1))
    assert _progress(world) == (2, 2, 0)
    check(world)


def test_a_settled_convoy_sees_a_member_fail_or_come_back_to_life() -> None:
    world = _landed_world()
    old = world.beads["x"]
    world.beads["x"] = old.model_copy(
        update={"status": old.status.model_copy(update={"phase": BeadPhase.FAILED})}
    )
    world.step(seconds(1))
    assert _progress(world) == (3, 2, 1)
    assert world.step(seconds(1)) == []  # the written convoy is found quiet again
    world.put(bead("w", convoy="c"))  # a new live member: the convoy is busy again
    check(world)
    world.step(seconds(1))
    assert _progress(world) == (4, 2, 1)
    check(world)


def test_the_invariant_check_skips_only_what_it_checked() -> None:
    world = _landed_world()
    assert world.violations() == []
    # The same convoy object, now with a member gone: the check must look again.
    del world.beads["y"]
    snap = world.snapshot()
    assert [v.code for v in check_invariants(snap, world.now)] == ["ConvoyProgressMismatch"]


def test_no_settled_convoy_is_skipped_while_the_pass_moves_a_finished_bead() -> None:
    world = _landed_world()
    ctx = Pass(world.snapshot(), world.now)
    assert quiet_convoys(ctx, "pass") == {"c"}
    ctx.plan_phase("z", BeadPhase.OPEN)
    assert quiet_convoys(ctx, "pass") == set()


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=40))
def test_layered_copies_equal_the_dict_and_never_change(ops: list[tuple[bool, int]]) -> None:
    layered: LayeredDict[int] = LayeredDict()
    plain_dict: dict[str, int] = {}
    views = []
    # Enough changes before the random ones to fold the delta into a new base at least once.
    for i in range(1500):
        layered.set(f"k{i}", i)
        plain_dict[f"k{i}"] = i
        if i % 500 == 0:
            views.append((layered.view(), dict(plain_dict)))
    for add, key in ops:
        if add:
            layered.set(f"k{key}", -key)
            plain_dict[f"k{key}"] = -key
        else:
            layered.pop(f"k{key}")
            plain_dict.pop(f"k{key}", None)
        views.append((layered.view(), dict(plain_dict)))
    for view, expected in views:
        assert dict(view.items()) == expected
        assert len(view) == len(expected)
        for key in ("k1", "k5", "k699", "k59"):
            assert (key in view) == (key in expected)
            assert view.get(key) == expected.get(key)


def test_rate_limit_state_counts_finished_endings_by_bisection() -> None:
    def hold(minutes_ago: float, until_in: float) -> dict[str, str]:
        at = T0 - timedelta(minutes=minutes_ago)
        until = T0 + timedelta(minutes=until_in)
        return {"at": at.isoformat(), "until": until.isoformat(), "count": "1"}

    world = World.of(
        town(),
        bead("held", phase="open", rateLimited=hold(1, 5)),
        bead("done-recent", phase="closed", rateLimited=hold(2, -1)),
        bead("done-old", phase="closed", rateLimited=hold(600, -500)),
        bead("failed-future", phase="failed", rateLimited=hold(-3, 10)),
    )
    snap = world.snapshot()
    policy = snap.town.spec.policy.rate_limits
    state = rate_limit_state(snap, policy, world.now)
    assert state == rate_limit_state(plain(snap, world), policy, world.now)
    assert (state.held_beads, state.recent) == (1, 3)
    check(world)
