"""Each agent pod's credentials can write its own Agent's status and nothing else of its kind."""

from __future__ import annotations

from typing import Any

import pytest

from gastown.kube.pods import build_identity, identity_name
from gastown.model import Agent, Town
from tests.support.api import Api

pytestmark = pytest.mark.cluster

TOWN: dict[str, Any] = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Town",
    "metadata": {"name": "demo"},
    "spec": {"rigs": [{"name": "app", "gitUrl": "/srv/app.git"}], "agent": {"image": "agent:1"}},
}


def _agent(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"town": "demo", "role": "polecat", "rig": "app", "generation": 1},
    }


CORE = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}


def _grant(api: Api, namespace: str, agent: dict[str, Any]) -> str:
    """Create the agent's identity as the operator does; return a token of its ServiceAccount."""
    town = Town.from_api(api.get("Town", namespace, "demo").body)
    model = Agent.from_api(agent)
    for kind, body in build_identity(town, model, agent["metadata"]["uid"], namespace):
        group = "/api/v1" if kind == "ServiceAccount" else "/apis/rbac.authorization.k8s.io/v1"
        created = api.call("POST", f"{group}/namespaces/{namespace}/{CORE[kind]}", body)
        assert created.status == 201, created.message
    account = identity_name(model.name)
    token = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"spec": {"expirationSeconds": 600}},
    )
    assert token.status == 201, token.message
    return str(token.body["status"]["token"])


def test_agent_token_writes_only_its_own_agent(api: Api, namespace: str) -> None:
    assert api.create(namespace, TOWN).status == 201
    mine = api.create(namespace, _agent("demo-polecat-app-1")).body
    other = api.create(namespace, _agent("demo-polecat-app-2")).body
    agent_api = api.as_token(_grant(api, namespace, mine))

    report = {"status": {"statusMessage": "working on it"}}
    own = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", report, sub="status")
    assert own.status == 200, own.message

    foreign = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-2", report, sub="status")
    assert foreign.status == 403
    assert 'cannot patch resource "agents/status"' in foreign.message
    assert (
        api.get("Agent", namespace, other["metadata"]["name"])
        .body.get("status", {})
        .get("statusMessage")
        is None
    )

    # Not its own spec either: the operator alone decides hook and generation.
    spec = agent_api.merge_patch(
        "Agent", namespace, "demo-polecat-app-1", {"spec": {"generation": 9}}
    )
    assert spec.status == 403
    # And no Secrets: credentials reach pods as mounted volumes, never through the API.
    secrets = agent_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets")
    assert secrets.status == 403
    # It can read its work.
    assert agent_api.get("Town", namespace, "demo").status == 200
