"""`tree` and `status`: structure, placement of MRs/rework, counts, plain vs colour (no cluster)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from gastown.model.policy import BudgetPolicy
from gastown.model.spend import Spend, TownSpend, WindowSpend
from gastown.plugin.state import TownState
from gastown.plugin.status import build_status, progress_bar, render_status
from gastown.plugin.style import PLAIN, Style
from gastown.plugin.tree import build_tree, render_tree
from gastown.reconcile.snapshot import PodView
from tests.unit.reconcile.builders import T0, agent, bead, convoy, merge_request, minutes, town

NOW = T0 + minutes(5)


def pod(name: str, agent_name: str, generation: int, phase: str = "Running") -> PodView:
    return PodView(
        name=name,
        agent=agent_name,
        generation=generation,
        bead=None,
        phase=phase,
        reason=None,
        exit_code=None,
        created_at=T0,
        started_at=None,
        finished_at=None,
        deleting=False,
    )


def busy_town(**town_kwargs: Any) -> TownState:
    """A convoy with two tasks (one in review with rework), a loose bead, agents and pods."""
    rework_spec = {"rework": {"mergeRequest": "c-a-mr-1", "sourceBead": "c-a", "branch": "gt/a"}}
    return TownState.of(
        town(**town_kwargs),
        beads=[
            bead("c-a", convoy="c", phase="in_review", mergeRequest="c-a-mr-1"),
            bead("c-b", convoy="c", depends_on=["c-a"], reason="WaitingForDependencies"),
            merge_request("c-a-mr-1", "c-a", review={"rework": ["c-a-mr-1-rework-1"]}),
            bead(
                "c-a-mr-1-rework-1",
                type="rework",
                spec=rework_spec,
                phase="in_progress",
                assignee="p1",
            ),
            bead("solo", phase="failed", reason="Cancelled"),
            merge_request("orphan-mr", "vanished"),
            bead("other-town-bead", spec={"town": "elsewhere"}),
        ],
        convoys=[
            convoy(
                "c",
                [{"key": "a"}, {"key": "b", "dependsOn": ["a"]}, {"key": "z"}],
                phase="InProgress",
                progress="0/3",
                total=3,
            ),
        ],
        agents=[
            agent(
                "p1",
                hook="c-a-mr-1-rework-1",
                generation=2,
                phase="working",
                activity={"lastHeartbeatAt": NOW},
            ),
            agent("p2", phase="idle"),
            agent("ref", role="refinery", phase="stalled"),
        ],
        pods=[pod("p1-g1", "p1", 1, "Failed"), pod("p1-g2", "p1", 2), pod("x-g1", "stranger", 1)],
    )


def test_tree_places_everything_once() -> None:
    tree = build_tree(busy_town())
    (c,) = tree["convoys"]
    assert [b["name"] for b in c["beads"]] == ["c-a", "c-b", "c-z"]
    assert c["beads"][2] == {"name": "c-z", "missing": True}
    a = c["beads"][0]
    (mr,) = a["mergeRequests"]
    assert mr["name"] == "c-a-mr-1"
    (rework,) = a["rework"]
    assert rework["name"] == "c-a-mr-1-rework-1"
    (p1,) = rework["agents"]
    assert [p["name"] for p in p1["pods"]] == ["p1-g1", "p1-g2"]
    assert [b["name"] for b in tree["beads"]] == ["orphan-mr", "solo"]
    assert [a["name"] for a in tree["agents"]] == ["p2", "ref"]
    text = render_tree(tree, PLAIN)
    assert "other-town-bead" not in text
    assert "x-g1" not in text
    for name in ("c-a-mr-1", "c-a-mr-1-rework-1", "p1-g2", "orphan-mr", "ref"):
        assert text.count(f" {name} ") == 1, (name, text)


def test_tree_text_reads_at_a_glance() -> None:
    text = render_tree(build_tree(busy_town()), PLAIN)
    lines = text.splitlines()
    assert lines[0] == "Town t  mode=active"
    assert "├── Convoy c  InProgress 0/3  (review-then-land)" in text
    assert "Bead c-b  open  (WaitingForDependencies)" in text
    assert "Agent p1  polecat  working  gen 2" in text
    assert "Pod p1-g1  Failed  gen 1" in text
    assert "\033[" not in text


def test_tree_of_an_empty_town() -> None:
    tree = build_tree(TownState.of(town()))
    assert tree == {
        "town": {"name": "t", "mode": "active", "ready": None},
        "convoys": [],
        "beads": [],
        "agents": [],
    }
    assert "(no convoys, beads or agents)" in render_tree(tree, PLAIN)


def test_status_counts_and_rigs() -> None:
    board = build_status(busy_town(per_rig=2), NOW)
    assert board["beads"]["in_review"] == 1
    assert board["beads"]["open"] == 1  # c-b; the bead of another town is not counted
    assert board["beads"]["in_progress"] == 1
    assert board["beads"]["failed"] == 1
    assert board["beads"]["mergeRequests"] == 2
    assert board["agents"] == {
        "working": 1,
        "idle": 1,
        "stalled": 1,
        "heartbeatLate": 0,
        "polecats": 2,
        "refineries": 1,
    }
    (rig,) = board["rigs"]
    assert rig["polecatsBusy"] == 1
    assert rig["polecatCap"] == 2
    assert rig["queued"] == 2
    assert board["convoys"][0]["progress"] == "0/3"


def test_status_shows_spend_and_budgets() -> None:
    state = busy_town()
    policy = state.town.spec.policy.model_copy(update={"budget": BudgetPolicy(per_day_usd=10.0)})
    spend = TownSpend(
        total=Spend(cost_usd=12.5, tokens=900),
        today=WindowSpend(window=NOW.strftime("%Y-%m-%d"), cost_usd=3.25),
        month=WindowSpend(window=NOW.strftime("%Y-%m"), cost_usd=12.5),
    )
    town = state.town.model_copy(
        update={
            "spec": state.town.spec.model_copy(update={"policy": policy}),
            "status": state.town.status.model_copy(update={"spend": spend}),
        }
    )
    board = build_status(dataclasses.replace(state, town=town), NOW)
    assert board["spend"]["todayUsd"] == 3.25
    assert board["spend"]["perDayUsd"] == 10.0
    text = render_status(board, NOW, PLAIN)
    assert "today $3.25 of $10.00" in text
    assert "total $12.50 (900 tokens)" in text


def test_status_json_keys_are_stable() -> None:
    board = build_status(busy_town(), NOW)
    assert sorted(board) == [
        "agents",
        "beads",
        "circuitBreaker",
        "conditions",
        "convoys",
        "lastPass",
        "mode",
        "namespace",
        "plannedActions",
        "rigs",
        "spend",
        "summary",
        "town",
        "violations",
    ]


def test_status_text_shows_conditions_breaker_violations_and_last_pass() -> None:
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvariantViolations",
                "message": "1 violation",
                "lastTransitionTime": "2026-03-01T12:00:00Z",
            },
        ],
        "violations": [{"code": "DuplicateHook", "message": "two agents on b", "subject": "b"}],
        "circuitBreaker": {"open": True, "recentFailures": 21},
        "lastPass": {
            "finishedAt": "2026-03-01T12:04:00Z",
            "durationMs": 12,
            "actions": {"DispatchAgent": 2},
        },
    }
    text = render_status(build_status(busy_town(status=status), NOW), NOW, PLAIN)
    assert "Ready      False InvariantViolations — 1 violation" in text
    assert "Breaker:  OPEN  (21/20 recent failures)" in text
    assert "DuplicateHook: two agents on b" in text
    assert "Last pass: 1m00s ago, 12 ms, DispatchAgent 2" in text
    assert "c                    InProgress   [----------] 0/3" in text
    coloured = render_status(build_status(busy_town(status=status), NOW), NOW, Style(True))
    assert "\033[31mOPEN" in coloured


def test_status_without_operator() -> None:
    text = render_status(build_status(TownState.of(town()), NOW), NOW, PLAIN)
    assert "Conditions: none yet (is the operator running?)" in text
    assert "Last pass: none recorded" in text
    assert "Convoys: none" in text


@pytest.mark.parametrize(
    ("done", "total", "bar"),
    [
        (0, 0, "[----------]"),
        (0, 4, "[----------]"),
        (1, 4, "[##--------]"),
        (4, 4, "[##########]"),
        (9, 4, "[##########]"),
    ],
)
def test_progress_bar(done: int, total: int, bar: str) -> None:
    assert progress_bar(done, total) == bar


def test_heartbeat_late_counted() -> None:
    late = TownState.of(
        town(),
        agents=[
            agent(
                "p",
                hook="b",
                phase="working",
                activity={"lastHeartbeatAt": datetime(2026, 3, 1, 11, 0, tzinfo=UTC)},
            )
        ],
    )
    assert build_status(late, NOW)["agents"]["heartbeatLate"] == 1
