"""The real coding-agent CLIs in agent pods, driven by the scripted model server.

Claude Code lands a bead (polecat and reviewing refinery) and goes through one rework; Codex,
OpenCode and Aider each land one bead. The CLIs are installed (pinned, cached outside the repo)
by hack/install-clis.sh; a failed install fails these tests. Pods reach the model server like a
real provider: its base URLs and keys are in the Town's agent env. The CLIs are named by absolute
path in `codingAgent.command` (the adapter still adds its flags), so no PATH has to reach the pod.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools.controlplane import REPO_ROOT
from gastown.devtools.modelserver import ModelServer
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.e2e.test_git_flow import scripted_town
from tests.support.api import Api
from tests.support.git import files_on, git, log
from tests.support.procs import Process
from tests.support.town import TownView, bead, convoy

pytestmark = pytest.mark.cluster

INSTALL_TIMEOUT = 1200.0
LAND_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def cli_bin() -> Path:
    """The folder of the installed real CLIs (installs them on first use; fails loudly)."""
    script = REPO_ROOT / "hack" / "install-clis.sh"
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"installing the coding-agent CLIs failed:\n{proc.stderr}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    for name in ("claude", "codex", "opencode", "aider"):
        assert (path / name).exists(), f"{name} missing in {path}"
    return path


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """The scripted model server for one test."""
    with ModelServer() as server:
        yield server


def cli_town(repo: Path, server: ModelServer, coding_agent: dict[str, Any], **spec: Any) -> Any:
    """A town whose agents run a real CLI against the model server."""
    body = scripted_town(repo, **spec)
    agent = body["spec"]["agent"]
    agent["codingAgent"] = coding_agent
    env = {
        **server.env(),
        "GASTOWN_HEARTBEAT_SECONDS": "2",
        # The local node runner runs pods as this (root) user: tell Claude Code the pod is
        # its sandbox (agent pods on a node run as uid 1000 and need no such setting).
        "IS_SANDBOX": "1",
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


def land_one(
    api: Api,
    namespace: str,
    view: TownView,
    rig_repo: Path,
    server: ModelServer,
    coding_agent: dict[str, Any],
    **spec: Any,
) -> float:
    """Create a town and one bead; wait until it is merged into main; return the seconds."""
    started = time.monotonic()
    assert api.create(namespace, cli_town(rig_repo, server, coding_agent, **spec)).status == 201
    assert api.create(namespace, bead("hello", description="Add a greeting.")).status == 201
    result = closed(view, "hello")
    assert result.status.phase is BeadPhase.CLOSED, (result.status, server.model_calls())
    assert "beads/hello.md" in files_on(rig_repo), log(rig_repo)
    return time.monotonic() - started


def test_claude_code_lands_a_bead_reviewed_by_claude_code(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
    cli_bin: Path,
    model_server: ModelServer,
) -> None:
    coding = {"kind": "claude-code", "command": [str(cli_bin / "claude")]}
    seconds = land_one(
        api, namespace, view, rig_repo, model_server, coding, refinery={"review": True}
    )
    calls = model_server.model_calls("anthropic")
    assert calls, "Claude Code never called the model server"
    # The polecat wrote and committed, the refinery reviewed: both sessions ran through us.
    sessions = {c.headers.get("x-claude-code-session-id") for c in calls}
    assert len(sessions) >= 2, sessions
    assert "hello: hello" in git("log", "--format=%s", "main", cwd=rig_repo)
    print(f"claude-code bead landed in {seconds:.1f} s")


def test_claude_code_rework_flow(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
    cli_bin: Path,
    model_server: ModelServer,
) -> None:
    coding = {"kind": "claude-code", "command": [str(cli_bin / "claude")]}
    body = cli_town(rig_repo, model_server, coding, refinery={"review": True})
    assert api.create(namespace, body).status == 201
    tasks = [{"key": "fix", "title": "Fix", "description": "[model: request-changes-once]"}]
    assert api.create(namespace, convoy("rw", tasks, mode="review-and-merge")).status == 201

    def landed() -> Any:
        found = view.convoy("rw")
        return found if found.status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED) else None

    result = view.wait(landed, LAND_TIMEOUT * 2, "convoy rw to land")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    reworks = [b for b in view.beads() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 1
    assert reworks[0].status.phase is BeadPhase.CLOSED
    assert "rework: rw-fix" in git("log", "--format=%s", "main", cwd=rig_repo)
    bodies = [str(c.body) for c in model_server.model_calls("anthropic")]
    assert any("gt request-changes" in b for b in bodies)


@pytest.mark.parametrize(
    ("cli", "coding"),
    [
        ("codex", {"kind": "codex", "model": "gpt-5"}),
        ("opencode", {"kind": "opencode", "model": "openai/gpt-4.1"}),
        ("aider", {"kind": "aider", "model": "openai/scripted"}),
    ],
)
def test_other_clis_land_a_bead(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
    cli_bin: Path,
    model_server: ModelServer,
    cli: str,
    coding: dict[str, Any],
) -> None:
    coding = {**coding, "command": [str(cli_bin / cli)]}
    seconds = land_one(api, namespace, view, rig_repo, model_server, coding)
    api_name = "chat" if cli == "aider" else "responses"
    assert model_server.model_calls(api_name), f"{cli} never called the model server"
    print(f"{cli} bead landed in {seconds:.1f} s")
