"""A tiny local fake of the GitHub and GitLab REST calls the refinery uses (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class PR:
    number: int
    head: str
    base: str
    title: str
    state: str = "open"  # open | closed | merged


@dataclass
class FakeProvider:
    """State shared with the handler; tests read and change it."""

    host: str = "127.0.0.1"
    port: int = 0
    prs: list[PR] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    redirect_to: str | None = None
    echo_auth_error: bool = False

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def find(self, number: int) -> PR | None:
        return next((p for p in self.prs if p.number == number), None)


def start_fake(state: FakeProvider) -> ThreadingHTTPServer:
    """Serve `state` on 127.0.0.1 in a daemon thread."""

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
                merged = pr.state == "merged"
                return self._send(
                    200,
                    {"state": "closed" if merged else pr.state, "merged": merged},
                )
            if path.startswith("/gh/repos/") and segments[-1] == "pulls":
                head = query["head"][0].split(":", 1)[1]
                found = [
                    {"html_url": self._gh_url(p)}
                    for p in state.prs
                    if p.head == head and p.base == query["base"][0] and p.state == "open"
                ]
                return self._send(200, found)
            if path.startswith("/gl/projects/") and segments[-2] == "merge_requests":
                pr = state.find(int(segments[-1]))
                if pr is None:
                    return self._send(404, {"message": "404 Not found"})
                gl_state = {"open": "opened"}.get(pr.state, pr.state)
                return self._send(200, {"state": gl_state, "iid": pr.number})
            if path.startswith("/gl/projects/") and segments[-1] == "merge_requests":
                found = [
                    {"web_url": self._gl_url(p)}
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
                return self._send(201, {"html_url": self._gh_url(pr), "number": pr.number})
            if path == "/gl/projects/g%2Fsub%2Fp/merge_requests":
                head, base = body["source_branch"], body["target_branch"]
                if any(p.head == head and p.state == "open" for p in state.prs):
                    return self._send(409, {"message": ["Another open merge request exists"]})
                pr = PR(len(state.prs) + 1, head, base, body["title"])
                state.prs.append(pr)
                return self._send(201, {"web_url": self._gl_url(pr), "iid": pr.number})
            return self._send(404, {"message": "unknown"})

        def _gh_url(self, pr: PR) -> str:
            return f"https://github.example/o/r/pull/{pr.number}"

        def _gl_url(self, pr: PR) -> str:
            return f"https://gitlab.example/g/sub/p/-/merge_requests/{pr.number}"

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
