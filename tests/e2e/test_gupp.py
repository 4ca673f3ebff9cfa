"""GUPP end to end: a silent agent is nudged once, live, into its running coding-agent session.

The agent's pod is a real container on the local node (the lean agent image, the scripted
coding agent speaking Claude Code's stream protocol); the nudge travels operator -> Agent spec ->
the runtime in the container -> the coding agent's stdin, which logs it in the pod's /tmp.
"""

from __future__ import annotations

import pytest

from gastown.devtools.node import Node
from tests.support.api import Api
from tests.support.git import HttpRig
from tests.support.node import PodWatch, assert_ran_on_the_node, empty_dir, node_town
from tests.support.procs import Process
from tests.support.town import TownView, bead

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]


def test_stuck_agent_gets_one_warn_nudge_in_its_live_session(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    body = node_town(
        lean_agent_image,
        node_rig,
        policy={"gupp": {"warnSeconds": 60, "escalateSeconds": 3600, "forceStopSeconds": 7200}},
    )
    # Stream mode (the Claude Code protocol), so nudges go into the live session.
    body["spec"]["agent"]["codingAgent"] = {
        "kind": "claude-code",
        "command": ["python", "-m", "gastown.agent.scripted"],
    }
    log_name = "nudges.log"
    body["spec"]["agent"]["env"].append(
        {"name": "GASTOWN_SCRIPTED_NUDGE_LOG", "value": f"/tmp/{log_name}"}
    )
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("stuck", description="[scripted: hang]")).status == 201

    def warned() -> object:
        agents = [a for a in view.agents() if a.spec.hook == "stuck"]
        if not agents or agents[0].status.gupp.warned_at is None:
            return None
        return agents[0] if agents[0].status.delivered_nudges else None

    agent = view.wait(warned, 240, "the GUPP warn tier and its delivered nudge")
    nudge_ids = [n.id for n in agent.spec.nudges if n.id.startswith("gupp-warn")]
    assert nudge_ids, agent.spec.nudges
    assert set(nudge_ids) <= set(agent.status.delivered_nudges)
    # Delivered exactly once, into the running session: the one container of the bead still
    # runs (no restart of the coding agent) and its /tmp emptyDir holds one logged nudge.
    pods = [p for p in view.pods() if p["metadata"]["labels"].get("gastown.dev/bead") == "stuck"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    status = pods[0]["status"]["containerStatuses"][0]
    assert "running" in status["state"], status
    assert status["restartCount"] == 0, status
    lines = (empty_dir(real_node, pods[0], "tmp") / log_name).read_text().splitlines()
    assert len(lines) == 1, lines
    assert "no progress" in lines[0].lower(), lines
    assert agent.status.phase.value == "working"
    events = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    assert any(e["reason"] == "GuppWarn" for e in events), [e["reason"] for e in events]
    assert_ran_on_the_node(pod_watch, real_node, at_least=1)
