"""The acceptance scenarios of the reference (§10), as unit tests on snapshots.

Each test is named after its scenario (§10.1 reconciler, §10.2 review failure, §10.3 convoy
DAG, plus the follow-up scenarios of #1349 and #1415). Where this port deliberately fixes a
weakness of the original (failed beads are not "done"), the test asserts the fixed behaviour
and says so.
"""

from __future__ import annotations

import re
from typing import Any

from gastown.model import Agent, AgentPhase, AgentRole, BeadPhase, ConvoyPhase
from gastown.reconcile import names
from gastown.reconcile.actions import DeleteAgent, PostNudge
from gastown.reconcile.writes import Kind
from tests.unit.reconcile.builders import (
    RIG,
    T0,
    World,
    agent,
    bead,
    convoy,
    merge_request,
    minutes,
    seconds,
    task,
    town,
)

# --- helpers -----------------------------------------------------------------------------------


def finish(w: World, bead_name: str) -> str:
    """The polecat on `bead_name` reports done; returns the MR name after one pass."""
    polecat = w.agent_on(bead_name)
    w.report(polecat.name, "done", summary=f"did {bead_name}")
    w.step(seconds(5))
    mr = w.bead(bead_name).status.merge_request
    assert mr is not None
    return mr


def picked_up(w: World, mr: str) -> Agent:
    """Step until the refinery has picked up `mr` (at most three passes); its refinery."""
    for _ in range(3):
        if w.bead(mr).status.phase is BeadPhase.IN_PROGRESS:
            break
        w.step(seconds(5))
    return w.agent_on(mr)


def review(w: World, mr: str, outcome: str = "merged") -> None:
    """Let the refinery pick up `mr` and report `outcome`."""
    refinery = picked_up(w, mr)
    if outcome == "merged":
        w.report(refinery.name, "merged", mergeCommit="c0ffee")
    else:
        w.report(refinery.name, outcome, feedback="please fix", message="failed")
    w.step(seconds(5))


def close_via_review(w: World, bead_name: str) -> None:
    """Done, review, merge."""
    review(w, finish(w, bead_name), "merged")


# --- §10.1 reconciler.test.ts ------------------------------------------------------------------


def test_rule1_lazy_assignment_assigns_agent_to_unassigned_open_issue() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()  # materialises the task bead, no agent yet (lazy)
    assert w.bead("c-a").status.assignee is None
    assert not w.agents
    w.step(seconds(5))
    assert w.bead("c-a").status.assignee is not None
    assert w.bead("c-a").status.phase is BeadPhase.IN_PROGRESS


def test_does_not_assign_blocked_beads() -> None:
    w = World.of(town(), bead("a"), bead("b", depends_on=["a"]))
    w.step()
    assert w.bead("a").status.assignee is not None
    assert w.bead("b").status.assignee is None


def test_assigns_newly_unblocked_beads_after_the_blocker_closes() -> None:
    w = World.of(town(), bead("a"), bead("b", depends_on=["a"]))
    w.step()
    close_via_review(w, "a")
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    w.step(seconds(5))
    assert w.bead("b").status.assignee is not None


def test_rule3_does_not_reset_a_fresh_in_progress_bead() -> None:
    w = World.of(town(), bead("a", phase="in_progress", phaseSince=T0))
    w.step(minutes(1))
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    w.step(minutes(5))  # past the lost-agent timeout with nobody holding it: reopened
    assert w.bead("a").status.phase in (BeadPhase.OPEN, BeadPhase.IN_PROGRESS)
    assert w.bead("a").status.last_failure_at is not None


def test_event_driven_agent_done_moves_source_to_in_review_and_creates_mr() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    mr = finish(w, "c-a")
    assert w.bead("c-a").status.phase is BeadPhase.IN_REVIEW
    spec = w.bead(mr).spec.merge_request
    assert spec is not None
    assert spec.source_bead == "c-a"


def test_rule5_refinery_dispatch_even_when_the_pod_never_starts() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    w.pod_start = "none"  # "every container start fails"
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    assert any(a.spec.role is AgentRole.REFINERY for a in w.agents.values())


def test_convoy_review_and_merge_closes_when_all_beads_are_closed() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b")], mode="review-and-merge"))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    close_via_review(w, "c-b")
    w.step(seconds(5))
    status = w.convoys["c"].status
    assert status.phase is ConvoyPhase.LANDED
    assert status.closed == 2


def test_review_then_land_convoy_is_not_auto_closed() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    w.step(seconds(5))
    status = w.convoys["c"].status
    assert status.feature_branch is not None
    assert status.closed == 1
    assert status.phase in (ConvoyPhase.READY_TO_LAND, ConvoyPhase.LANDING)  # not Landed


def test_reconcile_agents_unhooks_an_idle_agent_from_a_terminal_bead() -> None:
    w = World.of(
        town(),
        bead("a", phase="closed"),
        agent("p", hook="a", generation=1, phase="idle", phaseSince=T0),
    )
    w.step()
    assert w.agents["p"].spec.hook is None


def test_gc_does_not_collect_agents_with_recent_activity() -> None:
    w = World.of(
        town(),
        agent(
            "p",
            phase="idle",
            created=T0 - minutes(60 * 30),
            activity={"lastHeartbeatAt": T0 - minutes(5)},
        ),
    )
    actions = w.step()
    assert "p" in w.agents
    assert not [a for a in actions if isinstance(a, DeleteAgent)]


def test_bead_created_is_open_and_gets_an_agent_on_the_first_pass() -> None:
    w = World.of(town(), bead("a"))
    assert w.bead("a").status.phase is BeadPhase.OPEN
    w.step()
    assert w.bead("a").status.assignee is not None  # no eager path needed: one pass


def test_convoy_started_staged_dispatches_nothing_until_started() -> None:
    w = World.of(town(), convoy("c", [task("a")], staged=True))
    w.step()
    w.step(seconds(5))
    assert w.convoys["c"].status.phase is ConvoyPhase.STAGED
    assert w.bead("c-a").status.assignee is None
    w.patch_spec(Kind.CONVOY, "c", {"staged": False})
    w.step(seconds(5))
    assert w.convoys["c"].status.started_at is not None
    assert w.bead("c-a").status.assignee is not None


def test_rule6_fails_the_mr_after_the_refinery_exceeds_max_dispatch_attempts() -> None:
    # #1349: a refinery that keeps failing does not hot-loop; the MR fails and it is unhooked.
    w = World.of(
        town(),
        bead("a", phase="in_review", mergeRequest="a-mr-1"),
        merge_request(
            "a-mr-1",
            "a",
            phase="in_progress",
            attempts=5,
            assignee="t-refinery-rig-1",
            phaseSince=T0,
        ),
        agent(
            "t-refinery-rig-1",
            role="refinery",
            hook="a-mr-1",
            generation=5,
            phase="idle",
            phaseSince=T0,
        ),
    )
    w.step(minutes(10))
    assert w.bead("a-mr-1").status.phase is BeadPhase.FAILED
    assert w.agents["t-refinery-rig-1"].spec.hook is None
    assert w.bead("a").status.phase is BeadPhase.OPEN  # the work is retried


def test_gupp_never_nudges_the_mayor() -> None:
    # #1415
    w = World.of(
        town(),
        agent(
            "mayor",
            role="mayor",
            rig=None,
            hook=None,
            phase="working",
            dispatchedAt=T0 - minutes(300),
            activity={"lastEventAt": T0 - minutes(300)},
        ),
    )
    actions = w.step()
    assert not [a for a in actions if isinstance(a, PostNudge)]
    assert "WorkingWithoutHook" not in w.violations()


def test_a_stale_polecat_is_warn_nudged_once_not_on_every_tick() -> None:
    # #1415
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a").name
    w.heartbeat(polecat)
    nudges = 0
    for _ in range(20):
        w.heartbeat(polecat, event=False)  # alive, but no progress
        actions = w.step(minutes(1))
        nudges += sum(isinstance(a, PostNudge) for a in actions)
    assert nudges == 1
    assert len(w.agents[polecat].spec.nudges) == 1


# --- §10.2 review-failure.test.ts --------------------------------------------------------------


def _two_beads_in_review(mode: str = "review-then-land") -> tuple[World, str, str]:
    w = World.of(town(), convoy("c", [task("a"), task("b")], mode=mode))
    w.step()
    w.step(seconds(5))
    mr_a = finish(w, "c-a")
    mr_b = finish(w, "c-b")
    return w, mr_a, mr_b


def _exhaust(w: World, name: str) -> None:
    """Make the next failure of a bead final (its attempts are used up)."""
    current = w.bead(name)
    w.put(current.model_copy(update={"status": current.status.model_copy(update={"attempts": 5})}))


def test_mr_failure_returns_the_source_to_open() -> None:
    w, mr_a, _ = _two_beads_in_review()
    review(w, mr_a, "failed")
    # A failed review attempt is retried with backoff; the work itself is not redone.
    assert w.bead(mr_a).status.phase is BeadPhase.OPEN
    assert w.bead("c-a").status.phase is BeadPhase.IN_REVIEW
    w.step(minutes(3))
    _exhaust(w, mr_a)
    review(w, mr_a, "failed")
    assert w.bead(mr_a).status.phase is BeadPhase.FAILED
    assert w.bead("c-a").status.phase is BeadPhase.OPEN
    assert w.bead("c-a").status.assignee is None


def test_mr_merge_updates_convoy_progress() -> None:
    w, mr_a, _ = _two_beads_in_review()
    review(w, mr_a, "merged")
    assert w.bead("c-a").status.phase is BeadPhase.CLOSED
    assert w.bead(mr_a).status.phase is BeadPhase.CLOSED
    assert w.convoys["c"].status.closed == 1


def test_a_mixed_outcome_does_not_stall_the_convoy() -> None:
    w, mr_a, mr_b = _two_beads_in_review()
    w.step(seconds(5))
    _exhaust(w, mr_a)
    review(w, mr_a, "failed")
    assert w.bead(mr_a).status.phase is BeadPhase.FAILED
    assert w.bead("c-a").status.phase is BeadPhase.OPEN
    review(w, mr_b, "merged")
    assert w.bead("c-b").status.phase is BeadPhase.CLOSED
    w.step(seconds(5))
    assert w.convoys["c"].status.closed == 1
    assert w.convoys["c"].status.phase is ConvoyPhase.IN_PROGRESS
    w.step(minutes(3))
    assert w.bead("c-a").status.assignee is not None  # the failed review is retried


def test_regression_guard_a_failed_mr_alone_is_repaired_by_the_safety_net() -> None:
    # The original's raw completeReview left the source stuck in_review; here the in_review
    # safety net reopens it whatever path failed the MR.
    w = World.of(
        town(),
        bead("a", phase="in_review", mergeRequest="a-mr-1", attempts=1),
        merge_request("a-mr-1", "a", phase="failed"),
    )
    w.step()
    assert w.bead("a").status.phase in (BeadPhase.OPEN, BeadPhase.IN_PROGRESS)


def test_agent_done_moves_the_source_to_in_review_and_creates_an_mr() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert w.bead(mr).spec.merge_request is not None
    assert w.bead(mr).spec.merge_request.source_bead == "a"
    polecat = names.polecat_name("t", "rig-1", 1)
    uid = w.bead("a").metadata.uid
    assert w.bead(mr).spec.merge_request.branch == names.work_branch(polecat, "a", uid)
    assert w.bead(mr).spec.merge_request.source_sha == w.bead("a").status.head_sha


# --- §10.3 convoy-dag.test.ts ------------------------------------------------------------------


def test_feature_branch_format_and_active_convoy_with_two_beads() -> None:
    w = World.of(town(), convoy("add-user-auth", [task("a"), task("b")], uid="9f8e7d6c-1234"))
    w.step()
    status = w.convoys["add-user-auth"].status
    assert re.match(r"^convoy/add-user-auth/[0-9a-f]+/head$", status.feature_branch or "")
    assert status.phase is ConvoyPhase.IN_PROGRESS
    assert status.total == 2
    assert {"add-user-auth-a", "add-user-auth-b"} <= set(w.beads)


def test_feature_branch_slug_lowercases_and_hyphenates_special_characters() -> None:
    assert names.slug("Fix Bug #123 with Special Characters!") == (
        "fix-bug-123-with-special-characters"
    )
    branch = names.feature_branch("Fix Bug #123 with Special Characters!", None)
    assert re.match(r"^convoy/fix-bug-123-with-special-characters/[0-9a-f]+/head$", branch)


def test_convoy_beads_know_their_convoy_and_target_its_feature_branch() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    assert w.bead("c-a").spec.convoy == "c"
    mr = finish(w, "c-a")
    spec = w.bead(mr).spec.merge_request
    assert spec is not None
    assert spec.target_branch == w.convoys["c"].status.feature_branch


def test_depends_on_produces_blocking_edges() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a"), task("d", "a", "b")]))
    w.step()
    edges = {(n, d) for n, b in w.beads.items() for d in b.spec.depends_on}
    assert edges == {("c-b", "c-a"), ("c-d", "c-a"), ("c-d", "c-b")}


def test_no_edges_without_dependencies() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b")]))
    w.step()
    assert all(not b.spec.depends_on for b in w.beads.values())


def test_convoy_status_shows_feature_branch_and_progress() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a")]))
    w.step()
    status = w.convoys["c"].status
    assert status.progress == "0/2"
    assert status.feature_branch


def test_a_serial_chain_assigns_only_the_first_bead() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a"), task("d", "b")]))
    w.step()
    w.step(seconds(5))
    assigned = {n for n, b in w.beads.items() if b.status.assignee}
    assert assigned == {"c-a"}


def test_closing_the_blocker_assigns_the_next_bead_and_counts_progress() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b", "a")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    w.step(seconds(5))
    assert w.bead("c-b").status.assignee is not None
    assert w.convoys["c"].status.closed == 1


def test_diamond_progress_counts_each_closed_branch() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b"), task("d", "a", "b")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    w.step(seconds(5))
    assert w.convoys["c"].status.closed == 1
    assert w.bead("c-d").status.assignee is None
    close_via_review(w, "c-b")
    w.step(seconds(5))
    assert w.convoys["c"].status.closed == 2
    assert w.bead("c-d").status.assignee is not None


def test_closed_beads_count_up_as_beads_close() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b"), task("d")], mode="review-and-merge"))
    w.step()
    w.step(seconds(5))
    seen = []
    for key in ("a", "b", "d"):
        close_via_review(w, f"c-{key}")
        w.step(seconds(5))
        seen.append(w.convoys["c"].status.closed)
    assert seen == [1, 2, 3]


def test_review_then_land_convoy_stays_active_after_its_only_bead_closes() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    w.step(seconds(5))
    assert w.convoys["c"].status.phase is not ConvoyPhase.LANDED


def test_failed_beads_are_counted_apart_from_closed_ones() -> None:
    # Fixed weakness §11.2.13: the original counted failed as closed ("failed + closed = 2").
    w = World.of(town(), convoy("c", [task("a"), task("b")], mode="review-and-merge"))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    w.patch_spec(Kind.BEAD, "c-b", {"cancel": True})
    w.step(seconds(5))
    w.step(seconds(5))
    status = w.convoys["c"].status
    assert (status.closed, status.failed) == (1, 1)
    assert status.phase is ConvoyPhase.FAILED  # it does not "land" with failed work


def test_force_close_cancelling_every_bead_releases_agents_and_fails_the_convoy() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b")]))
    w.step()
    w.step(seconds(5))
    for key in ("a", "b"):
        w.patch_spec(Kind.BEAD, f"c-{key}", {"cancel": True})
    w.step(seconds(5))
    w.step(seconds(5))
    assert all(w.bead(f"c-{k}").status.phase is BeadPhase.FAILED for k in ("a", "b"))
    assert all(a.spec.hook is None for a in w.agents.values())
    assert not w.pods
    assert w.convoys["c"].status.phase is ConvoyPhase.FAILED


def test_a_self_reference_is_ignored() -> None:
    w = World.of(town(), convoy("c", [task("a", "a")]))
    w.step()
    assert w.bead("c-a").spec.depends_on == []
    w.step(seconds(5))
    assert w.bead("c-a").status.assignee is not None


def test_a_reference_to_an_unknown_task_is_ignored() -> None:
    w = World.of(town(), convoy("c", [task("a", "zz")]))
    w.step()
    assert w.bead("c-a").spec.depends_on == []


def test_merge_mode_defaults_to_review_then_land() -> None:
    c = convoy("c", [task("a")])
    assert c.spec.merge_mode.value == "review-then-land"


def test_both_merge_modes_are_accepted_and_target_the_right_branch() -> None:
    w = World.of(
        town(), convoy("l", [task("a")]), convoy("m", [task("a")], mode="review-and-merge")
    )
    w.step()
    w.step(seconds(5))
    mr_l, mr_m = finish(w, "l-a"), finish(w, "m-a")
    assert w.bead(mr_l).spec.merge_request.target_branch.startswith("convoy/l/")  # type: ignore[union-attr]
    assert w.bead(mr_m).spec.merge_request.target_branch == "main"  # type: ignore[union-attr]
    assert w.convoys["m"].status.feature_branch is None


def test_convoy_status_shows_merge_mode_phase_and_progress() -> None:
    w = World.of(town(), convoy("c", [task("a")], mode="review-and-merge"))
    w.step()
    status = w.convoys["c"].status
    assert (status.phase, status.progress) == (ConvoyPhase.IN_PROGRESS, "0/1")


def test_the_mr_of_a_convoy_bead_points_back_and_its_source_is_in_review() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    mr = finish(w, "c-a")
    assert w.bead(mr).spec.merge_request.source_bead == "c-a"  # type: ignore[union-attr]
    assert w.bead("c-a").status.phase is BeadPhase.IN_REVIEW
    assert w.bead("c-a").spec.convoy == "c"


def test_review_then_land_lands_through_exactly_one_landing_mr() -> None:
    w = World.of(town(), convoy("c", [task("a")]))
    w.step()
    w.step(seconds(5))
    close_via_review(w, "c-a")
    for _ in range(3):
        w.step(seconds(5))
    landing = [b for b in w.beads.values() if b.spec.merge_request and b.spec.merge_request.landing]
    assert [b.name for b in landing] == ["c-land-1"]
    assert landing[0].spec.merge_request.source_bead == "c"  # type: ignore[union-attr]
    assert landing[0].spec.merge_request.target_branch == "main"  # type: ignore[union-attr]
    review(w, "c-land-1", "merged")
    w.step(seconds(5))
    assert w.convoys["c"].status.phase is ConvoyPhase.LANDED
    assert w.convoys["c"].status.landing.merge_commit == "c0ffee"
    assert AgentPhase.WORKING not in {a.status.phase for a in w.agents.values()}
    assert RIG in w.town.spec.rigs[0].name


# --- the runtime's refinery report sequence ------------------------------------------------------


def test_refinery_approval_done_then_merged_closes_the_mr_once() -> None:
    """The refinery runtime reports `done` (review approved) and then `merged` in one generation.

    The approval alone must not release the refinery: if it did, the verified `merged` would
    arrive from a stale generation, be dropped, and the MR would be reviewed again on a branch
    that was already merged and deleted.
    """
    w = World.of(town(), bead("a"))
    w.step()
    mr = finish(w, "a")
    refinery = picked_up(w, mr)
    generation = refinery.spec.generation
    w.report(refinery.name, "done", summary="looks good")
    w.step(seconds(1))
    assert w.agents[refinery.name].spec.generation == generation
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    w.report(refinery.name, "merged", mergeCommit="c0ffee")
    w.settle(advance=seconds(1))
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    assert w.agents[refinery.name].spec.generation == generation


def test_a_done_report_is_recorded_in_the_agents_release_after_the_beads_move() -> None:
    """Applying a report writes the agent's status once (release and applied mark together),
    and only after the bead moved: a crash in between leaves the report to be re-applied."""
    w = World.of(town(), bead("a"))
    w.step()
    polecat = w.agent_on("a")
    w.report(polecat.name, "done", summary="did a")
    actions = w.step(seconds(5))
    writes = [(type(a).__name__, write) for a in actions for write in a.writes()]
    agent_status = [
        i
        for i, (_, write) in enumerate(writes)
        if getattr(write, "kind", None) is Kind.AGENT
        and getattr(write, "name", None) == polecat.name
        and type(write).__name__ == "PatchStatus"
    ]
    assert len(agent_status) == 1, writes
    status_write = writes[agent_status[0]][1]
    assert status_write.patch["appliedReportSeq"] == 1  # type: ignore[union-attr]
    assert status_write.patch["phase"] == AgentPhase.IDLE.value  # type: ignore[union-attr]
    bead_move = next(
        i
        for i, (name, write) in enumerate(writes)
        if name == "TransitionBead" and getattr(write, "name", None) == "a"
    )
    assert bead_move < agent_status[0]
    assert not any(name == "MarkReportsApplied" for name, _ in writes)
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert w.agents[polecat.name].status.applied_report_seq == 1


def _agent_writes(actions: list[Any], agent_name: str) -> list[tuple[str, Any]]:
    return [
        (type(write).__name__, write)
        for action in actions
        for write in action.writes()
        if getattr(write, "kind", None) is Kind.AGENT and getattr(write, "name", None) == agent_name
    ]


def test_a_polecat_done_with_work_waiting_takes_the_next_bead_once_its_session_ended() -> None:
    """The released polecat is reused, not replaced: as soon as its pod has ended (a real
    runtime ends its session and exits seconds after `done`, having written its last usage)."""
    w = World.of(town(per_rig=1), bead("a"), bead("b"))
    w.step()
    polecat = w.agent_on("a")
    assert w.bead("b").status.phase is BeadPhase.OPEN  # the rig's one polecat is busy
    w.report(polecat.name, "done", summary="did a")
    w.step(seconds(5))
    # Released; its pod was still running when the pass decided, so `b` waits one pass.
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert w.agents[polecat.name].spec.hook is None
    assert w.bead("b").status.phase is BeadPhase.OPEN
    w.step(seconds(1))  # the pod has exited
    again = w.agents[polecat.name]
    assert (again.spec.hook, again.spec.generation) == ("b", 2)
    assert again.status.phase is AgentPhase.WORKING
    assert w.bead("b").status.phase is BeadPhase.IN_PROGRESS
    assert [a.name for a in w.agents.values() if a.spec.role is AgentRole.POLECAT] == [polecat.name]
    w.settle(advance=seconds(5))
    assert w.bead("a").status.attempts == 1


def test_a_released_agent_is_not_reused_nor_its_pod_stopped_while_its_session_ends() -> None:
    """Its last report (the session's final usage) would be refused once the agent is
    re-dispatched: the pod gets the session-end grace to exit on its own."""
    w = World.of(town(per_rig=1), bead("a"), bead("b"))
    w.runtimes_exit_on_release = False
    w.step()
    polecat = w.agent_on("a")
    first_pod = next(iter(w.pods))
    w.report(polecat.name, "done", summary="did a")
    w.step(seconds(5))
    w.step(seconds(10))
    w.step(seconds(10))  # 20 s after the release: within the grace
    assert w.agents[polecat.name].spec.hook is None
    assert w.bead("b").status.phase is BeadPhase.OPEN
    assert not [stop for stop in w.stopped if stop.pod == first_pod]
    assert [a.name for a in w.agents.values() if a.spec.role is AgentRole.POLECAT] == [polecat.name]
    w.step(seconds(15))  # past the grace: the pod is stopped and the polecat reused
    w.step(seconds(1))
    assert [stop for stop in w.stopped if stop.pod == first_pod]
    w.settle(advance=seconds(1))
    assert w.agents[polecat.name].spec.generation == 2
    assert w.bead("b").status.phase is not BeadPhase.OPEN


def test_a_refinery_that_merged_takes_the_next_queued_mr_once_its_session_ended() -> None:
    w = World.of(town(), bead("a"), bead("b"))
    w.step()
    mr_a = finish(w, "a")
    mr_b = finish(w, "b")
    refinery = picked_up(w, mr_a)
    assert w.bead(mr_b).status.phase is BeadPhase.OPEN  # one direct review at a time
    w.report(refinery.name, "merged", mergeCommit="c0ffee")
    w.step(seconds(1))
    assert w.bead(mr_a).status.phase is BeadPhase.CLOSED
    w.step(seconds(1))  # its pod has exited: the same refinery takes the next MR
    assert w.bead(mr_b).status.phase is BeadPhase.IN_PROGRESS
    assert w.agents[refinery.name].spec.hook == mr_b
    w.report(refinery.name, "merged", mergeCommit="beef")
    w.settle(advance=seconds(1))
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    assert w.bead("b").status.phase is BeadPhase.CLOSED
