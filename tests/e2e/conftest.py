"""End-to-end fixtures: the operator (and, where needed, the node runner) as real processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.gitserver import GitServer
from gastown.devtools.modelserver import ModelServer
from gastown.devtools.node import Node
from tests.support.api import Api
from tests.support.git import HttpRig, make_bare_repo
from tests.support.node import LEAN, PodWatch, agent_image
from tests.support.procs import Process, node_runner, operator, wait_started
from tests.support.town import AgentPlayer, TownView


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Remember each phase's outcome on the item (to print process logs of failed tests)."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def operator_proc(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Process]:
    """The operator watching the test's namespace, as `gastown run` runs in production."""
    yield from _operator_running(request, control_plane, namespace, tmp_path)


@pytest.fixture
def pr_operator_proc(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Process]:
    """The operator allowed to use plain-http provider URLs (the fake GitHub on 127.0.0.1)."""
    yield from _operator_running(
        request, control_plane, namespace, tmp_path, GASTOWN_ALLOW_INSECURE_PROVIDER_URLS="1"
    )


def _operator_running(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    **env: str,
) -> Iterator[Process]:
    """Start the operator, yield it, stop it; print its log if the test failed."""
    proc = operator(control_plane, namespace, tmp_path, **env)
    proc.start()
    wait_started(proc, "Initial authentication has finished")
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log ---\n{proc.tail(200)}")


@pytest.fixture
def view(api: Api, namespace: str) -> TownView:
    """Reads of the test's namespace."""
    return TownView(api, namespace)


@pytest.fixture
def player(api: Api, control_plane: ControlPlane, namespace: str, rig_repo: Path) -> AgentPlayer:
    """Plays the agents through the API as their pods would, doing the git work on `rig_repo`
    (the Town's `gitUrl` must name `player.git_url`: the operator verifies every claim)."""
    return AgentPlayer(api, control_plane.kubeconfig, namespace, rig_repo)


@pytest.fixture(scope="session")
def node_runner_proc(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """The local node runner: agent pods run as local processes of `gastown agent run`."""
    root = tmp_path_factory.mktemp("pods")
    proc = node_runner(control_plane, root, root)
    proc.start()
    wait_started(proc, "ready; pods run under")
    yield proc
    proc.stop()


@pytest.fixture
def rig_repo(tmp_path: Path) -> Path:
    """A bare git repository with one commit on main (the rig's remote)."""
    return make_bare_repo(tmp_path / "remote" / "app.git")


def _served_rig(server: GitServer, api: Api, namespace: str) -> HttpRig:
    """A bare repository served by `server` under the namespace, and its credentials Secret."""
    name = f"{namespace}/app.git"
    path = make_bare_repo(server.root / name)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "git-credentials", "labels": {"gastown.dev/town": "demo"}},
        "stringData": {"username": server.username, "password": server.password},
    }
    created = api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    assert created.status == 201, created.message
    return HttpRig(path=path, url=server.url(name), secret="git-credentials")


# -- the real node -------------------------------------------------------------------------------
# Every fixture below depends on `real_node`, so the tests using them run after all others (see
# tests/conftest.py): the node's scheduler binds every pending pod of the cluster.


@pytest.fixture(scope="session")
def lean_agent_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The agent image without coding-agent CLIs, in the node's runtime (built once, cached)."""
    return agent_image(real_node, tmp_path_factory.mktemp("lean-image"), LEAN)


@pytest.fixture(scope="session")
def full_agent_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The agent image with every coding-agent CLI, in the node's runtime."""
    return agent_image(real_node, tmp_path_factory.mktemp("full-image"), {})


@pytest.fixture(scope="session")
def node_git_server(
    real_node: Node, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitServer]:
    """Smart-HTTP git with basic auth on the node's bridge gateway: pods and the operator
    (on the host) both reach it there."""
    root = tmp_path_factory.mktemp("node-git")
    password = secrets.token_urlsafe(18)
    with GitServer(root, "gastown-node", password, host=real_node.gateway) as server:
        yield server


@pytest.fixture
def node_rig(node_git_server: GitServer, api: Api, namespace: str) -> HttpRig:
    """A bare repository with one commit on main served by `node_git_server`, and its
    credentials Secret `git-credentials` (labelled for the town `demo`) in the test's namespace."""
    return _served_rig(node_git_server, api, namespace)


@pytest.fixture
def node_model_server(real_node: Node) -> Iterator[ModelServer]:
    """The scripted model server on the node's bridge gateway, for one test."""
    with ModelServer(host=real_node.gateway) as server:
        yield server


@pytest.fixture
def pod_watch(
    request: pytest.FixtureRequest, api: Api, control_plane: ControlPlane, namespace: str
) -> Iterator[PodWatch]:
    """A `PodWatch` of the test's namespace; prints every pod's logs if the test failed."""
    with PodWatch(api, control_plane, namespace) as watch:
        yield watch
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for pod in watch.pods.values():
            print(f"--- pod {pod.name} ({pod.role}, {pod.phase}) ---\n{pod.logs[-3000:]}")
