"""The refinery's direct merge and PR opening, on real git; the remote target is never broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from gastown.agent.providers import PullRequestInfo
from gastown.agent.refinery import (
    MergeContext,
    ReviewVerdict,
    merge_direct,
    open_pull_request,
    run_gates,
)
from gastown.agent.workspace import Workspace, prepare
from gastown.model.bead import MergeRequestSpec
from gastown.model.enums import AgentRole, ReportType
from tests.unit.agent.conftest import Remote, git, make_identity, mr_order

BRANCH = "gt/polecat-1/bead-a"


@pytest.fixture
def refinery(remote: Remote, tmp_path: Path) -> Workspace:
    ident = make_identity(tmp_path / "ref", role=AgentRole.REFINERY, agent="refinery")
    return prepare(ident, mr_order(remote, BRANCH))


def mr(target: str = "main", branch: str = BRANCH) -> MergeRequestSpec:
    return MergeRequestSpec(source_bead="bead-a", branch=branch, target_branch=target)


def test_direct_merge_happy_path(remote: Remote, refinery: Workspace) -> None:
    source = remote.commit(BRANCH, "work.txt", "done\n")
    before = remote.sha("main")
    result = merge_direct(refinery.git, mr(), default_branch="main", gates=["test -f work.txt"])
    assert result.type is ReportType.MERGED
    assert result.merge_commit == remote.sha("main")
    parents = git(remote.bare, "rev-list", "--parents", "-n1", "main").split()
    assert parents[1:] == [before, source]  # a real --no-ff merge commit
    assert remote.show("main", "work.txt") == "done"
    assert remote.sha(BRANCH) is None
    assert result.source_deleted
    assert result.to_draft("mr-bead-a", BRANCH).merge_commit == result.merge_commit


def test_conflict_leaves_remote_target_unchanged(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "README.md", "from the branch\n")
    main = remote.commit("main", "README.md", "from main\n")
    result = merge_direct(refinery.git, mr(), default_branch="main")
    assert result.type is ReportType.CONFLICT
    assert result.files == ("README.md",)
    assert remote.sha("main") == main
    assert remote.sha(BRANCH) is not None
    assert refinery.git.is_clean()


def test_failed_gate_leaves_remote_target_unchanged(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "work.txt", "done\n")
    main = remote.sha("main")
    result = merge_direct(
        refinery.git, mr(), default_branch="main", gates=["true", "echo boom-output; exit 3"]
    )
    assert result.type is ReportType.GATE_FAILED
    assert result.message is not None
    assert "boom-output" in result.message
    assert "exit code 3" in result.message
    assert remote.sha("main") == main
    assert remote.sha(BRANCH) is not None


def test_review_requesting_changes_pushes_nothing(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "work.txt", "done\n")
    main = remote.sha("main")
    seen: list[MergeContext] = []

    def review(ctx: MergeContext) -> ReviewVerdict:
        seen.append(ctx)
        return ReviewVerdict("needs tests", ("work.txt",))

    result = merge_direct(refinery.git, mr(), default_branch="main", review=review)
    assert result.type is ReportType.REQUEST_CHANGES
    assert result.feedback == "needs tests"
    assert result.files == ("work.txt",)
    assert remote.sha("main") == main
    assert seen[0].target_sha == main


def test_review_edits_are_not_pushed(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "work.txt", "done\n")

    def review(ctx: MergeContext) -> None:
        (ctx.workdir / "work.txt").write_text("tampered\n")
        (ctx.workdir / "extra.txt").write_text("junk\n")

    result = merge_direct(refinery.git, mr(), default_branch="main", review=review)
    assert result.type is ReportType.MERGED
    assert remote.show("main", "work.txt") == "done"
    assert result.merge_commit == remote.sha("main")


def test_rerun_after_merge_reports_the_existing_merge(remote: Remote, refinery: Workspace) -> None:
    source = remote.commit(BRANCH, "work.txt", "done\n")
    first = merge_direct(refinery.git, mr(), default_branch="main")
    # Simulate a crash before the report: the branch is still there and we run again.
    git(remote.scratch, "push", "-q", "origin", f"{source}:refs/heads/{BRANCH}")
    second = merge_direct(refinery.git, mr(), default_branch="main")
    assert second.type is ReportType.MERGED
    assert second.merge_commit == first.merge_commit
    assert git(remote.bare, "rev-list", "--count", "main") == "3"


def test_target_moving_during_gates_is_merged_again(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "work.txt", "done\n")
    marker = refinery.path.parent / "moved-once"
    scratch = remote.scratch
    # The first gate run pushes an unrelated commit to main behind the refinery's back.
    gate = (
        f"if [ ! -e {marker} ]; then touch {marker} && cd {scratch} && git checkout -q -B main "
        f"origin/main && echo other > other.txt && git add other.txt && git -c user.name=x "
        f"-c user.email=x@x commit -q -m other && git push -q origin HEAD:main; fi"
    )
    result = merge_direct(refinery.git, mr(), default_branch="main", gates=[gate])
    assert result.type is ReportType.MERGED
    assert remote.show("main", "other.txt") == "other"
    assert remote.show("main", "work.txt") == "done"
    assert result.merge_commit == remote.sha("main")


def test_merge_into_missing_feature_branch_creates_it(remote: Remote, refinery: Workspace) -> None:
    feature = "convoy/c/1234abcd/head"
    remote.commit(BRANCH, "work.txt", "done\n")
    main = remote.sha("main")
    result = merge_direct(refinery.git, mr(target=feature), default_branch="main")
    assert result.type is ReportType.MERGED
    assert remote.sha(feature) == result.merge_commit
    assert remote.sha("main") == main


def test_a_convoy_branch_named_as_source_is_merged_but_never_deleted(
    remote: Remote, refinery: Workspace
) -> None:
    # A merge request naming a non-agent branch (here the convoy's own feature branch, as a
    # lying `done` once could) must never make the refinery delete it after the merge.
    feature = "convoy/c/1234abcd/head"
    remote.commit(feature, "work.txt", "done\n")
    result = merge_direct(refinery.git, mr(branch=feature), default_branch="main")
    assert result.type is ReportType.MERGED
    assert not result.source_deleted
    assert remote.sha(feature) is not None


def test_source_equal_to_target_is_refused_and_the_target_survives(
    remote: Remote, refinery: Workspace
) -> None:
    feature = "convoy/c/1234abcd/head"
    tip = remote.commit(feature, "work.txt", "done\n")
    result = merge_direct(refinery.git, mr(target=feature, branch=feature), default_branch="main")
    assert result.type is ReportType.FAILED
    assert remote.sha(feature) == tip


def test_missing_source_branch_fails(remote: Remote, refinery: Workspace) -> None:
    result = merge_direct(refinery.git, mr(), default_branch="main")
    assert result.type is ReportType.FAILED
    assert result.message is not None
    assert "does not exist" in result.message


def test_gate_output_is_bounded(tmp_path: Path) -> None:
    result = run_gates(tmp_path, ["yes line | head -c 200000; exit 1"])
    assert not result.ok
    assert len(result.output) <= 3500


def test_gate_timeout_kills_the_gate(tmp_path: Path) -> None:
    result = run_gates(tmp_path, ["sleep 60"], timeout=0.5)
    assert not result.ok
    assert "timed out" in result.output


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def create_pull_request(self, *, head: str, base: str, title: str, body: str) -> str:
        self.calls.append((head, base, title))
        return "https://example.invalid/o/r/pull/7"

    def pull_request(self, url: str) -> PullRequestInfo | None:
        return None


def test_pr_strategy_opens_a_pull_request(remote: Remote, refinery: Workspace) -> None:
    remote.commit(BRANCH, "work.txt", "done\n")
    client = FakeClient()
    result = open_pull_request(
        refinery.git, mr(), client, default_branch="main", title="Do bead-a", body="b"
    )
    assert result.type is ReportType.PR_OPENED
    assert result.pr_url == "https://example.invalid/o/r/pull/7"
    assert client.calls == [(BRANCH, "main", "Do bead-a")]


def test_pr_strategy_without_source_branch_fails(remote: Remote, refinery: Workspace) -> None:
    client = FakeClient()
    result = open_pull_request(
        refinery.git, mr(), client, default_branch="main", title="t", body="b"
    )
    assert result.type is ReportType.FAILED
    assert client.calls == []
