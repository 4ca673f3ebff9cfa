"""End-to-end flows on the real node: agent pods are real containers (kubelet, containerd, runc).

The agent image is built locally (`gastown.devtools.images`, cached by content hash) and
imported into the node's containerd; Towns name it with `imagePullPolicy: Never`, so nothing is
ever pulled. Pods reach the rig's remote over authenticated smart HTTP on the node's bridge
gateway, as they would reach hosted git. The operator runs on the host (tests/e2e/test_chart_pod.py
runs it as a Pod). With the lean agent image (the runtime, `gt` and git; the scripted coding
agent): a review-then-land convoy lands, a request-changes review goes through one rework, and a
cancelled bead's running container is stopped. The other flows on the node: test_git_flow.py
(one bead over HTTP), test_git_flow_more.py (diamond, conflict, pull requests, a killed
container), test_gupp.py (a nudge into a live session) and test_real_clis.py (the real
coding-agent CLIs).

A background watcher records, for every pod, when it was first seen and first ran (pod created
-> Running latency), the node it was bound to, and its logs while it exists (the operator deletes
finished pods). These tests use the `real_node` fixture, so they run after every other test of
the session (see tests/conftest.py): the node's scheduler binds every pending pod.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gastown.devtools.gitserver import GitServer
from gastown.devtools.node import Node
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, git, log
from tests.support.node import (
    PodWatch,
    assert_ran_on_the_node,
    node_town,
    running_containers,
    session_logs,
)
from tests.support.procs import Process
from tests.support.town import TownView, bead, convoy, landed, town_state

# Cold, the first test also builds an agent image (minutes); warm, each flow takes seconds.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

LAND_TIMEOUT = 240.0
THREE: list[dict[str, Any]] = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
]


# -- the flows ---------------------------------------------------------------------------------


def test_review_then_land_convoy_lands_from_real_containers(
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
    started = time.monotonic()
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, convoy("feat", THREE)).status == 201
    result = landed(view, "feat", LAND_TIMEOUT)
    seconds = time.monotonic() - started
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    main_files = files_on(node_rig.path)
    for task in THREE:
        assert f"beads/feat-{task['key']}.md" in main_files, log(node_rig.path)
    # One landing merge of the feature branch into main.
    feature = result.status.feature_branch
    assert feature
    merges = git("log", "--merges", "--first-parent", "--format=%s", "main", cwd=node_rig.path)
    assert len([m for m in merges.splitlines() if feature in m]) == 1, merges
    # The pods were real containers on the node: 3 polecats and the refinery at least.
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)
    # `kubectl logs` (API server -> kubelet) shows the coding agent's session.
    shown = session_logs(pod_watch, r'"subtype": "init"')
    assert shown, {p.name: p.logs[-500:] for p in pod_watch.pods.values()}
    assert any('"type": "result"' in p.logs for p in shown), shown[0].logs[-2000:]
    # Every clone, fetch and push went through the authenticated server.
    pushes = [r for r in node_git_server.requests if r.path.endswith("/git-receive-pack")]
    assert pushes
    assert all(r.user == node_git_server.username for r in pushes), pushes
    print(f"3-bead review-then-land convoy landed in {seconds:.1f} s")
    print(pod_watch.report("scripted convoy"))


def test_request_changes_once_goes_through_rework_on_the_node(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    started = time.monotonic()
    body = node_town(lean_agent_image, node_rig, refinery={"review": True})
    assert api.create(namespace, body).status == 201
    tasks = [{"key": "fix", "title": "Fix", "description": "[scripted: request-changes-once]"}]
    assert api.create(namespace, convoy("rw", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "rw", LAND_TIMEOUT)
    seconds = time.monotonic() - started
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    reworks = [b for b in view.beads() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 1
    assert reworks[0].status.phase is BeadPhase.CLOSED
    assert "rework: " in git("log", "--format=%s", "main", cwd=node_rig.path)
    assert "beads/rw-fix.md" in files_on(node_rig.path)
    # A polecat, the reviewing refinery, the rework polecat, the second review.
    assert_ran_on_the_node(pod_watch, real_node, at_least=3)
    print(f"rework flow landed in {seconds:.1f} s")
    print(pod_watch.report("scripted rework"))


def test_cancel_stops_the_running_container_and_releases_the_agent(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, bead("doomed", description="[scripted: hang]")).status == 201

    def running() -> dict[str, Any] | None:
        return next(
            (
                p
                for p in view.pods()
                if p["metadata"]["labels"].get("gastown.dev/bead") == "doomed"
                and p.get("status", {}).get("phase") == "Running"
            ),
            None,
        )

    pod = view.wait(running, LAND_TIMEOUT, "the bead's container to run")
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    assert container in running_containers(real_node)
    assert api.merge_patch("Bead", namespace, "doomed", {"spec": {"cancel": True}}).status == 200
    view.wait(
        lambda: all(p["metadata"]["name"] != pod["metadata"]["name"] for p in view.pods()),
        60,
        "the pod to be deleted",
    )
    doomed = next(b for b in view.beads() if b.name == "doomed")
    assert (doomed.status.phase, doomed.status.reason) == (BeadPhase.FAILED, "Cancelled")
    view.wait(lambda: all(a.spec.hook != "doomed" for a in view.agents()), 30, "agent released")
    # The kubelet stopped the container: containerd no longer runs it.
    view.wait(lambda: container not in running_containers(real_node), 60, "the container to stop")
    assert_ran_on_the_node(pod_watch, real_node, at_least=1)
