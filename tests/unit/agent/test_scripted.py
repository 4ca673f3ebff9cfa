"""The scripted coding agent on its own: real git, no runtime around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.agent.conftest import Remote, git

REWORK_PROMPT = """Bead: bead-a-rework-1
Role: polecat
Base branch: main

# Task: Rework bead-a
# Rework requested
Please rework this change. [scripted: no-done]
"""


def test_rework_merges_the_base_without_reaching_the_remote(remote: Remote, tmp_path: Path) -> None:
    """A coding agent holds no git credentials (the runtime fetches for it before the session):
    the scripted rework must merge the already fetched base branch, not fetch again, or it fails
    against any authenticated remote."""
    branch = "gt/polecat-1/bead-a"
    remote.commit(branch, "README.md", "bead-a was here\n")
    remote.commit("main", "README.md", "someone else\n")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", "-b", branch, remote.url, str(work))
    git(work, "config", "user.name", "polecat")
    git(work, "config", "user.email", "polecat@example.invalid")
    # What the coding agent sees of an authenticated remote: nothing it can reach.
    git(work, "remote", "set-url", "origin", str(tmp_path / "unreachable.git"))
    proc = subprocess.run(
        [sys.executable, "-m", "gastown.agent.scripted"],
        input=REWORK_PROMPT,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(work, "log", "-1", "--format=%s").startswith("rework: bead-a-rework-1")
    # The base is merged in (both sides of the conflict kept): the refinery's merge is clean.
    git(work, "merge-base", "--is-ancestor", "origin/main", "HEAD")
    readme = (work / "README.md").read_text()
    assert "bead-a was here" in readme
    assert "someone else" in readme
