"""Convoys on the real node: one landing merge, conflicts, pull requests, a killed container.

Agent pods are real containers (the lean agent image, the scripted coding agent) on the local
node; the rig's remote is served over authenticated smart HTTP on the node's bridge gateway (see
tests/support/node.py).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from gastown.devtools.node import Node
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, git, log, show
from tests.support.node import (
    PR_TOKEN,
    PodWatch,
    assert_ran_on_the_node,
    kill_container,
    node_town,
    pr_town,
)
from tests.support.procs import Process
from tests.support.town import TownView, convoy, landed, town_state
from tests.unit.agent.fake_provider import FakeProvider, start_fake

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

DIAMOND6 = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
    {"key": "mid", "title": "Mid", "dependsOn": ["base"]},
    {"key": "join", "title": "Join", "dependsOn": ["left", "right", "mid"]},
    {"key": "top", "title": "Top", "dependsOn": ["join"]},
]


LAND_TIMEOUT = 300.0


@pytest.fixture
def fake_github(real_node: Node, node_rig: HttpRig) -> Iterator[FakeProvider]:
    """A fake GitHub on the node's bridge gateway (the refinery's pod opens PRs there, the
    operator on the host polls them); PR heads are the branches really pushed to the rig."""
    fake = FakeProvider(repo=node_rig.path, host=real_node.gateway)
    server = start_fake(fake)
    yield fake
    server.shutdown()
    server.server_close()


def test_diamond_convoy_lands_through_one_landing_merge(
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
    assert api.create(namespace, convoy("feat", DIAMOND6)).status == 201
    result = landed(view, "feat", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    repo = node_rig.path
    main_files = files_on(repo)
    for task in DIAMOND6:
        assert f"beads/feat-{task['key']}.md" in main_files, log(repo)
    landings = [b for b in view.beads() if b.spec.merge_request and b.spec.merge_request.landing]
    assert len(landings) == 1
    # Dependency order: a bead's work is on the feature branch before its dependents started.
    feature = result.status.feature_branch
    assert feature
    history = git("log", "--format=%s", "--reverse", "main", cwd=repo)
    assert history.index("feat-base") < history.index("feat-join") < history.index("feat-top")
    # Exactly one merge of the feature branch into main.
    merges = git("log", "--merges", "--first-parent", "--format=%s", "main", cwd=repo)
    assert len([m for m in merges.splitlines() if feature in m]) == 1, merges
    # Six polecats and the refineries, every one a container on the node.
    assert_ran_on_the_node(pod_watch, real_node, at_least=7)
    print(pod_watch.report("diamond convoy"))


def test_merge_conflict_becomes_rework_and_main_is_never_broken(
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
    marker = "[scripted: conflict-file=README.md]"
    tasks = [
        {"key": "one", "title": "One", "description": marker},
        {"key": "two", "title": "Two", "description": marker},
    ]
    assert api.create(namespace, convoy("cf", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "cf", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    repo = node_rig.path
    assert {"beads/cf-one.md", "beads/cf-two.md"} <= set(files_on(repo))
    assert "<<<<<<<" not in show(repo, "README.md")
    assert any(b.spec.type is BeadType.REWORK for b in view.beads())
    # Every commit on main's first-parent line has a clean tree (no conflict markers).
    for sha in git("rev-list", "--first-parent", "main", cwd=repo).split():
        assert "<<<<<<<" not in git("show", f"{sha}:README.md", cwd=repo)
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)


def test_pull_request_strategy_is_polled_until_merged(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    pr_operator_proc: Process,
    view: TownView,
    fake_github: FakeProvider,
) -> None:
    pr_town(api, namespace, lean_agent_image, node_rig, fake_github)
    tasks = [{"key": "pr", "title": "Via PR"}]
    assert api.create(namespace, convoy("viapr", tasks, mode="review-and-merge")).status == 201
    view.wait(lambda: fake_github.prs, LAND_TIMEOUT, "a pull request to be opened")
    # The refinery's container opened it, with the token mounted from the Secret.
    opened = [r for r in fake_github.requests if r[0] == "POST" and r[1].endswith("/pulls")]
    assert opened, fake_github.requests
    assert opened[0][2].get("Authorization") == f"Bearer {PR_TOKEN}"
    mr = view.wait(
        lambda: next(
            (
                b
                for b in view.beads()
                if b.spec.type is BeadType.MERGE_REQUEST
                and b.status.review
                and b.status.review.pr_url
            ),
            None,
        ),
        60,
        "the MR to record the PR URL",
    )
    assert mr.status.review.pr_url.startswith("https://github.example/o/r/pull/")
    # The claim counts once the provider confirmed the PR's branch, base and head commit.
    view.wait(
        lambda: next(b for b in view.beads() if b.name == mr.name).status.review.pr_verified_at,
        60,
        "the provider to confirm the PR",
    )
    fake_github.prs[0].state = "merged"
    result = landed(view, "viapr", timeout=60)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    closed = next(b for b in view.beads() if b.name == mr.name)
    assert closed.status.review.merge_commit == fake_github.prs[0].merge_commit()
    polls = [r for r in fake_github.requests if r[0] == "GET" and "/pulls/" in r[1]]
    assert polls, fake_github.requests
    assert all(PR_TOKEN not in str(v) for v in view.town()["status"].values())
    assert_ran_on_the_node(pod_watch, real_node, at_least=2)


def test_agent_container_killed_mid_bead_is_redone_once(
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
    tasks = [
        {"key": "slow", "title": "Slow", "description": "[scripted: sleep=8]"},
        {"key": "after", "title": "After", "dependsOn": ["slow"]},
    ]
    assert api.create(namespace, convoy("kill", tasks)).status == 201

    def running() -> dict[str, Any] | None:
        return next(
            (
                p
                for p in view.pods()
                if p["metadata"]["labels"].get("gastown.dev/bead") == "kill-slow"
                and p.get("status", {}).get("phase") == "Running"
                and p["status"].get("containerStatuses", [{}])[0].get("containerID")
            ),
            None,
        )

    pod = view.wait(running, LAND_TIMEOUT, "the slow bead's container to run")
    kill_container(real_node, pod)  # SIGKILL, as the kernel's OOM killer or a crash would
    result = landed(view, "kill", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    slow = next(b for b in view.beads() if b.name == "kill-slow")
    assert slow.status.attempts == 2, slow.status
    # The killed pod ended as the kubelet saw it: the container exited on SIGKILL (137).
    seen = pod_watch.pods[pod["metadata"]["name"]]
    assert seen.phase == "Failed" or seen.name not in {p["metadata"]["name"] for p in view.pods()}
    merges = git("log", "--merges", "--format=%s", "main", cwd=node_rig.path)
    assert merges.count("kill-slow") <= 2  # once into the feature branch, landed once


def test_agent_containers_killed_at_random_lose_and_duplicate_nothing(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    """Chaos on the node: agent containers (polecats and refineries alike) SIGKILLed at random,
    from a seed, while a six-bead diamond convoy runs; it lands with every bead merged once."""
    rng = random.Random(1402)
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    tasks = [{**task, "description": "[scripted: sleep=3]"} for task in DIAMOND6]
    assert api.create(namespace, convoy("chaos", tasks)).status == 201
    killed: list[str] = []

    def running_victim() -> dict[str, Any] | None:
        running = [
            p
            for p in view.pods()
            if p.get("status", {}).get("phase") == "Running"
            and p["status"].get("containerStatuses", [{}])[0].get("containerID")
            and p["metadata"]["name"] not in killed
        ]
        return rng.choice(sorted(running, key=lambda p: p["metadata"]["name"])) if running else None

    for _ in range(3):
        victim = view.wait(running_victim, LAND_TIMEOUT, "a running agent container")
        kill_container(real_node, victim)
        killed.append(victim["metadata"]["name"])
    result = landed(view, "chaos", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    beads = view.beads()
    issues = [b for b in beads if b.spec.type is BeadType.ISSUE]
    assert len(issues) == len(DIAMOND6)
    # Every pod the watcher saw belongs to a distinct agent generation (names are per
    # generation), and each issue was merged exactly once into the feature branch.
    merged = Counter(
        b.spec.merge_request.source_bead
        for b in beads
        if b.spec.merge_request is not None
        and not b.spec.merge_request.landing
        and b.status.phase is BeadPhase.CLOSED
    )
    assert merged == Counter({b.name: 1 for b in issues}), merged
    branch = result.status.feature_branch
    assert branch, result.status
    merges = git("log", "--merges", "--format=%s", branch, cwd=node_rig.path).splitlines()
    assert len(merges) == len(issues), merges  # one merge commit per issue, none redone
    assert view.town()["status"].get("violations", []) == []


def test_agent_node_lost_with_its_pods_loses_and_duplicates_nothing(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    """The agent's node dies with its pods (kubelet and containers killed) while a bead runs,
    stays down until the control plane marks it NotReady, and comes back: the work is redone
    once, the convoy lands, nothing is merged twice."""
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    tasks = [
        {"key": "slow", "title": "Slow", "description": "[scripted: sleep=20]"},
        {"key": "after", "title": "After", "dependsOn": ["slow"]},
    ]
    assert api.create(namespace, convoy("lost", tasks)).status == 201

    def slow_running() -> bool:
        return any(
            p["metadata"]["labels"].get("gastown.dev/bead") == "lost-slow"
            and p.get("status", {}).get("phase") == "Running"
            for p in view.pods()
        )

    view.wait(slow_running, LAND_TIMEOUT, "the slow bead's container to run")
    real_node.lose()
    try:

        def not_ready() -> bool:
            node = api.call("GET", f"/api/v1/nodes/{real_node.name}").body
            ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
            return bool(ready) and ready[0]["status"] != "True"

        view.wait(not_ready, 120, "the control plane to mark the lost node NotReady")
    finally:
        real_node.revive()
    result = landed(view, "lost", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    beads = view.beads()
    slow = next(b for b in beads if b.name == "lost-slow")
    assert slow.status.attempts == 2, slow.status  # the lost session, then one redo
    merged = Counter(
        b.spec.merge_request.source_bead
        for b in beads
        if b.spec.merge_request is not None
        and not b.spec.merge_request.landing
        and b.status.phase is BeadPhase.CLOSED
    )
    assert merged == Counter({"lost-slow": 1, "lost-after": 1}), merged
    assert view.town()["status"].get("violations", []) == []
