"""Retention on the real API server: finished work is deleted after its TTL, what the finished
convoy owned goes with it by garbage collection, and what unfinished work needs is kept.

Agents are played through the API (no pod runs), so this needs the control plane only.
"""

from __future__ import annotations

import pytest

from gastown.model import BeadPhase, ConvoyPhase
from tests.support.api import Api
from tests.support.procs import Process
from tests.support.town import AgentPlayer, TownView, bead, convoy, town

pytestmark = pytest.mark.cluster

TTL = 3
TASKS = [
    {"key": "one", "title": "One"},
    {"key": "two", "title": "Two", "dependsOn": ["one"]},
]


def test_finished_work_is_deleted_after_the_ttl_and_needed_work_is_kept(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    body = town(git_url=player.git_url)
    body["spec"]["policy"] = {"retention": {"ttlSecondsAfterFinished": TTL}}
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, convoy("feat", TASKS, mode="review-and-merge")).status == 201
    assert api.create(namespace, bead("solo")).status == 201
    assert api.create(namespace, bead("base")).status == 201
    # Depends on the finished `base` and on a bead that never exists: it stays open, so `base`
    # must be kept however old it gets.
    assert api.create(namespace, bead("needs", dependsOn=["base", "ghost"])).status == 201

    names = {"feat-one", "feat-two", "solo", "base"}

    def finished() -> bool:
        player.step()
        phases = {b.name: b.status.phase for b in view.beads()}
        merged = all(phases.get(n) is BeadPhase.CLOSED for n in names - {"feat-one", "feat-two"})
        convoy_done = (
            "feat" not in {c["metadata"]["name"] for c in view._list("Convoy")}
            or view.convoy("feat").status.phase is ConvoyPhase.LANDED
        )
        return merged and convoy_done

    view.wait(finished, 180, "the convoy to land and the loose beads to close")

    def gone() -> bool:
        player.step()
        left = {b.name for b in view.beads()}
        convoys = {c["metadata"]["name"] for c in view._list("Convoy")}
        return "feat" not in convoys and not left & {"solo", "feat-one", "feat-two"}

    view.wait(gone, 60, "the convoy, its task beads (by GC) and the solo bead to be deleted")
    left = {b.name: b for b in view.beads()}
    assert "base" in left, "a dependency of unfinished work is kept"
    assert left["base"].status.phase is BeadPhase.CLOSED
    assert "needs" in left
    assert left["needs"].status.phase is BeadPhase.OPEN
    # Merge requests of the deleted beads went with them (owned by their source bead).
    sources = {b.spec.merge_request.source_bead for b in left.values() if b.spec.merge_request}
    assert sources <= {"base", "needs"}, sources
