"""Repairs of states that should never exist are facts of the pass, one code per kind of state.

Each scenario builds an impossible snapshot (as a bug or a tamperer would leave it), runs one
pass and checks both halves: the repair is recorded, and the state is really repaired (the
invariant check of the world after the pass is clean). Ordinary work never records a repair.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from gastown.model import Agent, AgentPhase
from gastown.model.town import Repair
from gastown.reconcile import Action, Snapshot
from gastown.reconcile.core import plan
from gastown.reconcile.invariants import (
    DUPLICATE_HOOK,
    HOOK_ON_MISSING,
    HOOK_ON_TERMINAL,
    ORPHAN_POD,
)
from gastown.reconcile.names import pod_name
from gastown.reconcile.repairs import ASSIGNEE_WITHOUT_HOOK, HOOK_MISMATCH, REPAIR_CODES
from gastown.reconcile.writes import Kind, iso
from tests.unit.reconcile import builders
from tests.unit.reconcile.builders import (
    T0,
    World,
    agent,
    bead,
    convoy,
    merge_request,
    pod,
    seconds,
    task,
    town,
)


def _working(name: str, hook: str, generation: int = 1, role: str = "polecat") -> Agent:
    return agent(
        name,
        role=role,
        hook=hook,
        generation=generation,
        phase="working",
        phaseSince=T0,
        dispatchedAt=T0,
        activity={"generation": generation, "lastHeartbeatAt": iso(T0)},
    )


def duplicate_hook() -> World:
    """Two working polecats hooked to one bead; p1 is its assignee."""
    w = World.of(
        town(),
        bead("a", phase="in_progress", assignee="p1", phaseSince=T0, attempts=1),
        _working("p1", "a"),
        _working("p2", "a"),
    )
    w.pods.update({p.name: p for p in (pod("p1", 1, bead_name="a"), pod("p2", 1, bead_name="a"))})
    return w


def hook_on_missing() -> World:
    """A polecat hooked to a bead that does not exist."""
    return World.of(town(), agent("p", hook="gone", generation=1, phase="idle", phaseSince=T0))


def hook_on_terminal() -> World:
    """An idle polecat still hooked to a closed bead."""
    return World.of(
        town(),
        bead("a", phase="closed"),
        agent("p", hook="a", generation=1, phase="idle", phaseSince=T0),
    )


def hook_mismatch() -> World:
    """A polecat hooked to an open bead nobody was assigned."""
    return World.of(
        town(mode="paused"),  # no dispatch, so the bead is not handed out again in the pass
        bead("a", phase="open"),
        agent("p", hook="a", generation=1, phase="idle", phaseSince=T0),
    )


def orphan_pod() -> World:
    """A running agent pod whose Agent is gone."""
    w = World.of(town())
    stray = pod("ghost", 3)
    w.pods[stray.name] = stray
    return w


def assignee_without_hook() -> World:
    """An open bead that names an assignee no agent backs with a hook."""
    return World.of(town(mode="paused"), bead("a", phase="open", assignee="p"))


SCENARIOS: dict[str, tuple[Callable[[], World], str]] = {
    DUPLICATE_HOOK: (duplicate_hook, "a"),
    HOOK_ON_MISSING: (hook_on_missing, "p"),
    HOOK_ON_TERMINAL: (hook_on_terminal, "p"),
    HOOK_MISMATCH: (hook_mismatch, "p"),
    ORPHAN_POD: (orphan_pod, pod_name("ghost", 3)),
    ASSIGNEE_WITHOUT_HOOK: (assignee_without_hook, "a"),
}


def test_every_repair_code_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(REPAIR_CODES)


@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_a_repair_is_recorded_and_the_state_repaired(code: str) -> None:
    build, subject = SCENARIOS[code]
    w = build()
    decided = plan(w.snapshot(), w.now)
    assert [(r.code, r.subject) for r in decided.repairs] == [(code, subject)]
    repair = decided.repairs[0]
    assert repair.at == w.now
    assert repair.message
    w.apply(decided.actions)
    # Repaired in the same pass: the next pass finds nothing more to repair.
    assert plan(w.snapshot(), w.now).repairs == []
    if code != ORPHAN_POD:  # the world's kubelet leaves stopped pods in place until they end
        assert w.violations() == []


def test_duplicate_hook_keeps_the_assignee_and_names_both_agents() -> None:
    w = duplicate_hook()
    decided = plan(w.snapshot(), w.now)
    assert "p1, p2" in decided.repairs[0].message
    w.apply(decided.actions)
    assert w.agents["p1"].spec.hook == "a"
    assert w.agents["p2"].spec.hook is None
    assert w.agents["p2"].status.phase is AgentPhase.IDLE


def test_the_passes_own_decisions_are_not_repairs() -> None:
    """A cancelled bead releases its agent in the pass: work, not a repair of a found state."""
    w = World.of(town(), bead("a"))
    w.step()
    w.patch_spec(Kind.BEAD, "a", {"cancel": True})
    assert plan(w.snapshot(), w.now).repairs == []


def test_ordinary_work_records_no_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    """A convoy from dispatch through review to its last merge: never a repair."""
    found: list[Repair] = []

    def recording(snapshot: Snapshot, now: datetime) -> list[Action]:
        decided = plan(snapshot, now)
        found.extend(decided.repairs)
        return decided.actions

    monkeypatch.setattr(builders, "reconcile", recording)
    w = World.of(town(), convoy("c", [task("a"), task("b", "a")], mode="review-and-merge"))
    w.step()
    for name in ("c-a", "c-b"):
        w.step(seconds(5))
        polecat = w.agent_on(name)
        w.heartbeat(polecat.name)
        w.report(polecat.name, "done", summary="did it")
        w.step(seconds(5))
        mr = w.bead(name).status.merge_request
        assert mr is not None
        for _ in range(3):
            w.step(seconds(5))
            if w.bead(mr).status.assignee:
                break
        w.report(w.agent_on(mr).name, "merged", mergeCommit="c0ffee")
        w.settle(advance=seconds(5))
    assert w.convoys["c"].status.closed == 2
    assert found == []


def test_a_merge_request_hooked_twice_is_a_duplicate_hook() -> None:
    """Refineries are held to the same rule as polecats."""
    w = World.of(
        town(),
        bead("src", phase="in_review"),
        merge_request("mr", "src", phase="in_progress", assignee="r1", phaseSince=T0),
        _working("r1", "mr", role="refinery"),
        _working("r2", "mr", role="refinery"),
    )
    decided = plan(w.snapshot(), w.now)
    assert [(r.code, r.subject) for r in decided.repairs] == [(DUPLICATE_HOOK, "mr")]
