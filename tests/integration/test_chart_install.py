"""`helm install` of the chart, and `kubectl apply` of the install bundle, on the real API server.

There is no kubelet and no operator image here, so the operator Pod never runs; these tests check
that every object is accepted and lands where it should (the e2e test
tests/e2e/test_chart_rbac.py runs the operator with the chart's permissions).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import ControlPlane
from tests.support.api import Api, eventually
from tests.unit.test_chart import BUNDLE, CHART, documents, find, helm

pytestmark = pytest.mark.cluster

RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def release_namespace(api: Api) -> Iterator[str]:
    """A fresh namespace for the release (the operator's own namespace)."""
    name = f"gastown-{uuid.uuid4().hex[:8]}"
    assert api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    yield name
    api.call("DELETE", f"/api/v1/namespaces/{name}")


def _status(api: Api, path: str) -> int:
    return api.call("GET", path).status


def test_helm_install_cluster_wide(
    api: Api, control_plane: ControlPlane, release_namespace: str
) -> None:
    release = f"gt-{uuid.uuid4().hex[:6]}"
    full = f"{release}-gastown"
    kubeconfig = control_plane.kubeconfig
    # The CRDs are already installed by the session: helm must leave them alone and go on.
    helm("install", release, str(CHART), "--namespace", release_namespace, kubeconfig=kubeconfig)
    try:
        status = helm("status", release, "--namespace", release_namespace, kubeconfig=kubeconfig)
        assert "STATUS: deployed" in status.stdout
        assert "watches every namespace" in status.stdout  # NOTES.txt
        ns = f"/api/v1/namespaces/{release_namespace}"
        deployment = api.call(
            "GET", f"/apis/apps/v1/namespaces/{release_namespace}/deployments/{full}"
        )
        assert deployment.status == 200
        assert deployment.body["spec"]["replicas"] == 1
        # Leader election (the default): the rollout starts the new pod as a standby first.
        assert deployment.body["spec"]["strategy"]["type"] == "RollingUpdate"
        assert deployment.body["spec"]["strategy"]["rollingUpdate"] == {
            "maxSurge": 1,
            "maxUnavailable": 0,
        }
        # The Lease's Role and binding live in the release namespace, next to the operator.
        lease_role = api.call(
            "GET", f"{RBAC}/namespaces/{release_namespace}/roles/{full}-leader-election"
        )
        assert lease_role.status == 200, lease_role.body
        assert lease_role.body["rules"][0]["resourceNames"] == [full]
        lease_binding = f"{RBAC}/namespaces/{release_namespace}/rolebindings/{full}-leader-election"
        assert _status(api, lease_binding) == 200
        assert _status(api, f"{ns}/serviceaccounts/{full}") == 200
        assert _status(api, f"{ns}/services/{full}-metrics") == 200
        for name in (full, f"{full}-viewer", f"{full}-editor"):
            assert _status(api, f"{RBAC}/clusterroles/{name}") == 200, name
        binding = api.call("GET", f"{RBAC}/clusterrolebindings/{full}").body
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": full, "namespace": release_namespace}
        ]

        # The people roles are aggregated into the built-in ones by kube-controller-manager.
        def aggregated() -> bool:
            rules = api.call("GET", f"{RBAC}/clusterroles/view").body.get("rules", [])
            return any("gastown.dev" in r.get("apiGroups", []) for r in rules)

        eventually(aggregated, 30, "the viewer role aggregated into `view`")
        edit = api.call("GET", f"{RBAC}/clusterroles/edit").body["rules"]
        assert any("gastown.dev" in r.get("apiGroups", []) and "create" in r["verbs"] for r in edit)
    finally:
        helm("uninstall", release, "--namespace", release_namespace, kubeconfig=kubeconfig)
    assert _status(api, f"{RBAC}/clusterroles/{full}") == 404
    assert _status(api, f"{RBAC}/clusterrolebindings/{full}") == 404
    # Helm never deletes CRDs (and with them every Town): they are still there.
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/towns.gastown.dev"
    assert _status(api, crd) == 200


def test_helm_install_namespaced(
    api: Api, control_plane: ControlPlane, release_namespace: str, namespace: str
) -> None:
    release = f"gt-{uuid.uuid4().hex[:6]}"
    full = f"{release}-gastown"
    kubeconfig = control_plane.kubeconfig
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--skip-crds",
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        kubeconfig=kubeconfig,
    )
    try:
        role = api.call("GET", f"{RBAC}/namespaces/{namespace}/roles/{full}")
        assert role.status == 200
        binding = api.call("GET", f"{RBAC}/namespaces/{namespace}/rolebindings/{full}").body
        assert binding["subjects"][0]["namespace"] == release_namespace
        # No Role for its work in the release's own namespace: it only keeps its Lease there.
        assert _status(api, f"{RBAC}/namespaces/{release_namespace}/roles/{full}") == 404
        lease_role = f"{RBAC}/namespaces/{release_namespace}/roles/{full}-leader-election"
        assert _status(api, lease_role) == 200
        cluster_role = api.call("GET", f"{RBAC}/clusterroles/{full}").body
        resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
        # Cluster-wide only: CRD and namespace discovery, and reading the one admission policy.
        assert resources == {
            "customresourcedefinitions",
            "namespaces",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        }
        deployment = api.call(
            "GET", f"/apis/apps/v1/namespaces/{release_namespace}/deployments/{full}"
        ).body
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={namespace}" in args
    finally:
        helm("uninstall", release, "--namespace", release_namespace, kubeconfig=kubeconfig)
    assert _status(api, f"{RBAC}/namespaces/{namespace}/roles/{full}") == 404


def test_helm_install_two_replicas(
    api: Api, control_plane: ControlPlane, release_namespace: str
) -> None:
    """replicaCount=2: the API server accepts the PodDisruptionBudget and the anti-affinity."""
    release = f"gt-{uuid.uuid4().hex[:6]}"
    full = f"{release}-gastown"
    kubeconfig = control_plane.kubeconfig
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--skip-crds",
        "--set",
        "replicaCount=2",
        "--set",
        "podAntiAffinity.preset=hard",
        kubeconfig=kubeconfig,
    )
    try:
        apps = f"/apis/apps/v1/namespaces/{release_namespace}"
        deployment = api.call("GET", f"{apps}/deployments/{full}").body
        assert deployment["spec"]["replicas"] == 2
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        budget = api.call(
            "GET", f"/apis/policy/v1/namespaces/{release_namespace}/poddisruptionbudgets/{full}"
        )
        assert budget.status == 200, budget.body
        assert budget.body["spec"]["minAvailable"] == 1
        assert budget.body["spec"]["selector"] == deployment["spec"]["selector"]
    finally:
        helm("uninstall", release, "--namespace", release_namespace, kubeconfig=kubeconfig)


def _path(doc: dict[str, Any]) -> str:
    """REST path of a bundle object (the kinds the bundle holds)."""
    plural = {
        "Namespace": "namespaces",
        "ServiceAccount": "serviceaccounts",
        "Service": "services",
        "Deployment": "deployments",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "CustomResourceDefinition": "customresourcedefinitions",
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
    }[doc["kind"]]
    group, _, version = doc["apiVersion"].rpartition("/")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    namespace = doc["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural}/{doc['metadata']['name']}"


def test_install_bundle_applies_and_passes_restricted_pod_security(
    api: Api, control_plane: ControlPlane, tmp_path: Path
) -> None:
    docs = documents(BUNDLE.read_text())
    # The session's CRDs and admission policy stay; everything else is applied and removed again.
    control_plane.kubectl("apply", "--server-side", "-f", str(BUNDLE))
    session_wide = {
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    rest = [d for d in docs if d["kind"] not in session_wide]
    try:
        for doc in docs:
            assert _status(api, _path(doc)) == 200, _path(doc)
        namespace = find(docs, "Namespace")[0]["metadata"]["name"]
        labels = api.call("GET", f"/api/v1/namespaces/{namespace}").body["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        # The operator Pod the Deployment would create is admitted by the restricted Pod
        # Security Standard (server-side dry run: the admission chain runs, nothing is stored).
        template = find(docs, "Deployment")[0]["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", **template["metadata"]},
        }
        pod["spec"] = template["spec"]
        admitted = api.call("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
        assert admitted.status == 201, admitted.body
        # ...and a Pod that breaks the standard is refused there (the check can fail).
        bad = yaml.safe_load(yaml.safe_dump(pod))
        bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        refused = api.call("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", bad)
        assert refused.status == 403, refused.body
        assert "restricted" in refused.message
    finally:
        leftovers = tmp_path / "bundle-without-crds.yaml"
        leftovers.write_text(yaml.safe_dump_all(rest))
        control_plane.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(leftovers))
