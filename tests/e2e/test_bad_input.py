"""Bad objects get a clear reason, condition and Event, and disturb nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from gastown.model import BeadPhase, ConvoyPhase
from tests.support.api import Api
from tests.support.procs import Process
from tests.support.town import AgentPlayer, TownView, bead, convoy, town

pytestmark = pytest.mark.cluster


def events_for(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events about one object."""
    resp = api.call(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    )
    items: list[dict[str, Any]] = resp.body["items"]
    return items


def test_bad_objects_are_flagged_and_good_work_goes_on(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    cyclic = [
        {"key": "a", "title": "A", "dependsOn": ["b"]},
        {"key": "b", "title": "B", "dependsOn": ["a"]},
    ]
    assert api.create(namespace, convoy("loop", cyclic)).status == 201
    assert api.create(namespace, bead("lost", rig="nowhere")).status == 201
    assert api.create(namespace, bead("waits", dependsOn=["ghost"])).status == 201
    orphan = bead("orphan")
    orphan["spec"]["town"] = "atlantis"
    assert api.create(namespace, orphan).status == 201
    assert api.create(namespace, bead("good")).status == 201

    cycle = view.wait(
        lambda: view.convoy("loop").status.reason == "DependencyCycle" and view.convoy("loop"),
        30,
        "the cycle to be reported",
    )
    assert cycle.status.phase is ConvoyPhase.FAILED or cycle.status.reason == "DependencyCycle"
    assert "cycle" in (cycle.status.message or "")

    def reason_of(name: str) -> str | None:
        return next((b.status.reason for b in view.beads() if b.name == name), None)

    view.wait(lambda: reason_of("lost") == "UnknownRig", 30, "UnknownRig on the bead")
    view.wait(lambda: reason_of("waits") == "MissingDependency", 30, "MissingDependency")
    view.wait(lambda: reason_of("orphan") == "TownNotFound", 40, "TownNotFound")
    for name, reason in (
        ("lost", "UnknownRig"),
        ("orphan", "TownNotFound"),
        ("loop", "DependencyCycle"),
    ):
        view.wait(
            lambda n=name, r=reason: any(e["reason"] == r for e in events_for(api, namespace, n)),
            30,
            f"a {reason} Event on {name}",
        )
    orphan_obj = next(b for b in view.beads() if b.name == "orphan")
    complete = next(c for c in orphan_obj.status.conditions if c.type == "Complete")
    assert (complete.status.value, complete.reason) == ("False", "TownNotFound")

    # Meanwhile the good bead is worked on as if nothing were wrong.
    def good_closed() -> bool:
        player.step()
        return any(b.name == "good" and b.status.phase is BeadPhase.CLOSED for b in view.beads())

    view.wait(good_closed, 60, "the good bead to be merged")
    assert not any(
        b.name.startswith("loop-") and b.status.phase is not BeadPhase.OPEN for b in view.beads()
    )
