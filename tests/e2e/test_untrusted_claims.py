"""Agents lie: forged claims change no work state (real API server, operator, real git).

Each test plays the attack as an agent pod would — a report written into its own Agent status —
against a real bare remote, and checks that the operator verified the claim against the remote
itself: the work does not move, a Warning Event and the bead's ClaimsVerified condition say why,
and the remote is untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gastown.agent.channel import ReportDraft
from gastown.model import Agent, AgentRole, Bead, BeadPhase, ReportType
from tests.support.api import Api
from tests.support.git import git
from tests.support.procs import Process
from tests.support.town import AgentPlayer, TownView, bead, convoy, town

pytestmark = pytest.mark.cluster

FORGED_COMMIT = "0" * 37 + "bad"


def events_about(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events whose involved object is `name`."""
    path = f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    items: list[dict[str, Any]] = api.call("GET", path).body["items"]
    return items


def hooked(view: TownView, bead_name: str, role: AgentRole) -> Agent | None:
    """The agent of `role` hooked to `bead_name`, if any."""
    return next(
        (a for a in view.agents() if a.spec.hook == bead_name and a.spec.role is role), None
    )


def the_bead(view: TownView, name: str) -> Bead:
    return next(b for b in view.beads() if b.name == name)


def refused(view: TownView, name: str, reason: str) -> bool:
    """The bead records a refused claim with `reason` and shows it as a False condition."""
    item = the_bead(view, name)
    condition = next((c for c in item.status.conditions if c.type == "ClaimsVerified"), None)
    return (
        item.status.refused_claim is not None
        and item.status.refused_claim.reason == reason
        and condition is not None
        and condition.status.value == "False"
        and condition.reason == reason
    )


def await_warning(api: Api, view: TownView, namespace: str, name: str, reason: str) -> None:
    """Wait for a Warning Event `reason` about `name`.

    Events are posted after the status write that records the refusal (side effects follow
    the state they describe), so the bead can show the refusal a moment before its Event exists.
    """

    def warned() -> bool:
        events = events_about(api, namespace, name)
        return any(e["type"] == "Warning" and e["reason"] == reason for e in events)

    view.wait(warned, 30, f"a Warning Event {reason} about {name}")


def sha(repo: Path, branch: str) -> str | None:
    out = git("for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}", cwd=repo).strip()
    return out or None


def test_a_forged_merged_report_closes_nothing(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, bead("a")).status == 201
    main_before = sha(player.repo, "main")

    def refinery_on_mr() -> tuple[Agent, str] | None:
        item = the_bead(view, "a") if any(b.name == "a" for b in view.beads()) else None
        if item is None:
            return None
        if item.status.merge_request is None:
            polecat = hooked(view, "a", AgentRole.POLECAT)
            if polecat is not None and (polecat.name, polecat.spec.generation) not in player.played:
                player.step()  # the polecat's work is honest: real push, verified
            return None
        refinery = hooked(view, item.status.merge_request, AgentRole.REFINERY)
        return (refinery, item.status.merge_request) if refinery is not None else None

    refinery, mr = view.wait(refinery_on_mr, 60, "the refinery to take the merge request")
    player.channel(refinery).append_report(
        ReportDraft(type=ReportType.MERGED, bead=mr, merge_commit=FORGED_COMMIT)
    )
    view.wait(lambda: refused(view, mr, "MergeUnverified"), 60, "the forged merge to be refused")
    await_warning(api, view, namespace, mr, "MergeUnverified")
    assert the_bead(view, mr).status.phase is not BeadPhase.CLOSED
    assert the_bead(view, "a").status.phase is BeadPhase.IN_REVIEW
    assert sha(player.repo, "main") == main_before


def test_a_done_naming_another_branch_makes_no_merge_request(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    # A branch holding an unreviewed commit, e.g. pushed by a prompt-injected agent.
    unreviewed = player.hands.push_work("release", "smuggled", 1)
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, bead("a")).status == 201
    polecat = view.wait(lambda: hooked(view, "a", AgentRole.POLECAT), 60, "a polecat on a")
    player.channel(polecat).append_report(
        ReportDraft(type=ReportType.DONE, bead="a", branch="release", head_sha=unreviewed)
    )
    view.wait(lambda: refused(view, "a", "ForeignBranch"), 60, "the foreign branch to be refused")
    await_warning(api, view, namespace, "a", "ForeignBranch")
    assert not [b for b in view.beads() if b.spec.merge_request is not None]
    assert the_bead(view, "a").status.phase is BeadPhase.IN_PROGRESS


def test_a_done_naming_the_convoy_branch_leaves_the_target_alone(
    api: Api, namespace: str, operator_proc: Process, view: TownView, player: AgentPlayer
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    tasks = [{"key": "a", "title": "A"}, {"key": "b", "title": "B", "dependsOn": ["a"]}]
    assert api.create(namespace, convoy("c", tasks)).status == 201
    player.leave.add("c-b")  # c-b's polecat is the liar, played by this test

    def b_dispatched() -> Agent | None:
        polecat = hooked(view, "c-b", AgentRole.POLECAT)
        if polecat is None:
            player.step()  # a is worked, reviewed and merged into the feature branch honestly
        return polecat

    polecat = view.wait(b_dispatched, 90, "c-b to be dispatched after c-a merged")
    feature = view.convoy("c").status.feature_branch
    assert feature is not None
    tip = sha(player.repo, feature)
    assert tip is not None
    player.channel(polecat).append_report(
        ReportDraft(type=ReportType.DONE, bead="c-b", branch=feature, head_sha=tip)
    )
    view.wait(lambda: refused(view, "c-b", "ForeignBranch"), 60, "the convoy branch to be refused")
    sources = {b.spec.merge_request.branch for b in view.beads() if b.spec.merge_request}
    assert feature not in sources
    assert sha(player.repo, feature) == tip
    assert the_bead(view, "c-b").status.merge_request is None
