"""A refinery's `pr-opened` is a claim: the provider's API must confirm it (issue 10, 1b).

The poller's verdict (`gastown.kube.prpoll.verdict`) is applied here to what the provider would
say about the world's remote, so these tests cover the reconciler's rules and the expectations
each poll carries.
"""

from __future__ import annotations

from typing import Any

from gastown.agent.providers import PullRequestInfo
from gastown.kube.conditions import bead_conditions
from gastown.kube.prpoll import verdict
from gastown.model import BeadPhase, PRState
from gastown.reconcile.actions import AnnotateBead, PollPullRequest
from gastown.reconcile.review_queue import PR_UNVERIFIED
from gastown.reconcile.writes import PollPR
from tests.unit.reconcile.builders import World, bead, minutes, seconds, town
from tests.unit.reconcile.test_acceptance import finish, picked_up

URL = "https://github.example/o/rig-1/pull/7"
MERGE = "cd" * 20


def claimed(w: World, url: str = URL) -> tuple[str, str]:
    """Work of bead `a` is in review and its refinery claims `url`; (MR, refinery)."""
    if w.bead("a").status.merge_request is None:
        w.step()
        mr = finish(w, "a")
    else:
        mr = w.bead("a").status.merge_request or ""
    refinery = picked_up(w, mr).name
    w.report(refinery, "pr-opened", prUrl=url)
    w.step(seconds(5))
    return mr, refinery


def last_poll(w: World, mr: str) -> PollPR:
    """The last poll the reconciler asked for on `mr`."""
    return next(p for p in reversed(w.polls) if p.bead == mr)


def provider_says(w: World, mr: str, **changes: Any) -> None:
    """The poller asks the provider about the last polled PR of `mr` and writes its verdict.

    By default the provider describes the MR's real work: its branch, at the commit the world's
    remote holds, into its target; `changes` make it describe something else.
    """
    spec = w.bead(mr).spec.merge_request
    assert spec is not None
    effect = last_poll(w, mr)
    fields: dict[str, Any] = {
        "web_url": effect.url,
        "state": PRState.OPEN,
        "head_branch": spec.branch,
        "head_sha": w.remote.branches.get(spec.branch, ""),
        "base_branch": spec.target_branch,
        "merge_commit": None,
        "same_repository": True,
    }
    patch = verdict(effect, PullRequestInfo(**(fields | changes)))
    w.apply([AnnotateBead(bead=mr, set=patch, reason="Polled")])


def condition(w: World, name: str, type_: str) -> dict[str, Any] | None:
    """A condition the operator derives for the bead's current status."""
    status = w.bead(name).status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return next((c for c in bead_conditions(status) if c["type"] == type_), None)


def test_a_claimed_pr_counts_as_opened_only_after_the_provider_confirms_it() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr, refinery = claimed(w)
    status = w.bead(mr).status
    assert status.phase is BeadPhase.IN_PROGRESS
    assert status.reason == "PullRequestClaimed"
    assert status.review is not None
    assert (status.review.pr_url, status.review.pr_state) == (URL, None)
    assert status.review.pr_verified_at is None
    assert w.agents[refinery].spec.hook is None  # the refinery's part is over
    # The first poll is due at once, with what the PR must carry.
    actions = w.step()
    assert [a.bead for a in actions if isinstance(a, PollPullRequest)] == [mr]
    spec = w.bead(mr).spec.merge_request
    assert spec is not None
    assert spec.source_sha is not None
    effect = last_poll(w, mr)
    assert (effect.url, effect.head_branch, effect.base_branch, effect.head_sha) == (
        URL,
        spec.branch,
        spec.target_branch,
        spec.source_sha,
    )
    provider_says(w, mr)
    w.step()
    status = w.bead(mr).status
    assert status.reason == "PullRequestOpened"
    assert status.review is not None
    assert status.review.pr_verified_at == w.now
    assert any(e.reason == "PullRequestOpened" and e.type == "Normal" for e in w.events)
    provider_says(w, mr, state=PRState.MERGED, merge_commit=MERGE)
    w.step()
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    review = w.bead(mr).status.review
    assert review is not None
    assert review.merge_commit == MERGE
    assert condition(w, mr, "ClaimsVerified") is None


def test_another_merged_pr_of_the_repository_never_closes_the_mr() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr, refinery = claimed(w)
    attempts = w.bead(mr).status.attempts
    w.step()  # the poll
    provider_says(
        w,
        mr,
        state=PRState.MERGED,
        head_branch="feature/other",
        head_sha="ef" * 20,
        merge_commit=MERGE,
    )
    w.step()
    status = w.bead(mr).status
    assert status.phase is BeadPhase.OPEN  # back to the review queue, not closed
    assert status.reason == PR_UNVERIFIED
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert status.review is not None
    assert status.review.pr_url is None  # the refused URL is dropped
    assert status.review.merge_commit is None
    assert status.attempts == attempts  # the refused claim was that attempt
    refused = status.refused_claim
    assert refused is not None
    assert (refused.agent, refused.reason) == (refinery, PR_UNVERIFIED)
    assert "head branch is 'feature/other'" in refused.message
    assert URL in refused.message
    warnings = [e for e in w.events if e.reason == PR_UNVERIFIED]
    assert len(warnings) == 1
    assert warnings[0].type == "Warning"
    assert warnings[0].name == mr
    claims = condition(w, mr, "ClaimsVerified")
    assert claims is not None
    assert (claims["status"], claims["reason"]) == ("False", PR_UNVERIFIED)


def test_a_verified_pr_whose_head_changes_is_refused() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr, _ = claimed(w)
    w.step()
    provider_says(w, mr)
    w.step()
    w.step(minutes(2))  # the next poll
    provider_says(w, mr, state=PRState.MERGED, head_sha="ef" * 20, merge_commit=MERGE)
    w.step()
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW


def test_a_refinery_that_keeps_claiming_a_wrong_pr_cannot_loop_forever() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    rounds = 0
    mr = ""
    while rounds < 20:
        mr, _ = claimed(w)
        rounds += 1
        w.step()
        provider_says(w, mr, base_branch="release")
        w.step()
        assert w.bead(mr).status.phase is not BeadPhase.CLOSED
        if w.bead(mr).status.phase is BeadPhase.FAILED:
            break
        for _ in range(30):  # wait out the backoff until a refinery holds it again
            if w.bead(mr).status.phase is BeadPhase.IN_PROGRESS:
                break
            w.step(minutes(5))
    status = w.bead(mr).status
    assert status.phase is BeadPhase.FAILED
    assert status.reason == PR_UNVERIFIED
    assert rounds == w.town.spec.policy.retry.max_attempts
    assert w.bead("a").status.phase is not BeadPhase.CLOSED
    assert status.refused_claim is not None


def test_a_pr_that_cannot_be_read_is_never_opened_and_fails_after_the_limit() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr, _ = claimed(w)
    for _ in range(30):
        w.step(minutes(1))
        if w.bead(mr).status.phase is BeadPhase.FAILED:
            break
        assert w.bead(mr).status.reason != "PullRequestOpened"
        w.pr_result(mr, "unknown")
    assert w.bead(mr).status.reason == "PullRequestUnknown"
    assert w.bead("a").status.phase is not BeadPhase.CLOSED


def test_merged_without_a_recorded_merge_commit_does_not_close() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    mr, _ = claimed(w)
    w.pr_result(mr, "merged")  # no mergeCommit: nothing verified to record
    w.step()
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    review = w.bead(mr).status.review
    assert review is not None
    assert review.unknown_polls == 1


def test_after_a_rework_the_pr_must_carry_the_reworked_head() -> None:
    w = World.of(town(strategy="pr"), bead("a"))
    w.step()
    mr = finish(w, "a")
    refinery = picked_up(w, mr).name
    w.report(refinery, "request-changes", feedback="rename x")
    w.step(seconds(5))
    rework = f"{mr}-rework-1"
    w.step(seconds(5))
    w.report(w.agent_on(rework).name, "done", summary="renamed")
    w.step(seconds(5))
    reworked = w.bead(rework).status.head_sha
    assert reworked is not None
    spec = w.bead(mr).spec.merge_request
    assert spec is not None
    assert reworked != spec.source_sha
    claimed(w)
    w.step()
    assert last_poll(w, mr).head_sha == reworked
    # The PR still at the first head (the rework never reached it) is refused.
    provider_says(w, mr, head_sha=spec.source_sha)
    w.step()
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.bead(mr).status.reason == PR_UNVERIFIED
