"""One regression test per weakness of the original (reference §11.2 and §12) that we fix."""

from __future__ import annotations

import itertools
from datetime import datetime

from gastown.model import AgentPhase, BeadPhase, ConvoyPhase
from gastown.reconcile import check_invariants, reconcile
from gastown.reconcile.actions import DeleteAgent, DispatchAgent, PollPullRequest, PostNudge
from gastown.reconcile.writes import CreateObject, DeleteObject, Kind, PatchStatus, StopPod
from tests.unit.reconcile.builders import (
    T0,
    World,
    agent,
    bead,
    convoy,
    merge_request,
    minutes,
    pod,
    seconds,
    snapshot,
    task,
    town,
)
from tests.unit.reconcile.test_acceptance import finish, review


def _in_review(w: World, name: str = "a") -> str:
    w.step()
    mr = finish(w, name)
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    return mr


# 1. Rework and false merge -----------------------------------------------------------------


def test_w01_request_changes_blocks_the_mr_until_rework_closes_then_rereview() -> None:
    w = World.of(town(), bead("a"))
    mr = _in_review(w)
    refinery = w.agent_on(mr).name
    w.report(refinery, "request-changes", feedback="rename x", files=["x.py"])
    w.step(seconds(5))
    rework = f"{mr}-rework-1"
    assert w.bead(rework).spec.rework is not None
    assert w.bead(rework).spec.rework.files == ["x.py"]
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.agents[refinery].spec.hook is None
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.OPEN  # not re-popped while rework pends
    polecat = w.agent_on(rework).name
    w.report(polecat, "done", summary="renamed")
    w.step(seconds(5))
    assert w.bead(rework).status.phase is BeadPhase.CLOSED
    assert not any(b.name.startswith(f"{rework}-mr") for b in w.beads.values())
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS  # re-reviewed
    w.report(w.agent_on(mr).name, "merged", mergeCommit="abc")
    w.step(seconds(5))
    assert w.bead("a").status.phase is BeadPhase.CLOSED


def test_w01_refinery_done_or_merged_while_rework_pends_never_merges() -> None:
    for report in ({"type": "done"}, {"type": "merged", "mergeCommit": "abc"}):
        w = World.of(
            town(),
            bead("a", phase="in_review", mergeRequest="a-mr-1"),
            bead(
                "a-mr-1-rework-1",
                type="rework",
                phase="open",
                spec={"rework": {"mergeRequest": "a-mr-1", "sourceBead": "a", "branch": "b"}},
            ),
            merge_request(
                "a-mr-1",
                "a",
                phase="in_progress",
                assignee="r",
                attempts=1,
                review={"rework": ["a-mr-1-rework-1"]},
            ),
            agent(
                "r", role="refinery", hook="a-mr-1", generation=1, phase="working", dispatchedAt=T0
            ),
        )
        w.report("r", **report)  # type: ignore[arg-type]
        w.step(seconds(1))
        assert w.bead("a-mr-1").status.phase is BeadPhase.OPEN
        assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
        assert w.agents["r"].spec.hook is None


def test_w01_a_merge_conflict_becomes_rework_not_a_broken_target() -> None:
    w = World.of(town(), bead("a"))
    mr = _in_review(w)
    w.report(w.agent_on(mr).name, "conflict", message="CONFLICT in x.py")
    w.step(seconds(5))
    rework = w.bead(f"{mr}-rework-1")
    assert "conflict" in rework.spec.description.lower()
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW


def test_w01_a_merge_is_recorded_only_with_a_verified_commit() -> None:
    w = World.of(town(), bead("a"))
    mr = _in_review(w)
    w.report(w.agent_on(mr).name, "merged")  # no merge commit
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.bead(mr).status.reason == "MergeUnverified"
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW


# 2. Retry storms ---------------------------------------------------------------------------


def test_w02_attempts_count_per_bead_with_backoff_and_a_cap() -> None:
    w = World.of(town(), bead("a"))
    dispatch_times: list[datetime] = []
    for _ in range(200):
        actions = w.step(seconds(10))
        if any(isinstance(a, DispatchAgent) for a in actions):
            dispatch_times.append(w.now)
            w.end_pod(w.agent_on("a").name, phase="Failed", exit_code=1)
        if w.bead("a").status.phase is BeadPhase.FAILED:
            break
    assert w.bead("a").status.phase is BeadPhase.FAILED
    assert w.bead("a").status.reason == "MaxAttemptsExceeded"
    assert len(dispatch_times) == 5
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(dispatch_times)]
    assert [g >= need for g, need in zip(gaps, (120, 120, 300, 600), strict=True)] == [True] * 4


def test_w02_circuit_breaker_pauses_dispatch_and_says_so_on_the_town() -> None:
    failed = [
        bead(f"f{i}", phase="open", attempts=1, lastFailureAt=T0 - minutes(1)) for i in range(20)
    ]
    w = World.of(town(total=50, per_rig=50), *failed, bead("new"))
    actions = w.step()
    assert not [a for a in actions if isinstance(a, DispatchAgent)]
    assert w.town.status.circuit_breaker.open
    assert w.town.status.circuit_breaker.recent_failures == 20
    w.step(minutes(31))  # failures age out of the 30 min window
    assert not w.town.status.circuit_breaker.open
    assert w.bead("new").status.assignee is not None


def test_w02_refinery_redispatch_has_a_cooldown_not_a_hot_loop() -> None:
    w = World.of(town(), bead("a"))
    mr = _in_review(w)
    refinery = w.agent_on(mr).name
    w.end_pod(refinery, phase="Failed", exit_code=1)
    dispatches = 0
    for _ in range(24):  # two minutes of 5 s passes
        dispatches += sum(isinstance(a, DispatchAgent) for a in w.step(seconds(5)))
    assert dispatches <= 1


# 3. GC never reopens terminal beads; never-used agents get a grace --------------------------


def test_w03_gc_deletes_only_the_agent_and_never_touches_beads() -> None:
    old = T0 - minutes(60 * 30)
    w = World.of(
        town(),
        bead("done", phase="closed", assignee="p"),
        agent("p", phase="idle", created=old, phaseSince=old),
    )
    actions = w.step()
    deletes = [a for a in actions if isinstance(a, DeleteAgent)]
    assert len(deletes) == 1
    assert {type(x) for x in deletes[0].writes()} <= {
        DeleteObject,
        StopPod,
        type(deletes[0].writes()[1]),
    }
    assert w.bead("done").status.phase is BeadPhase.CLOSED


def test_w03_a_never_used_agent_gets_the_same_grace() -> None:
    w = World.of(town(), agent("p", phase="idle", created=T0))
    w.step(minutes(60))
    assert "p" in w.agents
    w.step(minutes(60 * 24))
    assert "p" not in w.agents


# 4/5. One timestamp type; one nudge per tier --------------------------------------------------


def test_w04_naive_and_aware_datetimes_are_the_same_instant() -> None:
    snap = snapshot(town(), [bead("a")])
    naive = T0.replace(tzinfo=None)
    assert [a.describe() for a in reconcile(snap, naive)] == [
        a.describe() for a in reconcile(snap, T0)
    ]


def test_w05_a_nudge_is_one_entry_delivered_once() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.heartbeat(polecat)
    w.now += minutes(16)
    w.heartbeat(polecat, event=False)
    actions = w.step()
    nudges = [a for a in actions if isinstance(a, PostNudge)]
    assert len(nudges) == 1
    ids = [n.id for n in w.agents[polecat].spec.nudges]
    assert len(ids) == len(set(ids)) == 1


# 6. The mayor is not a worker -----------------------------------------------------------------


def test_w06_the_mayor_is_not_idled_stopped_nudged_or_flagged() -> None:
    w = World.of(
        town(),
        agent(
            "mayor",
            role="mayor",
            rig=None,
            phase="working",
            generation=1,
            dispatchedAt=T0 - minutes(500),
        ),
    )
    w.pods["mayor-g1"] = pod("mayor", 1, created=T0 - minutes(500))
    assert w.step(minutes(1)) == []
    assert w.agents["mayor"].status.phase is AgentPhase.WORKING
    assert w.violations() == []


# 7. The dispatch-timeout race ------------------------------------------------------------------


def test_w07_a_slow_start_is_not_a_lost_agent() -> None:
    w = World.of(town(), bead("a"))
    w.pod_start = "none"  # the pod is not visible yet (watch lag, slow API)
    w.step()
    polecat = w.agent_on("a").name
    w.step(minutes(2))
    assert w.agents[polecat].status.phase is AgentPhase.WORKING
    w.pods[f"{polecat}-g1"] = pod(polecat, 1, phase="Pending", created=w.now)
    w.step(minutes(5))  # pending (pulling a large image) within the pending timeout
    assert w.agents[polecat].status.phase is AgentPhase.WORKING
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS


def test_w07_a_heartbeat_restores_a_wrongly_idled_agent() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.heartbeat(polecat)
    w.step(minutes(2))  # heartbeat lost: idle, hook kept
    assert w.agents[polecat].status.phase is AgentPhase.IDLE
    assert w.agents[polecat].spec.hook == "a"
    w.now += seconds(10)
    w.heartbeat(polecat)
    w.step(seconds(1))
    assert w.agents[polecat].status.phase is AgentPhase.WORKING
    assert w.agents[polecat].spec.generation == 1  # the same session, not a new one


# 8. Stale completions are dropped --------------------------------------------------------------


def test_w08_a_report_from_an_older_generation_has_no_effect() -> None:
    w = World.of(
        town(),
        bead("a", phase="in_progress", assignee="p", attempts=2),
        agent("p", hook="a", generation=2, phase="working", dispatchedAt=T0),
    )
    w.pods["p-g2"] = pod("p", 2)
    w.heartbeat("p")
    w.report("p", "done", generation=1)
    w.report("p", "exited", generation=1)
    w.step(seconds(1))
    assert w.agents["p"].spec.hook == "a"
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert w.agents["p"].status.applied_report_seq == 2
    assert w.step(seconds(1)) == []


# 9. Cancel stops the pod -----------------------------------------------------------------------


def test_w09_a_cancelled_bead_releases_its_agent_and_stops_its_pod() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.patch_spec(Kind.BEAD, "a", {"cancel": True})
    w.step(seconds(5))
    assert w.bead("a").status.phase is BeadPhase.FAILED
    assert w.bead("a").status.reason == "Cancelled"
    assert w.agents[polecat].spec.hook is None
    assert [s.pod for s in w.stopped] == [f"{polecat}-g1"]


# 10. Poison facts are applied once and never retried -------------------------------------------


def test_w10_a_report_about_a_missing_bead_is_dropped_once() -> None:
    w = World.of(town(), agent("p", hook="gone", generation=1, phase="working", dispatchedAt=T0))
    w.report("p", "done")
    w.step(seconds(1))
    assert w.agents["p"].status.applied_report_seq == 1
    w.settle()


# 11. Transitions are compare-and-set -----------------------------------------------------------


def test_w11_a_decision_on_stale_state_is_skipped_as_a_conflict() -> None:
    w = World.of(town(), bead("a"))
    stale = reconcile(w.snapshot(), w.now)
    w.patch_spec(Kind.BEAD, "a", {"cancel": True})
    w.step()  # cancel applied: a is failed
    w.apply(stale)  # the old plan dispatches a
    assert w.bead("a").status.phase is BeadPhase.FAILED
    assert w.conflicts >= 1
    assert not w.pods  # no side effect of a conflicting action
    for action in stale:
        for write in action.writes():
            if isinstance(write, PatchStatus) and write.kind is Kind.BEAD:
                assert "phase" in write.expect


# 12. Stale assignee ----------------------------------------------------------------------------


def test_w12_an_open_bead_with_a_stale_assignee_is_repaired_and_dispatched() -> None:
    w = World.of(town(), bead("a", phase="open", assignee="ghost"))
    w.step()
    assert w.bead("a").status.assignee is None
    w.step()
    assert w.bead("a").status.assignee is not None
    assert w.bead("a").status.assignee != "ghost"


# 13. Failed beads are not done ------------------------------------------------------------------


def test_w13_a_failed_blocker_holds_its_dependents_and_says_why() -> None:
    w = World.of(
        town(), bead("a", phase="failed"), bead("b", depends_on=["a"]), bead("c", depends_on=["b"])
    )
    w.step()
    assert w.bead("b").status.assignee is None
    assert w.bead("b").status.reason == "DependencyFailed"
    assert w.bead("c").status.reason == "DependencyFailed"


def test_w13_a_convoy_whose_beads_failed_reports_failure_and_never_lands() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a")]))
    w.step()
    w.patch_spec(Kind.BEAD, "c-a", {"cancel": True})
    w.step(seconds(5))
    w.step(seconds(5))
    status = w.convoys["c"].status
    assert status.phase is ConvoyPhase.FAILED
    assert status.reason == "MemberFailed"
    assert not [b for b in w.beads if "land" in b]


# 14. Landing attempts are capped ------------------------------------------------------------------


def test_w14_failing_landing_mrs_are_capped_with_cooldown_then_the_convoy_fails() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    review(w, finish(w, "c-a"), "merged")
    created: list[str] = []
    for _ in range(400):
        w.step(seconds(30))
        for name, b in w.beads.items():
            if b.spec.merge_request and b.spec.merge_request.landing and name not in created:
                created.append(name)
                w.put(
                    b.model_copy(
                        update={
                            "status": b.status.model_copy(
                                update={"phase": BeadPhase.FAILED, "phase_since": w.now}
                            )
                        }
                    )
                )
        if w.convoys["c"].status.phase is ConvoyPhase.FAILED:
            break
    assert created == [f"c-land-{i}" for i in range(1, 6)]
    assert w.convoys["c"].status.reason == "LandingFailed"


# 15. PR polling ---------------------------------------------------------------------------------


def test_w15_pr_polls_are_rate_limited_and_never_touch_lifecycle_timestamps() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr = _in_review(w)
    w.report(w.agent_on(mr).name, "pr-opened", prUrl="https://github.test/o/r/pull/1")
    w.step(seconds(5))
    since = w.bead(mr).status.phase_since
    polls = 0
    for _ in range(24):  # two minutes at 5 s
        polls += sum(isinstance(a, PollPullRequest) for a in w.step(seconds(5)))
    assert polls == 2
    assert w.bead(mr).status.phase_since == since
    w.pr_result(mr, "merged", merge_commit="m1")
    w.step(seconds(5))
    assert w.bead("a").status.phase is BeadPhase.CLOSED


def test_w15_consecutive_unknown_polls_fail_the_mr() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr = _in_review(w)
    w.report(w.agent_on(mr).name, "pr-opened", prUrl="https://github.test/o/r/pull/1")
    w.step(seconds(5))
    for _ in range(30):
        w.step(minutes(1))
        if w.bead(mr).status.phase is BeadPhase.FAILED:
            break
        w.pr_result(mr, "unknown")
    assert w.bead(mr).status.reason == "PullRequestUnknown"
    assert w.bead("a").status.phase is BeadPhase.OPEN


def test_w15_a_pr_waiting_for_humans_does_not_block_the_rig_queue() -> None:
    w = World.of(town(strategy="pr"), bead("a"), bead("b"))
    w.step()
    mr_a, mr_b = finish(w, "a"), finish(w, "b")
    w.step(seconds(5))
    first = next(m for m in (mr_a, mr_b) if w.bead(m).status.phase is BeadPhase.IN_PROGRESS)
    second = mr_b if first == mr_a else mr_a
    w.report(w.agent_on(first).name, "pr-opened", prUrl="https://github.test/o/r/pull/1")
    w.step(seconds(5))
    w.step(seconds(5))
    assert w.bead(second).status.phase is BeadPhase.IN_PROGRESS
    w.step(minutes(45))  # a PR waiting for humans is not orphaned
    assert w.bead(first).status.phase is BeadPhase.IN_PROGRESS


# 16. Invariants without false positives ---------------------------------------------------------


def test_w16_pr_mrs_do_not_count_as_concurrent_direct_reviews() -> None:
    snap = snapshot(
        town(),
        [
            bead("a", phase="in_review"),
            bead("b", phase="in_review"),
            merge_request("a-mr-1", "a", phase="in_progress", review={"prUrl": "https://x/1"}),
            merge_request("b-mr-1", "b", phase="in_progress"),
        ],
    )
    assert check_invariants(snap) == []


# 17. The watermark is reset on dispatch; force-stop happens once -----------------------------


def test_w17_an_old_generation_watermark_does_not_trigger_gupp() -> None:
    old = T0 - minutes(300)
    w = World.of(
        town(),
        bead("a", phase="in_progress", assignee="p", attempts=1),
        agent(
            "p",
            hook="a",
            generation=2,
            phase="working",
            dispatchedAt=T0,
            activity={"generation": 1, "lastEventAt": old, "lastHeartbeatAt": T0},
        ),
    )
    w.pods["p-g2"] = pod("p", 2)
    w.heartbeat("p", event=False)
    assert not [a for a in w.step(seconds(30)) if isinstance(a, PostNudge)]


def test_w17_gupp_force_stop_stops_the_pod_once() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    stops = 0
    for _ in range(30):
        w.now += minutes(5)
        w.heartbeat(polecat, event=False)
        before = len(w.stopped)
        w.step()
        stops += sum(1 for s in w.stopped[before:] if s.reason == "GuppForceStop")
    assert stops == 1
    assert any(b.spec.type.value == "escalation" for b in w.beads.values())


# 18. Caps are enforced ---------------------------------------------------------------------------


def test_w18_max_polecats_per_rig_is_enforced_and_lowering_it_drains_idle_ones() -> None:
    w = World.of(town(per_rig=2), *(bead(f"b{i}") for i in range(5)))
    w.step()
    assert sum(1 for b in w.beads.values() if b.status.assignee) == 2
    idle = [agent(f"t-polecat-rig-1-{i}", phase="idle", created=T0) for i in (7, 8, 9)]
    for a in idle:
        w.put(a)
    w.step(seconds(5))
    assert {"t-polecat-rig-1-7", "t-polecat-rig-1-8", "t-polecat-rig-1-9"}.isdisjoint(w.agents)


# 19. Terminal beads are immutable ----------------------------------------------------------------


def test_w19_terminal_beads_never_change() -> None:
    w = World.of(
        town(), bead("a", phase="closed", cancel=True), bead("b", phase="failed", assignee="x")
    )
    assert w.step() == []
    created = [w for a in w.history[-1] for w in a.writes() if isinstance(w, CreateObject)]
    assert created == []
