"""Issue 10, observation 7: no name or value that passes the API gets a bead stuck silently.

Before the fix a bead name over 63 characters, or a Town name that makes `<town>-polecat-<rig>-
<n>` longer than 63, broke the pod's labels: the API server refused the pod (422) and the bead
stayed `in_progress / Dispatched` holding a worker slot, with no Event and no condition; an image
with a leading space and an invalid nodeSelector key did the same; a 253-character Town name
crashed its loop. Now: Town names over 63 characters, such images and such nodeSelector keys are
refused by the API server on `kubectl apply`; derived names are always valid (hashed label
values, full names in annotations); and any pod the API server still refuses is a failed attempt
with the API's message, a Warning Event and the slot released.
"""

from __future__ import annotations

from typing import Any

import pytest

from gastown.kube import labels
from gastown.model import Bead, BeadPhase
from tests.support.api import Api
from tests.support.procs import Process
from tests.support.town import TownView, bead, town

pytestmark = pytest.mark.cluster

LONG_BEAD = "a-bead-whose-name-is-far-longer-than-a-label-value-may-be-" + "x" * 120
LONG_TOWN = "a-town-whose-name-is-exactly-sixty-three-characters-long-abcdef"


def events_about(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events whose involved object has this name."""
    resp = api.call(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    )
    items: list[dict[str, Any]] = resp.body["items"]
    return items


def the_bead(view: TownView, name: str) -> Bead | None:
    """One bead, if it exists."""
    return next((b for b in view.beads() if b.name == name), None)


def test_town_names_over_63_characters_are_refused_with_a_clear_message(
    api: Api, namespace: str
) -> None:
    for name in ("t" * 64, "t" * 253):
        resp = api.create(namespace, town(name))
        assert resp.status == 422, resp.body
        assert "at most 63 characters" in resp.message, resp.message
    assert api.create(namespace, town(LONG_TOWN)).status == 201
    assert len(LONG_TOWN) == 63


def test_images_and_node_selectors_the_kubelet_would_refuse_are_refused_on_apply(
    api: Api, namespace: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"image": " gastown-agent:test"}, "spec.agent.image"),
        ({"image": "gastown-agent:test ", "nodeSelector": {}}, "spec.agent.image"),
        ({"nodeSelector": {"bad key": "x"}}, "nodeSelector keys must be label keys"),
        ({"nodeSelector": {"-disk": "ssd"}}, "nodeSelector keys must be label keys"),
        ({"nodeSelector": {"disk": "not a value"}}, "spec.agent.nodeSelector.disk"),
    ]
    for index, (agent, expected) in enumerate(cases):
        body = town(f"bad-{index}")
        body["spec"]["agent"].update(agent)
        resp = api.create(namespace, body)
        assert resp.status == 422, (agent, resp.body)
        assert expected in resp.message, (agent, resp.message)
    good = town("good")
    good["spec"]["agent"]["nodeSelector"] = {"kubernetes.io/arch": "amd64", "disk": "ssd"}
    assert api.create(namespace, good).status == 201


def test_long_bead_and_agent_names_get_a_valid_pod(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    assert api.create(namespace, town(LONG_TOWN)).status == 201
    assert api.create(namespace, bead(LONG_BEAD, town_name=LONG_TOWN)).status == 201

    def pod_of_the_bead() -> dict[str, Any] | None:
        return next(
            (
                p
                for p in view.pods()
                if (p["metadata"].get("annotations") or {}).get(labels.BEAD) == LONG_BEAD
            ),
            None,
        )

    pod = view.wait(pod_of_the_bead, 60, "the long-named bead's pod to be created")
    meta = pod["metadata"]
    assert meta["annotations"][labels.TOWN] == LONG_TOWN
    agent = meta["annotations"][labels.AGENT]
    assert len(agent) > 63  # <town>-polecat-<rig>-<n>
    assert all(len(value) <= 63 for value in meta["labels"].values()), meta["labels"]
    assert meta["labels"][labels.TOWN] == LONG_TOWN
    # The operator reads the pod back as the bead's current session: the bead stays dispatched,
    # not failed for a missing pod.
    dispatched = the_bead(view, LONG_BEAD)
    assert dispatched is not None
    assert dispatched.status.phase is BeadPhase.IN_PROGRESS, dispatched.status
    assert dispatched.status.assignee == agent
    assert not any(e["reason"] == "PodRejected" for e in events_about(api, namespace, LONG_BEAD))


def test_a_pod_the_api_server_refuses_is_a_failed_attempt_and_frees_the_slot(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    # A LimitRange the town's resources exceed: the API server refuses every agent pod (403).
    limit_range = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "small"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]},
    }
    created = api.call("POST", f"/api/v1/namespaces/{namespace}/limitranges", limit_range)
    assert created.status == 201, created.body
    body = town(
        limits={"maxPolecatsPerRig": 1, "maxPolecats": 1},
        policy={"retry": {"maxAttempts": 2, "backoffSeconds": [1]}},
    )
    body["spec"]["agent"]["resources"] = {"limits": {"cpu": "1"}}
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("first")).status == 201
    assert api.create(namespace, bead("second")).status == 201

    def failed_for_good(name: str) -> Bead | None:
        found = the_bead(view, name)
        return found if found is not None and found.status.phase is BeadPhase.FAILED else None

    # One worker slot: the second bead can only run if every refusal released it.
    for name in ("first", "second"):
        failed = view.wait(lambda n=name: failed_for_good(n), 90, f"{name} to fail for good")
        assert failed.status.reason == "MaxAttemptsExceeded", failed.status
        assert "PodRejected" in (failed.status.message or ""), failed.status
        assert "maximum cpu usage per Container is 100m" in (failed.status.message or "")
        assert failed.status.attempts == 2
        assert failed.status.assignee is None
        warnings = [
            e
            for e in events_about(api, namespace, name)
            if e["type"] == "Warning" and e["reason"] == "PodRejected"
        ]
        assert warnings, events_about(api, namespace, name)
        assert "maximum cpu usage" in warnings[0]["message"]
    assert not view.pods()
    assert not any(a.spec.hook for a in view.agents())
