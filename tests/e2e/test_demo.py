"""`make demo` as documented: from nothing to a landed convoy, with its own control plane.

On this machine (Linux, root) the demo starts a real node and its agents run the real Claude
Code CLI in real containers, driven by the scripted model server. The test runs before the
session's own real node starts (it does not use the `real_node` fixture): one node of a name per
machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown.devtools.controlplane import REPO_ROOT
from gastown.devtools.node import NODE_NAME

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: the node's kubelet keeps unix sockets under it, and a
    socket path may not exceed 107 bytes (pytest's own temporary paths come close)."""
    path = Path(tempfile.mkdtemp(prefix="demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_lands_its_convoy_through_claude_code_on_the_real_node_and_cleans_up(
    short_dir: Path,
) -> None:
    tmp_path = short_dir
    # The demo pictures the convoy in the dashboard with headless Chromium (Debian's package).
    browser = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "install-browser.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert browser.returncode == 0, browser.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gastown.devtools.demo", "--dir", str(tmp_path), "--timeout", "600"],
        capture_output=True,
        text=True,
        timeout=2100,  # a cold run also builds the node and the agent image
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    assert "applied Town demo and Convoy app-v1 (coding agent: claude-code)" in out
    assert "convoy app-v1: Landed" in out
    assert "Merge convoy/app-v1/" in out  # the one landing merge, in git log of main
    assert "town.gastown.dev/demo" in out
    # Real containers on the real node, and a Claude Code session as `kubectl logs` showed it.
    assert f"running on node {NODE_NAME}" in out
    assert f"agent pods ran, on: {NODE_NAME}\n" in out
    assert '"subtype":"init"' in out or '"subtype": "init"' in out, out[-4000:]
    # A picture of the convoy's page in `kubectl gastown dashboard`.
    picture = tmp_path / "convoy.png"
    assert f"the convoy in `kubectl gastown dashboard`: {picture}" in out, out[-2000:]
    assert picture.read_bytes().startswith(b"\x89PNG"), picture
    assert picture.stat().st_size > 5_000
    # Every process the demo started is gone, and the node left nothing behind.
    state = json.loads((tmp_path / "cluster" / "state.json").read_text())
    assert state["pids"] == {}
    node_state = json.loads((tmp_path / "cluster" / "node" / "state.json").read_text())
    assert node_state["pids"] == {}
