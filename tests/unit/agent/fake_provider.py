"""A tiny local fake of the GitHub and GitLab REST calls the refinery uses.

It listens on `host`: 127.0.0.1 by default, or a real node's bridge gateway so pods reach it too.

With `repo` (a bare git repository, the rig's remote), a PR's head commit is read from the
branch there, as a real provider tracks the pushed branch; otherwise it is a made-up SHA.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def fake_sha(text: str) -> str:
    """A made-up, stable 40-digit commit SHA."""
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class PR:
    number: int
    head: str
    base: str
    title: str
    state: str = "open"  # open | closed | merged
    head_sha: str = ""  # "" means: the head branch's commit in `FakeProvider.repo`
    merge_sha: str = ""  # "" means: a made-up SHA once merged
    head_repo: str = ""  # "" means: the configured repository itself (not a fork)
    fast_forward: bool = False  # GitLab then reports no merge commit SHA at all

    def merge_commit(self) -> str:
        return self.merge_sha or fake_sha(f"merge {self.number}")


@dataclass
class FakeProvider:
    """State shared with the handler; tests read and change it."""

    host: str = "127.0.0.1"
    port: int = 0
    prs: list[PR] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    redirect_to: str | None = None
    echo_auth_error: bool = False
    repo: Path | None = None  # the rig's bare remote: head commits are read from it
    forged_url: str | None = None  # returned instead of the real URL when a PR is created

    def head_sha(self, pr: PR) -> str:
        """The PR's head commit: set explicitly, else the branch's commit in `repo`."""
        if pr.head_sha:
            return pr.head_sha
        if self.repo is not None:
            found = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{pr.head}"],
                cwd=self.repo,
                capture_output=True,
                text=True,
            )
            if found.returncode == 0:
                return found.stdout.strip()
        return fake_sha(f"head {pr.head}")

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def find(self, number: int) -> PR | None:
        return next((p for p in self.prs if p.number == number), None)


def start_fake(state: FakeProvider) -> ThreadingHTTPServer:
    """Serve `state` on its `host` in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else {}

        def _record(self) -> tuple[str, dict[str, list[str]]]:
            state.requests.append((self.command, self.path, dict(self.headers.items())))
            parts = urllib.parse.urlsplit(self.path)
            return parts.path, urllib.parse.parse_qs(parts.query)

        def do_GET(self) -> None:
            path, query = self._record()
            if state.redirect_to:
                return self._send(302, {}, {"Location": state.redirect_to})
            if state.echo_auth_error:
                auth = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN")
                return self._send(500, {"message": f"bad credentials {auth}"})
            segments = path.strip("/").split("/")
            if path.startswith("/gh/repos/") and segments[-2] == "pulls":
                pr = state.find(int(segments[-1]))
                if pr is None:
                    return self._send(404, {"message": "Not Found"})
                return self._send(200, self._gh_pull(pr))
            if path.startswith("/gh/repos/") and segments[-1] == "pulls":
                head = query["head"][0].split(":", 1)[1]
                found = [
                    {"html_url": state.forged_url or self._gh_url(p)}
                    for p in state.prs
                    if p.head == head and p.base == query["base"][0] and p.state == "open"
                ]
                return self._send(200, found)
            if path.startswith("/gl/projects/") and segments[-2] == "merge_requests":
                pr = state.find(int(segments[-1]))
                if pr is None:
                    return self._send(404, {"message": "404 Not found"})
                return self._send(200, self._gl_merge_request(pr))
            if path.startswith("/gl/projects/") and segments[-1] == "merge_requests":
                found = [
                    {"web_url": state.forged_url or self._gl_url(p)}
                    for p in state.prs
                    if p.head == query["source_branch"][0] and p.state == "open"
                ]
                return self._send(200, found)
            return self._send(404, {"message": "unknown"})

        def do_POST(self) -> None:
            path, _ = self._record()
            if state.redirect_to:
                return self._send(307, {}, {"Location": state.redirect_to})
            body = self._body()
            if path == "/gh/repos/o/r/pulls":
                head, base = body["head"], body["base"]
                if any(p.head == head and p.base == base and p.state == "open" for p in state.prs):
                    return self._send(422, {"message": "A pull request already exists"})
                pr = PR(len(state.prs) + 1, head, base, body["title"])
                state.prs.append(pr)
                url = state.forged_url or self._gh_url(pr)
                return self._send(201, {"html_url": url, "number": pr.number})
            if path == "/gl/projects/g%2Fsub%2Fp/merge_requests":
                head, base = body["source_branch"], body["target_branch"]
                if any(p.head == head and p.state == "open" for p in state.prs):
                    return self._send(409, {"message": ["Another open merge request exists"]})
                pr = PR(len(state.prs) + 1, head, base, body["title"])
                state.prs.append(pr)
                url = state.forged_url or self._gl_url(pr)
                return self._send(201, {"web_url": url, "iid": pr.number})
            return self._send(404, {"message": "unknown"})

        def _gh_url(self, pr: PR) -> str:
            return f"https://github.example/o/r/pull/{pr.number}"

        def _gh_pull(self, pr: PR) -> dict[str, Any]:
            """GET /repos/o/r/pulls/{n}, the fields the operator reads."""
            merged = pr.state == "merged"
            return {
                "number": pr.number,
                "html_url": self._gh_url(pr),
                "state": "closed" if merged else pr.state,
                "merged": merged,
                # An open PR has GitHub's test merge here; only `merged` makes it real.
                "merge_commit_sha": pr.merge_commit() if merged else fake_sha(f"test {pr.number}"),
                "head": {
                    "ref": pr.head,
                    "sha": state.head_sha(pr),
                    "repo": {"full_name": pr.head_repo or "o/r"},
                },
                "base": {"ref": pr.base, "repo": {"full_name": "o/r"}},
            }

        def _gl_merge_request(self, pr: PR) -> dict[str, Any]:
            """GET /projects/{id}/merge_requests/{iid}, the fields the operator reads."""
            merged = pr.state == "merged"
            return {
                "iid": pr.number,
                "web_url": self._gl_url(pr),
                "state": {"open": "opened"}.get(pr.state, pr.state),
                "source_branch": pr.head,
                "target_branch": pr.base,
                "sha": state.head_sha(pr),
                "merge_commit_sha": pr.merge_commit() if merged and not pr.fast_forward else None,
                "squash_commit_sha": None,
                "source_project_id": 8 if pr.head_repo else 7,
                "target_project_id": 7,
            }

        def _gl_url(self, pr: PR) -> str:
            return f"https://gitlab.example/g/sub/p/-/merge_requests/{pr.number}"

    server = ThreadingHTTPServer((state.host, 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
