"""`helm install` as a user does it: the operator runs as a Pod of the chart, on the real node.

The operator image is built locally from images/operator.Dockerfile (cached by content hash) and
imported into the node's containerd; the chart names it with `pullPolicy: Never`. The operator
Pod talks to the API server through the in-cluster address with the chart ServiceAccount's
projected token, so every call it makes is authorised by the chart's RBAC alone; its probes are
served by the kubelet. It then runs a town whose agents are real containers too: a convoy must
land, and the operator's `kubectl logs` must show the work and no permission error.
"""

from __future__ import annotations

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
from tests.support.api import Api, eventually
from tests.support.git import HttpRig, files_on, log
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town
from tests.support.town import TownView, convoy, landed, town_state
from tests.unit.test_chart import CHART, helm

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

PERMISSION_ERRORS = ("forbidden", "not enough permissions", "side effect failed", " 403")
START_TIMEOUT = 180.0
LAND_TIMEOUT = 300.0
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


@pytest.fixture(scope="session")
def operator_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The operator image, built locally and imported into the node's containerd."""
    manifest, _ = images.build(
        ["operator"], manifest_path=tmp_path_factory.mktemp("operator-image") / "manifest.json"
    )
    record = manifest.images["operator"]
    real_node.import_image(Path(record.archive))
    return record.ref


def operator_pod(api: Api, namespace: str, release: str) -> dict[str, Any] | None:
    """The release's operator Pod once its container is ready."""
    listed = api.call(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io/instance={release}",
    )
    for pod in listed.body.get("items", []):
        statuses = pod.get("status", {}).get("containerStatuses", [])
        if statuses and statuses[0].get("ready"):
            return dict(pod)
    return None


@pytest.fixture
def release(
    request: pytest.FixtureRequest,
    operator_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Release]:
    """`helm install` the chart watching the test's namespace; wait for its operator Pod."""
    suffix = uuid.uuid4().hex[:8]
    name, release_namespace = f"gt-{suffix}", f"gastown-{suffix}"
    created = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": release_namespace}})
    assert created.status == 201, created.body
    repository, tag = operator_image.rsplit(":", 1)
    helm(
        "install",
        name,
        str(CHART),
        "--namespace",
        release_namespace,
        "--skip-crds",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        "operator.logFormat=plain",
        kubeconfig=control_plane.kubeconfig,
    )
    try:
        pod = eventually(
            lambda: operator_pod(api, release_namespace, name),
            START_TIMEOUT,
            "the operator Pod to be ready",
        )
        yield Release(name, release_namespace, f"{name}-gastown", pod)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            out = control_plane.kubectl(
                "logs",
                "-n",
                release_namespace,
                f"deployment/{name}-gastown",
                "--tail=200",
                check=False,
            )
            print(f"--- operator pod log ---\n{out.stdout}{out.stderr}")
        helm(
            "uninstall",
            name,
            "--namespace",
            release_namespace,
            check=False,
            kubeconfig=control_plane.kubeconfig,
        )
        api.call("DELETE", f"/api/v1/namespaces/{release_namespace}")


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
