"""A tiny synchronous Kubernetes API client for tests (JSON over HTTPS with a bearer token).

Tests use it to see exactly what the API server answers (status codes and messages), which a
higher-level client would turn into exceptions. Operator code never uses it.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gastown.model.common import GROUP, VERSION
from gastown.model.resources import PLURALS

T = TypeVar("T")


@dataclass(frozen=True)
class Response:
    """Status code and decoded body of one API call."""

    status: int
    body: dict[str, Any]

    @property
    def message(self) -> str:
        """The `message` of a Status answer ("" on success)."""
        return str(self.body.get("message", ""))


class Api:
    """Talks to one API server as one user."""

    def __init__(self, server: str, token: str, ca_file: Path) -> None:
        self.server = server
        self.token = token
        self._ssl = ssl.create_default_context(cafile=str(ca_file))

    @classmethod
    def from_kubeconfig(cls, path: Path, ca_file: Path) -> Api:
        """Build from a kubeconfig written by the local control plane."""
        config = yaml.safe_load(path.read_text())
        return cls(
            config["clusters"][0]["cluster"]["server"], config["users"][0]["user"]["token"], ca_file
        )

    def as_token(self, token: str) -> Api:
        """The same server, another identity."""
        other = Api.__new__(Api)
        other.server, other.token, other._ssl = self.server, token, self._ssl
        return other

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Response:
        """One request; never raises for HTTP errors."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as resp:
                return Response(resp.status, json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {"message": raw.decode(errors="replace")}
            return Response(err.code, parsed)

    # -- custom resources ----------------------------------------------------------------

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        """REST path of one of our kinds."""
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base

    def create(self, namespace: str, obj: dict[str, Any]) -> Response:
        """POST an object of one of our kinds."""
        return self.call("POST", self.path(obj["kind"], namespace), obj)

    def get(self, kind: str, namespace: str, name: str) -> Response:
        """GET one object."""
        return self.call("GET", self.path(kind, namespace, name))

    def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> Response:
        """JSON merge patch of an object or its status subresource."""
        return self.call(
            "PATCH",
            self.path(kind, namespace, name, sub),
            patch,
            content_type="application/merge-patch+json",
        )

    def delete(self, kind: str, namespace: str, name: str) -> Response:
        """DELETE one object (background propagation)."""
        return self.call(
            "DELETE", self.path(kind, namespace, name), {"propagationPolicy": "Background"}
        )


def eventually(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
