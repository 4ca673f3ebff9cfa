"""A git server agent pods can reach: smart HTTP through `git http-backend`, with basic auth.

Dev and test tooling (standard library only). A host path does not exist inside a pod's
container, and hosted git (GitHub, GitLab, Gitea) is reached over https with basic-auth
credentials, so tests and the demo serve their bare repositories the same way: a threaded HTTP
server runs git's own CGI program, `git http-backend`, for every request under a root directory.
Clone, fetch, ls-remote and push (receive-pack is enabled for authenticated users) all work, and
git itself serialises concurrent pushes: a push whose old value is no longer the branch's tip is
rejected, exactly as on a hosting provider.

Every request needs the configured username and password (HTTP basic auth; anything else gets
401 with a `WWW-Authenticate` challenge, which is what makes git ask its credential helper or
GIT_ASKPASS). Every request is bounded in time: a socket that stays silent longer than
`io_timeout` is closed, and a `git http-backend` run longer than `request_timeout` is killed.

    with GitServer(root, "gastown", "s3cret", host="127.0.0.1") as server:
        server.create_repository("app.git")
        subprocess.run(["git", "clone", server.url("app.git"), "work"])

or from a shell:

    python -m gastown.devtools.gitserver --root DIR --listen ADDR:PORT --user U --password P
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import io
import logging
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

REALM = "gastown git"
DEFAULT_REQUEST_TIMEOUT = 600.0
"""Seconds one git operation (one `git http-backend` run) may take before it is killed."""
DEFAULT_IO_TIMEOUT = 60.0
"""Seconds a connection may stay silent (an idle keep-alive connection included)."""
_CHUNK = 64 * 1024
_MAX_CGI_HEADER = 64 * 1024
_MAX_LINE = 8 * 1024
_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_LOG_SIZE = 10_000


@dataclass(frozen=True)
class Request:
    """One answered request, as recorded in `GitServer.requests` (never any credential)."""

    method: str
    path: str
    status: int
    user: str | None
    """The authenticated user, or None when authentication failed."""

    @property
    def service(self) -> str | None:
        """`git-upload-pack` (clone, fetch, ls-remote) or `git-receive-pack` (push)."""
        for service in ("git-upload-pack", "git-receive-pack"):
            if service in self.path:
                return service
        return None


class _BodyError(Exception):
    """The client's request body was malformed or did not arrive in time."""


class _Server(ThreadingHTTPServer):
    """The HTTP server: settings for the handlers, and the live connections and CGI runs."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        username: str,
        password: str,
        request_timeout: float,
        io_timeout: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.root = root
        self.username = username.encode()
        self.password = password.encode()
        self.request_timeout = request_timeout
        self.io_timeout = io_timeout
        self.lock = threading.Lock()
        self.requests: deque[Request] = deque(maxlen=_LOG_SIZE)
        self.connections: set[socket.socket] = set()
        self.processes: set[subprocess.Popen[bytes]] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can hang with no
        # resolver (as in a sandbox); nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def close_everything(self) -> None:
        """Kill running CGI processes and cut live connections (the server is stopping)."""
        with self.lock:
            processes = list(self.processes)
            connections = list(self.connections)
        for proc in processes:
            _kill(proc)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One connection: authenticate each request, then hand it to `git http-backend`."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "gastown-gitserver"
    user: str | None = None

    def parse_request(self) -> bool:
        """Each request on a kept-alive connection authenticates afresh."""
        self.user = None
        return super().parse_request()

    def setup(self) -> None:
        """Bound every socket read and write by the server's I/O timeout."""
        super().setup()
        self.connection.settimeout(self.server.io_timeout)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        with self.server.lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Record the request (with the status just sent) in the server's request log."""
        status = code.value if isinstance(code, HTTPStatus) else int(code)
        # A request line that did not parse leaves command and path unset.
        method, path = self.command or "", getattr(self, "path", None) or ""
        self.server.requests.append(Request(method, path, status, self.user))
        super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to the logger (they carry paths, never credentials)."""
        log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        """Ref advertisement (`info/refs`) and dumb-protocol files."""
        self._serve()

    def do_POST(self) -> None:
        """upload-pack (clone, fetch) and receive-pack (push)."""
        self._serve()

    # --- one request ---

    def _serve(self) -> None:
        user = self.user = self._authenticated_user()
        if user is None:
            self._reply(401, "authentication required\n", {"WWW-Authenticate": _challenge()})
            return
        path, _, query = self.path.partition("?")
        path_info = unquote(path)
        if not path_info.startswith("/") or ".." in path_info.split("/") or "\0" in path_info:
            self._reply(404, "not found\n")
            return
        self._run_backend(self._cgi_env(user, path_info, query))

    def _authenticated_user(self) -> str | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        # Both comparisons always run, in constant time: no timing hint about which was wrong.
        user_ok = hmac.compare_digest(user, self.server.username)
        password_ok = hmac.compare_digest(password, self.server.password)
        if not (sep and user_ok and password_ok):
            return None
        return user.decode(errors="replace")

    def _cgi_env(self, user: str, path_info: str, query: str) -> dict[str, str]:
        # Nothing of the caller's git environment (GIT_DIR, config overrides) leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            {
                "GIT_PROJECT_ROOT": str(self.server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                # The repositories are the server's by configuration, whoever created them.
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "safe.directory",
                "GIT_CONFIG_VALUE_0": "*",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": self.server_version,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path_info,
                "QUERY_STRING": query,
                # http-backend enables receive-pack (push) for an authenticated REMOTE_USER.
                "REMOTE_USER": user,
                "REMOTE_ADDR": str(self.client_address[0]),
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            }
        )
        if not self._chunked() and self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = self.headers["Content-Length"].strip()
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        if protocol := self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol  # protocol v2 negotiation
        return env

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _run_backend(self, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.server.root,
            # Its own process group: a deadline kills receive-pack and hooks along with it.
            start_new_session=True,
        )
        with self.server.lock:
            self.server.processes.add(proc)
        deadline = threading.Timer(self.server.request_timeout, _kill, (proc,))
        deadline.daemon = True
        deadline.start()
        body_ok: list[bool] = []
        stderr_tail: list[bytes] = []
        writer = threading.Thread(target=self._feed_body, args=(proc, body_ok), daemon=True)
        reader = threading.Thread(target=_drain, args=(proc.stderr, stderr_tail), daemon=True)
        writer.start()
        reader.start()
        try:
            self._relay(proc)
        except OSError as exc:  # the client went away or stalled: stop the git side too
            log.debug("client connection failed: %s", exc)
            self.close_connection = True
            _kill(proc)
        finally:
            deadline.cancel()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.server.io_timeout)
            _kill(proc)
            proc.wait()
            writer.join(self.server.io_timeout)
            reader.join(self.server.io_timeout)
            with self.server.lock:
                self.server.processes.discard(proc)
        if body_ok != [True]:
            # The request body was not read to its end: this connection is out of step.
            self.close_connection = True
        if proc.returncode != 0 and stderr_tail:
            tail = b"".join(stderr_tail).decode(errors="replace").strip()
            log.info("git http-backend exited %s: %s", proc.returncode, tail[-500:])

    def _feed_body(self, proc: subprocess.Popen[bytes], ok: list[bool]) -> None:
        assert proc.stdin is not None
        try:
            for data in self._body():
                proc.stdin.write(data)
            ok.append(True)
        except (OSError, _BodyError, ValueError) as exc:
            # The client stalled or sent garbage (kill git: it must not apply half a push), or
            # git stopped reading early (it answers on its own; the connection gets closed).
            if not isinstance(exc, BrokenPipeError):
                log.debug("request body failed: %s", exc)
                _kill(proc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def _body(self) -> Iterator[bytes]:
        if self._chunked():
            yield from self._chunked_body()
            return
        try:
            remaining = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BodyError("bad Content-Length") from None
        while remaining > 0:
            data = self.rfile.read(min(remaining, _CHUNK))
            if not data:
                raise _BodyError("the request body ended early")
            remaining -= len(data)
            yield data

    def _chunked_body(self) -> Iterator[bytes]:
        # git sends large pushes chunked; http.server does not decode that itself.
        while True:
            line = self.rfile.readline(_MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError("bad chunk size line") from None
            if size == 0:
                while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining > 0:
                data = self.rfile.read(min(remaining, _CHUNK))
                if not data:
                    raise _BodyError("the request body ended early")
                remaining -= len(data)
                yield data
            self.rfile.readline(_MAX_LINE)  # the CRLF after the chunk

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        """Turn the CGI response into an HTTP response (streamed, chunked when unsized)."""
        stdout = proc.stdout
        assert isinstance(stdout, io.BufferedReader)
        status, headers = _read_cgi_headers(stdout)
        if status is None:
            self._reply(502, "git http-backend gave no response\n")
            return
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        sized = False
        for name, value in headers:
            if name.lower() in ("connection", "transfer-encoding"):
                continue
            sized = sized or name.lower() == "content-length"
            self.send_header(name, value)
        if not sized:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while data := stdout.read1(_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if not sized else data)
        try:
            proc.wait(timeout=self.server.io_timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
        if proc.returncode != 0:
            # Killed (deadline) or failed mid-stream: leave the body unterminated, so the
            # client sees an error instead of a short but well-formed response.
            self.close_connection = True
            return
        if not sized:
            self.wfile.write(b"0\r\n\r\n")

    def _reply(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        # A request body we did not read may still be on the wire: start afresh.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _challenge() -> str:
    return f'Basic realm="{REALM}", charset="UTF-8"'


def _read_cgi_headers(stream: IO[bytes]) -> tuple[str | None, list[tuple[str, str]]]:
    """The CGI response's status ("200 OK" when not given) and other headers."""
    status: str | None = None
    headers: list[tuple[str, str]] = []
    total = 0
    while True:
        line = stream.readline(_MAX_LINE)
        total += len(line)
        if not line or total > _MAX_CGI_HEADER:
            return None, []
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return status or "200 OK", headers
        name, _, value = text.partition(":")
        if name.strip().lower() == "status":
            status = value.strip()
        else:
            headers.append((name.strip(), value.strip()))


def _drain(stream: IO[bytes] | None, tail: list[bytes]) -> None:
    """Read a stream to its end, keeping the last few KiB (git's error messages)."""
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError):
        while data := stream.read(4096):
            tail.append(data)
            while len(tail) > 2:
                tail.pop(0)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a CGI run and everything it started (its process group)."""
    # Not reaped yet, so its pid (and group id) cannot have been reused.
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


class GitServer:
    """Bare repositories under `root`, served over smart HTTP with basic auth.

    `host`/`port` is the listen address (port 0 picks a free port; read `port` after start).
    `public_host` is the host name put into `url()` when it differs from the listen address,
    for example when listening on 0.0.0.0.
    """

    def __init__(
        self,
        root: Path,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        public_host: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
    ) -> None:
        if not username or not password:
            raise ValueError("the git server needs a username and a password")
        self.root = Path(root).resolve()
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.public_host = public_host
        self.request_timeout = request_timeout
        self.io_timeout = io_timeout
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._last_requests: list[Request] = []

    @property
    def requests(self) -> list[Request]:
        """The requests answered so far (the last 10,000), oldest first."""
        return list(self._httpd.requests) if self._httpd is not None else list(self._last_requests)

    def start(self) -> GitServer:
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self._httpd = _Server(
            (self.host, self.port),
            self.root,
            self.username,
            self.password,
            self.request_timeout,
            self.io_timeout,
        )
        self.port = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="gitserver",
            daemon=True,
        )
        self._thread.start()
        log.info("git server: %s at %s", self.root, self.base_url)
        return self

    def stop(self) -> None:
        """Stop accepting, kill running git processes and close open connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_everything()
        self._last_requests = list(httpd.requests)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://host:port` (no trailing slash) as clients should use it."""
        host = self.public_host or self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def url(self, repository: str) -> str:
        """The clone URL of a repository under the root (e.g. `app.git`)."""
        return f"{self.base_url}/{repository.strip('/')}"

    def create_repository(self, name: str, default_branch: str = "main") -> Path:
        """A new empty bare repository `root/name` (e.g. `team/app.git`)."""
        if not _REPO_NAME.match(name) or ".." in name.split("/"):
            raise ValueError(f"not a repository name: {name!r}")
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "-b", default_branch, str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return path


# --- command line ----------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[IPv6]:PORT` into (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {number}")
    return host, number


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m gastown.devtools.gitserver",
        description="Serve the bare git repositories under a directory over smart HTTP "
        "(clone, fetch, push) with basic auth.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory of bare repositories")
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 0),
        metavar="ADDR:PORT",
        help="listen address (port 0: a free port; the URL is printed). Default 127.0.0.1:0",
    )
    parser.add_argument("--user", required=True, help="the one username accepted")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="its password")
    secret.add_argument("--password-file", type=Path, help="a file whose first line is it")
    parser.add_argument(
        "--create",
        action="append",
        default=[],
        metavar="NAME",
        help="create this bare repository under the root if missing (repeatable)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="seconds one git operation may take",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    password = args.password
    if args.password_file is not None:
        password = args.password_file.read_text().splitlines()[0].strip()
    host, port = args.listen
    server = GitServer(
        args.root, args.user, password, host, port, request_timeout=args.request_timeout
    )
    for name in args.create:
        if not (server.root / name / "HEAD").exists():
            server.create_repository(name)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"serving {server.root} at {server.base_url}/", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
