"""A Town whose loop cannot run says why in its status (issue 10, observation 7).

Before the fix a town loop that failed at start (a 253-character name made its pod label
selector invalid) crashed and was restarted by kopf every 60 s, and the Town got no status at
all. Here the loop really cannot start: the operator's identity may not list pods (the real API
server refuses with 403). The Town turns Ready=False / Degraded=True with reason LoopFailed and the
API's message, and the loop starts by itself once the permission is granted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import ControlPlane
from gastown.handlers.towns import prime_until_done
from gastown.kube.client import Kube, connect
from gastown.kube.loop import LOOP_FAILED, TownLoop
from gastown.kube.store import Store
from tests.support.api import Api
from tests.support.town import town

pytestmark = pytest.mark.cluster

RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces"
RULES: list[dict[str, Any]] = [
    {"apiGroups": ["gastown.dev"], "resources": ["towns"], "verbs": ["get", "list", "patch"]},
    {"apiGroups": ["gastown.dev"], "resources": ["towns/status"], "verbs": ["patch"]},
    {"apiGroups": ["gastown.dev"], "resources": ["beads", "convoys", "agents"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
PODS_LIST: dict[str, Any] = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}


class StopAfter:
    """Stands in for kopf's DaemonStopped: stopped after `waits` backoff waits of at most
    0.2 s each (a deadline for the retries, not a synchronisation)."""

    def __init__(self, waits: int) -> None:
        self.waits = waits

    def __bool__(self) -> bool:
        return self.waits <= 0

    async def wait(self, seconds: float | None = None) -> None:
        self.waits -= 1
        await asyncio.sleep(min(seconds or 0.0, 0.2))


def _limited_identity(api: Api, namespace: str, plane: ControlPlane, path: Path) -> Path:
    """A kubeconfig of a ServiceAccount holding RULES only (no pods)."""
    core = f"/api/v1/namespaces/{namespace}"
    assert api.call("POST", f"{core}/serviceaccounts", {"metadata": {"name": "op"}}).status == 201
    role = {"metadata": {"name": "op"}, "rules": RULES}
    assert api.call("POST", f"{RBAC}/{namespace}/roles", role).status == 201
    binding = {
        "metadata": {"name": "op"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}],
    }
    assert api.call("POST", f"{RBAC}/{namespace}/rolebindings", binding).status == 201
    minted = api.call(
        "POST",
        f"{core}/serviceaccounts/op/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert minted.status == 201, minted.body
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": "op", "user": {"token": minted.body["status"]["token"]}}]
    for context in config["contexts"]:
        context["context"]["user"] = "op"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def limited_kube(
    api: Api,
    namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Kube]:
    """An operator client that may do everything a town loop needs except listing pods."""
    path = _limited_identity(api, namespace, control_plane, tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    client = Kube(await connect())
    yield client
    await client.close()


def _conditions(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    status = api.get("Town", namespace, "demo").body.get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


async def test_a_town_whose_loop_cannot_start_says_why_and_recovers(
    api: Api, namespace: str, limited_kube: Kube
) -> None:
    assert api.create(namespace, town()).status == 201
    store = Store()
    started = await prime_until_done(limited_kube, store, namespace, "demo", StopAfter(2))
    assert not started
    conditions = _conditions(api, namespace)
    assert conditions["Ready"]["status"] == "False", conditions
    assert conditions["Ready"]["reason"] == LOOP_FAILED
    assert conditions["Degraded"]["status"] == "True"
    assert "pods is forbidden" in conditions["Degraded"]["message"], conditions
    summary = api.get("Town", namespace, "demo").body["status"]["summary"]
    assert summary.startswith("loop failed:"), summary

    # The cause goes away: the loop starts and its first pass replaces the failure.
    role = {"metadata": {"name": "op"}, "rules": [*RULES, PODS_LIST]}
    assert api.call("PUT", f"{RBAC}/{namespace}/roles/op", role).status == 200
    assert await prime_until_done(limited_kube, store, namespace, "demo", StopAfter(50))
    await TownLoop(limited_kube, store, namespace, "demo").pass_once()
    conditions = _conditions(api, namespace)
    assert conditions["Ready"]["status"] == "True", conditions
    assert conditions["Degraded"]["reason"] != LOOP_FAILED
