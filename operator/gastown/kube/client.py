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
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gastown.kube.errors import ERRORS, ApiError, Conflict, Forbidden, Invalid, NotFound
from gastown.model.common import GROUP, VERSION
from gastown.model.resources import PLURALS

__all__ = ["ApiError", "Conflict", "Forbidden", "Invalid", "Kube", "NotFound", "connect"]

MERGE_PATCH = "application/merge-patch+json"


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
    return client.ApiClient(configuration)


class Kube:
    """The REST calls of the operator (and of the in-pod runtime)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)

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
        try:
            result: dict[str, Any] = await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], dict(body)
            )
        except ApiException as exc:
            raise _error(exc) from exc
        return result

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
        try:
            if status:
                result: dict[str, Any] = await self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURALS[kind],
                    name,
                    dict(patch),
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg]
                )
            else:
                result = await self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURALS[kind],
                    name,
                    dict(patch),
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg]
                )
        except ApiException as exc:
            raise _error(exc) from exc
        return result

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """DELETE one object of our kinds (children are garbage collected)."""
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURALS[kind],
                name,
                propagation_policy="Background",
            )
        except ApiException as exc:
            raise _error(exc) from exc

    # -- pods, identities, events ------------------------------------------------------------

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Pod."""
        try:
            return self._plain(
                await self.core.create_namespaced_pod(namespace, dict(body))  # type: ignore[arg-type]
            )
        except ApiException as exc:
            raise _error(exc) from exc

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int) -> None:
        """DELETE a Pod with a grace period (the kubelet sends SIGTERM, then SIGKILL)."""
        try:
            await self.core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=grace_seconds
            )
        except ApiException as exc:
            raise _error(exc) from exc

    async def create_core(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        """POST a ServiceAccount, Role, RoleBinding or Event."""
        calls: dict[str, Any] = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Event": self.core.create_namespaced_event,
            "Role": self.rbac.create_namespaced_role,
            "RoleBinding": self.rbac.create_namespaced_role_binding,
        }
        try:
            await calls[kind](namespace, dict(body))
        except ApiException as exc:
            raise _error(exc) from exc

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
