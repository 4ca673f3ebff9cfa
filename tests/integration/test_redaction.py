"""The operator redacts a town's Secret values from everything it writes (real API server).

A lying agent holds the town's secrets and may write one into its reports; the reconciler copies
report text into rework Beads, Bead status and Events. The apply step must hide the values of
every Secret the town hands to its pods before any of that reaches the API.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.apply import Applier
from gastown.kube.client import Kube, connect
from gastown.kube.redaction import TownSecrets, log_redactor
from gastown.kube.store import Store
from gastown.model import BeadPhase, Town
from gastown.reconcile.actions import CreateReworkBead, TransitionBead
from gastown.reconcile.writes import Kind
from tests.support.api import Api
from tests.support.town import bead, town

pytestmark = pytest.mark.cluster


@pytest.fixture
async def kube(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kube]:
    """An async client of the control plane, as the operator builds it."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    client = Kube(await connect())
    yield client
    await client.close()


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"gastown.dev/town": "demo"}},
        "stringData": data,
    }


async def test_report_text_with_secrets_is_redacted_before_beads_and_events(
    api: Api, namespace: str, kube: Kube
) -> None:
    model_key = f"sk-ant-{secrets.token_hex(16)}"
    git_token = f"ghp_{secrets.token_hex(16)}"
    pr_token = f"glpat-{secrets.token_hex(16)}"
    for body in (
        _secret("model", {"anthropic": model_key, "unused": "not-handed-to-pods"}),
        _secret("git", {"username": "x-access-token", "token": git_token}),
        _secret("pr", {"token": pr_token}),
    ):
        created = api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", body)
        assert created.status == 201, created.message
    spec_town = town(
        rigs=[
            {
                "name": "app",
                "gitUrl": "https://git.example.com/app.git",
                "credentialsSecret": "git",
                "mergeStrategy": "pr",
                "pullRequests": {
                    "kind": "github",
                    "apiUrl": "https://api.example.com",
                    "repository": "o/r",
                    "tokenSecret": {"name": "pr", "key": "token"},
                },
            }
        ],
        agent={
            "image": "gastown-agent:test",
            "secretEnv": [
                {"name": "ANTHROPIC_API_KEY", "secretKeyRef": {"name": "model", "key": "anthropic"}}
            ],
        },
    )
    for body in (spec_town, bead("src")):
        assert api.create(namespace, body).status == 201
    store = Store()
    store.observe("Town", api.get("Town", namespace, "demo").body)
    store.observe("Bead", api.get("Bead", namespace, "src").body)

    # What a lying refinery reported, as the reconciler copies it (see reconcile/rework.py).
    encoded = base64.b64encode(f"KEY={model_key}\n".encode()).decode()
    lie = f"gate failed: {model_key} / {git_token} / {pr_token} / {encoded} / x-access-token"
    now = datetime.now(UTC)
    plan = [
        CreateReworkBead(
            town="demo",
            bead="src-rework-1",
            spec={
                "town": "demo",
                "rig": "app",
                "type": "rework",
                "title": f"Rework: {model_key}",
                "description": lie,
                "rework": {
                    "mergeRequest": "mr",
                    "sourceBead": "src",
                    "branch": "b",
                    "feedback": lie,
                },
            },
            owner=(Kind.BEAD, "src"),
            reason="GateFailed",
            message=lie,
        ),
        TransitionBead(
            bead="src",
            from_phase=BeadPhase.OPEN,
            to_phase=BeadPhase.FAILED,
            now=now,
            reason="GateFailed",
            message=lie,
        ),
    ]
    applier = Applier(
        kube, store, store.town(namespace, "demo"), secrets=TownSecrets(kube, namespace, "demo")
    )
    result = await applier.apply(plan)
    assert (result.conflicts, result.errors) == (0, []), result

    written = json.dumps(
        {
            "beads": api.call("GET", Api.path("Bead", namespace)).body["items"],
            "events": api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"],
        }
    )
    for value in (model_key, git_token, pr_token, model_key[8:], encoded[4:-4]):
        assert value not in written
    assert "***" in api.get("Bead", namespace, "src-rework-1").body["spec"]["rework"]["feedback"]
    assert (
        api.get("Bead", namespace, "src")
        .body["status"]["message"]
        .startswith("gate failed: *** / *** / ***")
    )
    # Only what reaches pods counts: the username and keys no pod receives stay readable.
    assert "x-access-token" in written
    events = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    assert any(e["message"].startswith("gate failed: ***") for e in events), events


async def test_a_town_without_secrets_is_written_unchanged(
    api: Api, namespace: str, kube: Kube
) -> None:
    for body in (town(), bead("b1")):
        assert api.create(namespace, body).status == 201
    store = Store()
    store.observe("Town", api.get("Town", namespace, "demo").body)
    store.observe("Bead", api.get("Bead", namespace, "b1").body)
    town_secrets = TownSecrets(kube, namespace, "demo")
    message = "the tests print sk-ant-not-a-secret"
    plan = [
        TransitionBead(
            bead="b1",
            from_phase=BeadPhase.OPEN,
            to_phase=BeadPhase.FAILED,
            now=datetime.now(UTC),
            reason="Failed",
            message=message,
        )
    ]
    result = await Applier(kube, store, store.town(namespace, "demo"), secrets=town_secrets).apply(
        plan
    )
    assert (result.conflicts, result.errors) == (0, []), result
    assert api.get("Bead", namespace, "b1").body["status"]["message"] == message
    assert not town_secrets.known()


async def test_values_are_cached_briefly_and_known_to_the_log_filter(
    api: Api, namespace: str, kube: Kube
) -> None:
    value = f"sk-ant-{secrets.token_hex(16)}"
    created = api.call(
        "POST", f"/api/v1/namespaces/{namespace}/secrets", _secret("model", {"k": value})
    )
    assert created.status == 201, created.message
    body = town(
        agent={
            "image": "gastown-agent:test",
            "secretEnv": [{"name": "KEY", "secretKeyRef": {"name": "model", "key": "k"}}],
        }
    )
    assert api.create(namespace, body).status == 201
    held = Town.from_api(api.get("Town", namespace, "demo").body)
    now = [0.0]
    town_secrets = TownSecrets(kube, namespace, "demo", ttl=30.0, clock=lambda: now[0])
    assert not town_secrets.known()  # nothing is read before something is written
    assert (await town_secrets.redactor(held)).redact(value) == "***"
    assert log_redactor().redact(f"log {value}") == "log ***"
    # Rotated: the old value stays hidden until the cache expires, then the new one is read.
    rotated = f"sk-ant-{secrets.token_hex(16)}"
    patch = {"stringData": {"k": rotated}}
    path = f"/api/v1/namespaces/{namespace}/secrets/model"
    patched = api.call("PATCH", path, patch, content_type="application/merge-patch+json")
    assert patched.status == 200, patched.message
    assert (await town_secrets.redactor(held)).redact(value) == "***"
    now[0] = 31.0
    fresh = await town_secrets.redactor(held)
    assert fresh.redact(f"{rotated} {value}") == f"*** {value}"
    assert log_redactor().redact(rotated) == "***"
