"""Issue 10, observation 8: a Town is not a confused deputy.

Before the fix a Town's author could name any Secret of the namespace (`secretEnv`, a rig's
credentials, a PR token) or any ServiceAccount (`spec.agent.serviceAccountName`) and the operator
would mount it into, or run, agent pods the author controls; and it sent the PR token to a
plain-http `apiUrl`. Now every Secret and ServiceAccount a Town names must carry the label
`gastown.dev/town: <town>`, and `apiUrl` must be https unless the operator was started with the
insecure flag. A Town that breaks a rule turns Degraded with the reason and a Warning Event, no pod
that would use the object is created, other towns go on, and labelling the object lets it proceed.
"""

from __future__ import annotations

from typing import Any

import pytest

from gastown.kube import labels
from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.procs import Process
from tests.support.town import TownView, bead, town

pytestmark = pytest.mark.cluster

SECRET_VALUE = "sk-not-for-that-town"


def condition(view: TownView, town_name: str, type_: str) -> dict[str, Any] | None:
    """One condition of a Town's status, if present."""
    conditions = (view.town(town_name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def degraded_because(view: TownView, town_name: str, reason: str) -> dict[str, Any] | None:
    """The Town's Degraded condition, once it is True with `reason`."""
    found = condition(view, town_name, "Degraded")
    if found and found["status"] == "True" and found["reason"] == reason:
        return found
    return None


def pods_of(view: TownView, town_name: str) -> list[dict[str, Any]]:
    """The agent pods of one town."""
    return [
        p
        for p in view.pods()
        if (p["metadata"].get("annotations") or {}).get(labels.TOWN) == town_name
        or p["metadata"]["labels"].get(labels.TOWN) == town_name
    ]


def warnings_on(api: Api, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """Warning Events of one object with one reason."""
    resp = api.call(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    )
    return [e for e in resp.body["items"] if e["type"] == "Warning" and e["reason"] == reason]


def create_core(api: Api, namespace: str, plural: str, body: dict[str, Any]) -> None:
    """POST a core object (Secret, ServiceAccount)."""
    resp = api.call("POST", f"/api/v1/namespaces/{namespace}/{plural}", body)
    assert resp.status == 201, resp.body


def opt_in(api: Api, namespace: str, plural: str, name: str, town_name: str) -> None:
    """Label a Secret or ServiceAccount so that the Town may use it."""
    resp = api.call(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/{plural}/{name}",
        {"metadata": {"labels": {labels.TOWN: town_name}}},
        content_type="application/merge-patch+json",
    )
    assert resp.status == 200, resp.body


def assert_held(view: TownView, bead_name: str, town_name: str = "demo") -> None:
    """Nothing of the town was dispatched: its bead waits, unassigned, and it has no pod."""
    held = next(b for b in view.beads() if b.name == bead_name)
    assert held.status.phase is BeadPhase.OPEN, held.status
    assert held.status.assignee is None, held.status
    assert held.status.attempts == 0, held.status
    assert not pods_of(view, town_name), pods_of(view, town_name)


def test_a_secret_the_town_did_not_opt_in_is_never_mounted(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    secret = {"metadata": {"name": "keys"}, "stringData": {"anthropic": SECRET_VALUE}}
    create_core(api, namespace, "secrets", secret)
    body = town()
    body["spec"]["agent"]["secretEnv"] = [
        {"name": "ANTHROPIC_API_KEY", "secretKeyRef": {"name": "keys", "key": "anthropic"}}
    ]
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("wants-the-key")).status == 201
    # Another town of the same namespace, naming nothing it may not use.
    assert api.create(namespace, town("other")).status == 201
    assert api.create(namespace, bead("unrelated", town_name="other")).status == 201

    degraded = view.wait(
        lambda: degraded_because(view, "demo", "SecretNotOptedIn"), 30, "demo to be Degraded"
    )
    assert '"keys"' in degraded["message"]
    assert "gastown.dev/town=demo" in degraded["message"]
    ready = condition(view, "demo", "Ready")
    assert ready is not None
    assert ready["status"] == "False", ready
    view.wait(
        lambda: warnings_on(api, namespace, "demo", "SecretNotOptedIn"), 30, "a Warning Event"
    )
    view.wait(lambda: pods_of(view, "other"), 30, "the other town to keep working")
    assert_held(view, "wants-the-key")
    assert SECRET_VALUE not in str(view.town("demo"))

    opt_in(api, namespace, "secrets", "keys", "demo")
    pod = view.wait(lambda: next(iter(pods_of(view, "demo")), None), 60, "demo to dispatch")
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "keys", "key": "anthropic"} in [
        e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
    ]
    view.wait(
        lambda: (condition(view, "demo", "Degraded") or {}).get("status") == "False",
        30,
        "demo to recover",
    )


def test_a_service_account_the_town_did_not_opt_in_is_never_used(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    create_core(api, namespace, "serviceaccounts", {"metadata": {"name": "powerful"}})
    body = town()
    body["spec"]["agent"]["serviceAccountName"] = "powerful"
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("as-powerful")).status == 201
    view.wait(
        lambda: degraded_because(view, "demo", "ServiceAccountNotOptedIn"),
        30,
        "demo to be Degraded",
    )
    assert_held(view, "as-powerful")
    # Opting in to another town does not count.
    opt_in(api, namespace, "serviceaccounts", "powerful", "other")
    assert degraded_because(view, "demo", "ServiceAccountNotOptedIn")
    assert_held(view, "as-powerful")

    opt_in(api, namespace, "serviceaccounts", "powerful", "demo")
    pod = view.wait(lambda: next(iter(pods_of(view, "demo")), None), 60, "demo to dispatch")
    assert pod["spec"]["serviceAccountName"] == "powerful"


def pr_town_body(api: Api, namespace: str) -> dict[str, Any]:
    """A town whose rig opens pull requests on a plain-http API, with an opted-in token."""
    secret = {
        "metadata": {"name": "gh", "labels": {labels.TOWN: "demo"}},
        "stringData": {"token": "s3cr3t-token"},
    }
    create_core(api, namespace, "secrets", secret)
    body = town()
    body["spec"]["rigs"][0].update(
        {
            "mergeStrategy": "pr",
            "pullRequests": {
                "kind": "github",
                "apiUrl": "http://127.0.0.1:9/gh",
                "repository": "o/r",
                "tokenSecret": {"name": "gh", "key": "token"},
            },
        }
    )
    return body


def test_an_http_provider_url_is_refused_without_the_insecure_flag(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    assert api.create(namespace, pr_town_body(api, namespace)).status == 201
    assert api.create(namespace, bead("via-http")).status == 201
    degraded = view.wait(
        lambda: degraded_because(view, "demo", "InsecureProviderUrl"), 30, "demo to be Degraded"
    )
    assert "https" in degraded["message"]
    assert "--allow-insecure-provider-urls" in degraded["message"]
    view.wait(
        lambda: warnings_on(api, namespace, "demo", "InsecureProviderUrl"), 30, "a Warning Event"
    )
    assert_held(view, "via-http")


def test_an_http_provider_url_is_accepted_with_the_insecure_flag(
    api: Api, namespace: str, pr_operator_proc: Process, view: TownView
) -> None:
    assert api.create(namespace, pr_town_body(api, namespace)).status == 201
    assert api.create(namespace, bead("via-http")).status == 201
    view.wait(lambda: pods_of(view, "demo"), 60, "demo to dispatch")
    degraded = condition(view, "demo", "Degraded")
    assert degraded is None or degraded["reason"] != "InsecureProviderUrl", degraded
