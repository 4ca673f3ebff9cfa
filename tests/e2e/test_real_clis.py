"""The real coding-agent CLIs in real containers, driven by the scripted model server.

The full agent image (built locally with the pinned CLIs of images/cli-versions.env) runs on the
local node as uid 1000. Claude Code lands a bead (polecat and reviewing refinery both) and goes
through one rework; Codex, OpenCode and Aider each land one bead. Every landed bead shows the
tokens its sessions used (the scripted model server reports usage in every API). Pods reach the
model server on the node's bridge gateway like a real provider: its base URLs and keys are in
the Town's agent env. The CLIs come from the image's PATH (the adapter adds its flags)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gastown.devtools.modelserver import ModelServer
from gastown.devtools.node import Node
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, git, log
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town, session_logs
from tests.support.procs import Process
from tests.support.town import TownView, bead, convoy, landed, town_state

# Cold, the first test builds the full agent image (minutes); warm, each flow takes seconds.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

LAND_TIMEOUT = 360.0
SPEND_TIMEOUT = 60.0
"""The polecat's last usage report follows its `done` (written as its CLI exits)."""


def cli_town(
    image: str, rig: HttpRig, server: ModelServer, coding_agent: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    """A town on the node whose agents run a real CLI of `image` against the model server."""
    body = node_town(image, rig, **spec)
    agent = body["spec"]["agent"]
    agent["codingAgent"] = coding_agent
    env = {
        **server.env(),
        "GASTOWN_HEARTBEAT_SECONDS": "2",
        # Aider: no network look-ups of model prices, no analytics, no update checks.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AIDER_ANALYTICS": "false",
        "AIDER_SHOW_MODEL_WARNINGS": "false",
    }
    agent["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return body


def closed(view: TownView, name: str) -> Any:
    """Wait until the bead is closed or failed; return it."""

    def done() -> Any:
        found = [b for b in view.beads() if b.name == name]
        if found and found[0].status.phase in (BeadPhase.CLOSED, BeadPhase.FAILED):
            return found[0]
        return None

    return view.wait(done, LAND_TIMEOUT, f"bead {name} to be merged")


def spent(view: TownView, name: str) -> Any:
    """Wait until the bead's status shows tokens its sessions used (the CLI's usage, as the
    runtime read it from the CLI's output); return its spend."""

    def recorded() -> Any:
        found = [b for b in view.beads() if b.name == name]
        spend = found[0].status.spend if found else None
        return spend if spend is not None and spend.total.tokens > 0 else None

    return view.wait(recorded, SPEND_TIMEOUT, f"bead {name} to show its spend")


def land_one(
    api: Api,
    namespace: str,
    view: TownView,
    body: dict[str, Any],
    rig: HttpRig,
    server: ModelServer,
) -> float:
    """Create the town and one bead; wait until it is merged into main and shows its spend;
    return the seconds to the merge."""
    started = time.monotonic()
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("hello", description="Add a greeting.")).status == 201
    result = closed(view, "hello")
    assert result.status.phase is BeadPhase.CLOSED, (
        f"{result.status}\n{town_state(view)}\n{server.model_calls()}"
    )
    assert "beads/hello.md" in files_on(rig.path), log(rig.path)
    elapsed = time.monotonic() - started
    # The model server reports usage in every API; the CLI prints it and the bead counts it.
    spend = spent(view, "hello")
    assert spend.total.tokens > 0, spend
    assert spend.sessions, spend
    return elapsed


def test_claude_code_lands_a_bead_reviewed_by_claude_code(
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
    # `claude` from the image's PATH; no IS_SANDBOX: the pod runs it as uid 1000.
    coding = {"kind": "claude-code"}
    review = {"review": True}
    body = cli_town(full_agent_image, node_rig, node_model_server, coding, refinery=review)
    seconds = land_one(api, namespace, view, body, node_rig, node_model_server)
    assert "hello: hello" in git("log", "--format=%s", "main", cwd=node_rig.path)
    calls = node_model_server.model_calls("anthropic")
    assert calls, "Claude Code never called the model server"
    # The polecat wrote and committed, the refinery reviewed: two Claude Code sessions.
    sessions = {c.headers.get("x-claude-code-session-id") for c in calls}
    assert len(sessions) >= 2, sessions
    ran = assert_ran_on_the_node(pod_watch, real_node, at_least=2)
    assert {p.role for p in ran} >= {"polecat", "refinery"}, ran
    # `kubectl logs` shows Claude Code's own stream-json session.
    shown = session_logs(pod_watch, r'"type":\s*"system",\s*"subtype":\s*"init"')
    assert shown, {p.name: p.logs[-500:] for p in pod_watch.pods.values()}
    assert any("claude" in p.logs for p in shown)
    print(f"claude-code bead landed on the node in {seconds:.1f} s")
    print(pod_watch.report("claude-code"))


def test_claude_code_rework_flow(
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
    coding = {"kind": "claude-code"}
    review = {"review": True}
    body = cli_town(full_agent_image, node_rig, node_model_server, coding, refinery=review)
    assert api.create(namespace, body).status == 201
    tasks = [{"key": "fix", "title": "Fix", "description": "[model: request-changes-once]"}]
    assert api.create(namespace, convoy("rw", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "rw", LAND_TIMEOUT * 2)
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    reworks = [b for b in view.beads() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 1
    assert reworks[0].status.phase is BeadPhase.CLOSED
    assert "rework: rw-fix" in git("log", "--format=%s", "main", cwd=node_rig.path)
    bodies = [str(c.body) for c in node_model_server.model_calls("anthropic")]
    assert any("gt request-changes" in b for b in bodies)
    # The polecat, the reviewing refinery, the rework polecat and the second review.
    ran = assert_ran_on_the_node(pod_watch, real_node, at_least=4)
    assert {p.role for p in ran} >= {"polecat", "refinery"}, ran


@pytest.mark.parametrize(
    ("cli", "coding"),
    [
        ("codex", {"kind": "codex", "model": "gpt-5"}),
        ("opencode", {"kind": "opencode", "model": "openai/gpt-4.1"}),
        ("aider", {"kind": "aider", "model": "openai/scripted"}),
    ],
)
def test_other_clis_land_a_bead(
    real_node: Node,
    full_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    node_model_server: ModelServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
    cli: str,
    coding: dict[str, Any],
) -> None:
    body = cli_town(full_agent_image, node_rig, node_model_server, coding)
    seconds = land_one(api, namespace, view, body, node_rig, node_model_server)
    api_name = "chat" if cli == "aider" else "responses"
    assert node_model_server.model_calls(api_name), f"{cli} never called the model server"
    assert_ran_on_the_node(pod_watch, real_node, at_least=2)
    print(f"{cli} bead landed on the node in {seconds:.1f} s")
