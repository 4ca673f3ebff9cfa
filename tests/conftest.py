"""Session fixtures: one real local control plane for every test that needs a cluster.

The control plane is built (once, cached) and started on first use. If it cannot be built or
started the tests that need it ERROR with the reason; they are never skipped. Set
GASTOWN_TEST_KUBECONFIG (and GASTOWN_TEST_CA) to run against an already running control plane.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from gastown.devtools import node as local_node
from gastown.devtools.controlplane import REPO_ROOT, ControlPlane
from tests.support.api import Api, eventually

CRD_DIR = REPO_ROOT / "crds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every test that uses the real node after all the others.

    The real node's kube-scheduler binds every pending pod of the cluster, so once it runs it
    would race the local node runner (which binds agent pods to itself) and the tests that play
    agents through the API (whose pods must stay unstarted). Starting the node last keeps both
    worlds apart within one session; the sort is stable, so the order is otherwise unchanged.
    """
    items.sort(key=lambda item: "real_node" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane with our CRDs installed and Established."""
    # The session node (`real_node`) may join: its token must exist before the API server starts.
    plane = ControlPlane(
        directory=tmp_path_factory.mktemp("control-plane"), node_names=(local_node.NODE_NAME,)
    )
    plane.start()
    try:
        plane.install_crds(CRD_DIR)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def real_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local_node.Node]:
    """A real node (containerd, kubelet, kube-scheduler) joined to the session control plane.

    Installed and built on first use; where it cannot run (not Linux, not root) or does not
    start, the tests that need it FAIL with the reason, never skip. At the end of the session it
    is stopped, and the stop raises if anything (process, mount, cgroup, bridge, NAT rule) is left.
    """
    reason = local_node.unsupported_reason()
    if reason:
        pytest.fail(f"the real node cannot run here: {reason}")
    node = local_node.Node(plane=control_plane, directory=tmp_path_factory.mktemp("node"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    """An admin client of the control plane."""
    return Api.from_kubeconfig(control_plane.kubeconfig, control_plane.directory / "pki" / "ca.crt")


@pytest.fixture
def namespace(api: Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    created = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert created.status == 201, created.body
    # The namespace's default ServiceAccount comes from kube-controller-manager; pods need it.
    eventually(
        lambda: api.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
        30,
        "the default ServiceAccount",
    )
    yield name
    api.call("DELETE", f"/api/v1/namespaces/{name}")


def pytest_report_header(config: pytest.Config) -> str:
    """Say where the control plane binary comes from."""
    override = os.environ.get("GASTOWN_KUBE_BIN")
    return f"control plane binary: {override or 'hack/build-kube.sh (cached)'}"
