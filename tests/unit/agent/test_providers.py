"""GitHub and GitLab clients against a local fake server; host pinning; token hygiene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown.agent.providers import (
    GitHubClient,
    GitLabClient,
    HostMismatchError,
    ProviderError,
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
from tests.unit.agent.fake_provider import FakeProvider, start_fake

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
    assert client.pull_request_state(url) is PRState.OPEN
    fake.prs[0].state = "merged"
    assert client.pull_request_state(url) is PRState.MERGED
    fake.prs[0].state = "closed"
    assert client.pull_request_state(url) is PRState.CLOSED
    assert client.pull_request_state("https://github.example/o/r/pull/99") is PRState.UNKNOWN


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
    assert client.pull_request_state(url) is PRState.OPEN
    fake.prs[0].state = "merged"
    assert client.pull_request_state(url) is PRState.MERGED
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
    with pytest.raises(ProviderError, match="not a pull URL"):
        github(fake).pull_request_state("https://github.example/other/repo/pull/1")
    assert fake.requests == []


def test_redirects_are_not_followed(fake: FakeProvider) -> None:
    other = FakeProvider()
    server = start_fake(other)
    try:
        fake.redirect_to = f"{other.base}/gh/repos/o/r/pulls"
        with pytest.raises(ProviderError, match="redirect"):
            github(fake).create_pull_request(head="h", base="main", title="T", body="B")
        with pytest.raises(ProviderError, match="redirect"):
            github(fake).pull_request_state("https://github.example/o/r/pull/1")
        assert other.requests == []
    finally:
        server.shutdown()
        server.server_close()


def test_token_never_in_errors(fake: FakeProvider) -> None:
    fake.echo_auth_error = True
    client = github(fake)
    assert client.pull_request_state("https://github.example/o/r/pull/1") is PRState.UNKNOWN
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
