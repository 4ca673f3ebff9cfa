"""Which identity agent pods get: one per town where the admission policy is installed (as here),
one per agent when the operator is told to (or when the policy is missing)."""

from __future__ import annotations

from pathlib import Path

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.identity import identity_name, town_identity_name
from tests.support.api import Api, eventually
from tests.support.procs import Process, operator, wait_started
from tests.support.town import TownView, bead, town

RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces"


def _first_pod(api: Api, namespace: str, view: TownView) -> dict[str, object]:
    assert api.create(namespace, town()).status == 201
    assert api.create(namespace, bead("b1")).status == 201
    assert api.create(namespace, bead("b2")).status == 201
    eventually(lambda: len(view.pods()) == 2, 60, "two agent pods")
    return view.pods()[0]


def test_town_identity_is_shared_and_made_once(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    _first_pod(api, namespace, view)
    account = town_identity_name("demo")
    assert {pod["spec"]["serviceAccountName"] for pod in view.pods()} == {account}
    assert api.call("GET", f"{RBAC}/{namespace}/roles/{account}").status == 200
    assert api.call("GET", f"{RBAC}/{namespace}/rolebindings/{account}").status == 200
    # No per-agent identities.
    roles = api.call("GET", f"{RBAC}/{namespace}/roles").body["items"]
    assert [r["metadata"]["name"] for r in roles] == [account]
    assert "agent identity: one per town" in operator_proc.log.read_text()


def test_per_agent_identities_when_asked(
    api: Api, control_plane: ControlPlane, namespace: str, tmp_path: Path, view: TownView
) -> None:
    proc = operator(control_plane, namespace, tmp_path, GASTOWN_AGENT_IDENTITY="agent")
    proc.start()
    try:
        wait_started(proc, "Initial authentication has finished")
        _first_pod(api, namespace, view)
        for pod in view.pods():
            agent = pod["metadata"]["labels"]["gastown.dev/agent"]
            assert pod["spec"]["serviceAccountName"] == identity_name(agent)
            role = api.call("GET", f"{RBAC}/{namespace}/roles/{identity_name(agent)}")
            assert role.status == 200
            assert all(
                rule.get("resourceNames") == [agent]
                for rule in role.body["rules"]
                if rule["resources"][0].startswith("agents")
            )
        assert "agent identity: one per agent" in proc.log.read_text()
    finally:
        proc.stop()
