"""The operator's own check of agents' claims, on real git against a bare remote."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from gastown.agent.git import Git
from gastown.kube.client import Kube
from gastown.kube.store import TownStore
from gastown.kube.verify import (
    ClaimVerifier,
    RemoteUnreachableError,
    cache_repository,
    check_claim,
)
from gastown.model import Town
from gastown.reconcile.writes import BranchClaim, MergeClaim, VerifyClaim
from tests.unit.agent.conftest import Remote, git
from tests.unit.reconcile.builders import RIG, town

BRANCH = "gt/polecat-1/bead-a"


@pytest.fixture
def checker(tmp_path: Path, remote: Remote) -> Git:
    return Git(cache_repository(tmp_path / "cache", str(remote.bare)))


def merge_into(remote: Remote, source: str, target: str = "main") -> str:
    """A real `--no-ff` merge pushed to the remote's target; returns the merge commit."""
    scratch = remote.scratch
    git(scratch, "fetch", "-q", "origin")
    start = f"origin/{target}" if remote.sha(target) else "origin/main"
    git(scratch, "checkout", "-q", "-B", target, start)
    git(
        scratch,
        "-c",
        "user.name=r",
        "-c",
        "user.email=r@x",
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "m",
        source,
    )
    git(scratch, "push", "-q", "origin", f"HEAD:refs/heads/{target}")
    return git(scratch, "rev-parse", "HEAD")


def test_a_pushed_branch_at_the_reported_head_is_verified(remote: Remote, checker: Git) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    verdict = check_claim(checker, str(remote.bare), BranchClaim("app", BRANCH, head))
    assert verdict.ok, verdict.message


def test_a_head_the_branch_has_moved_past_is_still_verified(remote: Remote, checker: Git) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    remote.commit(BRANCH, "more.txt", "more\n")
    assert check_claim(checker, str(remote.bare), BranchClaim("app", BRANCH, head)).ok


@pytest.mark.parametrize("case", ["missing-branch", "other-commit", "not-a-sha"])
def test_false_push_claims_are_refused(remote: Remote, checker: Git, case: str) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    other = remote.commit("gt/someone-else/x", "x.txt", "x\n")
    claim = {
        "missing-branch": BranchClaim("app", "gt/polecat-1/nothing", head),
        "other-commit": BranchClaim("app", BRANCH, other),
        "not-a-sha": BranchClaim("app", BRANCH, "--upload-pack=touch /tmp/x"),
    }[case]
    verdict = check_claim(checker, str(remote.bare), claim)
    assert not verdict.ok
    assert verdict.message


def test_a_real_merge_containing_the_reviewed_head_is_verified(
    remote: Remote, checker: Git
) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    merge = merge_into(remote, head)
    verdict = check_claim(checker, str(remote.bare), MergeClaim("app", "main", merge, (head,)))
    assert verdict.ok, verdict.message


def test_a_forged_merge_commit_is_refused(remote: Remote, checker: Git) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    forged = "0" * 37 + "bad"
    verdict = check_claim(checker, str(remote.bare), MergeClaim("app", "main", forged, (head,)))
    assert not verdict.ok
    assert "is not on main" in verdict.message


def test_a_merge_of_something_else_is_refused(remote: Remote, checker: Git) -> None:
    # The refinery merged (and pushed) another branch, then claimed that merge for this work.
    head = remote.commit(BRANCH, "work.txt", "done\n")
    other = remote.commit("gt/other/y", "y.txt", "y\n")
    merge = merge_into(remote, other)
    verdict = check_claim(checker, str(remote.bare), MergeClaim("app", "main", merge, (head,)))
    assert not verdict.ok
    assert "does not contain the reviewed commit" in verdict.message


def test_a_merge_that_only_exists_on_another_branch_is_refused(
    remote: Remote, checker: Git
) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    merge = merge_into(remote, head, target="release")  # not the MR's target
    verdict = check_claim(checker, str(remote.bare), MergeClaim("app", "main", merge, (head,)))
    assert not verdict.ok


def test_an_unreachable_remote_is_not_a_verdict(tmp_path: Path) -> None:
    checker = Git(cache_repository(tmp_path / "cache", "x"))
    claim = BranchClaim("app", BRANCH, "a" * 40)
    with pytest.raises(RemoteUnreachableError):
        check_claim(checker, str(tmp_path / "no-such-repo.git"), claim)


async def test_the_verifier_checks_once_in_the_background_and_wakes_the_town(
    remote: Remote, tmp_path: Path
) -> None:
    head = remote.commit(BRANCH, "work.txt", "done\n")
    store = TownStore(namespace="ns", name="t")
    body = town().to_api()
    body["spec"]["rigs"][0]["gitUrl"] = str(remote.bare)
    store.town = Town.from_api(body)
    verifier = ClaimVerifier(cast(Kube, None), cache_dir=tmp_path / "cache")  # no Secret to read
    effect = VerifyClaim(key="agent-uid/1/1", claim=BranchClaim(RIG, BRANCH, head))
    verifier.request(store, effect)
    verifier.request(store, effect)  # a second request for the same report starts nothing
    assert store.verdicts == {"agent-uid/1/1": None}
    assert len(verifier._tasks) == 1
    await asyncio.wait_for(store.wake.wait(), 30)
    verdict = store.verdicts["agent-uid/1/1"]
    assert verdict is not None
    assert verdict.ok, verdict.message
    assert store.snapshot() is not None
    assert store.snapshot().verdicts["agent-uid/1/1"] == verdict  # type: ignore[union-attr]


async def test_a_claim_about_an_unknown_rig_is_refused(tmp_path: Path) -> None:
    store = TownStore(namespace="ns", name="t")
    store.town = town()
    verifier = ClaimVerifier(cast(Kube, None), cache_dir=tmp_path / "cache")
    verifier.request(store, VerifyClaim(key="k", claim=BranchClaim("nope", BRANCH, "a" * 40)))
    await asyncio.wait_for(store.wake.wait(), 30)
    verdict = store.verdicts["k"]
    assert verdict is not None
    assert not verdict.ok
    assert "rig nope" in verdict.message
