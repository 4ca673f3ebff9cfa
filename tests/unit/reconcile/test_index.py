"""The derived index: every bucket equals its naive definition over the snapshot.

Rules iterate buckets instead of every bead or agent (that is what keeps a pass over 10,000 beads
cheap), so a bucket that misses an object silently skips a rule for it. These tests recompute
each bucket the slow, obvious way on random towns under random events and compare.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gastown.model import AgentPhase, AgentRole, BeadPhase, BeadType
from gastown.reconcile.dag import cyclic_nodes
from gastown.reconcile.snapshot import Index, Snapshot
from tests.unit.reconcile.builders import World, bead, convoy, seconds, town
from tests.unit.reconcile.test_properties import EVENTS, SETTINGS, act, build, dags

TERMINAL = (BeadPhase.CLOSED, BeadPhase.FAILED)


def naive_check(snap: Snapshot) -> None:
    """Compare every bucket of a fresh index with its definition."""
    index = Index(snap)
    beads, agents = snap.beads, snap.agents
    assert index.phases == {n: b.status.phase for n, b in beads.items()}
    live = sorted(n for n, b in beads.items() if b.status.phase not in TERMINAL)
    is_mr = {
        n: b.spec.type is BeadType.MERGE_REQUEST and b.spec.merge_request is not None
        for n, b in beads.items()
    }
    work = {n: b.spec.type in (BeadType.ISSUE, BeadType.REWORK) for n, b in beads.items()}
    assert index.live_mrs == [n for n in live if is_mr[n]]
    reviews = {n: b.status.review for n, b in beads.items()}
    assert index.pr_mrs == [
        n for n in live if is_mr[n] and (r := reviews[n]) is not None and r.pr_url is not None
    ]
    assert index.cancels == [n for n in live if beads[n].spec.cancel]
    assert index.in_review == [n for n in live if beads[n].status.phase is BeadPhase.IN_REVIEW]
    assert Counter(index.holders) == Counter(
        b.status.assignee
        for b in beads.values()
        if b.status.phase is BeadPhase.IN_PROGRESS and b.status.assignee is not None
    )
    unassigned_open = {
        n
        for n in live
        if beads[n].status.phase is BeadPhase.OPEN and beads[n].status.assignee is None
    }
    assert sorted(index.open_work) == sorted(
        (n, beads[n].spec.rig, beads[n].spec.depends_on)
        for n in unassigned_open
        if work[n] and not beads[n].spec.cancel and beads[n].metadata.deletion_timestamp is None
    )
    for n in index.live_mrs:
        spec = beads[n].spec.merge_request
        assert spec is not None
        review = reviews[n]
        assert index.mr_facts[n] == (
            spec.source_bead,
            spec.landing,
            beads[n].spec.rig or "",
            beads[n].metadata.creation_timestamp,
            None if review is None else review.pr_url,
            review is not None and len(review.rework) > 0,
        )
    assert set(index.mr_facts) == set(index.live_mrs)
    assert index.active_work == [n for n in live if work[n] and n not in unassigned_open]
    graph = {n: b.spec.depends_on for n, b in beads.items() if b.spec.depends_on}
    if index.finished is not None:
        # With a summary: the live beads' edges and every finished bead's they reach.
        reach = {n for n in graph if beads[n].status.phase not in TERMINAL}
        stack = list(reach)
        while stack:
            for dep in graph.get(stack.pop(), ()):
                if dep not in reach:
                    reach.add(dep)
                    stack.append(dep)
        graph = {n: deps for n, deps in graph.items() if n in reach}
    assert index.graph == graph
    for name, b in beads.items():
        listed = [c for c in sorted(snap.convoys) if name in snap.convoys[c].spec.beads]
        own = b.spec.convoy if b.spec.type is BeadType.ISSUE else None
        assert index.convoy_name(b) == (own or (listed[0] if listed else None))
    assert index.assignees == {
        n: b.status.assignee for n, b in beads.items() if b.status.assignee is not None
    }
    for n, a in agents.items():
        activity = a.status.activity
        assert index.agent_facts[n] == (
            a.spec.role,
            a.spec.hook,
            a.spec.generation,
            a.status.phase,
            a.status.dispatched_at,
            activity.generation,
            activity.last_heartbeat_at,
            activity.last_event_at,
        )
    assert set(index.agent_facts) == set(agents)
    workers = sorted(n for n, a in agents.items() if a.spec.role is not AgentRole.MAYOR)
    assert index.workers == workers
    assert index.hooked_workers == [n for n in workers if agents[n].spec.hook is not None]
    assert index.working == [
        n for n in index.hooked_workers if agents[n].status.phase is AgentPhase.WORKING
    ]
    assert index.parked == [
        n
        for n in index.hooked_workers
        if agents[n].status.phase is not AgentPhase.WORKING
        and agents[n].metadata.deletion_timestamp is None
    ]
    assert index.unhooked_idle == [
        n
        for n in workers
        if agents[n].spec.hook is None
        and agents[n].status.phase is AgentPhase.IDLE
        and agents[n].metadata.deletion_timestamp is None
    ]
    assert index.unhooked_working == [
        n
        for n in workers
        if agents[n].spec.hook is None and agents[n].status.phase is AgentPhase.WORKING
    ]
    assert index.reporting == [
        n
        for n in workers
        if any(r.seq > agents[n].status.applied_report_seq for r in agents[n].status.reports)
    ]


@SETTINGS
@given(
    deps=dags(),
    mode=st.sampled_from(["review-then-land", "review-and-merge"]),
    strategy=st.sampled_from(["direct", "pr"]),
    loose=st.integers(0, 2),
    events=st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 50)), max_size=30),
)
def test_buckets_match_their_definitions_under_random_events(
    deps: list[list[int]], mode: str, strategy: str, loose: int, events: list[tuple[str, int]]
) -> None:
    world = build(deps, mode, strategy, loose).world
    naive_check(world.snapshot())
    for event, pick in events:
        act(world, event, pick)
        world.step(seconds(20 + pick))
        naive_check(world.snapshot())


def test_listed_beads_belong_to_the_first_listing_convoy_unless_they_name_their_own() -> None:
    world = World.of(
        town(),
        convoy("b", [], beads=["x", "y"]),
        convoy("a", [], beads=["y"]),
        bead("x"),
        bead("y"),
        bead("z", convoy="b"),
    )
    snap = world.snapshot()
    naive_check(snap)
    index = snap.index
    assert index.convoy_name(snap.beads["x"]) == "b"
    assert index.convoy_name(snap.beads["y"]) == "a"
    assert index.convoy_name(snap.beads["z"]) == "b"
    assert index.members["b"] == ["z", "x", "y"]


def test_cycle_fast_path_agrees_with_kahn() -> None:
    # No edge between two keys: no cycle (the fast path); any such edge: the full algorithm.
    assert cyclic_nodes({"a": ["x"], "b": ["x", "y"]}) == set()
    assert cyclic_nodes({"a": ["a"]}) == {"a"}
    assert cyclic_nodes({"a": ["b"], "b": ["a"], "c": ["a"], "d": ["x"]}) == {"a", "b", "c"}
