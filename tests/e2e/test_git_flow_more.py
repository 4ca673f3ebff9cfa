"""Convoys through real pods and git: landing, rework, conflicts, pull requests, killed agents."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.e2e.test_git_flow import scripted_town
from tests.support.api import Api
from tests.support.git import files_on, git, log, show
from tests.support.procs import Process
from tests.support.town import TownView, convoy
from tests.unit.agent.fake_provider import FakeProvider, start_fake

pytestmark = pytest.mark.cluster

DIAMOND6 = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
    {"key": "mid", "title": "Mid", "dependsOn": ["base"]},
    {"key": "join", "title": "Join", "dependsOn": ["left", "right", "mid"]},
    {"key": "top", "title": "Top", "dependsOn": ["join"]},
]


def landed(view: TownView, name: str, timeout: float = 240) -> Any:
    """Wait until the convoy is terminal; return it."""

    def done() -> Any:
        found = view.convoy(name)
        return found if found.status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED) else None

    return view.wait(done, timeout, f"convoy {name} to land")


def test_diamond_convoy_lands_through_one_landing_merge(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    assert api.create(namespace, scripted_town(rig_repo)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND6)).status == 201
    result = landed(view, "feat")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    main_files = files_on(rig_repo)
    for task in DIAMOND6:
        assert f"beads/feat-{task['key']}.md" in main_files, log(rig_repo)
    landings = [b for b in view.beads() if b.spec.merge_request and b.spec.merge_request.landing]
    assert len(landings) == 1
    # Dependency order: a bead's work is on the feature branch before its dependents started.
    feature = result.status.feature_branch
    assert feature
    history = git("log", "--format=%s", "--reverse", "main", cwd=rig_repo)
    assert history.index("feat-base") < history.index("feat-join") < history.index("feat-top")
    # Exactly one merge of the feature branch into main.
    merges = git("log", "--merges", "--first-parent", "--format=%s", "main", cwd=rig_repo)
    assert len([m for m in merges.splitlines() if feature in m]) == 1, merges


def test_request_changes_once_goes_through_rework(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    body = scripted_town(rig_repo, refinery={"review": True})
    assert api.create(namespace, body).status == 201
    tasks = [{"key": "fix", "title": "Fix", "description": "[scripted: request-changes-once]"}]
    assert api.create(namespace, convoy("rw", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "rw")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    reworks = [b for b in view.beads() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 1
    assert reworks[0].status.phase is BeadPhase.CLOSED
    assert "rework: " in git("log", "--format=%s", "main", cwd=rig_repo)
    assert "beads/rw-fix.md" in files_on(rig_repo)


def test_merge_conflict_becomes_rework_and_main_is_never_broken(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    assert api.create(namespace, scripted_town(rig_repo)).status == 201
    marker = "[scripted: conflict-file=README.md]"
    tasks = [
        {"key": "one", "title": "One", "description": marker},
        {"key": "two", "title": "Two", "description": marker},
    ]
    assert api.create(namespace, convoy("cf", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "cf")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    assert {"beads/cf-one.md", "beads/cf-two.md"} <= set(files_on(rig_repo))
    assert "<<<<<<<" not in show(rig_repo, "README.md")
    assert any(b.spec.type is BeadType.REWORK for b in view.beads())
    # Every commit on main's first-parent line has a clean tree (no conflict markers).
    for sha in git("rev-list", "--first-parent", "main", cwd=rig_repo).split():
        assert "<<<<<<<" not in git("show", f"{sha}:README.md", cwd=rig_repo)


def test_pull_request_strategy_is_polled_until_merged(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    pr_operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    fake = FakeProvider(repo=rig_repo)  # PR heads are the branches really pushed there
    server = start_fake(fake)
    try:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gh", "labels": {"gastown.dev/town": "demo"}},
            "stringData": {"token": "s3cr3t-token"},
        }
        assert api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", secret).status == 201
        body = scripted_town(rig_repo, policy={"review": {"prPollIntervalSeconds": 1}})
        body["spec"]["rigs"][0].update(
            {
                "mergeStrategy": "pr",
                "pullRequests": {
                    "kind": "github",
                    "apiUrl": f"{fake.base}/gh",
                    "repository": "o/r",
                    "tokenSecret": {"name": "gh", "key": "token"},
                },
            }
        )
        assert api.create(namespace, body).status == 201
        tasks = [{"key": "pr", "title": "Via PR"}]
        assert api.create(namespace, convoy("viapr", tasks, mode="review-and-merge")).status == 201
        view.wait(lambda: fake.prs, 120, "a pull request to be opened")
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
        fake.prs[0].state = "merged"
        result = landed(view, "viapr", timeout=60)
        assert result.status.phase is ConvoyPhase.LANDED, result.status
        closed = next(b for b in view.beads() if b.name == mr.name)
        assert closed.status.review.merge_commit == fake.prs[0].merge_commit()
        polls = [r for r in fake.requests if r[0] == "GET" and "/pulls/" in r[1]]
        assert polls, fake.requests
        assert all("s3cr3t-token" not in str(v) for v in view.town()["status"].values())
    finally:
        server.shutdown()


def test_agent_process_killed_mid_bead_is_redone_once(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
    tmp_path: Path,
) -> None:
    assert api.create(namespace, scripted_town(rig_repo)).status == 201
    tasks = [
        {"key": "slow", "title": "Slow", "description": "[scripted: sleep=6]"},
        {"key": "after", "title": "After", "dependsOn": ["slow"]},
    ]
    assert api.create(namespace, convoy("kill", tasks)).status == 201
    pod = view.wait(
        lambda: next(
            (
                p
                for p in view.pods()
                if p["metadata"]["labels"].get("gastown.dev/bead") == "kill-slow"
                and p.get("status", {}).get("phase") == "Running"
            ),
            None,
        ),
        60,
        "the slow bead's pod to run",
    )
    pod_dir = node_runner_proc_root(node_runner_proc) / namespace
    pid_file = view.wait(
        lambda: next(iter(pod_dir.glob(f"{pod['metadata']['name']}-*/pid")), None),
        30,
        "the pod's pid file",
    )
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    result = landed(view, "kill")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    slow = next(b for b in view.beads() if b.name == "kill-slow")
    assert slow.status.attempts == 2, slow.status
    merges = git("log", "--merges", "--format=%s", "main", cwd=rig_repo)
    assert merges.count("kill-slow") <= 2  # once into the feature branch, landed once


def node_runner_proc_root(proc: Process) -> Path:
    """The node runner's pod root directory (its --root argument)."""
    return Path(proc.argv[proc.argv.index("--root") + 1])
