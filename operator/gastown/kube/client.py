"""The Kubernetes client: connection set-up and the few REST calls the operator makes.

All calls take and return plain JSON-shaped dicts (camelCase keys, as on the wire), so the rest
of the adapter never handles generated client models. Errors are mapped onto a small taxonomy:
`Conflict` (409: stale resourceVersion or already exists), `NotFound` (404), `Invalid` (422),
`Forbidden` (403) and `ApiError` for everything else.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gastown import __version__
from gastown.kube.errors import ERRORS, ApiError, Conflict, Forbidden, Invalid, NotFound
from gastown.model.common import GROUP, VERSION
from gastown.model.resources import PLURALS

__all__ = [
    "ApiError",
    "Conflict",
    "Forbidden",
    "Invalid",
    "Kube",
    "NotFound",
    "NotLeading",
    "connect",
]

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"
PROXY_VARIABLES = (
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
)
_CORE = "/api/v1/namespaces"
_RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces"
_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_LEASES = "/apis/coordination.k8s.io/v1/namespaces"
CORE_PATHS = {
    "Pod": (_CORE, "pods"),
    "ServiceAccount": (_CORE, "serviceaccounts"),
    "Event": (_CORE, "events"),
    "Role": (_RBAC, "roles"),
    "RoleBinding": (_RBAC, "rolebindings"),
}
"""Collection paths of the core kinds the operator writes."""
METADATA_PATHS = {"Secret": "secrets", "ServiceAccount": "serviceaccounts"}
"""Core kinds whose metadata the operator reads (opt-in labels, see `gastown.kube.deputy`)."""
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
USER_AGENT = f"gastown/{__version__}"
"""How the operator's own requests name themselves (API server audit logs, metrics)."""


class NotLeading(ApiError):
    """A write refused before it was sent: this replica does not hold the leader Lease."""

    def __init__(self) -> None:
        super().__init__(0, "not the leader: this replica does not write")


def _error(exc: ApiException) -> ApiError:
    message = str(exc.reason or "")
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", message)
    return ERRORS.get(int(exc.status or 0), ApiError)(int(exc.status or 0), message)


async def connect() -> client.ApiClient:
    """An API client: in-cluster credentials when in a pod, else the kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        # Read $KUBECONFIG now, not when the client library was imported.
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        await config.load_kube_config(config_file=path)
    configuration = client.Configuration.get_default_copy()
    # Concurrent dispatches share this pool (see kube.apply.CONCURRENCY).
    configuration.connection_pool_maxsize = 64
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT
    return api


class Kube:
    """The REST calls of the operator (and of the in-pod runtime)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._session: aiohttp.ClientSession | None = None
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.fence: Callable[[], bool] | None = None
        """Asked before every write (see `gastown.kube.leader`); None: always write."""

    # -- the lean JSON path of every write -----------------------------------------------------
    #
    # The generated client walks every request body to "sanitize" it, decodes every response into
    # generated models (for pods) and, with aiohttp's trust_env, re-reads ~/.netrc and the proxy
    # variables on every request: about half of the operator's CPU in a dispatch burst, on a
    # machine whose API server needs that CPU. Writes take this path instead: the same
    # connection pool, TLS settings and credentials (tokens are re-read through the client's
    # refresh hook, so rotated in-cluster tokens keep working), plain JSON in and out.

    def _lean_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            pool: aiohttp.ClientSession = self.api.rest_client.pool_manager
            self._session = aiohttp.ClientSession(
                connector=pool.connector,
                connector_owner=False,
                # Proxies from the environment still apply when any is set.
                trust_env=any(os.environ.get(name) for name in PROXY_VARIABLES),
                read_bufsize=2**21,
            )
        return self._session

    async def _json(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = JSON,
        accept: str = JSON,
        fenced: bool = True,
    ) -> dict[str, Any]:
        """One API request with a JSON body; the decoded JSON answer, or a taxonomy error.

        A write is refused (`NotLeading`) without being sent while the fence is down; only
        the Lease's own requests pass `fenced=False`.
        """
        if fenced and method != "GET" and self.fence is not None and not self.fence():
            raise NotLeading()
        configuration = self.api.configuration
        headers = {"Accept": accept, "Content-Type": content_type, "User-Agent": USER_AGENT}
        auth = (await configuration.auth_settings()).get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = auth["value"]
        async with self._lean_session().request(
            method,
            str(configuration.host) + path,
            data=None if body is None else json.dumps(body),
            headers=headers,
            proxy=configuration.proxy or None,
        ) as response:
            raw = await response.read()
        if response.status >= 400:
            message = response.reason or ""
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(raw).get("message", message)
            raise ERRORS.get(response.status, ApiError)(response.status, message)
        result: dict[str, Any] = json.loads(raw) if raw else {}
        return result

    async def close(self) -> None:
        """Close the connections (the lean session shares the generated client's pool)."""
        if self._session is not None:
            await self._session.close()
        await self.api.close()

    @staticmethod
    def _custom_path(kind: str, namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"
        return f"{path}/{name}" if name else path

    @staticmethod
    def _core_path(kind: str, namespace: str, name: str | None = None) -> str:
        prefix, plural = CORE_PATHS[kind]
        path = f"{prefix}/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def _plain(self, obj: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return result

    # -- our kinds -------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """GET one object of our kinds."""
        try:
            result: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name
            )
        except ApiException as exc:
            raise _error(exc) from exc
        return result

    async def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """LIST one of our kinds in a namespace (start-up priming only, never per pass)."""
        try:
            result: dict[str, Any] = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind]
            )
        except ApiException as exc:
            raise _error(exc) from exc
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """LIST pods by label selector (start-up priming only)."""
        try:
            pods = await self.core.list_namespaced_pod(namespace, label_selector=selector)
        except ApiException as exc:
            raise _error(exc) from exc
        return [self._plain(pod) for pod in pods.items]

    async def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one object of our kinds."""
        return await self._json("POST", self._custom_path(kind, namespace), body)

    async def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """JSON merge patch of an object or its status subresource.

        Put `metadata.resourceVersion` into the patch to make it conditional (409 if stale).
        """
        path = self._custom_path(kind, namespace, name) + ("/status" if status else "")
        return await self._json("PATCH", path, patch, content_type=MERGE_PATCH)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """DELETE one object of our kinds (children are garbage collected)."""
        options = {"propagationPolicy": "Background"}
        await self._json("DELETE", self._custom_path(kind, namespace, name), options)

    # -- pods, identities, events ------------------------------------------------------------

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Pod."""
        return await self._json("POST", self._core_path("Pod", namespace), body)

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int) -> None:
        """DELETE a Pod with a grace period (the kubelet sends SIGTERM, then SIGKILL)."""
        options = {"gracePeriodSeconds": grace_seconds}
        await self._json("DELETE", self._core_path("Pod", namespace, name), options)

    async def create_core(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        """POST a ServiceAccount, Role, RoleBinding or Event."""
        await self._json("POST", self._core_path(kind, namespace), body)

    async def patch_core(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of a Role (a town's agent Role names the town's Agents) or of an
        Event (a repeat raises its count)."""
        path = self._core_path(kind, namespace, name)
        return await self._json("PATCH", path, patch, content_type=MERGE_PATCH)

    # -- the leader Lease (never fenced: it is how the fence is raised) ---------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET a Lease; None if it does not exist."""
        try:
            return await self._json("GET", f"{_LEASES}/{namespace}/leases/{name}")
        except NotFound:
            return None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Lease (409 if another candidate created it first)."""
        return await self._json("POST", f"{_LEASES}/{namespace}/leases", body, fenced=False)

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT a Lease, conditional on the resourceVersion in `body` (409 if stale)."""
        path = f"{_LEASES}/{namespace}/leases/{name}"
        return await self._json("PUT", path, body, fenced=False)

    async def read_admission_policy(
        self, name: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The ValidatingAdmissionPolicy `name` and its binding (same name); None where absent.

        Raises the taxonomy error for anything but 404, a 403 included: the caller decides what
        an unreadable policy means.
        """
        found: list[dict[str, Any] | None] = []
        for plural in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
            try:
                found.append(await self._json("GET", f"{_ADMISSION}/{plural}/{name}"))
            except NotFound:
                found.append(None)
        return found[0], found[1]

    async def admission_policy_installed(self, name: str) -> bool:
        """True if the ValidatingAdmissionPolicy `name` and its binding (same name) exist.

        Unreadable (403) counts as absent: the caller then falls back to a mechanism that does
        not depend on the policy.
        """
        try:
            await self.admission.read_validating_admission_policy(name)
            await self.admission.read_validating_admission_policy_binding(name)
        except ApiException as exc:
            if exc.status in (403, 404):
                return False
            raise _error(exc) from exc
        return True

    async def read_metadata(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The metadata of a Secret or ServiceAccount, and nothing else (no Secret data).

        The API server answers with PartialObjectMetadata, so a Secret's values never reach
        the operator for this read (RBAC still calls it `get`).
        """
        plural = METADATA_PATHS[kind]
        path = f"{_CORE}/{namespace}/{plural}/{name}"
        result = await self._json("GET", path, accept=PARTIAL_METADATA)
        metadata: dict[str, Any] = result.get("metadata") or {}
        return metadata

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """Every value of a Secret, decoded (for the claim verifier's git credentials; never
        logged)."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise _error(exc) from exc
        return {
            key: base64.b64decode(value).decode(errors="replace")
            for key, value in (secret.data or {}).items()
        }

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """One value of a Secret (only for the PR poller's token; never logged)."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise _error(exc) from exc
        data = secret.data or {}
        if key not in data:
            raise NotFound(404, f"secret {name} has no key {key}")
        return base64.b64decode(data[key]).decode()
