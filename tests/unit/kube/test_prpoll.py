"""The PR poller's verdict: what the provider says, checked against what the MR expects."""

from __future__ import annotations

from dataclasses import replace

from gastown.agent.providers import PullRequestInfo
from gastown.kube.prpoll import MAX_MISMATCH, mismatch, verdict
from gastown.model import PRState
from gastown.reconcile.writes import PollPR

URL = "https://github.example/o/r/pull/3"
HEAD = "ab" * 20
POLL = PollPR(bead="a-mr-1", url=URL, head_branch="gt/p/a", base_branch="main", head_sha=HEAD)
OPEN = PullRequestInfo(
    web_url=URL,
    state=PRState.OPEN,
    head_branch="gt/p/a",
    head_sha=HEAD,
    base_branch="main",
    merge_commit=None,
    same_repository=True,
)
MERGED = replace(OPEN, state=PRState.MERGED, merge_commit="cd" * 20)


def test_a_confirmed_open_pr_is_open() -> None:
    assert verdict(POLL, OPEN) == {"review": {"prState": "open", "prMismatch": None}}


def test_a_confirmed_merge_records_the_providers_merge_commit() -> None:
    assert verdict(POLL, MERGED) == {
        "review": {"prState": "merged", "prMismatch": None, "mergeCommit": "cd" * 20}
    }


def test_no_answer_is_unknown() -> None:
    assert verdict(POLL, None) == {"review": {"prState": "unknown"}}


def test_another_merged_pr_is_a_mismatch_not_a_merge() -> None:
    other = replace(MERGED, web_url=URL, head_branch="feature/other", head_sha="ef" * 20)
    patch = verdict(POLL, other)
    review = patch["review"]
    assert review["prState"] == "mismatch"
    assert "mergeCommit" not in review
    assert "head branch is 'feature/other', expected 'gt/p/a'" in review["prMismatch"]
    assert f"head commit is {'ef' * 20}, expected {HEAD}" in review["prMismatch"]


def test_a_closed_pr_of_other_work_is_a_mismatch_too() -> None:
    closed = replace(OPEN, state=PRState.CLOSED, base_branch="release")
    assert verdict(POLL, closed)["review"]["prState"] == "mismatch"


def test_unknown_expected_head_checks_branches_only() -> None:
    old_mr = replace(POLL, head_sha=None)
    assert verdict(old_mr, replace(MERGED, head_sha="ef" * 20))["review"]["prState"] == "merged"
    assert verdict(old_mr, replace(MERGED, head_branch="x"))["review"]["prState"] == "mismatch"


def test_mismatch_text_is_bounded() -> None:
    text = mismatch(["x" * 5000])["review"]["prMismatch"]
    assert len(text) == MAX_MISMATCH
