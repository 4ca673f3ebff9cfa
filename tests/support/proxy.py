"""A TCP proxy the test controls: the operator talks to the API server through it, and the test
cuts the connection (every open connection closed, new ones refused) and restores it."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CuttableProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target` until cut."""

    target: int
    port: int = 0
    _server: socket.socket | None = None
    _open: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cut: bool = False
    cuts: int = 0

    def start(self) -> None:
        """Listen and forward in background threads."""
        server = socket.create_server(("127.0.0.1", self.port))
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (as a broken network would)."""
        with self._lock:
            self._cut = True
            self.cuts += 1
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        """Accept and forward again."""
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        """Stop listening and drop everything."""
        self.cut()
        if self._server is not None:
            _close(self._server)

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # stopped
            with self._lock:
                if self._cut:
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
