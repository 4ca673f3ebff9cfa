"""Spend and rate limits end to end: the real Claude Code CLI in real containers on the local
node, against the scripted model server (which reports token usage and answers 429s).

- A convoy at its budget stops dispatching: the bead that was running finishes and merges, the
  next one is held (reason BudgetExceeded) until the budget is raised, then the convoy lands.
  `kubectl get town` and `kubectl gastown status` show the spend.
- A storm of 429s (with retry-after) holds the bead and spends no attempt: it lands on its first
  counted attempt once the provider answers again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.modelserver import ModelServer
from gastown.devtools.node import Node
from gastown.model import Bead, BeadPhase, ConvoyPhase
from tests.support.api import Api
from tests.support.git import HttpRig
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town
from tests.support.procs import Process
from tests.support.town import TownView, bead, convoy, landed, town_state

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

LAND_TIMEOUT = 360.0
PLUGIN = Path(sys.executable).parent / "kubectl-gastown"
# Every reply reports this usage (input/output tokens): enough for a visible cost per session.
USAGE = "[model: usage=20000/2000]"


def claude_town(image: str, rig: HttpRig, server: ModelServer, **spec: Any) -> dict[str, Any]:
    """A town on the node whose agents run the real Claude Code CLI against `server`."""
    body = node_town(image, rig, **spec)
    agent = body["spec"]["agent"]
    agent["codingAgent"] = {"kind": "claude-code"}
    # Claude Code retries a 429 itself up to ten times over minutes; one retry keeps the test
    # short (the operator, not the CLI, is under test).
    env = {**server.env(), "GASTOWN_HEARTBEAT_SECONDS": "2", "CLAUDE_CODE_MAX_RETRIES": "1"}
    agent["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return body


def bead_named(view: TownView, name: str) -> Bead | None:
    """One bead, if it exists."""
    return next((b for b in view.beads() if b.name == name), None)


def test_a_convoy_at_its_budget_holds_new_work_and_resumes_when_raised(
    real_node: Node,
    full_agent_image: str,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
    node_rig: HttpRig,
    node_model_server: ModelServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    # One polecat at a time: the first bead runs alone and its cost puts the convoy over.
    limits = {"maxPolecatsPerRig": 1, "maxPolecats": 1}
    body = claude_town(full_agent_image, node_rig, node_model_server, limits=limits)
    assert api.create(namespace, body).status == 201
    tasks = [
        {"key": "one", "title": "One", "description": f"Add a greeting. {USAGE}"},
        {"key": "two", "title": "Two", "description": f"Add a farewell. {USAGE}"},
    ]
    capped = convoy("capped", tasks, mode="review-and-merge", budgetUsd=0.01)
    assert api.create(namespace, capped).status == 201

    def held() -> Bead | None:
        first, second = bead_named(view, "capped-one"), bead_named(view, "capped-two")
        if first is None or second is None or first.status.phase is not BeadPhase.CLOSED:
            return None
        return second if second.status.reason == "BudgetExceeded" else None

    second = view.wait(held, LAND_TIMEOUT, "the first bead merged and the second one held")
    # The running bead finished (merged); the held one was never dispatched.
    assert second.status.phase is BeadPhase.OPEN, second.status
    assert second.status.attempts == 0, second.status
    assert "budget" in (second.status.message or "").lower(), second.status.message
    state = view.convoy("capped")
    assert state.status.budget_exceeded is not None, state.status
    assert state.status.budget_exceeded.spent_usd >= 0.01
    assert not [
        p for p in view.pods() if p["metadata"]["labels"].get("gastown.dev/bead") == "capped-two"
    ]

    # Spend is visible where users look: the Town's printer columns and the plugin's status.
    wide = control_plane.kubectl("get", "town", "demo", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "SPEND$" in header, wide
    spent = row.split()[header.split().index("SPEND$")]
    assert float(spent) > 0, wide
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    status = subprocess.run(
        [str(PLUGIN), "status", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "total $" in status.stdout, status.stdout

    # Raising the budget resumes the convoy by itself.
    raised = api.merge_patch("Convoy", namespace, "capped", {"spec": {"budgetUsd": 1000}})
    assert raised.status == 200, raised.message
    result = landed(view, "capped", LAND_TIMEOUT)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    assert result.status.budget_exceeded is None, result.status
    town_spend = view.town()["status"]["spend"]
    assert town_spend["total"]["costUsd"] >= state.status.budget_exceeded.spent_usd
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)


def test_a_rate_limit_storm_holds_the_bead_and_spends_no_attempt(
    real_node: Node,
    full_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    node_model_server: ModelServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    # The next model calls of any session answer 429 with retry-after 3 s: the first session
    # (and its one retry) and then some more, as a provider's limit window would.
    node_model_server.fail_next(429, count=6, retry_after=3)
    body = claude_town(full_agent_image, node_rig, node_model_server, refinery={"review": False})
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("storm", description="Add a greeting.")).status == 201
    holds: list[int] = []

    def closed() -> Bead | None:
        found = bead_named(view, "storm")
        if found is None:
            return None
        if found.status.rate_limited is not None:
            holds.append(found.status.rate_limited.count)
        return found if found.status.phase in (BeadPhase.CLOSED, BeadPhase.FAILED) else None

    result = view.wait(closed, LAND_TIMEOUT, "the bead to land after the storm")
    assert result.status.phase is BeadPhase.CLOSED, f"{result.status}\n{town_state(view)}"
    # Held at least once by a rate limit, and no attempt spent on it: one counted attempt.
    assert holds, "the bead was never held by a rate limit"
    assert result.status.attempts == 1, result.status
    rate_limited = [r for r in node_model_server.requests if r.status == 429]
    assert len(rate_limited) >= 2, node_model_server.requests
    sessions = [p for p in pod_watch.pods.values() if p.role == "polecat"]
    assert len(sessions) >= 2, sessions  # a rate-limited session, then the one that landed
    assert_ran_on_the_node(pod_watch, real_node, at_least=2)
