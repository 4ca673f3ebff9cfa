"""GUPP end to end: a silent agent is nudged once, live, into its running coding-agent session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_git_flow import scripted_town
from tests.support.api import Api
from tests.support.procs import Process
from tests.support.town import TownView, bead

pytestmark = pytest.mark.cluster


def test_stuck_agent_gets_one_warn_nudge_in_its_live_session(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    # A path inside the pod (the node runner maps its /tmp emptyDir to a directory of its own).
    pod_log = "/tmp/nudges.log"
    body = scripted_town(
        rig_repo,
        policy={"gupp": {"warnSeconds": 60, "escalateSeconds": 3600, "forceStopSeconds": 7200}},
    )
    # Stream mode (the Claude Code protocol), so nudges go into the live session.
    body["spec"]["agent"]["codingAgent"] = {
        "kind": "claude-code",
        "command": ["python", "-m", "gastown.agent.scripted"],
    }
    body["spec"]["agent"]["env"].append({"name": "GASTOWN_SCRIPTED_NUDGE_LOG", "value": pod_log})
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("stuck", description="[scripted: hang]")).status == 201

    def warned() -> object:
        agents = [a for a in view.agents() if a.spec.hook == "stuck"]
        if not agents or agents[0].status.gupp.warned_at is None:
            return None
        return agents[0] if agents[0].status.delivered_nudges else None

    agent = view.wait(warned, 150, "the GUPP warn tier and its delivered nudge")
    nudge_ids = [n.id for n in agent.spec.nudges if n.id.startswith("gupp-warn")]
    assert nudge_ids, agent.spec.nudges
    assert set(nudge_ids) <= set(agent.status.delivered_nudges)
    # Delivered exactly once, into the running session (no restart of the coding agent).
    root = Path(node_runner_proc.argv[node_runner_proc.argv.index("--root") + 1]) / namespace
    logs = list(root.glob("*/volumes/tmp/nudges.log"))
    assert len(logs) == 1, logs
    lines = logs[0].read_text().splitlines()
    assert len(lines) == 1, lines
    assert "no progress" in lines[0].lower(), lines
    assert agent.status.phase.value == "working"
    events = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    assert any(e["reason"] == "GuppWarn" for e in events), [e["reason"] for e in events]
