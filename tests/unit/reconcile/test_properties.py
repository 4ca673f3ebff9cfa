"""Property tests: a small simulated town under random external events.

After every pass no invariant is violated, no bead is held by two live agents, finished work
is never redone, and with fair behaviour every bead closes and every convoy lands or fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown.model import AgentPhase, AgentRole, BeadPhase, ConvoyPhase
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.writes import Kind
from tests.unit.reconcile.builders import World, bead, convoy, seconds, task, town

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EVENTS = ("done", "failed", "silent", "pod-death", "cancel", "cap", "pr", "request-changes")


@st.composite
def dags(draw: st.DrawFn) -> list[list[int]]:
    """Dependencies of n tasks on earlier tasks (always acyclic)."""
    n = draw(st.integers(min_value=1, max_value=5))
    return [
        sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=2)))) if i else []
        for i in range(n)
    ]


@dataclass
class Scenario:
    """What a generated example sets up."""

    world: World
    beads: list[str]


def build(deps: list[list[int]], mode: str, strategy: str, loose: int) -> Scenario:
    """A convoy of tasks with dependencies plus `loose` beads outside any convoy."""
    tasks = [task(f"k{i}", *(f"k{d}" for d in ds)) for i, ds in enumerate(deps)]
    world = World.of(
        town(per_rig=2, total=3, strategy=strategy),
        convoy("c", tasks, mode=mode),
        *(bead(f"x{i}") for i in range(loose)),
    )
    names = [f"c-k{i}" for i in range(len(deps))] + [f"x{i}" for i in range(loose)]
    return Scenario(world, names)


def act(world: World, event: str, pick: int) -> None:
    """Apply one external event to some agent or bead."""
    hooked = sorted(
        (a for a in world.agents.values() if a.spec.hook and a.status.phase is AgentPhase.WORKING),
        key=lambda a: a.name,
    )
    target = hooked[pick % len(hooked)] if hooked else None
    if event == "cancel":
        live = sorted(
            n
            for n, b in world.beads.items()
            if b.spec.type.value == "issue" and not b.status.phase.terminal
        )
        if live:
            world.patch_spec(Kind.BEAD, live[pick % len(live)], {"cancel": True})
        return
    if event == "cap":
        per_rig = 1 + pick % 3
        world.town = world.town.model_copy(
            update={
                "spec": world.town.spec.model_copy(
                    update={
                        "limits": world.town.spec.limits.model_copy(
                            update={"max_polecats_per_rig": per_rig}
                        )
                    }
                )
            }
        )
        return
    if event == "pr":
        for name, b in sorted(world.beads.items()):
            if (
                b.status.review
                and b.status.review.pr_url
                and b.status.phase is BeadPhase.IN_PROGRESS
            ):
                world.pr_result(name, ("merged", "closed", "unknown", "open")[pick % 4], "m1")
        return
    if target is None:
        return
    world.heartbeat(target.name)
    refinery = target.spec.role is AgentRole.REFINERY
    if event == "done":
        if refinery:
            strategy = world.town.spec.rigs[0].merge_strategy.value
            if strategy == "pr":
                world.report(target.name, "pr-opened", prUrl=f"https://git.test/pr/{pick}")
            else:
                world.report(target.name, "merged", mergeCommit=f"c{pick}")
        else:
            world.report(target.name, "done", summary="ok")
    elif event == "failed":
        world.report(target.name, "failed", message="boom")
    elif event == "request-changes" and refinery:
        world.report(target.name, "request-changes", feedback="again")
    elif event == "pod-death":
        world.end_pod(target.name, phase="Failed", exit_code=137, reason="OOMKilled")


def check_pass(world: World, closed: set[str]) -> None:
    """Properties that must hold after every pass."""
    assert world.violations() == [], world.violations()
    for name in closed:
        assert world.beads[name].status.phase is BeadPhase.CLOSED, name
    dispatched = [a.bead for a in world.history[-1] if isinstance(a, DispatchAgent)]
    assert not set(dispatched) & closed, "finished work was dispatched again"
    assert len(dispatched) == len(set(dispatched))
    working: dict[str, str] = {}
    for agent in world.agents.values():
        if agent.spec.hook and agent.status.phase is AgentPhase.WORKING:
            assert agent.spec.hook not in working, f"{agent.spec.hook} held twice"
            working[agent.spec.hook] = agent.name
    closed.update(n for n, b in world.beads.items() if b.status.phase is BeadPhase.CLOSED)


@SETTINGS
@given(
    deps=dags(),
    mode=st.sampled_from(["review-then-land", "review-and-merge"]),
    strategy=st.sampled_from(["direct", "pr"]),
    loose=st.integers(0, 2),
    events=st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 50)), max_size=40),
)
def test_random_events_never_break_invariants(
    deps: list[list[int]], mode: str, strategy: str, loose: int, events: list[tuple[str, int]]
) -> None:
    scenario = build(deps, mode, strategy, loose)
    world = scenario.world
    closed: set[str] = set()
    for event, pick in events:
        act(world, event, pick)
        world.step(seconds(20 + pick))
        check_pass(world, closed)


@SETTINGS
@given(
    deps=dags(),
    mode=st.sampled_from(["review-then-land", "review-and-merge"]),
    strategy=st.sampled_from(["direct", "pr"]),
    loose=st.integers(0, 2),
)
def test_fair_behaviour_closes_every_bead_and_settles_every_convoy(
    deps: list[list[int]], mode: str, strategy: str, loose: int
) -> None:
    scenario = build(deps, mode, strategy, loose)
    world = scenario.world
    closed: set[str] = set()
    for step in range(400):
        act(world, "done", step)
        act(world, "pr", 0)  # PRs get merged
        world.step(seconds(30))
        check_pass(world, closed)
        if world.convoys["c"].status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED) and all(
            world.beads[n].status.phase is BeadPhase.CLOSED for n in scenario.beads
        ):
            break
    assert all(world.beads[n].status.phase is BeadPhase.CLOSED for n in scenario.beads)
    assert world.convoys["c"].status.phase is ConvoyPhase.LANDED
