"""Minimal GitHub and GitLab REST clients: open a pull/merge request, read its details.

Only the host of the configured apiUrl is ever contacted: every request URL is checked against
it and HTTP redirects are refused (a redirect could carry the token to another host). The token
travels only in a request header and is redacted from every error message.

Calls used (paths are relative to apiUrl, e.g. https://api.github.com or
https://gitlab.example.com/api/v4):

GitHub  POST /repos/{owner}/{repo}/pulls                 {title, head, base, body} -> html_url
        GET  /repos/{owner}/{repo}/pulls?head=owner:branch&base=...&state=open  (already exists)
        GET  /repos/{owner}/{repo}/pulls/{number}        -> html_url, state, merged,
                                                          merge_commit_sha, head.{ref,sha,repo},
                                                          base.{ref,repo}
GitLab  POST /projects/{id}/merge_requests               {source_branch, target_branch, title,
                                                          description} -> web_url
        GET  /projects/{id}/merge_requests?source_branch=&target_branch=&state=opened
        GET  /projects/{id}/merge_requests/{iid}         -> web_url, state, source_branch,
                                                          target_branch, sha, merge_commit_sha,
                                                          squash_commit_sha, source/target
                                                          project ids
where {id} is the URL-encoded project path.

A refinery's `pr-opened` report is a claim: the operator reads the PR's details here and checks
them (`PullRequestInfo.mismatches`) before the PR counts as opened or merged.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gastown.agent.git import redact
from gastown.model.enums import GitProvider, PRState
from gastown.model.town import PullRequestProvider

TIMEOUT = 30.0


class ProviderError(Exception):
    """A provider call failed; the message never contains the token."""


class HostMismatchError(ProviderError):
    """A URL pointed at a host other than the configured API host."""


class ForeignPullRequestError(ProviderError):
    """A URL is not a pull/merge request URL of the configured repository."""


_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class PullRequestInfo:
    """What the provider's API says about one pull/merge request.

    `state` is MERGED only with a merge SHA (`merge_commit`); a provider answer that says
    merged without one is UNKNOWN. `same_repository` is False for a PR from a fork.
    """

    web_url: str
    state: PRState
    head_branch: str
    head_sha: str
    base_branch: str
    merge_commit: str | None
    same_repository: bool

    def mismatches(
        self, *, url: str, head_branch: str, base_branch: str, head_sha: str | None
    ) -> list[str]:
        """What contradicts the claim that this PR at `url` carries the expected work.

        `head_sha` None means the expected commit is unknown (merge requests made before the
        operator recorded it): only the URL, the repository and the branches are checked then.
        """
        problems: list[str] = []
        if self.web_url and not _same_url(self.web_url, url):
            problems.append(
                f"the provider's URL of this PR is {redact(self.web_url)}, not {redact(url)}"
            )
        if not self.same_repository:
            problems.append("its head is in another repository (a fork)")
        if self.head_branch != head_branch:
            problems.append(f"head branch is {self.head_branch!r}, expected {head_branch!r}")
        if self.base_branch != base_branch:
            problems.append(f"base branch is {self.base_branch!r}, expected {base_branch!r}")
        if head_sha is not None and not _same_sha(self.head_sha, head_sha):
            problems.append(f"head commit is {self.head_sha or 'unknown'}, expected {head_sha}")
        return problems


class PullRequestClient(Protocol):
    """What the refinery and the operator's PR poller need from a provider."""

    def create_pull_request(self, *, head: str, base: str, title: str, body: str) -> str:
        """Open a PR from `head` into `base` (or find the open one); return its web URL."""
        ...

    def pull_request(self, url: str) -> PullRequestInfo | None:
        """Details of the PR at web URL `url`; None when the provider cannot tell us.

        Raises ForeignPullRequestError when `url` is not a PR URL of the configured repository.
        """
        ...


def read_token(path: Path) -> str:
    """Read a token from a mounted Secret file."""
    token = path.read_text().strip()
    if not token:
        raise ProviderError(f"token file {path} is empty")
    return token


def client_for(
    provider: PullRequestProvider, token: str, timeout: float = TIMEOUT
) -> PullRequestClient:
    """The client for a rig's pullRequests settings."""
    if provider.kind is GitProvider.GITHUB:
        return GitHubClient(provider.api_url, provider.repository, token, timeout)
    return GitLabClient(provider.api_url, provider.repository, token, timeout)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: following one could send the token elsewhere."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        raise ProviderError(f"refusing to follow an HTTP {code} redirect")


class _Api:
    """JSON over HTTP(S) to one API base URL, with a token header."""

    def __init__(self, api_url: str, headers: dict[str, str], token: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"apiUrl {redact(api_url)} is not an http(s) URL")
        self.base = api_url.rstrip("/")
        self.origin = _origin(api_url)
        self.headers = headers
        self.token = token
        self.timeout = timeout
        self.opener = urllib.request.build_opener(_NoRedirect())

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        """Absolute URL of an API path."""
        url = self.base + path
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    def check_host(self, url: str) -> None:
        """Refuse any URL not on the configured API host (scheme, host and port)."""
        if _origin(url) != self.origin:
            raise HostMismatchError(
                f"refusing to contact {redact(_origin_text(url))}: the configured API host is "
                f"{_origin_text(self.base)}"
            )

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON). HTTP errors return their status."""
        self.check_host(url)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        for key, value in self.headers.items():
            request.add_header(key, value)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProviderError(self.redact(f"{method} {url} failed: {reason}")) from None

    def redact(self, text: str) -> str:
        """Hide the token and URL userinfo."""
        return redact(text, [self.token])

    def fail(self, what: str, status: int, payload: Any) -> ProviderError:
        """A ProviderError describing an unexpected response."""
        detail = json.dumps(payload)[:500] if payload is not None else ""
        return ProviderError(self.redact(f"{what}: HTTP {status} {detail}"))


class GitHubClient:
    """GitHub (or GitHub Enterprise) pull requests."""

    def __init__(self, api_url: str, repository: str, token: str, timeout: float = TIMEOUT):
        self.repository = repository
        self.owner = repository.split("/", 1)[0]
        self.api = _Api(
            api_url,
            {
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "gastown-refinery",
            },
            token,
            timeout,
        )

    def create_pull_request(self, *, head: str, base: str, title: str, body: str) -> str:
        """Open a pull request, or return the URL of the open one for the same branches."""
        url = self.api.url(f"/repos/{self.repository}/pulls")
        status, payload = self.api.call(
            "POST", url, {"title": title, "head": head, "base": base, "body": body}
        )
        if status == 201 and isinstance(payload, dict) and payload.get("html_url"):
            return str(payload["html_url"])
        if status == 422:  # "A pull request already exists" (a retry after a crash)
            existing = self._find(head, base)
            if existing is not None:
                return existing
        raise self.api.fail("creating the pull request failed", status, payload)

    def pull_request(self, url: str) -> PullRequestInfo | None:
        """The pull request's URL, state, head and base, from GET /repos/{o}/{r}/pulls/{n}."""
        number = _number_in(url, self.repository, "pull")
        status, payload = self.api.call(
            "GET", self.api.url(f"/repos/{self.repository}/pulls/{number}")
        )
        if status != 200 or not isinstance(payload, dict):
            return None
        head, base = _mapping(payload.get("head")), _mapping(payload.get("base"))
        head_repo = _text(_mapping(head.get("repo")).get("full_name"))
        if payload.get("merged"):
            # merge_commit_sha of an open PR is GitHub's test merge: only `merged` makes it real.
            state, merge = PRState.MERGED, _sha(payload.get("merge_commit_sha"))
        else:
            states = {"open": PRState.OPEN, "closed": PRState.CLOSED}
            state, merge = states.get(_text(payload.get("state")), PRState.UNKNOWN), None
        return _info(
            web_url=_text(payload.get("html_url")),
            state=state,
            head_branch=_text(head.get("ref")),
            head_sha=_text(head.get("sha")).lower(),
            base_branch=_text(base.get("ref")),
            merge_commit=merge,
            same_repository=head_repo.lower() == self.repository.lower(),
        )

    def _find(self, head: str, base: str) -> str | None:
        query = {"head": f"{self.owner}:{head}", "base": base, "state": "open"}
        status, payload = self.api.call(
            "GET", self.api.url(f"/repos/{self.repository}/pulls", query)
        )
        if status == 200 and isinstance(payload, list) and payload:
            first = payload[0]
            if isinstance(first, dict) and first.get("html_url"):
                return str(first["html_url"])
        return None


class GitLabClient:
    """GitLab merge requests."""

    def __init__(self, api_url: str, repository: str, token: str, timeout: float = TIMEOUT):
        self.repository = repository
        self.project = urllib.parse.quote(repository, safe="")
        self.api = _Api(
            api_url, {"PRIVATE-TOKEN": token, "User-Agent": "gastown-refinery"}, token, timeout
        )

    def create_pull_request(self, *, head: str, base: str, title: str, body: str) -> str:
        """Open a merge request, or return the URL of the open one for the same branches."""
        url = self.api.url(f"/projects/{self.project}/merge_requests")
        status, payload = self.api.call(
            "POST",
            url,
            {"source_branch": head, "target_branch": base, "title": title, "description": body},
        )
        if status == 201 and isinstance(payload, dict) and payload.get("web_url"):
            return str(payload["web_url"])
        if status == 409:  # "Another open merge request already exists for this source branch"
            existing = self._find(head, base)
            if existing is not None:
                return existing
        raise self.api.fail("creating the merge request failed", status, payload)

    def pull_request(self, url: str) -> PullRequestInfo | None:
        """The merge request's URL, state, branches and SHAs, from GET .../merge_requests/{iid}."""
        iid = _number_in(url, self.repository, "merge_requests")
        status, payload = self.api.call(
            "GET", self.api.url(f"/projects/{self.project}/merge_requests/{iid}")
        )
        if status != 200 or not isinstance(payload, dict):
            return None
        states = {
            "opened": PRState.OPEN,
            "locked": PRState.OPEN,
            "merged": PRState.MERGED,
            "closed": PRState.CLOSED,
        }
        state = states.get(_text(payload.get("state")), PRState.UNKNOWN)
        head_sha = _text(payload.get("sha")).lower()
        merge = None
        if state is PRState.MERGED:
            # A fast-forward merge makes no merge commit: GitLab then leaves both merge SHAs
            # null and the head commit itself is what landed on the target.
            merge = (
                _sha(payload.get("merge_commit_sha"))
                or _sha(payload.get("squash_commit_sha"))
                or _sha(head_sha)
            )
        source, target = payload.get("source_project_id"), payload.get("target_project_id")
        return _info(
            web_url=_text(payload.get("web_url")),
            state=state,
            head_branch=_text(payload.get("source_branch")),
            head_sha=head_sha,
            base_branch=_text(payload.get("target_branch")),
            merge_commit=merge,
            same_repository=source is None or source == target,
        )

    def _find(self, head: str, base: str) -> str | None:
        query = {"source_branch": head, "target_branch": base, "state": "opened"}
        status, payload = self.api.call(
            "GET", self.api.url(f"/projects/{self.project}/merge_requests", query)
        )
        if status == 200 and isinstance(payload, list) and payload:
            first = payload[0]
            if isinstance(first, dict) and first.get("web_url"):
                return str(first["web_url"])
        return None


def _number_in(url: str, repository: str, segment: str) -> int:
    """The PR number in a web URL of `repository` (…/owner/repo/pull/12, …/-/merge_requests/12)."""
    path = urllib.parse.urlsplit(url).path
    match = re.search(rf"/{re.escape(repository)}/(?:-/)?{segment}/(\d+)/?$", path)
    if match is None:
        raise ForeignPullRequestError(f"{redact(url)} is not a {segment} URL of {repository}")
    return int(match.group(1))


def _info(
    *,
    web_url: str,
    state: PRState,
    head_branch: str,
    head_sha: str,
    base_branch: str,
    merge_commit: str | None,
    same_repository: bool,
) -> PullRequestInfo:
    """A PullRequestInfo; merged without a merge SHA is not a merge we can record: UNKNOWN."""
    if state is PRState.MERGED and merge_commit is None:
        state = PRState.UNKNOWN
    return PullRequestInfo(
        web_url=web_url,
        state=state,
        head_branch=head_branch,
        head_sha=head_sha,
        base_branch=base_branch,
        merge_commit=merge_commit,
        same_repository=same_repository,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sha(value: Any) -> str | None:
    """A commit SHA from a provider answer (lowercase hex), or None."""
    text = _text(value).lower()
    return text if _SHA.match(text) else None


def _same_sha(actual: str, expected: str) -> bool:
    """Equal commits; an abbreviated expected SHA (at least 7 digits) matches its full form."""
    actual, expected = actual.lower(), expected.lower()
    return bool(actual) and len(expected) >= 7 and actual.startswith(expected)


def _same_url(a: str, b: str) -> bool:
    """The same web URL, ignoring a trailing slash and the case of scheme and host."""

    def norm(url: str) -> tuple[str, str, str]:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")

    return norm(a) == norm(b)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None
