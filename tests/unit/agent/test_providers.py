"""GitHub and GitLab clients against a local fake server; host pinning; token hygiene."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gastown.agent.providers import (
    ForeignPullRequestError,
    GitHubClient,
    GitLabClient,
    HostMismatchError,
    ProviderError,
    PullRequestInfo,
    client_for,
    read_token,
)
from gastown.agent.refinery import open_pull_request
from gastown.agent.workspace import prepare
from gastown.model.bead import MergeRequestSpec
from gastown.model.common import SecretKeyRef
from gastown.model.enums import AgentRole, GitProvider, PRState, ReportType
from gastown.model.town import PullRequestProvider
from tests.unit.agent.conftest import Remote, make_identity, mr_order
from tests.unit.agent.fake_provider import PR, FakeProvider, fake_sha, start_fake

TOKEN = "ghp_TopSecretToken0123456789"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    state = FakeProvider()
    server = start_fake(state)
    yield state
    server.shutdown()
    server.server_close()


def github(fake: FakeProvider) -> GitHubClient:
    return GitHubClient(f"{fake.base}/gh", "o/r", TOKEN, timeout=10)


def gitlab(fake: FakeProvider) -> GitLabClient:
    return GitLabClient(f"{fake.base}/gl", "g/sub/p", TOKEN, timeout=10)


def test_github_create_and_poll(fake: FakeProvider) -> None:
    client = github(fake)
    url = client.create_pull_request(head="gt/a/b", base="main", title="T", body="B")
    assert url == "https://github.example/o/r/pull/1"
    method, path, headers = fake.requests[0]
    assert (method, path) == ("POST", "/gh/repos/o/r/pulls")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert state_of(client, url) is PRState.OPEN
    fake.prs[0].state = "merged"
    assert state_of(client, url) is PRState.MERGED
    fake.prs[0].state = "closed"
    assert state_of(client, url) is PRState.CLOSED
    assert client.pull_request("https://github.example/o/r/pull/99") is None


def state_of(client: GitHubClient | GitLabClient, url: str) -> PRState:
    info = client.pull_request(url)
    assert info is not None
    return info.state


def test_github_pull_request_details(fake: FakeProvider) -> None:
    client = github(fake)
    fake.prs.append(PR(1, "gt/p/bead-a", "main", "T", head_sha="ab" * 20))
    info = client.pull_request("https://github.example/o/r/pull/1")
    assert info == PullRequestInfo(
        web_url="https://github.example/o/r/pull/1",
        state=PRState.OPEN,
        head_branch="gt/p/bead-a",
        head_sha="ab" * 20,
        base_branch="main",
        merge_commit=None,  # GitHub's test merge of an open PR is not a merge
        same_repository=True,
    )
    fake.prs[0].state = "merged"
    merged = client.pull_request("https://github.example/o/r/pull/1")
    assert merged is not None
    assert (merged.state, merged.merge_commit) == (PRState.MERGED, fake_sha("merge 1"))
    fake.prs[0].head_repo = "someone/fork"
    forked = client.pull_request("https://github.example/o/r/pull/1")
    assert forked is not None
    assert not forked.same_repository
    method, path, _ = fake.requests[-1]
    assert (method, path) == ("GET", "/gh/repos/o/r/pulls/1")


def test_gitlab_merge_request_details(fake: FakeProvider) -> None:
    client = gitlab(fake)
    fake.prs.append(PR(4, "gt/p/bead-a", "main", "T", head_sha="cd" * 20, state="merged"))
    info = client.pull_request("https://gitlab.example/g/sub/p/-/merge_requests/4")
    assert info == PullRequestInfo(
        web_url="https://gitlab.example/g/sub/p/-/merge_requests/4",
        state=PRState.MERGED,
        head_branch="gt/p/bead-a",
        head_sha="cd" * 20,
        base_branch="main",
        merge_commit=fake_sha("merge 4"),
        same_repository=True,
    )
    assert fake.requests[-1][1] == "/gl/projects/g%2Fsub%2Fp/merge_requests/4"


def test_gitlab_fast_forward_merge_records_the_head_commit(fake: FakeProvider) -> None:
    """GitLab leaves both merge SHAs null after a fast-forward merge: the head landed."""
    fake.prs.append(PR(1, "gt/p/bead-a", "main", "T", head_sha="ef" * 20, state="merged"))
    fake.prs[0].fast_forward = True
    info = gitlab(fake).pull_request("https://gitlab.example/g/sub/p/-/merge_requests/1")
    assert info is not None
    assert (info.state, info.merge_commit) == (PRState.MERGED, "ef" * 20)


def test_merged_without_a_merge_sha_is_unknown(fake: FakeProvider) -> None:
    fake.prs.append(PR(1, "h", "main", "T", state="merged", merge_sha="not-a-sha"))
    info = github(fake).pull_request("https://github.example/o/r/pull/1")
    assert info is not None
    assert (info.state, info.merge_commit) == (PRState.UNKNOWN, None)


GOOD = PullRequestInfo(
    web_url="https://github.example/o/r/pull/1",
    state=PRState.MERGED,
    head_branch="gt/p/bead-a",
    head_sha="ab" * 20,
    base_branch="main",
    merge_commit="12" * 20,
    same_repository=True,
)


def check(
    pr: PullRequestInfo,
    url: str = "https://github.example/o/r/pull/1",
    head_sha: str | None = "ab" * 20,
) -> list[str]:
    """What `pr` contradicts of a claim for branch gt/p/bead-a into main."""
    return pr.mismatches(url=url, head_branch="gt/p/bead-a", base_branch="main", head_sha=head_sha)


def test_a_matching_pull_request_has_no_mismatches() -> None:
    assert check(GOOD) == []
    assert check(GOOD, url="https://GitHub.example/o/r/pull/1/") == []
    assert check(GOOD, head_sha="abababa") == []  # an abbreviated expected SHA


@pytest.mark.parametrize(
    ("pr", "url", "problem"),
    [
        (replace(GOOD, head_branch="feature/other"), None, "head branch is 'feature/other'"),
        (replace(GOOD, base_branch="release"), None, "base branch is 'release'"),
        (replace(GOOD, head_sha="cd" * 20), None, f"head commit is {'cd' * 20}"),
        (replace(GOOD, head_sha=""), None, "head commit is unknown"),
        (replace(GOOD, same_repository=False), None, "another repository"),
        (GOOD, "https://github.example/o/r/pull/2", "provider's URL of this PR"),
    ],
)
def test_each_difference_is_a_mismatch(pr: PullRequestInfo, url: str | None, problem: str) -> None:
    problems = check(pr, url=url) if url else check(pr)
    assert len(problems) == 1, problems
    assert problem in problems[0], problems


def test_unknown_expected_head_checks_the_branches_only() -> None:
    assert check(replace(GOOD, head_sha="cd" * 20), head_sha=None) == []
    assert check(replace(GOOD, head_branch="x"), head_sha=None)


def test_fake_reads_the_head_commit_from_the_remote(fake: FakeProvider, remote: Remote) -> None:
    sha = remote.commit("gt/p/bead-a", "work.txt", "x\n")
    fake.repo = remote.bare
    url = github(fake).create_pull_request(head="gt/p/bead-a", base="main", title="T", body="")
    found = github(fake).pull_request(url)
    assert found is not None
    assert found.head_sha == sha


def test_github_existing_pr_is_reused(fake: FakeProvider) -> None:
    client = github(fake)
    first = client.create_pull_request(head="gt/a/b", base="main", title="T", body="B")
    again = client.create_pull_request(head="gt/a/b", base="main", title="T", body="B")
    assert again == first
    assert len(fake.prs) == 1


def test_gitlab_create_and_poll(fake: FakeProvider) -> None:
    client = gitlab(fake)
    url = client.create_pull_request(head="gt/a/b", base="main", title="T", body="B")
    assert url == "https://gitlab.example/g/sub/p/-/merge_requests/1"
    assert fake.requests[0][2]["Private-Token"] == TOKEN
    assert state_of(client, url) is PRState.OPEN
    fake.prs[0].state = "merged"
    assert state_of(client, url) is PRState.MERGED
    assert client.create_pull_request(head="gt/x", base="main", title="T", body="") != url
    assert client.create_pull_request(head="gt/x", base="main", title="T", body="").endswith("/2")


def test_requests_to_another_host_are_refused(fake: FakeProvider) -> None:
    client = github(fake)
    for url in (
        "http://evil.example/gh/repos/o/r/pulls",
        f"http://localhost:{fake.port}/gh/repos/o/r/pulls",
        f"https://127.0.0.1:{fake.port}/gh/repos/o/r/pulls",
        f"http://127.0.0.1:{fake.port + 1}/gh/repos/o/r/pulls",
    ):
        with pytest.raises(HostMismatchError):
            client.api.call("GET", url)
    assert fake.requests == []


def test_pr_url_of_another_repository_is_refused(fake: FakeProvider) -> None:
    with pytest.raises(ForeignPullRequestError, match="not a pull URL"):
        github(fake).pull_request("https://github.example/other/repo/pull/1")
    with pytest.raises(ForeignPullRequestError, match="not a merge_requests URL"):
        gitlab(fake).pull_request("https://gitlab.example/g/other/-/merge_requests/1")
    assert fake.requests == []


def test_redirects_are_not_followed(fake: FakeProvider) -> None:
    other = FakeProvider()
    server = start_fake(other)
    try:
        fake.redirect_to = f"{other.base}/gh/repos/o/r/pulls"
        with pytest.raises(ProviderError, match="redirect"):
            github(fake).create_pull_request(head="h", base="main", title="T", body="B")
        with pytest.raises(ProviderError, match="redirect"):
            github(fake).pull_request("https://github.example/o/r/pull/1")
        assert other.requests == []
    finally:
        server.shutdown()
        server.server_close()


def test_token_never_in_errors(fake: FakeProvider) -> None:
    fake.echo_auth_error = True
    client = github(fake)
    assert client.pull_request("https://github.example/o/r/pull/1") is None
    fake.echo_auth_error = False
    fake.redirect_to = None
    with pytest.raises(ProviderError) as info:
        GitHubClient(f"{fake.base}/nowhere", "o/r", TOKEN).create_pull_request(
            head="h", base="b", title="t", body="b"
        )
    assert TOKEN not in str(info.value)


def test_unreachable_api_error_has_no_token() -> None:
    client = GitLabClient(f"http://user:{TOKEN}@127.0.0.1:9/api/v4", "g/p", TOKEN, timeout=5)
    with pytest.raises(ProviderError) as info:
        client.create_pull_request(head="h", base="b", title="t", body="b")
    assert TOKEN not in str(info.value)


def test_client_for_and_token_file(fake: FakeProvider, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert read_token(path) == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ProviderError):
        read_token(tmp_path / "empty")
    provider = PullRequestProvider(
        kind=GitProvider.GITLAB,
        api_url=f"{fake.base}/gl",
        repository="g/sub/p",
        token_secret=SecretKeyRef(name="s", key="token"),
    )
    assert isinstance(client_for(provider, TOKEN), GitLabClient)


def test_refinery_opens_pr_through_fake_github(
    fake: FakeProvider, remote: Remote, tmp_path: Path
) -> None:
    remote.commit("gt/p/bead-a", "work.txt", "x\n")
    ident = make_identity(tmp_path / "r", role=AgentRole.REFINERY, agent="refinery")
    ws = prepare(ident, mr_order(remote, "gt/p/bead-a"))
    mr = MergeRequestSpec(source_bead="bead-a", branch="gt/p/bead-a", target_branch="main")
    result = open_pull_request(
        ws.git, mr, github(fake), default_branch="main", title="Do bead-a", body="b"
    )
    assert result.type is ReportType.PR_OPENED
    assert result.pr_url == "https://github.example/o/r/pull/1"
    assert fake.prs[0].head == "gt/p/bead-a"
