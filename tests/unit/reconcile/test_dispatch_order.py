"""A dispatch creates its pod right after the agent's claim; the records follow the pod.

The order matters for dispatch latency (a burst creates pods at the API server's pace) and for
safety: the claim (Agent hook and generation) is the only state the pod needs, and an operator
that dies between the pod and the records leaves a state the next pass repairs without
spending an attempt or leaving two pods on one bead.
"""

from __future__ import annotations

import pytest

from gastown.model import AgentPhase, BeadPhase
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.core import plan
from gastown.reconcile.repairs import HOOK_MISMATCH
from gastown.reconcile.writes import CreateObject, Emit, Kind, PatchSpec, PatchStatus, StartPod
from tests.unit.reconcile.builders import T0, World, agent, bead, pod, seconds, town


def _dispatches(world: World) -> list[DispatchAgent]:
    return [a for a in world.history[-1] if isinstance(a, DispatchAgent)]


@pytest.mark.parametrize("reuse", [False, True], ids=["new agent", "reused agent"])
def test_the_pod_follows_the_claim_and_precedes_the_records(reuse: bool) -> None:
    idle = agent("demo-polecat-app-1", hook=None, generation=3, phase="idle", phaseSince=T0)
    world = World.of(town(), bead("a"), *([idle] if reuse else []))
    world.step(seconds(60))
    (dispatch,) = _dispatches(world)
    writes = dispatch.writes()
    claim, start, agent_status, bead_status, event = writes
    if reuse:
        assert isinstance(claim, PatchSpec)
        assert claim.patch["generation"] == 4
        assert claim.expect == {"generation": 3, "hook": None}
    else:
        assert isinstance(claim, CreateObject)
        assert claim.status is None  # the status is a record: it follows the pod
        assert claim.spec["hook"] == "a"
    assert isinstance(start, StartPod)
    assert start.generation == dispatch.generation
    assert isinstance(agent_status, PatchStatus)
    assert agent_status.kind is Kind.AGENT
    assert agent_status.patch["pod"] == dispatch.pod  # what the pod's runtime waits for
    assert isinstance(bead_status, PatchStatus)
    assert bead_status.kind is Kind.BEAD
    assert bead_status.patch["phase"] == BeadPhase.IN_PROGRESS.value
    assert isinstance(event, Emit)
    assert writes == (*dispatch.before_pod(), dispatch.start_pod(), *dispatch.after_pod())


def test_an_operator_dying_between_pod_and_records_spends_no_attempt() -> None:
    world = World.of(town(), bead("a"))
    world.step(seconds(60))
    (dispatch,) = _dispatches(world)
    # Replay the world as it would be had the operator died right after creating the pod:
    # the claim and the pod exist, the records do not.
    crashed = World.of(town(), bead("a"))
    crashed.now = world.now
    for write in dispatch.before_pod():
        assert not isinstance(write, StartPod | Emit)
        assert crashed._write(write)
    crashed._side_effect(dispatch.start_pod())
    assert crashed.beads["a"].status.phase is BeadPhase.OPEN
    assert dispatch.pod in crashed.pods

    # The hook without an assignment is repaired: the agent is released and its pod stopped.
    decided = plan(crashed.snapshot(), crashed.now + seconds(1))
    assert [r.code for r in decided.repairs] == [HOOK_MISMATCH]
    crashed.step(seconds(1))
    assert dispatch.pod not in crashed.pods
    crashed.settle(advance=seconds(30))
    a = crashed.beads["a"]
    assert a.status.phase is BeadPhase.IN_PROGRESS
    assert a.status.attempts == 1, "the crashed dispatch spent no attempt"
    live = [p for p in crashed.pods.values() if p.bead == "a" and p.live]
    assert len(live) == 1
    assert live[0].name != dispatch.pod
    holder = crashed.agents[a.status.assignee or ""]
    assert holder.status.phase is AgentPhase.WORKING
    assert holder.status.pod == live[0].name
    assert crashed.violations() == []


def test_a_release_cut_in_two_is_finished_without_a_repair() -> None:
    # The unhook (spec) landed, the idle phase (status) did not: the operator died between the
    # two writes, or the agent's own status write won the race.
    cut = agent(
        "demo-polecat-app-1",
        hook=None,
        generation=2,
        phase="working",
        phaseSince=T0,
        dispatchedAt=T0,
        pod="demo-polecat-app-1-g2",
    )
    world = World.of(town(), cut)
    world.pods["demo-polecat-app-1-g2"] = pod("demo-polecat-app-1", 2, phase="Running")
    assert "WorkingWithoutHook" in world.violations()
    decided = plan(world.snapshot(), world.now + seconds(1))
    assert decided.repairs == []  # a crash window, not an impossible state
    world.settle(advance=seconds(31))
    assert world.agents["demo-polecat-app-1"].status.phase is AgentPhase.IDLE
    assert not [p for p in world.pods.values() if p.live]
    assert world.violations() == []
