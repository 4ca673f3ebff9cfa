"""Issue 10, observation 1b: a forged `pr-opened` URL never closes work.

The refinery reports, as its pull request, the URL of another PR of the same repository that is
already merged (another head branch, another commit). Before the fix the operator polled that
PR, saw it merged and closed the merge request and its source bead. Now the provider's API must
confirm the PR's head branch and commit and its base branch: the claim is refused with a Warning
Event and the bead's ClaimsVerified condition, and nothing closes.

The refinery runs for real (a container on the local node); the lie comes from the fake GitHub
(on the node's bridge gateway, where the pod and the operator both reach it), which
answers the refinery's "open a pull request" with the URL of the merged PR: from the operator's
side that is exactly a compromised refinery reporting a URL of its choosing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gastown.devtools.node import Node
from gastown.model import Bead, BeadPhase, BeadType
from tests.support.api import Api
from tests.support.git import HttpRig, git
from tests.support.node import PodWatch, assert_ran_on_the_node, pr_town
from tests.support.procs import Process
from tests.support.town import TownView, bead
from tests.unit.agent.fake_provider import PR, FakeProvider, fake_sha, start_fake

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

MERGED_URL = "https://github.example/o/r/pull/1"
OTHER_MERGE = fake_sha("merge of the other PR")


@pytest.fixture
def fake_github(real_node: Node, node_rig: HttpRig) -> Iterator[FakeProvider]:
    """A fake GitHub whose PR #1 (another branch, already merged) exists before the test."""
    fake = FakeProvider(repo=node_rig.path, host=real_node.gateway)
    fake.prs.append(
        PR(
            1,
            "feature/other",
            "main",
            "Someone else's work",
            state="merged",
            head_sha=fake_sha("other head"),
            merge_sha=OTHER_MERGE,
        )
    )
    server = start_fake(fake)
    yield fake
    server.shutdown()
    server.server_close()


def warnings_on(api: Api, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """Warning Events of one object with one reason."""
    listed = api.call(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name={name}"
    )
    assert listed.status == 200, listed.message
    return [e for e in listed.body["items"] if e["type"] == "Warning" and e["reason"] == reason]


def merge_request_of(view: TownView, source: str) -> Bead | None:
    """The merge request reviewing `source`, once it exists."""
    return next(
        (
            b
            for b in view.beads()
            if b.spec.type is BeadType.MERGE_REQUEST
            and b.spec.merge_request is not None
            and b.spec.merge_request.source_bead == source
        ),
        None,
    )


def test_forged_pr_url_of_another_merged_pr_closes_nothing(
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
    fake_github.forged_url = MERGED_URL  # what the refinery will report as its PR
    pr_town(api, namespace, lean_agent_image, node_rig, fake_github)
    rig_repo = node_rig.path
    main_before = git("rev-parse", "main", cwd=rig_repo).strip()
    assert api.create(namespace, bead("lie")).status == 201

    def refused() -> Bead | None:
        mr = merge_request_of(view, "lie")
        if mr is None:
            return None
        closed = [b.name for b in view.beads() if b.status.phase is BeadPhase.CLOSED]
        assert not closed, f"the forged PR claim closed {closed}"
        return mr if mr.status.refused_claim is not None else None

    mr = view.wait(refused, 240, "the forged PR claim to be refused")
    # The provider was asked about the claimed PR: another head branch, so a mismatch.
    assert any(m == "GET" and p == "/gh/repos/o/r/pulls/1" for m, p, _ in fake_github.requests)
    claim = mr.status.refused_claim
    assert claim.reason == "PullRequestUnverified", claim
    assert "feature/other" in claim.message, claim.message
    assert claim.agent.startswith("demo-refinery"), claim
    condition = next(c for c in mr.status.conditions if c.type == "ClaimsVerified")
    assert (condition.status, condition.reason) == ("False", "PullRequestUnverified"), condition
    view.wait(
        lambda: warnings_on(api, namespace, mr.name, "PullRequestUnverified"),
        30,
        "a Warning Event on the merge request",
    )
    # The review goes on with the next refinery attempt; the forged claim is refused again,
    # and at no point does anything close.
    first = (claim.generation, claim.seq, claim.at)

    def refused_again() -> Bead | None:
        again = refused()
        assert again is not None
        latest = again.status.refused_claim
        return again if (latest.generation, latest.seq, latest.at) != first else None

    view.wait(refused_again, 120, "the next attempt's forged claim to be refused too")
    beads = view.beads()
    assert all(b.status.phase is not BeadPhase.CLOSED for b in beads), [
        (b.name, b.status.phase, b.status.reason) for b in beads
    ]
    for b in beads:
        review = b.status.review
        assert review is None or review.merge_commit != OTHER_MERGE, b.status
    assert git("rev-parse", "main", cwd=rig_repo).strip() == main_before
    assert_ran_on_the_node(pod_watch, real_node, at_least=3)  # a polecat, two refineries
