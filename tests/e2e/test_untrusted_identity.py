"""Agents are untrusted (issue 10, observations 4-6), end to end with the operator running.

- The admission policy binding deleted mid-run: no new agent pod is started (it would run with
  a town identity nothing scopes), the Town turns Degraded with the reason and a Warning Event,
  and it all recovers by itself when the binding is back.
- An escalation flood from a pod's own token makes one escalation bead, and the same token is
  refused when it writes the operator's fields of its Agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gastown.agent.channel import ReportDraft
from gastown.agent.identity import Identity
from gastown.devtools.controlplane import ControlPlane
from gastown.kube.agent_channel import KubeAgentChannel
from gastown.kube.identity import POLICY_NAME, town_identity_name
from gastown.kube.identity_guard import UNPROTECTED
from gastown.kube.rest import RestClient
from gastown.model import AgentRole, BeadType, ReportType
from tests.support.api import Api
from tests.support.procs import Process, operator, wait_started
from tests.support.town import TownView, bead, town

BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"


@pytest.fixture
def fast_operator(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Process]:
    """The operator, re-checking the admission policy every second."""
    proc = operator(control_plane, namespace, tmp_path, GASTOWN_IDENTITY_CHECK_SECONDS="1")
    proc.start()
    wait_started(proc, "Initial authentication has finished")
    yield proc
    proc.stop()


@pytest.fixture
def binding(api: Api) -> Iterator[dict[str, Any]]:
    """The installed policy binding, put back after the test whatever happens in it."""
    found = api.call("GET", f"{BINDINGS}/{POLICY_NAME}")
    assert found.status == 200, found.message
    body = found.body
    yield body
    if api.call("GET", f"{BINDINGS}/{POLICY_NAME}").status == 404:
        assert api.call("POST", BINDINGS, _fresh(body)).status == 201


def _fresh(obj: dict[str, Any]) -> dict[str, Any]:
    """A create body from a read object."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": meta["name"], "labels": meta.get("labels", {})},
        "spec": obj["spec"],
    }


def _condition(view: TownView, type_: str) -> dict[str, Any]:
    conditions = view.town().get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


def _events(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    path = f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    items: list[dict[str, Any]] = api.call("GET", path).body.get("items", [])
    return items


def test_a_deleted_policy_binding_holds_dispatch_until_it_is_restored(
    api: Api,
    namespace: str,
    fast_operator: Process,
    view: TownView,
    binding: dict[str, Any],
) -> None:
    assert api.create(namespace, town()).status == 201
    assert api.create(namespace, bead("b1")).status == 201
    view.wait(lambda: _bead(view, "b1").status.attempts >= 1, 60, "the first dispatch")

    assert api.call("DELETE", f"{BINDINGS}/{POLICY_NAME}").status == 200
    degraded = view.wait(
        lambda: (c := _condition(view, "Degraded")).get("reason") == UNPROTECTED and c,
        30,
        "the Town to be Degraded: agent identity unprotected",
    )
    assert degraded["status"] == "True"
    assert "ValidatingAdmissionPolicyBinding" in degraded["message"]
    view.wait(
        lambda: any(
            e["reason"] == UNPROTECTED and e["type"] == "Warning"
            for e in _events(api, namespace, "demo")
        ),
        30,
        "a Warning Event on the Town",
    )
    pods_before = {pod["metadata"]["name"] for pod in view.pods()}

    # New work arrives while the binding is gone: the town sees it (counted) and holds it.
    assert api.create(namespace, bead("b2")).status == 201
    view.wait(
        lambda: sum(view.town().get("status", {}).get("beads", {}).values()) == 2,
        30,
        "the town to count the new bead",
    )
    started = {pod["metadata"]["name"] for pod in view.pods()} - pods_before
    assert not started, f"pods started with an unprotected identity: {started}"
    held = _bead(view, "b2")
    assert held.status.phase.value == "open"
    assert held.status.assignee is None
    assert held.status.attempts == 0

    # Restored: the town recovers by itself and the held bead is dispatched.
    assert api.call("POST", BINDINGS, _fresh(binding)).status == 201
    view.wait(
        lambda: _condition(view, "Degraded").get("reason") != UNPROTECTED,
        30,
        "the Town to recover",
    )
    view.wait(lambda: _bead(view, "b2").status.attempts >= 1, 60, "the held bead's dispatch")
    accounts = {pod["spec"]["serviceAccountName"] for pod in view.pods()}
    assert accounts <= {town_identity_name("demo")}


def _bead(view: TownView, name: str) -> Any:
    return next(b for b in view.beads() if b.name == name)


def _pod_token(api: Api, namespace: str, pod: dict[str, Any]) -> str:
    """A token of the pod's ServiceAccount bound to the pod, as the kubelet projects it."""
    account = pod["spec"]["serviceAccountName"]
    token = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "spec": {
                "expirationSeconds": 600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
        },
    )
    assert token.status == 201, token.message
    return str(token.body["status"]["token"])


def test_an_escalation_flood_makes_one_escalation_bead(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    assert api.create(namespace, town()).status == 201
    assert api.create(namespace, bead("b1")).status == 201
    pod = view.wait(lambda: (pods := view.pods()) and pods[0], 60, "the agent pod")
    agent = view.wait(
        lambda: next((a for a in view.agents() if a.spec.hook == "b1"), None),
        30,
        "the hooked agent",
    )
    token = _pod_token(api, namespace, pod)
    identity = Identity(
        town="demo",
        namespace=namespace,
        agent=agent.name,
        role=AgentRole.POLECAT,
        generation=agent.spec.generation,
        rig=agent.spec.rig,
        bead="b1",
    )
    channel = KubeAgentChannel(identity, RestClient(api.server, token, api._ssl))
    for n in range(3):
        channel.append_report(ReportDraft(type=ReportType.ESCALATE, message=f"help {n}"))

    view.wait(
        lambda: (
            next(a for a in view.agents() if a.name == agent.name).status.applied_report_seq >= 3
        ),
        30,
        "the operator to apply all three reports",
    )
    escalations = [b for b in view.beads() if b.spec.type is BeadType.ESCALATION]
    assert len(escalations) == 1, [b.name for b in escalations]

    # The same token cannot mark its reports applied (or anything else of the operator's).
    forged = api.as_token(token).merge_patch(
        "Agent", namespace, agent.name, {"status": {"appliedReportSeq": 99}}, sub="status"
    )
    assert forged.status == 403
    assert "status.appliedReportSeq is written by the operator only" in forged.message
    applied = next(a for a in view.agents() if a.name == agent.name).status.applied_report_seq
    assert applied < 99
