"""Issue 10, observations 7 and 8 in the pure core: refused pods and faults of the town.

A pod the API server refuses is a failed attempt like any other (the slot is released, the bead
retried with backoff and failed after the last attempt, with the API's message); a fault found
outside the town's objects (a Secret that did not opt in, an insecure provider URL) holds every
new dispatch and nothing else.
"""

from __future__ import annotations

from gastown.model import AgentPhase, BeadPhase
from gastown.reconcile import names
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.context import Pass
from gastown.reconcile.facts import POD_REJECTED, Session, classify_session
from gastown.reconcile.snapshot import Fault
from tests.unit.reconcile.builders import T0, World, agent, bead, seconds, snapshot, town

FAULT = Fault("SecretNotOptedIn", 'Secret "keys" (spec.agent.secretEnv[0]) is not labelled')


def test_a_refused_pod_releases_the_slot_and_counts_as_a_failed_attempt() -> None:
    w = World.of(town(per_rig=1, total=1), bead("a"))
    w.pod_start = "rejected"
    w.step()  # dispatch; the adapter records the API server's refusal on the Agent
    polecat = next(iter(w.agents.values()))
    assert polecat.status.pod_rejection is not None
    w.step()
    a = w.bead("a")
    assert a.status.phase is BeadPhase.OPEN
    assert a.status.assignee is None
    assert a.status.reason == POD_REJECTED
    assert w.rejection in (a.status.message or "")
    assert a.status.attempts == 1
    assert w.agents[polecat.name].spec.hook is None  # the worker slot is free again
    assert w.agents[polecat.name].status.phase is AgentPhase.IDLE
    assert any(e.reason == POD_REJECTED and e.type == "Warning" for e in w.events)


def test_refused_pods_fail_the_bead_after_the_last_attempt_with_the_apis_message() -> None:
    w = World.of(town(), bead("a"))
    w.pod_start = "rejected"
    for _ in range(40):
        w.step(seconds(120))  # past every backoff step
        if w.bead("a").status.phase is BeadPhase.FAILED:
            break
    a = w.bead("a")
    assert a.status.phase is BeadPhase.FAILED, a.status
    assert a.status.reason == "MaxAttemptsExceeded"
    assert POD_REJECTED in (a.status.message or "")
    assert "maximum cpu usage" in (a.status.message or "")
    assert not any(x.spec.hook for x in w.agents.values())


def test_a_rejection_of_an_older_generation_does_not_end_the_current_session() -> None:
    stale = {"generation": 1, "message": "old refusal", "at": T0}
    polecat = agent(
        "p", hook="a", generation=2, phase="working", dispatchedAt=T0, podRejection=stale
    )
    snap = snapshot(town(), [bead("a", phase="in_progress", assignee="p"), polecat])
    ctx = Pass(snap, T0 + seconds(1))
    assert classify_session(ctx, polecat, None).state is Session.STARTING
    current = agent(
        "p",
        hook="a",
        generation=2,
        phase="working",
        dispatchedAt=T0,
        podRejection={**stale, "generation": 2},
    )
    ended = classify_session(ctx, current, None)
    assert ended.state is Session.ENDED
    assert (ended.reason, ended.message) == (POD_REJECTED, "old refusal")


def test_a_fault_of_the_town_holds_every_new_dispatch_and_nothing_else() -> None:
    w = World.of(town(), bead("a"), bead("b"))
    w.faults = (FAULT,)
    for _ in range(3):
        actions = w.step(seconds(5))
        assert not any(isinstance(action, DispatchAgent) for action in actions)
    assert not w.started
    assert w.bead("a").status.phase is BeadPhase.OPEN
    assert w.bead("a").status.attempts == 0  # holding costs no attempt
    w.faults = ()  # the user labelled the Secret
    w.step(seconds(5))
    assert {s.bead for s in w.started} == {"a", "b"}


def test_a_fault_does_not_stop_work_in_flight() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.faults = (FAULT,)
    w.heartbeat(polecat)
    w.report(polecat, "done", summary="did a")
    w.step(seconds(5))
    assert w.bead("a").status.phase is not BeadPhase.IN_PROGRESS  # its report was applied


def test_label_values_are_always_valid_and_distinct() -> None:
    assert names.label_value("demo") == "demo"
    assert names.label_value("a.b-c_d") == "a.b-c_d"
    long_bead = "b" * 100
    other = "b" * 99 + "c"
    for value in (names.label_value(long_bead), names.label_value(other)):
        assert len(value) <= 63
        assert value[0].isalnum()
        assert value[-1].isalnum()
    assert names.label_value(long_bead) != names.label_value(other)
    agent_name = names.polecat_name("t" * 63, "r" * 63, 12)
    assert len(agent_name) > 63
    assert len(names.label_value(agent_name)) <= 63
