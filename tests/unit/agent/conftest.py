"""Fixtures for the agent tests: real git on bare repositories in tmp_path, a file channel."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gastown.agent.channel import FileChannel, WorkOrder
from gastown.agent.identity import Identity
from gastown.model.agent import AgentSpec
from gastown.model.bead import BeadSpec, MergeRequestSpec, ReworkSpec
from gastown.model.enums import AgentRole, BeadType
from gastown.model.town import Rig

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def git(cwd: Path, *args: str) -> str:
    """Run git for test setup and assertions."""
    proc = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config leaks into the tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in list(os.environ):
        if name.startswith("GASTOWN_"):
            monkeypatch.delenv(name)


@dataclass
class Remote:
    """A bare repository standing in for the rig's hosting, plus a scratch clone to edit it."""

    bare: Path
    scratch: Path

    @property
    def url(self) -> str:
        return str(self.bare)

    def sha(self, branch: str) -> str | None:
        out = git(self.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}")
        return out or None

    def commit(self, branch: str, path: str, content: str, message: str = "change") -> str:
        """Commit a file on a branch of the remote (creating the branch from main)."""
        git(self.scratch, "fetch", "origin")
        start = f"origin/{branch}" if self.sha(branch) else "origin/main"
        git(self.scratch, "checkout", "-q", "-B", branch, start)
        target = self.scratch / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        git(self.scratch, "add", path)
        git(self.scratch, "commit", "-q", "-m", message)
        git(self.scratch, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.scratch, "rev-parse", "HEAD")

    def show(self, branch: str, path: str) -> str:
        return git(self.bare, "show", f"{branch}:{path}")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A bare repo with main holding README.md."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    scratch = tmp_path / "scratch"
    git(tmp_path, "clone", "-q", str(bare), str(scratch))
    (scratch / "README.md").write_text("hello\n")
    git(scratch, "add", "README.md")
    git(scratch, "commit", "-q", "-m", "initial")
    git(scratch, "push", "-q", "origin", "HEAD:refs/heads/main")
    return Remote(bare, scratch)


def make_identity(
    workdir: Path,
    role: AgentRole = AgentRole.POLECAT,
    agent: str = "polecat-1",
    bead: str | None = "bead-a",
    generation: int = 1,
    channel: Path | None = None,
) -> Identity:
    return Identity(
        town="town",
        namespace="default",
        agent=agent,
        role=role,
        generation=generation,
        rig="rig",
        bead=bead,
        workdir=workdir,
        channel=f"file:{channel}" if channel else None,
        heartbeat_seconds=0.2,
        nudge_poll_seconds=0.1,
        idle_timeout_seconds=2.0,
    )


def issue_order(remote: Remote, bead: str = "bead-a", **kw: object) -> WorkOrder:
    spec = BeadSpec(
        town="town", rig="rig", title=f"Do {bead}", description=str(kw.pop("description", ""))
    )
    fields: dict[str, object] = {
        "bead": bead,
        "spec": spec,
        "generation": 1,
        "rig": Rig(name="rig", git_url=remote.url),
        "base_branch": "main",
    }
    fields.update(kw)
    return WorkOrder(**fields)  # type: ignore[arg-type]


def rework_order(remote: Remote, branch: str, bead: str = "bead-a-rework-1") -> WorkOrder:
    spec = BeadSpec(
        town="town",
        rig="rig",
        type=BeadType.REWORK,
        title="Rework: do bead-a",
        rework=ReworkSpec(
            merge_request="mr-bead-a",
            source_bead="bead-a",
            branch=branch,
            feedback="please add tests",
            files=["beads/bead-a.md"],
        ),
    )
    return WorkOrder(
        bead=bead,
        spec=spec,
        generation=1,
        rig=Rig(name="rig", git_url=remote.url),
        base_branch="main",
    )


def mr_order(
    remote: Remote, branch: str, target: str = "main", gates: tuple[str, ...] = (), **kw: object
) -> WorkOrder:
    spec = BeadSpec(
        town="town",
        rig="rig",
        type=BeadType.MERGE_REQUEST,
        title=f"Review: {branch}",
        merge_request=MergeRequestSpec(source_bead="bead-a", branch=branch, target_branch=target),
    )
    fields: dict[str, object] = {
        "bead": "mr-bead-a",
        "spec": spec,
        "generation": 1,
        "rig": Rig(name="rig", git_url=remote.url),
        "base_branch": target,
        "gates": gates,
        "source_title": "Do bead-a",
        "source_description": "",
    }
    fields.update(kw)
    return WorkOrder(**fields)  # type: ignore[arg-type]


ChannelFactory = Callable[..., Path]


@pytest.fixture
def channel_file(tmp_path: Path) -> ChannelFactory:
    """Create a FileChannel file for an agent hooked to a work order."""

    def create(
        order: WorkOrder | None,
        role: AgentRole = AgentRole.POLECAT,
        generation: int = 1,
        hook: str | None = "__order__",
    ) -> Path:
        path = tmp_path / "agent.json"
        actual_hook = (order.bead if order else None) if hook == "__order__" else hook
        spec = AgentSpec(town="town", role=role, rig="rig", hook=actual_hook, generation=generation)
        FileChannel.create(path, spec, order)
        return path

    return create
