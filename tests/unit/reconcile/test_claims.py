"""Agents are untrusted: a report changes work state only after its claim is verified."""

from __future__ import annotations

from gastown.model import BeadPhase
from gastown.reconcile import names
from gastown.reconcile.actions import VerifyAgentClaim
from gastown.reconcile.writes import BranchClaim, Kind, MergeClaim
from tests.unit.reconcile.builders import World, bead, convoy, seconds, task, town


def dispatched(w: World, bead_name: str) -> str:
    """Step until `bead_name` is dispatched; the polecat's name."""
    for _ in range(3):
        w.step(seconds(5))
        if w.bead(bead_name).status.phase is BeadPhase.IN_PROGRESS:
            break
    return w.agent_on(bead_name).name


def in_review(w: World, bead_name: str) -> str:
    """Dispatch, finish honestly, and let the refinery pick up the MR; the MR's name."""
    polecat = dispatched(w, bead_name)
    w.report(polecat, "done", summary="did it")
    w.step(seconds(5))
    mr = w.bead(bead_name).status.merge_request
    assert mr is not None
    for _ in range(3):
        w.step(seconds(5))
        if w.bead(mr).status.phase is BeadPhase.IN_PROGRESS:
            break
    return mr


def refused(w: World, bead_name: str) -> str | None:
    claim = w.bead(bead_name).status.refused_claim
    return claim.reason if claim is not None else None


def warnings(w: World, reason: str) -> list[str]:
    return [e.name for e in w.events if e.type == "Warning" and e.reason == reason]


def test_a_forged_merged_report_closes_nothing() -> None:
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    refinery = w.agent_on(mr).name
    w.report(refinery, "merged", forge=True, mergeCommit="0" * 37 + "bad")
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert refused(w, mr) == "MergeUnverified"
    assert warnings(w, "MergeUnverified") == [mr]
    assert w.agents[refinery].status.applied_report_seq == 1  # never re-checked
    assert w.step(seconds(1)) == []


def test_an_honest_merge_closes_the_mr_and_its_source_and_clears_nothing_else() -> None:
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    w.report(w.agent_on(mr).name, "merged", mergeCommit="c0ffee1")
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    assert refused(w, mr) is None


def test_the_merge_claim_must_contain_the_verified_source_head() -> None:
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    head = w.bead("a").status.head_sha
    assert head is not None
    assert w.bead(mr).spec.merge_request is not None
    assert w.bead(mr).spec.merge_request.source_sha == head
    w.report(w.agent_on(mr).name, "merged", mergeCommit="c0ffee1")
    w.step(seconds(5))
    claims = [v.claim for v in w.verifications if isinstance(v.claim, MergeClaim)]
    assert claims == [
        MergeClaim(rig="rig-1", target="main", merge_commit="c0ffee1", contains=(head,))
    ]


def test_after_rework_the_merge_must_contain_the_reworks_head() -> None:
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    w.report(w.agent_on(mr).name, "request-changes", feedback="rename it")
    w.step(seconds(5))
    rework = f"{mr}-rework-1"
    polecat = dispatched(w, rework)
    w.report(polecat, "done", summary="renamed")
    w.step(seconds(5))
    assert w.bead(rework).status.phase is BeadPhase.CLOSED
    rework_head = w.bead(rework).status.head_sha
    assert rework_head is not None
    assert rework_head != w.bead("a").status.head_sha
    for _ in range(3):
        w.step(seconds(5))
        if w.bead(mr).status.phase is BeadPhase.IN_PROGRESS:
            break
    w.report(w.agent_on(mr).name, "merged", mergeCommit="c0ffee2")
    w.step(seconds(5))
    claim = [v.claim for v in w.verifications if isinstance(v.claim, MergeClaim)][-1]
    assert isinstance(claim, MergeClaim)
    assert claim.contains == (rework_head,)
    assert w.bead(mr).status.phase is BeadPhase.CLOSED


def test_a_done_naming_another_branch_makes_no_merge_request() -> None:
    w = World.of(town(), bead("a"))
    polecat = dispatched(w, "a")
    w.remote.branches["release"] = "1234567"  # a branch holding an unreviewed commit
    w.report(polecat, "done", forge=True, branch="release", headSha="1234567")
    w.step(seconds(5))
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert w.bead("a").status.merge_request is None
    assert not [b for b in w.beads.values() if b.spec.merge_request is not None]
    assert refused(w, "a") == "ForeignBranch"
    assert warnings(w, "ForeignBranch") == ["a"]
    assert not w.verifications  # refused before anything is asked of the remote


def test_a_done_naming_the_convoys_feature_branch_is_refused() -> None:
    w = World.of(town(), convoy("c", [task("a")], mergeMode="review-then-land"))
    polecat = dispatched(w, "c-a")
    feature = names.feature_branch("c", w.convoys["c"].metadata.uid)
    w.report(polecat, "done", forge=True, branch=feature, headSha="1234567")
    w.step(seconds(5))
    assert refused(w, "c-a") == "ForeignBranch"
    assert w.bead("c-a").status.merge_request is None


def test_a_done_whose_commit_is_not_on_the_remote_is_refused() -> None:
    w = World.of(town(), bead("a"))
    polecat = dispatched(w, "a")
    branch = names.work_branch(polecat, "a", w.bead("a").metadata.uid)
    w.report(polecat, "done", forge=True, branch=branch, headSha="abcdef0")
    w.step(seconds(5))
    assert refused(w, "a") == "PushUnverified"
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert [v.claim for v in w.verifications] == [BranchClaim("rig-1", branch, "abcdef0")]


def test_a_done_without_a_commit_is_refused() -> None:
    w = World.of(town(), bead("a"))
    polecat = dispatched(w, "a")
    branch = names.work_branch(polecat, "a", w.bead("a").metadata.uid)
    w.report(polecat, "done", forge=True, branch=branch)
    w.step(seconds(5))
    assert refused(w, "a") == "DoneWithoutCommit"


def test_a_report_waits_unapplied_while_its_claim_is_checked_and_nothing_else_acts() -> None:
    w = World.of(town(), bead("a"))
    w.verify_inline = False
    polecat = dispatched(w, "a")
    w.report(polecat, "done", summary="did it")
    first = w.step(seconds(5))
    assert [type(a) for a in first] == [VerifyAgentClaim]
    w.end_pod(polecat)  # the runtime exits right after `gt done`
    for _ in range(3):  # the check is slow: no re-request, no session-end retry meanwhile
        assert w.step(seconds(20)) == []
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert w.agents[polecat].status.applied_report_seq == 0
    w.verify_all()
    w.step(seconds(1))
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert len(w.verifications) == 1


def test_a_refused_done_ends_the_attempt_the_ordinary_way() -> None:
    w = World.of(town(), bead("a"))
    polecat = dispatched(w, "a")
    w.report(polecat, "done", forge=True, branch="main", headSha="1234567")
    w.step(seconds(5))
    w.end_pod(polecat)
    for _ in range(4):
        w.step(seconds(30))
    assert w.bead("a").status.attempts >= 1
    assert w.bead("a").status.phase in (BeadPhase.OPEN, BeadPhase.IN_PROGRESS)
    assert w.bead("a").status.merge_request is None
    assert w.violations() == []


def test_a_landing_must_contain_every_verified_merge_of_the_convoy() -> None:
    w = World.of(town(), convoy("c", [task("a"), task("b")], mergeMode="review-then-land"))
    merges = []
    for name in ("c-a", "c-b"):
        mr = in_review(w, name)
        merges.append(f"c0ffee{len(merges)}")
        w.report(w.agent_on(mr).name, "merged", mergeCommit=merges[-1])
        w.step(seconds(5))
        assert w.bead(mr).status.phase is BeadPhase.CLOSED
    landing = None
    for _ in range(6):
        w.step(seconds(5))
        landing = w.convoys["c"].status.landing.merge_request
        if landing and w.bead(landing).status.phase is BeadPhase.IN_PROGRESS:
            break
    assert landing is not None
    w.report(w.agent_on(landing).name, "merged", mergeCommit="1a2d1a2")
    w.step(seconds(5))
    claim = [v.claim for v in w.verifications if isinstance(v.claim, MergeClaim)][-1]
    assert isinstance(claim, MergeClaim)
    assert claim.target == "main"
    assert sorted(claim.contains) == sorted(merges)


def test_a_verified_merge_after_a_refused_one_clears_the_condition() -> None:
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    refinery = w.agent_on(mr).name
    w.report(refinery, "merged", forge=True, mergeCommit="badbad0")
    w.step(seconds(5))
    assert refused(w, mr) == "MergeUnverified"
    w.report(refinery, "merged", mergeCommit="c0ffee3")
    w.step(seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    assert refused(w, mr) is None


def test_a_refinery_report_about_an_mr_assigned_elsewhere_is_dropped_not_looped() -> None:
    # Every outcome's write expects the MR's assignee to be the reporting refinery; acting for
    # another would conflict on every pass and the report would never apply (a hot loop).
    w = World.of(town(), bead("a"))
    mr = in_review(w, "a")
    refinery = w.agent_on(mr).name
    w._patch_status(Kind.BEAD, mr, {"assignee": "someone-else"})
    w.report(refinery, "pr-opened", prUrl="https://github.example/o/r/pull/1")
    w.step(seconds(1))
    assert w.agents[refinery].status.applied_report_seq == 1
    assert w.conflicts == 0
    assert w.bead(mr).status.review is None or w.bead(mr).status.review.pr_url is None
