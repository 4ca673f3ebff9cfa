"""`helm install` as a user does it: the operator runs as a Pod of the chart, on the real node.

The operator image is built locally from images/operator.Dockerfile (cached by content hash) and
imported into the node's containerd; the chart names it with `pullPolicy: Never`. The operator
Pod talks to the API server through the in-cluster address with the chart ServiceAccount's
projected token, so every call it makes is authorised by the chart's RBAC alone; its probes are
served by the kubelet. It then runs a town whose agents are real containers too: a convoy must
land, and the operator's `kubectl logs` must show the work and no permission error.

With `replicaCount=2` (leader election, the chart's default timings) one replica holds the
Lease and the Town's Leader condition names it; `kubectl delete pod` of the leader mid-convoy
(SIGTERM: it releases the Lease) hands over to the standby at once, well before the lease
duration, and the convoy still lands with nothing duplicated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools import images
from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.node import Node
from gastown.kube.identity import town_identity_name
from gastown.model import ConvoyPhase
from tests.e2e.test_operator_flow import assert_no_duplicates
from tests.support.api import Api, eventually
from tests.support.git import HttpRig, files_on, log
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town
from tests.support.town import TownView, convoy, landed, town_state
from tests.unit.test_chart import CHART, helm

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

PERMISSION_ERRORS = ("forbidden", "not enough permissions", "side effect failed", " 403")
START_TIMEOUT = 180.0
LAND_TIMEOUT = 300.0
LEASE_DURATION = 15.0  # the chart's leaderElection.leaseDurationSeconds
RETRY_PERIOD = 2.0  # the chart's leaderElection.retryPeriodSeconds
THREE: list[dict[str, Any]] = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
]


@dataclass
class Release:
    """The chart's release and its operator Pod."""

    name: str
    namespace: str
    service_account: str
    pod: dict[str, Any]
    """The first operator Pod seen ready."""


@pytest.fixture(scope="session")
def operator_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The operator image, built locally and imported into the node's containerd."""
    manifest, _ = images.build(
        ["operator"], manifest_path=tmp_path_factory.mktemp("operator-image") / "manifest.json"
    )
    record = manifest.images["operator"]
    real_node.import_image(Path(record.archive))
    return record.ref


def ready_operator_pods(api: Api, namespace: str, release: str) -> list[dict[str, Any]]:
    """The release's operator Pods whose container is ready (and that are not terminating)."""
    listed = api.call(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io/instance={release}",
    )
    ready = []
    for pod in listed.body.get("items", []):
        statuses = pod.get("status", {}).get("containerStatuses", [])
        if statuses and statuses[0].get("ready") and not pod["metadata"].get("deletionTimestamp"):
            ready.append(dict(pod))
    return ready


def operator_pod(api: Api, namespace: str, release: str) -> dict[str, Any] | None:
    """The release's operator Pod once its container is ready."""
    pods = ready_operator_pods(api, namespace, release)
    return pods[0] if pods else None


def install(
    request: pytest.FixtureRequest,
    image: str,
    api: Api,
    control_plane: ControlPlane,
    watched: str,
    replicas: int = 1,
) -> Iterator[Release]:
    """`helm install` the chart watching `watched` and wait for `replicas` ready operator Pods;
    on the way out print the operators' logs if the test failed, and uninstall."""
    suffix = uuid.uuid4().hex[:8]
    name, release_namespace = f"gt-{suffix}", f"gastown-{suffix}"
    created = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": release_namespace}})
    assert created.status == 201, created.body
    repository, tag = image.rsplit(":", 1)
    settings = [
        f"image.repository={repository}",
        f"image.tag={tag}",
        "image.pullPolicy=Never",
        f"operator.watchNamespaces={{{watched}}}",
        "operator.logFormat=plain",
        f"replicaCount={replicas}",
    ]
    args = [arg for item in settings for arg in ("--set", item)]
    helm(
        "install",
        name,
        str(CHART),
        "--namespace",
        release_namespace,
        "--skip-crds",
        *args,
        kubeconfig=control_plane.kubeconfig,
    )
    try:
        pods = eventually(
            lambda: (
                p
                if len(p := ready_operator_pods(api, release_namespace, name)) >= replicas
                else None
            ),
            START_TIMEOUT,
            f"{replicas} operator Pod(s) to be ready",
        )
        yield Release(name, release_namespace, f"{name}-gastown", pods[0])
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            out = control_plane.kubectl(
                "logs",
                "-n",
                release_namespace,
                f"--selector=app.kubernetes.io/instance={name}",
                "--prefix",
                "--tail=200",
                check=False,
            )
            print(f"--- operator pod logs ---\n{out.stdout}{out.stderr}")
        helm(
            "uninstall",
            name,
            "--namespace",
            release_namespace,
            check=False,
            kubeconfig=control_plane.kubeconfig,
        )
        api.call("DELETE", f"/api/v1/namespaces/{release_namespace}")


@pytest.fixture
def release(
    request: pytest.FixtureRequest,
    operator_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Release]:
    """The chart with one operator Pod, watching the test's namespace."""
    yield from install(request, operator_image, api, control_plane, namespace)


@pytest.fixture
def ha_release(
    request: pytest.FixtureRequest,
    operator_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Release]:
    """The chart with two operator Pods (leader election), watching the test's namespace."""
    yield from install(request, operator_image, api, control_plane, namespace, replicas=2)


def test_the_chart_runs_the_operator_as_a_pod_that_lands_a_convoy(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    release: Release,
    view: TownView,
) -> None:
    # The operator is a container on the node, under the chart's ServiceAccount, as uid 1000.
    pod = release.pod
    assert pod["spec"]["nodeName"] == real_node.name
    assert pod["spec"]["serviceAccountName"] == release.service_account
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"

    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, convoy("feat", THREE)).status == 201
    result = landed(view, "feat", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    for task in THREE:
        assert f"beads/feat-{task['key']}.md" in files_on(node_rig.path), log(node_rig.path)
    # The agents ran as containers on the node, under the town's own identity.
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)
    agent_pods = [p for p in view.pods() if p["spec"].get("serviceAccountName")]
    assert all(p["spec"]["serviceAccountName"] == town_identity_name("demo") for p in agent_pods), (
        agent_pods
    )
    # The operator Pod never restarted, and its log (through the kubelet) shows the work and no
    # permission error: the chart's RBAC was enough.
    current = operator_pod(api, release.namespace, release.name)
    assert current is not None
    assert current["status"]["containerStatuses"][0]["restartCount"] == 0
    out = control_plane.kubectl(
        "logs", "-n", release.namespace, current["metadata"]["name"], check=True
    ).stdout
    assert "feat" in out, out[-2000:]
    problems = [
        line for line in out.splitlines() if any(p in line.lower() for p in PERMISSION_ERRORS)
    ]
    assert problems == [], "\n".join(problems)


def lease_holder(api: Api, release: Release) -> str | None:
    """holderIdentity of the release's Lease (named after the release's full name)."""
    found = api.call(
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{release.namespace}/leases/"
        f"{release.service_account}",
    )
    if found.status != 200:
        return None
    holder: str | None = (found.body.get("spec") or {}).get("holderIdentity")
    return holder


def pod_of(identity: str) -> str:
    """The Pod name in a replica's identity (the chart sets it to the Pod's name; a `_suffix`,
    as a default identity carries, is dropped)."""
    return identity.rsplit("_", 1)[0]


def leader_condition(view: TownView) -> str | None:
    """The message of the Town's Leader condition, if any."""
    conditions = view.town().get("status", {}).get("conditions", [])
    return next((c["message"] for c in conditions if c["type"] == "Leader"), None)


def test_two_replicas_hand_over_the_lease_when_the_leader_pod_is_deleted(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    ha_release: Release,
    view: TownView,
) -> None:
    # Both replicas run (on the one node: the anti-affinity preset is soft); exactly one leads.
    pods = {
        p["metadata"]["name"]
        for p in ready_operator_pods(api, ha_release.namespace, ha_release.name)
    }
    assert len(pods) == 2, pods
    first = eventually(lambda: lease_holder(api, ha_release), 60, "a replica to take the Lease")
    leader_pod = pod_of(first)
    assert leader_pod in pods, (first, pods)
    (standby_pod,) = pods - {leader_pod}

    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, convoy("feat", THREE)).status == 201
    eventually(
        lambda: leader_condition(view) == f"reconciled by {first}",
        START_TIMEOUT,
        f"the Town's Leader condition to name {first}",
    )
    # Mid-convoy: once the leader has started an agent pod, delete the leader's Pod. The kubelet
    # sends SIGTERM, the operator releases the Lease on its way out, and the standby takes it
    # at its next attempt instead of waiting out the lease duration.
    eventually(
        lambda: any(p.started is not None for p in pod_watch.pods.values()),
        START_TIMEOUT,
        "the leader to start an agent pod",
    )
    deleted_at = time.monotonic()
    control_plane.kubectl(
        "delete", "pod", "-n", ha_release.namespace, leader_pod, "--wait=false", check=True
    )
    second = eventually(
        lambda: h if (h := lease_holder(api, ha_release)) not in (None, first) else None,
        LEASE_DURATION + 10,
        "the standby to take the Lease",
        interval=0.05,
    )
    handover = time.monotonic() - deleted_at
    print(f"lease handed over {handover:.2f} s after `kubectl delete pod` of the leader")
    # The standby usually wins; the Deployment's replacement Pod, starting meanwhile, may win
    # the race for the released Lease instead: either is a replica of the release, never the
    # deleted leader.
    release_pods = {
        p["metadata"]["name"]
        for p in api.call("GET", f"/api/v1/namespaces/{ha_release.namespace}/pods").body["items"]
    }
    assert pod_of(second) != leader_pod, (second, leader_pod)
    assert pod_of(second) in release_pods | {standby_pod}, (second, release_pods)
    # Released, not expired: an unreleased Lease cannot be taken before the lease duration.
    assert handover < LEASE_DURATION - RETRY_PERIOD, handover

    result = landed(view, "feat", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    for task in THREE:
        assert f"beads/feat-{task['key']}.md" in files_on(node_rig.path), log(node_rig.path)
    assert_no_duplicates(view)
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)
    # The Town's status is now written by the new leader, and the Lease stayed with it (the
    # other live replica stands by).
    eventually(
        lambda: leader_condition(view) == f"reconciled by {second}",
        30,
        f"the Town's Leader condition to name {second}",
    )
    assert lease_holder(api, ha_release) == second
    survivor = api.call("GET", f"/api/v1/namespaces/{ha_release.namespace}/pods/{standby_pod}")
    assert survivor.status == 200, survivor.body
    assert survivor.body["status"]["containerStatuses"][0]["restartCount"] == 0
    for name in {standby_pod, pod_of(second)}:
        out = control_plane.kubectl("logs", "-n", ha_release.namespace, name, check=True).stdout
        problems = [
            line for line in out.splitlines() if any(p in line.lower() for p in PERMISSION_ERRORS)
        ]
        assert problems == [], "\n".join(problems)
    out = control_plane.kubectl(
        "logs", "-n", ha_release.namespace, pod_of(second), check=True
    ).stdout
    assert f"leading (lease {ha_release.service_account}" in out, out[-2000:]
