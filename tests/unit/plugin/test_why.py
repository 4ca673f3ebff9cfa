"""`why`: one verdict per situation, using the reconciler's own rules (no cluster)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gastown.model import Bead
from gastown.plugin.state import TownState
from gastown.plugin.style import PLAIN, Style
from gastown.plugin.why import Why, explain, render_why
from tests.unit.reconcile.builders import T0, agent, bead, convoy, merge_request, minutes, town

NOW = T0 + minutes(10)
Case = Callable[[], TownState]


def state(*objects: Any, **town_kwargs: Any) -> TownState:
    """A TownState from builder objects."""
    from gastown.model import Agent, Convoy

    return TownState.of(
        town(**town_kwargs),
        beads=[o for o in objects if isinstance(o, Bead)],
        convoys=[o for o in objects if isinstance(o, Convoy)],
        agents=[o for o in objects if isinstance(o, Agent)],
    )


def failed_beads(n: int) -> list[Bead]:
    return [
        bead(f"f{i}", phase="failed", lastFailureAt=NOW - minutes(1), attempts=1) for i in range(n)
    ]


CASES: dict[str, tuple[Case, str, str, str]] = {
    # name: (state, bead, verdict, words in the summary or details)
    "waiting for deps": (
        lambda: state(bead("a", phase="in_progress"), bead("b", depends_on=["a"])),
        "b",
        "WaitingForDependencies",
        "depends on a: in_progress",
    ),
    "missing dep": (
        lambda: state(bead("b", depends_on=["ghost"])),
        "b",
        "MissingDependency",
        "do not exist: ghost",
    ),
    "failed dep": (
        lambda: state(bead("a", phase="failed"), bead("b", depends_on=["a"])),
        "b",
        "DependencyFailed",
        "failed dependency (a)",
    ),
    "failed transitively": (
        lambda: state(
            bead("a", phase="failed"), bead("b", depends_on=["a"]), bead("c", depends_on=["b"])
        ),
        "c",
        "DependencyFailed",
        "can never close",
    ),
    "cycle": (
        lambda: state(bead("a", depends_on=["b"]), bead("b", depends_on=["a"])),
        "a",
        "DependencyCycle",
        "cycle",
    ),
    "unknown rig": (lambda: state(bead("b", rig="nope")), "b", "UnknownRig", "'nope'"),
    "staged convoy": (
        lambda: state(convoy("c", [{"key": "x"}], staged=True), bead("c-x", convoy="c")),
        "c-x",
        "ConvoyStaged",
        "staged",
    ),
    "backing off": (
        lambda: state(bead("b", attempts=1, lastFailureAt=T0 + minutes(9), reason="AgentFailed")),
        "b",
        "BackingOff",
        "next attempt in 1m00s",
    ),
    "backoff over": (
        lambda: state(bead("b", attempts=1, lastFailureAt=T0, reason="AgentFailed")),
        "b",
        "Ready",
        "dispatches it",
    ),
    "attempts exhausted": (
        lambda: state(bead("b", attempts=5, lastFailureAt=T0)),
        "b",
        "AttemptsExhausted",
        "all 5 attempts",
    ),
    "paused": (lambda: state(bead("b"), mode="paused"), "b", "TownPaused", "paused"),
    "draining": (lambda: state(bead("b"), mode="draining"), "b", "TownDraining", "draining"),
    "shadow": (lambda: state(bead("b"), mode="shadow"), "b", "ShadowMode", "shadow"),
    "breaker open": (
        lambda: state(
            bead("b"), *failed_beads(3), policy={"circuitBreaker": {"failureThreshold": 3}}
        ),
        "b",
        "CircuitBreakerOpen",
        "3 beads failed",
    ),
    "rig full": (
        lambda: state(
            bead("w", phase="in_progress", assignee="p1"),
            agent("p1", hook="w", phase="working"),
            bead("b"),
            per_rig=1,
        ),
        "b",
        "WaitingForCapacity",
        "rig rig-1 has 1/1 polecats busy",
    ),
    "town full": (
        lambda: state(
            bead("w", phase="in_progress", assignee="p1"),
            agent("p1", hook="w", phase="working"),
            bead("b"),
            total=1,
        ),
        "b",
        "WaitingForCapacity",
        "the town has 1/1",
    ),
    "ready": (lambda: state(bead("b")), "b", "Ready", "next pass"),
    "working": (
        lambda: state(
            bead("b", phase="in_progress", assignee="p1"),
            agent(
                "p1",
                hook="b",
                generation=2,
                phase="working",
                activity={
                    "lastHeartbeatAt": NOW - minutes(0.5),
                    "lastEventType": "tool_call",
                    "lastEventAt": NOW - minutes(2),
                    "activeTools": ["bash"],
                },
                statusMessage="running tests",
            ),
        ),
        "b",
        "Working",
        "last event tool_call 2m00s ago",
    ),
    "heartbeat late": (
        lambda: state(
            bead("b", phase="in_progress", assignee="p1"),
            agent("p1", hook="b", phase="working", activity={"lastHeartbeatAt": T0}),
        ),
        "b",
        "Working",
        "LATE",
    ),
    "stalled": (
        lambda: state(
            bead("b", phase="in_progress", assignee="p1"),
            agent("p1", hook="b", phase="stalled"),
        ),
        "b",
        "Stalled",
        "stalled",
    ),
    "agent lost": (
        lambda: state(bead("b", phase="in_progress", assignee="gone", phaseSince=T0)),
        "b",
        "AgentLost",
        "no agent holds it",
    ),
    "in review, queued": (
        lambda: state(
            bead("b", phase="in_review", mergeRequest="b-mr-1"),
            merge_request("old-mr", "x", phase="in_progress", assignee="ref"),
            merge_request("b-mr-1", "b", created=T0 + minutes(1)),
        ),
        "b",
        "InReview",
        "old-mr first",
    ),
    "in review, PR open": (
        lambda: state(
            bead("b", phase="in_review", mergeRequest="b-mr-1"),
            merge_request(
                "b-mr-1",
                "b",
                phase="in_progress",
                review={"prUrl": "https://git.example/pr/7", "prState": "open"},
            ),
        ),
        "b",
        "InReview",
        "https://git.example/pr/7: open",
    ),
    "rework pending": (
        lambda: state(
            bead("b", phase="in_review", mergeRequest="b-mr-1"),
            merge_request("b-mr-1", "b", review={"rework": ["b-mr-1-rework-1"]}),
            bead(
                "b-mr-1-rework-1",
                type="rework",
                phase="in_progress",
                assignee="p2",
                spec={"rework": {"mergeRequest": "b-mr-1", "sourceBead": "b", "branch": "gt/b"}},
            ),
        ),
        "b",
        "ReworkPending",
        "rework b-mr-1-rework-1: in_progress @p2",
    ),
    "done": (
        lambda: state(
            bead("b", phase="closed", closedAt=T0, mergeRequest="m"),
            merge_request("m", "b", phase="closed", review={"mergeCommit": "abc123"}),
        ),
        "b",
        "Done",
        "merge commit abc123",
    ),
    "failed": (
        lambda: state(bead("b", phase="failed", reason="MaxAttemptsExceeded", attempts=5)),
        "b",
        "Failed",
        "all 5 of 5 attempts",
    ),
    "cancelled": (
        lambda: state(bead("b", phase="failed", reason="Cancelled")),
        "b",
        "Cancelled",
        "cancelled",
    ),
    "cancel requested": (
        lambda: state(bead("b", cancel=True)),
        "b",
        "CancelRequested",
        "reason Cancelled",
    ),
    "mr queued": (
        lambda: state(
            merge_request("first", "x"),
            merge_request("second", "y", created=T0 + minutes(1)),
        ),
        "second",
        "Queued",
        "first first",
    ),
    "mr next": (lambda: state(merge_request("m", "x")), "m", "Ready", "review queue"),
    "mr pull request": (
        lambda: state(
            merge_request(
                "m",
                "x",
                phase="in_progress",
                review={"prUrl": "https://git.example/pr/9", "prState": "open"},
            )
        ),
        "m",
        "PullRequestOpen",
        "https://git.example/pr/9",
    ),
    "idle agent still hooked": (
        lambda: state(
            bead("b", phase="in_progress", assignee="p1"),
            agent("p1", hook="b", phase="idle"),
        ),
        "b",
        "Redispatching",
        "re-dispatches it",
    ),
    "stale assignee": (
        lambda: state(bead("b", assignee="gone")),
        "b",
        "StaleAssignee",
        "no longer holds it",
    ),
    "escalation": (
        lambda: state(bead("e", type="escalation", rig=None)),
        "e",
        "Escalation",
        "for humans",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_verdicts(case: str) -> None:
    make, name, verdict, words = CASES[case]
    why = explain(make(), name, NOW)
    text = render_why(why, PLAIN)
    assert why.verdict == verdict, text
    assert words in text, text


def test_next_pass_agrees_with_the_operator() -> None:
    """A ready bead's next pass dispatches it; a held one's does not."""
    ready = explain(state(bead("b")), "b", NOW)
    assert any(line.startswith("DispatchAgent(b)") for line in ready.next_pass), ready.next_pass
    held = explain(state(bead("b", depends_on=["ghost"])), "b", NOW)
    assert not any("DispatchAgent" in line for line in held.next_pass)
    assert any("MissingDependency" in line for line in held.next_pass)


def test_backoff_until_follows_the_policy() -> None:
    """Two failures with backoff [60, 600]: the next attempt is lastFailureAt + 600s."""
    failed_at = NOW - minutes(1)
    why = explain(
        state(
            bead("b", attempts=2, lastFailureAt=failed_at),
            policy={"retry": {"backoffSeconds": [60, 600]}},
        ),
        "b",
        NOW,
    )
    assert why.verdict == "BackingOff"
    assert why.facts["backoffSeconds"] == 600
    assert why.facts["backoffUntil"] == "2026-03-01T12:19:00Z"


def test_json_keys_are_stable() -> None:
    data = explain(state(bead("b")), "b", NOW).to_json()
    assert sorted(data) == ["bead", "details", "facts", "nextPass", "phase", "summary", "verdict"]
    assert data["facts"]["capacity"]["rigCap"] == 3


def test_unknown_bead_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        explain(state(), "nope", NOW)


def test_colour_only_when_enabled() -> None:
    why: Why = explain(state(bead("b")), "b", NOW)
    assert "\033[" not in render_why(why, PLAIN)
    assert "\033[32mReady" in render_why(why, Style(True))


def test_a_refused_claim_is_explained() -> None:
    refused = {
        "agent": "t-polecat-rig-1-1",
        "generation": 2,
        "seq": 3,
        "reason": "ForeignBranch",
        "message": "done names branch release; this work's branch is gt/p/b",
        "at": "2026-03-01T12:00:00Z",
    }
    why = explain(state(bead("b", refusedClaim=refused)), "b", NOW)
    text = render_why(why, PLAIN)
    assert "was refused (ForeignBranch)" in text, text
    assert why.facts["refusedClaim"]["reason"] == "ForeignBranch"
