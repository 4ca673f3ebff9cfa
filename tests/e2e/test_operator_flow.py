"""The operator on the real API server: a convoy from apply to landed, restarts, shadow, cancel."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.support.api import Api
from tests.support.procs import Process, wait_started
from tests.support.town import AgentPlayer, TownView, bead, convoy, town

pytestmark = pytest.mark.cluster

DIAMOND = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
    {"key": "top", "title": "Top", "dependsOn": ["left", "right"]},
]


def drive(
    view: TownView, player: AgentPlayer, name: str, timeout: float = 120, between: Any = None
) -> None:
    """Play agents until the convoy is terminal."""

    def finished() -> bool:
        player.step()
        if between is not None:
            between()
        return view.convoy(name).status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED)

    view.wait(finished, timeout, f"convoy {name} to finish")


def assert_no_duplicates(view: TownView) -> None:
    """One pod per agent generation, one MR per dispatch, at most one landing per convoy."""
    pods = Counter(
        (
            p["metadata"]["labels"]["gastown.dev/agent"],
            p["metadata"]["labels"]["gastown.dev/generation"],
        )
        for p in view.pods()
    )
    assert all(n == 1 for n in pods.values()), pods
    beads = view.beads()
    merged_sources = Counter(
        b.spec.merge_request.source_bead
        for b in beads
        if b.spec.merge_request and b.status.phase is BeadPhase.CLOSED
    )
    assert all(n == 1 for n in merged_sources.values()), merged_sources
    hooks = Counter(a.spec.hook for a in view.agents() if a.spec.hook)
    assert all(n == 1 for n in hooks.values()), hooks


def test_convoy_lands_in_dependency_order(
    api: Api,
    namespace: str,
    operator_proc: Process,
    view: TownView,
    player: AgentPlayer,
    control_plane: ControlPlane,
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    order: list[str] = []

    def record() -> None:
        for item in view.beads():
            if (
                item.spec.type is BeadType.ISSUE
                and item.status.phase is not BeadPhase.OPEN
                and item.name not in order
            ):
                order.append(item.name)

    drive(view, player, "feat", between=record)
    result = view.convoy("feat")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    assert result.status.progress == "4/4"
    assert order.index("feat-base") < order.index("feat-left") < order.index("feat-top")
    assert order.index("feat-right") < order.index("feat-top")
    landings = [b for b in view.beads() if b.spec.merge_request and b.spec.merge_request.landing]
    assert len(landings) == 1
    assert landings[0].status.phase is BeadPhase.CLOSED
    assert_no_duplicates(view)
    complete = next(c for c in result.status.conditions if c.type == "Complete")
    assert (complete.status.value, complete.reason) == ("True", "Landed")
    for item in view.beads():
        if item.spec.type is BeadType.ISSUE:
            done = next(c for c in item.status.conditions if c.type == "Complete")
            assert done.status.value == "True", item.status
    status = view.town()["status"]
    assert status["beads"]["closed"] >= 4
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", status
    # What the README tells users to type works as written.
    for target, condition in (("town/demo", "Ready"), ("convoy/feat", "Complete")):
        control_plane.kubectl(
            "wait", f"--for=condition={condition}", target, "-n", namespace, "--timeout=30s"
        )
    described = control_plane.kubectl("describe", "convoy", "feat", "-n", namespace).stdout
    assert "Complete" in described
    assert "Landed" in described


def test_operator_killed_at_several_points_loses_and_duplicates_nothing(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    kills = 0

    def chaos() -> None:
        nonlocal kills
        if kills < 4 and len(player.played) >= 2 * kills + 1:
            operator_proc.kill()
            kills += 1
            operator_proc.start()
            wait_started(operator_proc, "Initial authentication has finished")

    drive(view, player, "feat", timeout=180, between=chaos)
    assert kills == 4
    assert view.convoy("feat").status.phase is ConvoyPhase.LANDED
    assert_no_duplicates(view)


def test_shadow_mode_changes_nothing(
    api: Api, namespace: str, operator_proc: Process, view: TownView
) -> None:
    assert api.create(namespace, town(mode="shadow")).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    status = view.wait(
        lambda: view.town().get("status", {}).get("plannedActions"),
        30,
        "planned actions in shadow mode",
    )
    assert status
    assert view.agents() == []
    assert view.pods() == []
    assert all(b.status.phase is BeadPhase.OPEN for b in view.beads())


def test_replayed_report_from_an_old_generation_changes_nothing(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, bead("once")).status == 201

    def closed() -> bool:
        player.step()
        return any(b.name == "once" and b.status.phase is BeadPhase.CLOSED for b in view.beads())

    view.wait(closed, 60, "the bead to be merged")
    polecat = next(a for a in view.agents() if a.spec.role.value == "polecat")
    before = sorted((b.name, b.status.phase.value) for b in view.beads())
    stale = {
        "seq": max([r.seq for r in polecat.status.reports] + [polecat.status.applied_report_seq])
        + 1,
        "generation": polecat.spec.generation - 1,
        "type": "done",
        "at": "2026-01-01T00:00:00Z",
        "bead": "once",
        "branch": "gt/replayed",
        "summary": "replayed",
    }
    reports = [r.to_api() for r in polecat.status.reports] + [stale]
    patch = {
        "metadata": {"resourceVersion": polecat.metadata.resource_version},
        "status": {"reports": reports},
    }
    assert api.merge_patch("Agent", namespace, polecat.name, patch, sub="status").status == 200
    view.wait(
        lambda: (
            next(a for a in view.agents() if a.name == polecat.name).status.applied_report_seq
            >= stale["seq"]
        ),
        30,
        "the stale report to be consumed",
    )
    assert sorted((b.name, b.status.phase.value) for b in view.beads()) == before
