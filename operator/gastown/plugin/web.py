"""The web server of `kubectl gastown dashboard`: pages from the `Mirror`, live through SSE.

It listens on loopback and, unless `allow_remote`, answers only connections from a loopback
address whose Host header names the loopback (so another site cannot reach it through DNS
rebinding). It holds no credentials of its own: everything it shows was read with the user's
kubeconfig, in the one namespace the user chose, so the page shows what the user may read and
nothing more. No endpoint writes anything.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gastown.kube.errors import ApiError
from gastown.kube.rest import RestClient
from gastown.model import Bead, Convoy, Town
from gastown.plugin import pages
from gastown.plugin.fetch import agent_pods
from gastown.plugin.mirror import Mirror
from gastown.plugin.state import TownState
from gastown.plugin.timeline import bead_timeline, timeline_subjects

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_is_loopback(host_header: str | None) -> bool:
    """True if the Host header names the loopback (with or without a port)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_HOSTS


def client_is_loopback(address: str) -> bool:
    """True if the peer address is a loopback address (IPv4, IPv6 or IPv4-mapped)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class Views:
    """What the pages need, read from the mirror (and Events, listed per bead page)."""

    def __init__(self, mirror: Mirror, client: RestClient, namespace: str) -> None:
        self.mirror = mirror
        self.client = client
        self.namespace = namespace

    def towns(self) -> list[Town]:
        """Every readable Town of the namespace."""
        return [Town.from_api(t) for t in self.mirror.objects("Town")]

    def state(self, town: str) -> TownState | None:
        """One town and its objects, or None if there is no such (readable) town."""
        raw = self.mirror.get("Town", town)
        if raw is None:
            return None
        return TownState.parse(
            raw,
            self.mirror.objects("Bead"),
            self.mirror.objects("Convoy"),
            self.mirror.objects("Agent"),
            agent_pods(self.mirror.objects("Pod")),
        )

    def events(self, names: list[str]) -> list[dict[str, Any]]:
        """Events about the named objects (one LIST per object, with the user's token)."""
        found: list[dict[str, Any]] = []
        for name in names:
            query = urllib.parse.urlencode({"fieldSelector": f"involvedObject.name={name}"})
            try:
                body = self.client.request(
                    "GET", f"/api/v1/namespaces/{self.namespace}/events?{query}"
                )
            except ApiError:
                return found  # Events the user may not read are simply not shown
            found += body.get("items") or []
        return found


Route = Callable[[Views, re.Match[str], datetime], tuple[str, str] | None]


def _towns(views: Views, _: re.Match[str], now: datetime) -> tuple[str, str]:
    states = [s for s in (views.state(t.name) for t in views.towns()) if s is not None]
    return "Towns", pages.towns_body(states, now)


def _town(views: Views, match: re.Match[str], now: datetime) -> tuple[str, str] | None:
    state = views.state(match["town"])
    return None if state is None else (f"Town {state.town.name}", pages.town_body(state, now))


def _agents(views: Views, match: re.Match[str], now: datetime) -> tuple[str, str] | None:
    state = views.state(match["town"])
    return None if state is None else ("Agents", pages.agents_body(state, now))


def _queue(views: Views, match: re.Match[str], _: datetime) -> tuple[str, str] | None:
    state = views.state(match["town"])
    return None if state is None else ("Review queue", pages.queue_body(state))


def _convoy(views: Views, match: re.Match[str], _: datetime) -> tuple[str, str] | None:
    raw = views.mirror.get("Convoy", match["name"])
    if raw is None:
        return None
    convoy = Convoy.from_api(raw)
    state = views.state(convoy.spec.town)
    if state is None:
        return None
    return f"Convoy {convoy.name}", pages.convoy_body(state, convoy)


def _bead(views: Views, match: re.Match[str], now: datetime) -> tuple[str, str] | None:
    raw = views.mirror.get("Bead", match["name"])
    if raw is None:
        return None
    bead = Bead.from_api(raw)
    state = views.state(bead.spec.town)
    if state is None:
        return None
    entries = bead_timeline(state, bead.name, views.events(timeline_subjects(state, bead.name)))
    return f"Bead {bead.name}", pages.bead_body(bead, entries, now)


NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
ROUTES: list[tuple[re.Pattern[str], Route]] = [
    (re.compile(r"^/$"), _towns),
    (re.compile(rf"^/town/(?P<town>{NAME})$"), _town),
    (re.compile(rf"^/town/(?P<town>{NAME})/agents$"), _agents),
    (re.compile(rf"^/town/(?P<town>{NAME})/queue$"), _queue),
    (re.compile(rf"^/convoy/(?P<name>{NAME})$"), _convoy),
    (re.compile(rf"^/bead/(?P<name>{NAME})$"), _bead),
]


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server; `views` is shared by every request thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], views: Views, *, allow_remote: bool) -> None:
        self.views = views
        self.allow_remote = allow_remote
        self.closing = threading.Event()
        self.serving = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        """Where the dashboard is served."""
        host, port = self.server_address[0], self.server_address[1]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}/"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `close` (remembered, so `close` knows to wait for the loop to end)."""
        self.serving = True
        super().serve_forever(poll_interval)

    def close(self) -> None:
        """Stop serving and end the event streams."""
        self.closing.set()
        self.views.mirror.stop()
        if self.serving:
            self.shutdown()  # waits for serve_forever, which only then returns
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    """GET only: pages, page fragments (`?fragment=1`) and `/events`."""

    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged at debug level only (URLs name beads, never secrets)."""
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        """Serve one request after the loopback checks."""
        if not self.server.allow_remote and not (
            client_is_loopback(self.client_address[0]) and host_is_loopback(self.headers["Host"])
        ):
            self._send(HTTPStatus.FORBIDDEN, "text/plain", "loopback only\n")
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/events":
            self._events()
            return
        self._page(url.path, "fragment=1" in url.query.split("&"))

    def _page(self, path: str, fragment: bool) -> None:
        views = self.server.views
        now = datetime.now(UTC)
        for pattern, route in ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            found = route(views, match, now)
            status = HTTPStatus.OK if found is not None else HTTPStatus.NOT_FOUND
            title, body = found or ("Not found", pages.not_found(path))
            body = pages.errors_block(views.mirror.errors()) + body
            html = body if fragment else pages.page(title, body, views.namespace)
            self._send(status, "text/html; charset=utf-8", html)
            return
        self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")

    def _events(self) -> None:
        """Server-sent events: the mirror's version each time it changes, and keep-alives."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        mirror, version = self.server.views.mirror, -1
        try:
            while not self.server.closing.is_set():
                current = mirror.wait(version, KEEPALIVE_SECONDS)
                if current != version:
                    version = current
                    self.wfile.write(f"data: {version}\n\n".encode())
                else:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the browser went away

    def _send(self, status: HTTPStatus, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(data)


CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
)
"""Only our inline style and script; no third-party content, no framing."""


def serve(
    client: RestClient,
    namespace: str,
    address: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_remote: bool = False,
    watch_seconds: int = 60,
) -> DashboardServer:
    """Start the watches and the server (not yet serving: call `serve_forever`)."""
    mirror = Mirror(client, namespace, watch_seconds=watch_seconds)
    mirror.start()
    return DashboardServer(
        (address, port), Views(mirror, client, namespace), allow_remote=allow_remote
    )
