"""A small synchronous REST client for code running inside agent pods (the `gt` tools).

The in-pod tools are short-lived processes that make a handful of calls; a synchronous client on
the standard library keeps them quick to start. Credentials come from $KUBECONFIG (token and CA
of the first cluster/user) or from the pod's mounted ServiceAccount. Tokens are never logged.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gastown.kube.errors import from_http_error
from gastown.model.common import GROUP, VERSION
from gastown.model.resources import PLURALS

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class RestClient:
    """Server URL, bearer token and TLS context."""

    server: str
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_environment(cls) -> RestClient:
        """From $KUBECONFIG if set, else the in-cluster ServiceAccount."""
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if path:
            return cls._from_kubeconfig(Path(path))
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("no KUBECONFIG and not in a pod: cannot reach the API server")
        context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        token = (SA_DIR / "token").read_text().strip()
        return cls(f"https://{host}:{port}", token, context)

    @classmethod
    def from_kubeconfig_path(cls, path: Path) -> RestClient:
        """From one kubeconfig file (token authentication)."""
        return cls._from_kubeconfig(path)

    @classmethod
    def _from_kubeconfig(cls, path: Path) -> RestClient:
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        context = next(
            (c["context"] for c in config["contexts"] if c["name"] == current),
            config["contexts"][0]["context"],
        )
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if "token" not in user:
            raise RuntimeError("the kubeconfig user has no token (only token auth is supported)")
        if cluster.get("insecure-skip-tls-verify"):
            tls = ssl._create_unverified_context()
        elif "certificate-authority-data" in cluster:
            with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".crt") as handle:
                handle.write(base64.b64decode(cluster["certificate-authority-data"]))
            tls = ssl.create_default_context(cafile=handle.name)
            os.unlink(handle.name)
        else:
            tls = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        return cls(cluster["server"].rstrip("/"), user["token"], tls)

    @staticmethod
    def path(kind: str, namespace: str, name: str, status: bool = False) -> str:
        """REST path of one object of our kinds."""
        suffix = "/status" if status else ""
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}/{name}{suffix}"

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """One call; raises the taxonomy of `gastown.kube.errors` on failure."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as resp:
                result: dict[str, Any] = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as err:
            raise from_http_error(err) from None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """GET one object."""
        return self.request("GET", self.path(kind, namespace, name))

    def patch_status(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource."""
        return self.request(
            "PATCH",
            self.path(kind, namespace, name, status=True),
            patch,
            "application/merge-patch+json",
        )

    # -- additions for the `kubectl gastown` plugin (collections, creation, pods) ------------

    @staticmethod
    def collection_path(kind: str, namespace: str) -> str:
        """REST path of the collection of one of our kinds in a namespace."""
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"

    def list_objects(
        self, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """LIST one of our kinds in a namespace (items only)."""
        path = self.collection_path(kind, namespace) + _selector(label_selector)
        items: list[dict[str, Any]] = self.request("GET", path).get("items") or []
        return items

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a new object of one of our kinds; returns it as the API server stored it."""
        return self.request("POST", self.collection_path(kind, namespace), body)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of an object of one of our kinds (its spec or metadata)."""
        return self.request(
            "PATCH", self.path(kind, namespace, name), patch, "application/merge-patch+json"
        )

    def list_pods(self, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """LIST core-API Pods in a namespace (items only)."""
        path = f"/api/v1/namespaces/{namespace}/pods" + _selector(label_selector)
        items: list[dict[str, Any]] = self.request("GET", path).get("items") or []
        return items


def _selector(label_selector: str | None) -> str:
    """Query string of a label selector ("" without one)."""
    if not label_selector:
        return ""
    return "?" + urllib.parse.urlencode({"labelSelector": label_selector})
