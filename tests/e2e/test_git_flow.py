"""From bead to merged commit: real git, the scripted coding agent, the polecat's clone and push,
the refinery's merge and push and the operator's checks of both claims.

Over authenticated smart HTTP, as hosted git is reached, the agent pods are real containers on
the real node (so that test runs with the other real-node tests, last in the session). A rig
given as a host path cannot be reached from any container: that case keeps the local node
runner (agent pods as local processes), the only test that still uses it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gastown.devtools.gitserver import GitServer
from gastown.devtools.node import Node
from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, log
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town
from tests.support.procs import Process
from tests.support.town import TownView, bead, scripted_town, town_state

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]  # cold: builds the agent image

MERGE_TIMEOUT = 120.0


def _merged(view: TownView, name: str) -> None:
    """Wait (with a deadline) until the bead is closed: merged into main."""
    try:
        view.wait(
            lambda: any(
                b.name == name and b.status.phase is BeadPhase.CLOSED for b in view.beads()
            ),
            MERGE_TIMEOUT,
            f"bead {name} to be merged",
        )
    except AssertionError as err:
        raise AssertionError(f"{err}\n{town_state(view)}") from None


def test_single_bead_is_merged_into_main_from_a_host_path(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    assert api.create(namespace, scripted_town(rig_repo)).status == 201
    assert api.create(namespace, bead("hello")).status == 201
    _merged(view, "hello")
    assert "beads/hello.md" in files_on(rig_repo), log(rig_repo)


def test_single_bead_is_merged_into_main_over_http_on_the_real_node(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    node_git_server: GitServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, bead("hello")).status == 201
    _merged(view, "hello")
    assert "beads/hello.md" in files_on(node_rig.path), log(node_rig.path)
    # Two pushes (the polecat's branch, the refinery's merge), each authenticated.
    path = f"/{namespace}/app.git/git-receive-pack"
    pushes = [r for r in node_git_server.requests if r.method == "POST" and r.path == path]
    assert len(pushes) >= 2, pushes
    assert all(r.status == 200 and r.user == node_git_server.username for r in pushes), pushes
    assert_ran_on_the_node(pod_watch, real_node, at_least=2)  # the polecat and the refinery
