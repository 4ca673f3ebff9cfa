"""One node of a name per machine: the claim on its name (no root or cluster needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gastown.devtools import node as node_module
from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.node import Node, NodeError


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Claims under the test's own directory instead of the machine's."""
    directory = tmp_path / "claims"
    monkeypatch.setattr(node_module, "RUN_DIR", directory)
    return directory


def _node(tmp_path: Path, name: str) -> Node:
    return Node(plane=ControlPlane(directory=tmp_path / "cp"), directory=tmp_path / name)


def _exited_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_live_claim_refuses_a_second_node_naming_the_first(claims: Path, tmp_path: Path) -> None:
    first = _node(tmp_path, "first")
    first._claim()  # held by this (live) process
    with pytest.raises(NodeError, match=f"already runs on this machine from {first.directory}"):
        _node(tmp_path, "second")._claim()
    assert json.loads(first.claim_path.read_text())["directory"] == str(first.directory)


def test_a_claim_whose_holder_is_gone_is_taken_over(claims: Path, tmp_path: Path) -> None:
    """A claim left by a node that no longer runs (a reboot, a killed session already cleaned
    up) does not block the next node."""
    node = _node(tmp_path, "new")
    claims.mkdir()
    stale = {"directory": str(tmp_path / "old"), "pid": _exited_pid()}
    node.claim_path.write_text(json.dumps(stale))
    node._claim()
    assert json.loads(node.claim_path.read_text())["directory"] == str(node.directory)


@pytest.mark.parametrize("content", ["", "{", '{"directory": 3}', "[]"])
def test_an_unreadable_claim_is_taken_over(claims: Path, tmp_path: Path, content: str) -> None:
    node = _node(tmp_path, "new")
    claims.mkdir()
    node.claim_path.write_text(content)
    node._claim()
    assert json.loads(node.claim_path.read_text())["directory"] == str(node.directory)


def test_release_drops_only_its_own_claim(claims: Path, tmp_path: Path) -> None:
    holder, other = _node(tmp_path, "holder"), _node(tmp_path, "other")
    holder._claim()
    other._release()
    assert holder.claim_path.exists()
    holder._release()
    assert not holder.claim_path.exists()
    holder._release()  # nothing to drop: no error
