"""Caps on what an (untrusted) agent can make the operator create, and the identity hold."""

from __future__ import annotations

from dataclasses import replace

from gastown.model import BeadPhase, BeadType
from gastown.reconcile import reconcile
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.snapshot import Fault
from tests.unit.reconcile.builders import T0, World, bead, seconds, snapshot, town
from tests.unit.reconcile.test_acceptance import finish


def _escalations(w: World) -> list[str]:
    return sorted(b.name for b in w.beads.values() if b.spec.type is BeadType.ESCALATION)


def test_an_escalation_flood_in_one_generation_makes_one_escalation_bead() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    for _ in range(3):  # three reports before the operator looks
        w.report(polecat, "escalate", message="help")
    w.settle(advance=seconds(1))
    for _ in range(2):  # and more later
        w.report(polecat, "escalate", message="help!")
        w.settle(advance=seconds(1))
    assert len(_escalations(w)) == 1
    agent = w.agents[polecat]
    assert agent.status.applied_report_seq == 5  # every report acknowledged
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS  # the work goes on


def test_a_new_generation_may_escalate_once_more() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.report(polecat, "escalate", message="help")
    w.settle(advance=seconds(1))
    w.report(polecat, "failed", message="gave up")  # the bead is retried: a new generation
    w.settle(advance=seconds(1))
    for _ in range(5):  # past the backoff
        w.step(seconds(300))
    again = w.agent_on("a").name
    assert w.agents[again].spec.generation > 1 or again != polecat
    w.report(again, "escalate", message="still stuck")
    w.report(again, "escalate", message="still stuck")
    w.settle(advance=seconds(1))
    assert len(_escalations(w)) == 2


def test_a_refinery_escalation_flood_makes_one_escalation_bead() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    w.step(seconds(5))
    refinery = w.agent_on(mr).name
    for _ in range(4):
        w.report(refinery, "escalate", message="cannot merge")
    w.settle(advance=seconds(1))
    w.report(refinery, "escalate", message="cannot merge")
    w.settle(advance=seconds(1))
    assert len(_escalations(w)) == 1


def test_rework_beads_per_merge_request_are_capped_then_the_mr_fails() -> None:
    policy = {"retry": {"maxAttempts": 50}, "review": {"maxReworkPerMergeRequest": 2}}
    w = World.of(town(policy=policy), bead("a"))
    w.step()
    mr = finish(w, "a")
    for round_ in (1, 2):
        w.step(seconds(5))
        w.report(w.agent_on(mr).name, "request-changes", feedback=f"round {round_}")
        w.step(seconds(5))
        rework = w.bead(f"{mr}-rework-{w.bead(mr).status.attempts}")
        w.step(seconds(5))
        w.report(w.agent_on(rework.name).name, "done", summary="fixed")
        w.settle(advance=seconds(120))
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS  # third review
    w.report(w.agent_on(mr).name, "request-changes", feedback="round 3")
    w.step(seconds(5))
    failed = w.bead(mr)
    assert failed.status.phase is BeadPhase.FAILED
    assert failed.status.reason == "ReworkLimitReached"
    assert "maxReworkPerMergeRequest" in (failed.status.message or "")
    reworks = [b for b in w.beads.values() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 2
    assert w.bead("a").status.phase is not BeadPhase.IN_REVIEW  # the source is retried
    assert any(e.reason == "ReworkLimitReached" and e.type == "Warning" for e in w.events)


def test_the_rework_cap_defaults_to_five() -> None:
    assert town().spec.policy.review.max_rework_per_merge_request == 5


def test_an_unprotected_identity_holds_every_new_dispatch() -> None:
    snap = snapshot(town(), [bead("a"), bead("b")])
    assert any(isinstance(a, DispatchAgent) for a in reconcile(snap, T0))
    held = replace(snap, faults=(Fault("AgentIdentityUnprotected", "binding missing"),))
    assert not any(isinstance(a, DispatchAgent) for a in reconcile(held, T0))
